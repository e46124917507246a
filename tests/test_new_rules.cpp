// Rules composed from transforms, against their papers' update equations written here in double
// with references independent of the library: NorMuon (Li et al. 2025, arXiv 2510.05491).
#include <doctest/doctest.h>

#include <steepest/steepest.hpp>

#include <Eigen/SVD>

#include <cmath>
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
  /// The gradients of step t (deterministic, full rank).
  std::vector<std::vector<float>> gradients(int t) const {
    std::vector<std::vector<float>> g;
    for (const auto* p : {&a, &b, &c}) {
      const auto d = grad_at(p->size(), t, double(p->size()));
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
