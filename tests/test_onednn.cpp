// Newton-Schulz with bf16 products on oneDNN (polar/onednn.hpp), against independent references:
// the exact polar factor from a double SVD (singular-value bands, the identity
// <G, D(G)> ~ ||G||_nuclear), the fp32 Eigen iteration (how far bf16 products move the result),
// and the edge cases of the fp32 path (zero, empty, 1-wide, tiny inputs). Bands measured on these
// shapes and recorded in the README; asserted with a margin of 0.01.
#include <doctest/doctest.h>

#include <steepest/polar/onednn.hpp>
#include <steepest/steepest.hpp>

#include <Eigen/Eigenvalues>
#include <Eigen/QR>

#include <memory>
#include <random>

#include "reference.hpp"

namespace st = steepest;
using Md = Eigen::MatrixXd;
using Mf = Eigen::MatrixXf;

namespace {

template <class Schedule>
Md bf16_ns(const Md& G, int steps) {
  const Mf Gf = G.cast<float>();
  Mf O(G.rows(), G.cols());
  st::OneDnnNewtonSchulzWorkspace ws;
  st::OneDnnBf16::run<Schedule>(Gf, O, steps, ws);
  return O.cast<double>();
}
template <class Schedule>
Md fp32_ns(const Md& G, int steps) {
  const Mf Gf = G.cast<float>();
  Mf O(G.rows(), G.cols());
  st::NewtonSchulzWorkspace<float> ws;
  st::newton_schulz<Schedule>(Gf, O, steps, ws);
  return O.cast<double>();
}
Eigen::VectorXd svals(const Md& M) { return Eigen::JacobiSVD<Md>(M).singularValues(); }

const std::pair<int, int> kShapes[] = {{64, 64}, {32, 128}, {200, 50}, {1, 9}, {9, 1}, {96, 300}};

// oneDNN has no bf16 matmul on a CPU without AVX-512: there the engine's documented behavior is
// a std::runtime_error before anything is written, which this checks; the accuracy tests are then
// reported as skipped (a message, no assertion).
bool bf16_available() {
  static const bool ok = [] {
    Mf G = Mf::Identity(4, 8), out = Mf::Constant(4, 8, 5.f);
    st::OneDnnNewtonSchulzWorkspace ws;
    try {
      st::OneDnnBf16::run<st::QuinticSchedule>(G, out, 1, ws);
      return true;
    } catch (const std::runtime_error& e) {
      CHECK((out.array() == 5.f).all());
      MESSAGE("oneDNN bf16 matmul unavailable on this CPU, bf16 tests skipped: " << e.what());
      return false;
    }
  }();
  return ok;
}

// ref::conditioned with U, V from Householder QR of Gaussian matrices instead of an SVD (a
// Jacobi SVD of a 1700 x 800 matrix takes seconds): G = U diag(s) V^T and its polar factor U V^T.
ref::Conditioned orthogonal_conditioned(int m, int n, double kappa, unsigned seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<double> nd;
  const int k = std::min(m, n);
  auto orthonormal = [&](int rows) {
    Md R(rows, k);
    for (Eigen::Index i = 0; i < R.size(); ++i) R.data()[i] = nd(rng);
    return Md(Eigen::HouseholderQR<Md>(R).householderQ() * Md::Identity(rows, k));
  };
  const Md U = orthonormal(m), V = orthonormal(n);
  Eigen::VectorXd s(k);
  for (int i = 0; i < k; ++i) s(i) = std::pow(kappa, -double(i) / std::max(k - 1, 1));
  return {U * s.asDiagonal() * V.transpose(), U * V.transpose()};
}

}  // namespace

TEST_CASE("bf16 quintic Newton-Schulz x5: singular values in the fp32 band, singular vectors kept") {
  if (!bf16_available()) return;
  for (auto [m, n] : kShapes) {
    for (double kappa : {1.0, 10.0, 100.0}) {
      CAPTURE(m);
      CAPTURE(n);
      CAPTURE(kappa);
      const auto c = ref::conditioned(m, n, kappa, unsigned(m * 31 + n));
      const Md O = bf16_ns<st::QuinticSchedule>(c.G, 5);
      const Eigen::VectorXd s = svals(O);
      // The fp32 band of tests/test_newton_schulz.cpp is [0.68, 1.21]; with bf16 products it
      // measured [0.666, 1.203] over these shapes, kappas and seeds (AMX kernels). The margin
      // allows another oneDNN kernel (AVX512-BF16, another accumulation order).
      CHECK(s.minCoeff() >= 0.65);
      CHECK(s.maxCoeff() <= 1.23);
      // <G, D(G)> against the nuclear norm: the polar factor attains it; NS's singular values in
      // the band keep the inner product within the band's factors of it.
      const double inner = (c.G.array() * O.array()).sum(), nuclear = svals(c.G).sum();
      CHECK(inner >= 0.65 * nuclear);
      CHECK(inner <= 1.23 * nuclear);
      // The direction is G's: U^T O V is diagonal up to bf16 rounding (each step is an odd
      // polynomial in G, so exact products would keep it exactly diagonal). Together with the
      // band this bounds the distance to the exact polar factor U V^T. (The distance to the fp32
      // iteration is no measure at kappa = 1: all singular values then bounce together through
      // the quintic's band, and where each lands after 5 steps is sensitive to rounding.)
      Eigen::JacobiSVD<Md> svd(c.G, Eigen::ComputeThinU | Eigen::ComputeThinV);
      Md core = svd.matrixU().transpose() * O * svd.matrixV();
      Md off = core;
      off.diagonal().setZero();
      // (At kappa = 1 the singular values are all equal, so any basis of the space is a valid
      // U, V and only the band below says anything.)
      if (kappa > 1.0) CHECK(off.norm() <= 0.03 * core.norm());  // measured <= 0.018
      CHECK((O - c.polar).norm() <= 0.35 * c.polar.norm());     // measured <= 0.31
    }
  }
}

