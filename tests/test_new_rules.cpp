// Rules composed from transforms, against their papers' update equations written here in double
// with references independent of the library (Eigen's JacobiSVD for the polar factor and the
// singular values, plain loops for the rest): NorMuon (arXiv 2510.05491), AdaMuon (2507.11005),
// PolarGrad (2505.21799), row normalization before the polar factor (MuonEq, 2603.28254), Muon+
// (2602.21545) and cautious AdamW (2411.16085). Each reference states the conventions chosen.
#include <doctest/doctest.h>

#include <steepest/steepest.hpp>

#include <Eigen/SVD>

#include <cmath>
#include <limits>
#include <string>
#include <vector>

#include "optim_helpers.hpp"

namespace st = steepest;
using optim_test::grad_at;

namespace {

using MatD = Eigen::Matrix<double, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;

/// The polar factor U V^T of A by Eigen's JacobiSVD (the library's exact polar is a BDCSVD).
MatD polar(const MatD& a) {
  Eigen::JacobiSVD<MatD> svd(a, Eigen::ComputeThinU | Eigen::ComputeThinV);
  return svd.matrixU() * svd.matrixV().transpose();
}

/// NorMuon on one matrix as the paper writes it (its Algorithm 1, no bias correction):
///   M = b1 M + (1 - b1) G;  O = polar(M);  v_r = b2 v_r + (1 - b2) mean_c(O_rc^2);
///   O_rc = O_rc / (sqrt(v_r) + eps);  W = W - lr wd W - lr 0.2 sqrt(m n) O / ||O||_F.
/// Conventions chosen (the paper's Algorithm 1): the momentum is an EMA, not Nesterov; the
/// neuron is a row of W as stored (out x in, as torch.nn.Linear keeps it); 0.2 is its RMS.
struct NorMuonRef {
  MatD w, m, v;
  NorMuonRef(const MatD& w0) : w(w0), m(MatD::Zero(w0.rows(), w0.cols())), v(MatD::Zero(w0.rows(), 1)) {}
  void step(const MatD& g, const st::Hyper& hp) {
    m = hp.beta1 * m + (1 - hp.beta1) * g;
    MatD o = polar(m);
    for (Eigen::Index r = 0; r < o.rows(); ++r) {
      v(r, 0) = hp.beta2 * v(r, 0) + (1 - hp.beta2) * o.row(r).squaredNorm() / double(o.cols());
      o.row(r) /= std::sqrt(v(r, 0)) + hp.eps;
    }
    const double scale = 0.2 * std::sqrt(double(o.rows()) * double(o.cols())) / o.norm();
    w = w - hp.lr * hp.weight_decay * w - hp.lr * scale * o;
  }
};

/// A tall and a wide hidden matrix and a vector (the vector takes the AdamW route).
struct Model {
  std::vector<float> a, b, c;
  st::ParamSet<float> params;
  Model() : a(12 * 7), b(5 * 9), c(4) {
    for (auto* p : {&a, &b, &c})
      for (std::size_t i = 0; i < p->size(); ++i) (*p)[i] = float(0.1 * std::cos(0.7 * double(i) + double(p->size())));
    params.add("tall", st::Role::Hidden, a.data(), 12, 7);
    params.add("wide", st::Role::Hidden, b.data(), 5, 9);
    params.add_vector("bias", c.data(), 4);
  }
  /// Gradients with no drift and another phase: grad_at's drift 0.1 t makes later gradients
  /// nearly all positive, and its phase 0.37 i^2 repeats along rows of these shapes, so the
  /// signs of its momenta form rank-deficient matrices, whose polar factor is not unique.
  bool centered = false;
  /// The gradients of step t (deterministic, full rank).
  std::vector<std::vector<float>> gradients(int t) const {
    std::vector<std::vector<float>> g;
    for (const auto* p : {&a, &b, &c}) {
      auto d = grad_at(p->size(), t, double(p->size()));
      if (centered)
        for (std::size_t i = 0; i < d.size(); ++i) d[i] = std::sin(0.851 * double(i * i) + 1.3 * t + double(p->size()));
      g.emplace_back(d.begin(), d.end());
    }
    return g;
  }
  template <class Opt, class State>
  void step(const Opt& opt, State& state, int t) {
    const auto g = gradients(t);
    st::Gradients<float> G;
    G.add(g[0].data(), 12, 7);
    G.add(g[1].data(), 5, 9);
    G.add_vector(g[2].data(), 4);
    opt.step(params, G, state);
  }
};

MatD as_matrix(const std::vector<float>& x, Eigen::Index rows, Eigen::Index cols) {
  MatD out(rows, cols);
  for (Eigen::Index i = 0; i < out.size(); ++i) out.data()[i] = double(x[std::size_t(i)]);
  return out;
}

st::Hyper normuon_hp() {
  st::Hyper hp;
  hp.lr = 0.02;
  hp.beta1 = 0.95;  // the paper's b1; b2 differs from it (the paper's is 0.95 too) so that
  hp.beta2 = 0.9;   // a rule reading the wrong coefficient shows
  hp.weight_decay = 0.1;
  return hp;
}

}  // namespace