TEST_CASE("bf16 Polar Express x5: near the exact polar factor (SVD)") {
  if (!bf16_available()) return;
  for (auto [m, n] : kShapes) {
    CAPTURE(m);
    CAPTURE(n);
    const auto c = ref::conditioned(m, n, 10.0, unsigned(m * 17 + n));
    const Md O = bf16_ns<st::PolarExpressSchedule>(c.G, 5);
    const Eigen::VectorXd s = svals(O);
    CHECK(s.minCoeff() >= 0.83);  // fp32 band [0.87, 1.13]; bf16 measured [0.863, 1.124]
    CHECK(s.maxCoeff() <= 1.15);
    CHECK((O - c.polar).norm() <= 0.15 * c.polar.norm());  // measured <= 0.125
  }
}

TEST_CASE("bf16 Newton-Schulz on wide iterates: the Gram product on its upper block triangle") {
  // From k = min(m, n) >= 768 with l >= 2k the Gram product is formed as 10 block products plus
  // 6 mirrored blocks (blocks of 200 rows here, and 198 / 196 at 790: uneven). The result must
  // stay in the same band as the full products, and near the fp32 Eigen iteration.
  if (!bf16_available()) return;
  for (auto [m, n] : {std::pair<int, int>{800, 1700}, {790, 1600}, {1700, 800}}) {
    CAPTURE(m);
    CAPTURE(n);
    const auto c = orthogonal_conditioned(m, n, 10.0, unsigned(m + n));
    const Md O = bf16_ns<st::QuinticSchedule>(c.G, 5);
    // Singular values from the k x k Gram matrix of O (eigenvalues are their squares).
    const Md gram = m <= n ? Md(O * O.transpose()) : Md(O.transpose() * O);
    const Eigen::VectorXd ev = Eigen::SelfAdjointEigenSolver<Md>(gram, Eigen::EigenvaluesOnly).eigenvalues();
    CHECK(std::sqrt(ev.minCoeff()) >= 0.65);
    CHECK(std::sqrt(ev.maxCoeff()) <= 1.23);
    const Md F = fp32_ns<st::QuinticSchedule>(c.G, 5);
    CHECK((O - F).norm() <= 0.03 * F.norm());
    const Md P = bf16_ns<st::PolarExpressSchedule>(c.G, 5);
    CHECK((P - c.polar).norm() <= 0.15 * c.polar.norm());
  }
}