TEST_CASE("NorMuon (exact polar) follows its paper's update over 10 steps, tall and wide") {
  const st::Hyper hp = normuon_hp();
  const auto opt = st::normuon<st::SpectralExact>(hp);
  Model net;
  NorMuonRef tall(as_matrix(net.a, 12, 7)), wide(as_matrix(net.b, 5, 9));
  auto state = opt.init(net.params);
  for (int t = 0; t < 10; ++t) {
    const auto g = net.gradients(t);
    tall.step(as_matrix(g[0], 12, 7), hp);
    wide.step(as_matrix(g[1], 5, 9), hp);
    net.step(opt, state, t);
  }
  // float parameters and state against a double reference: each step's rounding is ~1e-7
  // relative, and 10 steps move W by about lr * 0.2 per entry each.
  const double ea = (as_matrix(net.a, 12, 7) - tall.w).norm() / tall.w.norm();
  const double eb = (as_matrix(net.b, 5, 9) - wide.w).norm() / wide.w.norm();
  MESSAGE("NorMuon against its paper's update, 10 steps: relative error " << ea << " (12x7), " << eb << " (5x9)");
  CHECK(ea < 2e-6);
  CHECK(eb < 2e-6);
  // The per-row second moment is the saved state "row-second-moment.v" of the hidden route.
  const auto& v_tall = std::get<2>(state.part<0>().layers[0]).v;
  CHECK(v_tall.rows() == 12);
  CHECK(v_tall.cols() == 1);
  for (Eigen::Index r = 0; r < 12; ++r) CHECK(double(v_tall(r, 0)) == doctest::Approx(tall.v(r, 0)).epsilon(1e-5));
}

TEST_CASE("NorMuon with Newton-Schulz: every row of the update has the same RMS at step 1; state round-trips") {
  // After one step v_r = (1 - b2) mean(O_r^2), so each row of O / sqrt(v) has RMS 1 / sqrt(1 - b2)
  // whatever O is, and the final scale makes the whole update's RMS 0.2: the rows are equal.
  st::Hyper hp = normuon_hp();
  hp.weight_decay = 0.0;
  const auto opt = st::normuon(hp);
  Model net;
  const std::vector<float> a0 = net.a;
  auto state = opt.init(net.params);
  net.step(opt, state, 0);
  for (int r = 0; r < 12; ++r) {
    double sq = 0;
    for (int c = 0; c < 7; ++c) {
      const double d = (double(a0[std::size_t(r * 7 + c)]) - net.a[std::size_t(r * 7 + c)]) / hp.lr;
      sq += d * d;
    }
    CHECK(std::sqrt(sq / 7) == doctest::Approx(0.2).epsilon(1e-4));
  }
  // Another run, saved at step 4 and continued from a fresh state loaded from the bytes: the same
  // bits as the run that never stopped.
  for (int t = 1; t < 8; ++t) net.step(opt, state, t);
  Model other;
  auto first = opt.init(other.params);
  for (int t = 0; t < 4; ++t) other.step(opt, first, t);
  const std::string bytes = st::save_bytes(opt, first);
  CHECK(bytes.find("tall/row-second-moment.v") != std::string::npos);
  auto resumed = opt.init(other.params);
  st::load_bytes(opt, resumed, bytes);
  for (int t = 4; t < 8; ++t) other.step(opt, resumed, t);
  CHECK(net.a == other.a);
  CHECK(net.b == other.b);
  CHECK(net.c == other.c);
}

namespace {

Eigen::VectorXd singular_values(const MatD& a) {
  Eigen::JacobiSVD<MatD> svd(a);
  return svd.singularValues();
}
MatD sign_of(const MatD& a) { return a.unaryExpr([](double x) { return double((x > 0) - (x < 0)); }); }
MatD rows_normalized(MatD a) {
  for (Eigen::Index r = 0; r < a.rows(); ++r)
    if (a.row(r).norm() > 0) a.row(r) /= a.row(r).norm();
  return a;
}
MatD cols_normalized(MatD a) {
  for (Eigen::Index c = 0; c < a.cols(); ++c)
    if (a.col(c).norm() > 0) a.col(c) /= a.col(c).norm();
  return a;
}

/// One hidden matrix under one of the Muon family's papers, in double. Each rule's `update`
/// maps (its state, G) to the step direction O: W <- W - lr wd W - lr O.
struct PaperRef {
  MatD w, m, v;
  double margin = std::numeric_limits<double>::infinity();  ///< smallest |M_ij| a sign step met
  double sigma_min = std::numeric_limits<double>::infinity();  ///< smallest singular value polarized
  explicit PaperRef(const MatD& w0)
      : w(w0), m(MatD::Zero(w0.rows(), w0.cols())), v(MatD::Zero(w0.rows(), w0.cols())) {}
  template <class Update>
  void step(const MatD& g, const st::Hyper& hp, Update update) {
    const MatD o = update(*this, g);
    w = w - hp.lr * hp.weight_decay * w - hp.lr * o;
  }
};

/// AdaMuon, the paper's Algorithm: M = b1 M + (1 - b1) G (any momentum scale: sign follows);
/// O = polar(sign(M)); V = b2 V + (1 - b2) O^2; O = O / (sqrt(V) + eps); O *= 0.2 sqrt(mn) / ||O||_F.
MatD adamuon_update(PaperRef& s, const MatD& g, const st::Hyper& hp) {
  s.m = hp.beta1 * s.m + (1 - hp.beta1) * g;
  s.margin = std::min(s.margin, s.m.cwiseAbs().minCoeff());
  s.sigma_min = std::min(s.sigma_min, singular_values(sign_of(s.m)).minCoeff());
  MatD o = polar(sign_of(s.m));
  s.v = hp.beta2 * s.v + (1 - hp.beta2) * o.cwiseProduct(o);
  o = o.cwiseQuotient((s.v.cwiseSqrt().array() + hp.eps).matrix());
  return 0.2 * std::sqrt(double(o.size())) / o.norm() * o;
}
/// PolarGrad, momentum first: M = b1 M + (1 - b1) G; U = polar(M); O = (sum of M's singular values) U.
MatD polargrad_update(PaperRef& s, const MatD& g, const st::Hyper& hp) {
  s.m = hp.beta1 * s.m + (1 - hp.beta1) * g;
  return singular_values(s.m).sum() * polar(s.m);
}
/// Muon's Nesterov-EMA update: B = b1 B + (1 - b1) G; M~ = (1 - b1) G + b1 B.
MatD nesterov(PaperRef& s, const MatD& g, const st::Hyper& hp) {
  s.m = hp.beta1 * s.m + (1 - hp.beta1) * g;
  return (1 - hp.beta1) * g + hp.beta1 * s.m;
}
/// MuonEq (rows): O = sqrt(max(1, m/n)) polar(rownorm(M~)).
MatD muon_eq_update(PaperRef& s, const MatD& g, const st::Hyper& hp) {
  const MatD o = polar(rows_normalized(nesterov(s, g, hp)));
  return std::sqrt(std::max(1.0, double(o.rows()) / double(o.cols()))) * o;
}
/// Muon+ (row_col): O = 0.2 sqrt(max(m, n)) colnorm(rownorm(polar(M~))).
MatD muon_plus_update(PaperRef& s, const MatD& g, const st::Hyper& hp) {
  const MatD o = cols_normalized(rows_normalized(polar(nesterov(s, g, hp))));
  return 0.2 * std::sqrt(double(std::max(o.rows(), o.cols()))) * o;
}

/// Runs `opt` (a routed Muon-family optimizer with the exact polar factor) and the reference
/// `update` on the tall and the wide matrix for 10 steps. The error is measured against the
/// size of W: float W rounds at ~6e-8 |W| per step, so 10 steps stay below 1e-6 ||W||_F (a
/// float BDCSVD polar factor against a double JacobiSVD adds less). The move must be large
/// against that for the comparison to mean anything: it is returned too.
struct PaperComparison {
  double error = 0, move = 0, margin = 0, sigma_min = 0;
};
template <class Opt, class Update>
PaperComparison against_paper(const Opt& opt, const st::Hyper& hp, Update update) {
  Model net;
  net.centered = true;
  const MatD a0 = as_matrix(net.a, 12, 7), b0 = as_matrix(net.b, 5, 9);
  PaperRef tall(a0), wide(b0);
  auto state = opt.init(net.params);
  for (int t = 0; t < 10; ++t) {
    const auto g = net.gradients(t);
    tall.step(as_matrix(g[0], 12, 7), hp, update);
    wide.step(as_matrix(g[1], 5, 9), hp, update);
    net.step(opt, state, t);
  }
  PaperComparison c;
  c.error = std::max((as_matrix(net.a, 12, 7) - tall.w).norm() / tall.w.norm(),
                     (as_matrix(net.b, 5, 9) - wide.w).norm() / wide.w.norm());
  c.move = std::min((tall.w - a0).norm() / tall.w.norm(), (wide.w - b0).norm() / wide.w.norm());
  c.margin = std::min(tall.margin, wide.margin);
  c.sigma_min = std::min(tall.sigma_min, wide.sigma_min);
  return c;
}

/// Saved at step 4 and resumed from a fresh state: the same bits as the run that never stopped.
template <class Opt>
void resumes_bit_exactly(const Opt& opt, const std::string& key) {
  Model net, other;
  auto state = opt.init(net.params);
  for (int t = 0; t < 8; ++t) net.step(opt, state, t);
  auto first = opt.init(other.params);
  for (int t = 0; t < 4; ++t) other.step(opt, first, t);
  const std::string bytes = st::save_bytes(opt, first);
  if (!key.empty()) CHECK(bytes.find(key) != std::string::npos);
  auto resumed = opt.init(other.params);
  st::load_bytes(opt, resumed, bytes);
  for (int t = 4; t < 8; ++t) other.step(opt, resumed, t);
  CHECK(net.a == other.a);
  CHECK(net.b == other.b);
  CHECK(net.c == other.c);
  for (float x : net.a) REQUIRE(std::isfinite(x));
}

}  // namespace