TEST_CASE("bf16 Newton-Schulz keeps the fp32 path's edge cases") {
  if (!bf16_available()) return;
  st::OneDnnNewtonSchulzWorkspace ws;
  SUBCASE("zero maps to zero, NaN to NaN, empty is a no-op") {
    Mf Z = Mf::Zero(4, 6), out = Mf::Constant(4, 6, 3.f);
    st::OneDnnBf16::run<st::QuinticSchedule>(Z, out, 5, ws);
    CHECK(out.isZero(0.f));
    Mf N = Mf::Ones(3, 5);
    N(1, 2) = std::numeric_limits<float>::quiet_NaN();
    Mf outn(3, 5);
    st::OneDnnBf16::run<st::QuinticSchedule>(N, outn, 5, ws);
    // As the fp32 path: a non-finite norm gives G * 0 (NaN where G is NaN, 0 elsewhere).
    CHECK(std::isnan(outn(1, 2)));
    outn(1, 2) = 0.f;
    CHECK(outn.isZero(0.f));
    Mf E(0, 7), oute(0, 7);
    st::OneDnnBf16::run<st::QuinticSchedule>(E, oute, 5, ws);
    CHECK(oute.size() == 0);
  }
  SUBCASE("scale-invariant: a tiny or a huge float gradient gives the same direction") {
    // Powers of two scale a float exactly, so the normalized iterate is the same bits. Entries
    // of 2^-100 square to below the float range, and 2^100 above it: the norm must not.
    const auto c = ref::conditioned(20, 30, 10.0, 8);
    const Md a = bf16_ns<st::QuinticSchedule>(c.G, 5);
    for (double scale : {std::ldexp(1.0, -100), std::ldexp(1.0, 100)}) {
      CAPTURE(scale);
      const Md b = bf16_ns<st::QuinticSchedule>(Md(scale * c.G), 5);
      CHECK((a - b).norm() <= 1e-6 * a.norm());
    }
  }
  SUBCASE("shape mismatch is refused before anything is written") {
    Mf G = Mf::Ones(3, 4), out = Mf::Constant(4, 3, 7.f);
    CHECK_THROWS_AS(st::OneDnnBf16::run<st::QuinticSchedule>(G, out, 5, ws), st::shape_error);
    CHECK((out.array() == 7.f).all());
  }
  SUBCASE("one workspace serves shapes in turn (primitives rebuilt on a new shape)") {
    const auto c1 = ref::conditioned(40, 24, 10.0, 1), c2 = ref::conditioned(24, 40, 10.0, 2);
    for (const Md* G : {&c1.G, &c2.G, &c1.G}) {
      const Mf Gf = G->cast<float>();
      Mf O(Gf.rows(), Gf.cols());
      st::OneDnnBf16::run<st::QuinticSchedule>(Gf, O, 5, ws);
      const Md F = fp32_ns<st::QuinticSchedule>(*G, 5);
      CHECK((O.cast<double>() - F).norm() <= 0.03 * F.norm());
    }
  }
  SUBCASE("a copied workspace computes on its own buffers, after the original is gone") {
    // The primitives are bound to the workspace's buffers: a copy that kept them would write into
    // (freed) memory of the original. 800 x 1700 has the Gram product formed in blocks.
    const auto c = orthogonal_conditioned(800, 1700, 10.0, 4);
    const Mf Gf = c.G.cast<float>();
    Mf first(800, 1700), again(800, 1700);
    auto original = std::make_unique<st::OneDnnNewtonSchulzWorkspace>();
    st::OneDnnBf16::run<st::QuinticSchedule>(Gf, first, 5, *original);
    st::OneDnnNewtonSchulzWorkspace copy = *original;
    original.reset();
    st::OneDnnBf16::run<st::QuinticSchedule>(Gf, again, 5, copy);
    CHECK((first.array() == again.array()).all());
  }
  SUBCASE("double input: bf16 products, the result in double") {
    const auto c = ref::conditioned(30, 50, 10.0, 3);
    Md O(30, 50);
    st::OneDnnBf16::run<st::QuinticSchedule>(c.G, O, 5, ws);
    const Md F = fp32_ns<st::QuinticSchedule>(c.G, 5);
    CHECK((O - F).norm() <= 0.03 * F.norm());
  }
}

TEST_CASE("Muon with bf16 products: the geometry says so, the step is near the fp32 Muon step") {
  if (!bf16_available()) return;
  const int m = 48, n = 80;
  std::mt19937 rng(11);
  std::normal_distribution<float> nd;
  std::vector<float> w32(m * n), wbf(m * n), g(m * n), bias32(n), biasbf(n), gb(n);
  for (auto& x : g) x = nd(rng);
  for (auto& x : gb) x = nd(rng);
  for (std::size_t i = 0; i < w32.size(); ++i) w32[i] = wbf[i] = 0.02f * nd(rng);
  for (std::size_t i = 0; i < bias32.size(); ++i) bias32[i] = biasbf[i] = 0.0f;
  auto build = [&](std::vector<float>& w, std::vector<float>& b) {
    st::ParamSet<float> p;
    p.add("w", st::Role::Hidden, w.data(), m, n);
    p.add("b", st::Role::Vector, b.data(), n, 1);
    return p;
  };
  st::ParamSet<float> p32 = build(w32, bias32), pbf = build(wbf, biasbf);
  st::Gradients<float> grads;
  grads.add(g.data(), m, n);
  grads.add(gb.data(), n, 1);
  st::Hyper hp;
  hp.lr = 0.02;
  auto o32 = st::muon(hp);
  auto obf = st::muon<st::SpectralBf16>(hp);
  CHECK(obf.optimizer<0>().geometry_of(pbf[0]).name() == "2->2 (quinticx5/onednn-bf16)");
  auto s32 = o32.init(p32);
  auto sbf = obf.init(pbf);
  std::vector<float> w0 = w32;
  for (int t = 0; t < 3; ++t) {
    REQUIRE(o32.step(p32, grads, s32));
    REQUIRE(obf.step(pbf, grads, sbf));
  }
  double diff = 0, moved = 0;
  for (std::size_t i = 0; i < w32.size(); ++i) {
    diff += double(wbf[i] - w32[i]) * (wbf[i] - w32[i]);
    moved += double(w32[i] - w0[i]) * (w32[i] - w0[i]);
  }
  CHECK(moved > 0);
  CHECK(std::sqrt(diff) <= 0.03 * std::sqrt(moved));  // the steps differ by bf16's rounding only
  CHECK(bias32 == biasbf);                             // AdamW's route does not touch Newton-Schulz
}