TEST_CASE("AdaMuon (exact polar) follows its paper's update over 10 steps, tall and wide") {
  const st::Hyper hp = normuon_hp();
  const auto c = against_paper(st::adamuon<st::SpectralExact>(hp), hp,
                               [&](PaperRef& s, const MatD& g) { return adamuon_update(s, g, hp); });
  MESSAGE("AdaMuon against its paper's update, 10 steps: error " << c.error << " of ||W||, move " << c.move
                                                                 << ", smallest |M| at a sign " << c.margin << ", smallest singular value of sign(M) " << c.sigma_min);
  // sign(M) jumps where an entry of M crosses 0: float and double agree only with a margin.
  // A sign matrix of full rank has one polar factor; a rank-deficient one has many.
  REQUIRE(c.margin > 1e-5);
  REQUIRE(c.sigma_min > 0.1);
  CHECK(c.move > 0.1);
  CHECK(c.error < 1e-6);
}

namespace {
/// `opt` against the reference `update` (against_paper), its move large against the tolerance.
template <class Opt, class Update>
void follows_paper(const char* what, const Opt& opt, const st::Hyper& hp, Update update) {
  const auto c = against_paper(opt, hp, [&](PaperRef& s, const MatD& g) { return update(s, g, hp); });
  MESSAGE(std::string(what) << " against its update, 10 steps: error " << c.error << " of ||W||, move " << c.move);
  CHECK(c.move > 0.01);
  CHECK(c.error < 1e-6);
}
}  // namespace

TEST_CASE("PolarGrad (exact polar) scales the polar factor by the nuclear norm, as its paper does") {
  st::Hyper hp = normuon_hp();
  hp.lr = 2e-3;  // the nuclear norm of M is ~1 here (centered gradients): Muon-sized steps
  follows_paper("PolarGrad", st::polargrad<st::SpectralExact>(hp), hp, polargrad_update);
}

TEST_CASE("Row normalization before the polar factor (MuonEq) follows its update over 10 steps") {
  const st::Hyper hp = normuon_hp();
  follows_paper("MuonEq", st::muon_eq<st::SpectralExact>(hp), hp, muon_eq_update);
}

TEST_CASE("Muon+ normalizes rows then columns after the polar factor, as its authors' row_col mode") {
  const st::Hyper hp = normuon_hp();
  follows_paper("Muon+", st::muon_plus<st::SpectralExact>(hp), hp, muon_plus_update);
}

TEST_CASE("The Muon family with Newton-Schulz: finite, and resumed from a checkpoint bit for bit") {
  const st::Hyper hp = normuon_hp();
  resumes_bit_exactly(st::adamuon(hp), "tall/second-moment.v");
  resumes_bit_exactly(st::polargrad(hp), "tall/ema.m");
  resumes_bit_exactly(st::muon_eq(hp), "");
  resumes_bit_exactly(st::muon_plus(hp), "");
}

namespace {
/// Cautious AdamW in double, entry by entry (Liang et al. 2024, their C-AdamW): Adam's m, v with
/// bias correction; u = m^ / (sqrt(v^) + eps); keep u_i where u_i g_i > 0; u /= max(kept/size, 1e-3).
struct CautiousAdamWRef {
  std::vector<double> w, m, v;
  explicit CautiousAdamWRef(const std::vector<float>& w0) : w(w0.begin(), w0.end()), m(w0.size()), v(w0.size()) {}
  void step(const std::vector<double>& g, const st::Hyper& hp, int t) {
    std::vector<double> u(w.size());
    std::size_t kept = 0;
    for (std::size_t i = 0; i < w.size(); ++i) {
      m[i] = hp.beta1 * m[i] + (1 - hp.beta1) * g[i];
      v[i] = hp.beta2 * v[i] + (1 - hp.beta2) * g[i] * g[i];
      u[i] = m[i] / (1 - std::pow(hp.beta1, t)) / (std::sqrt(v[i] / (1 - std::pow(hp.beta2, t))) + hp.eps);
      if (u[i] * g[i] > 0) ++kept;
      else u[i] = 0;
    }
    const double scale = 1.0 / std::max(double(kept) / double(w.size()), 1e-3);
    for (std::size_t i = 0; i < w.size(); ++i) w[i] = w[i] - hp.lr * hp.weight_decay * w[i] - hp.lr * scale * u[i];
  }
};
}  // namespace

TEST_CASE("Cautious AdamW matches a scalar loop, on a whole matrix and on strided blocks of one") {
  st::Hyper hp;
  hp.lr = 0.01;
  hp.beta1 = 0.9;
  hp.beta2 = 0.99;
  hp.weight_decay = 0.1;
  const auto opt = st::cautious_adamw(hp);
  // A 6 x 8 matrix; its gradients change sign between steps (salt and the cosine), so the mask
  // drops a different set each step.
  const int rows = 6, cols = 8;
  std::vector<float> whole(rows * cols), blocks;
  for (std::size_t i = 0; i < whole.size(); ++i) whole[i] = float(0.1 * std::cos(0.3 * double(i)));
  blocks = whole;
  CautiousAdamWRef ref(whole);
  st::ParamSet<float> p1, p2;
  p1.add("w", st::Role::Hidden, whole.data(), rows, cols);
  // The same tensor as interleaved row blocks (row stride 2 cols): each block masks and rescales
  // by its own kept fraction, so compare it with the reference run per block.
  p2.add_blocks("w", st::Role::Hidden, blocks.data(), rows, cols, st::Blocks::interleaved_rows(2));
  auto s1 = opt.init(p1);
  auto s2 = opt.init(p2);
  std::vector<float> even, odd;
  for (int r = 0; r < rows; ++r)
    for (int c = 0; c < cols; ++c) (r % 2 ? odd : even).push_back(whole[std::size_t(r * cols + c)]);
  CautiousAdamWRef ref_even(even), ref_odd(odd);
  for (int t = 1; t <= 6; ++t) {
    std::vector<double> g = grad_at(whole.size(), t, 0.5);
    for (std::size_t i = 0; i < g.size(); ++i) g[i] -= 0.1 * t + 0.3 * std::cos(double(i) * t);
    const std::vector<float> gf(g.begin(), g.end());
    std::vector<double> ge, go;
    for (int r = 0; r < rows; ++r)
      for (int c = 0; c < cols; ++c) (r % 2 ? go : ge).push_back(double(gf[std::size_t(r * cols + c)]));
    std::vector<double> gd(gf.begin(), gf.end());
    ref.step(gd, hp, t);
    ref_even.step(ge, hp, t);
    ref_odd.step(go, hp, t);
    st::Gradients<float> G;
    G.add(gf.data(), rows, cols);
    opt.step(p1, G, s1);
    opt.step(p2, G, s2);
  }
  double err = 0, err_blocks = 0, move = 0;
  std::size_t e = 0, o = 0;
  for (int r = 0; r < rows; ++r)
    for (int c = 0; c < cols; ++c) {
      const std::size_t i = std::size_t(r * cols + c);
      err = std::max(err, std::abs(double(whole[i]) - ref.w[i]));
      const double b = r % 2 ? ref_odd.w[o++] : ref_even.w[e++];
      err_blocks = std::max(err_blocks, std::abs(double(blocks[i]) - b));
      move = std::max(move, std::abs(ref.w[i] - 0.1 * std::cos(0.3 * double(i))));
    }
  MESSAGE("cautious AdamW vs scalar loop: max error " << err << " (whole), " << err_blocks
                                                      << " (strided blocks); largest move " << move);
  CHECK(move > 0.01);
  CHECK(err < 1e-6);
  CHECK(err_blocks < 1e-6);
  // Each block rescales by its own kept fraction, not the whole matrix's: the two runs part.
  CHECK(whole != blocks);
}

namespace {
using TwoEmas = st::Chain<st::Momentum<st::MomentumKind::EMA>, st::Momentum<st::MomentumKind::EMA>, st::DecoupledStep>;

/// Steps a 6 x 5 matrix `steps` times with `opt` from step `from` (gradients optim_test::grad_at).
template <class Opt, class State>
void run_steps(const Opt& opt, st::ParamSet<float>& params, std::vector<float>& w, State& state, int from, int steps) {
  for (int t = from; t < from + steps; ++t) {
    const auto d = grad_at(w.size(), t, 0.25);
    const std::vector<float> g(d.begin(), d.end());
    st::Gradients<float> G;
    G.add(g.data(), 6, 5);
    opt.step(params, G, state);
  }
}
}  // namespace

TEST_CASE("two EMAs of different betas in one chain: each reads its own; saved, recorded and resumed") {
  st::Hyper hp;
  hp.lr = 0.05;
  hp.beta1 = 0.9;
  hp.weight_decay = 0.1;
  st::Optimizer<TwoEmas> opt(hp);
  opt.coefficients.at(1).beta1 = 0.99;  // the second EMA is the slow one
  auto unfused = opt;
  unfused.fuse = false;
  // The reference, in double: m1 = 0.9 m1 + 0.1 g;  m2 = 0.99 m2 + 0.01 m1;  W -= lr (wd W + m2).
  std::vector<float> w(30), wu;
  for (std::size_t i = 0; i < w.size(); ++i) w[i] = float(0.2 * std::sin(double(i)));
  wu = w;
  std::vector<double> rw(w.begin(), w.end()), m1(30), m2(30);
  for (int t = 0; t < 12; ++t) {
    const auto g = grad_at(30, t, 0.25);
    for (std::size_t i = 0; i < 30; ++i) {
      m1[i] = 0.9 * m1[i] + 0.1 * double(float(g[i]));
      m2[i] = 0.99 * m2[i] + 0.01 * m1[i];
      rw[i] -= hp.lr * (hp.weight_decay * rw[i] + m2[i]);
    }
  }
  st::ParamSet<float> params, params_u;
  params.add("w", st::Role::Hidden, w.data(), 6, 5);
  params_u.add("w", st::Role::Hidden, wu.data(), 6, 5);
  auto state = opt.init(params);
  auto state_u = unfused.init(params_u);
  run_steps(opt, params, w, state, 0, 5);
  run_steps(unfused, params_u, wu, state_u, 0, 5);
  // Saved at step 5 (the coefficients recorded in the routes) and resumed from a fresh state.
  const std::string bytes = st::save_bytes(opt, state);
  CHECK(bytes.find("coefficients") != std::string::npos);
  CHECK(bytes.find("0.99") != std::string::npos);
  auto resumed = opt.init(params);
  st::load_bytes(opt, resumed, bytes);
  run_steps(opt, params, w, resumed, 5, 7);
  run_steps(unfused, params_u, wu, state_u, 5, 7);
  double err = 0;
  for (std::size_t i = 0; i < 30; ++i) err = std::max(err, std::abs(double(w[i]) - rw[i]));
  MESSAGE("two EMAs (0.9, 0.99) against the double loop after 12 steps: max error " << err);
  CHECK(err < 1e-6);
  CHECK(w == wu);  // the fused pass and the transform-by-transform one: the same bits
  // Without the coefficient the second EMA reads hp.beta1 = 0.9: a different run.
  st::Optimizer<TwoEmas> same_beta(hp);
  std::vector<float> w2(30);
  for (std::size_t i = 0; i < w2.size(); ++i) w2[i] = float(0.2 * std::sin(double(i)));
  st::ParamSet<float> p2;
  p2.add("w", st::Role::Hidden, w2.data(), 6, 5);
  auto s2 = same_beta.init(p2);
  run_steps(same_beta, p2, w2, s2, 0, 12);
  CHECK(w2 != w);
}

TEST_CASE("a transform's own coefficient sets the bound a loaded buffer is checked against") {
  // EMA then heavy-ball momentum: the heavy-ball sum of inputs below G stays below G / (1 - b).
  // With its own b = 0.5 the bound is 2G (4G with load()'s slack of 2); with hp's 0.9, 20G.
  using EmaThenSum = st::Chain<st::Momentum<st::MomentumKind::EMA>, st::Momentum<st::MomentumKind::HeavyBall>,
                               st::DecoupledStep>;
  st::Hyper hp;
  hp.beta1 = 0.9;
  st::Optimizer<EmaThenSum> own(hp), shared(hp);
  own.coefficients.at(1).beta1 = 0.5;
  std::vector<float> w(12, 0.1f);
  st::ParamSet<float> params;
  params.add("w", st::Role::Hidden, w.data(), 4, 3);
  auto state = shared.init(params);
  std::get<1>(state.layers[0]).m(1, 1) = float(10 * std::ldexp(1.0, 40));  // 10 G
  const std::string bytes = st::save_bytes(shared, state);
  auto target = shared.init(params);
  st::load_bytes(shared, target, bytes);  // below 20 G: reachable with b = 0.9
  CHECK(std::get<1>(target.layers[0]).m(1, 1) == float(10 * std::ldexp(1.0, 40)));
  auto target_own = own.init(params);
  CHECK_THROWS_WITH_AS(st::load_bytes(own, target_own, bytes), doctest::Contains("buffer 'momentum.m': entry 4"),
                       st::state_file_error);
}
