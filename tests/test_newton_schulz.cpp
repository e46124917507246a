// Newton-Schulz against the exact polar factor (SVD), with the measured accuracy bands.
//
// Inputs are G = U diag(s) V^T with random orthonormal U, V and singular values log-spaced from
// 1 down to 1/kappa, so the band is stated for a known condition number. Bands measured on
// shapes 64x64, 32x128, 200x50 (both orientations exercised) and recorded in docs/GEOMETRY.md:
//   quintic x5 (float):         output singular values in [0.68, 1.21] for kappa <= 100
//   polar-express x5 (float):   [0.87, 1.13] for kappa <= 100
//   polar-express x8 (double):  |s - 1| < 1e-9 for kappa <= 100, < 1e-3 for kappa = 1000
// The assertions below use these bands with a small margin (0.01) for other random draws.
#include <doctest/doctest.h>

#include <steepest/steepest.hpp>

#include <random>

#include "reference.hpp"

namespace st = steepest;
using Md = Eigen::MatrixXd;

namespace {

template <class Schedule, class S>
Eigen::VectorXd ns_singular_values(const Md& G, int steps, Md* out = nullptr) {
  using Ms = Eigen::Matrix<S, Eigen::Dynamic, Eigen::Dynamic>;
  const Ms Gs = G.cast<S>();
  Ms O(G.rows(), G.cols());
  st::NewtonSchulzWorkspace<S> ws;
  st::newton_schulz<Schedule>(Gs, O, steps, ws);
  if (out) *out = O.template cast<double>();
  return st::singular_values(O);
}

const std::pair<int, int> kShapes[] = {{64, 64}, {32, 128}, {200, 50}, {1, 9}, {9, 1}};

// The shapes the tiled copies are checked at: on, across and off the 32-entry tiles, and empty.
const std::pair<int, int> kTileSeamShapes[] = {{1, 1}, {32, 32}, {33, 31}, {100, 7}, {7, 100}, {65, 64}, {0, 5}};

using MrD = Eigen::Matrix<double, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;

/// An m x n row-major matrix of N(0, 1) entries drawn from rng.
MrD gaussian_rows(int m, int n, std::mt19937& rng) {
  std::normal_distribution<double> nd;
  MrD g(m, n);
  for (Eigen::Index i = 0; i < g.size(); ++i) g.data()[i] = nd(rng);
  return g;
}
}  // namespace

TEST_CASE("quintic Newton-Schulz, 5 steps: singular values in the measured band") {
  for (auto [m, n] : kShapes) {
    for (double kappa : {1.0, 10.0, 100.0}) {
      CAPTURE(m);
      CAPTURE(n);
      CAPTURE(kappa);
      const auto c = ref::conditioned(m, n, kappa, unsigned(m * 31 + n));
      const Eigen::VectorXd s = ns_singular_values<st::QuinticSchedule, float>(c.G, 5);
      CHECK(s.minCoeff() >= 0.67);
      CHECK(s.maxCoeff() <= 1.22);
    }
  }
}

TEST_CASE("Polar Express schedule, 5 steps: tighter band than quintic") {
  for (auto [m, n] : kShapes) {
    for (double kappa : {1.0, 10.0, 100.0}) {
      CAPTURE(m);
      CAPTURE(n);
      CAPTURE(kappa);
      const auto c = ref::conditioned(m, n, kappa, unsigned(m * 17 + n));
      const Eigen::VectorXd s = ns_singular_values<st::PolarExpressSchedule, float>(c.G, 5);
      CHECK(s.minCoeff() >= 0.86);
      CHECK(s.maxCoeff() <= 1.14);
    }
  }
}

TEST_CASE("Polar Express schedule, 8 steps in double: converges to the SVD polar factor") {
  for (auto [m, n] : kShapes) {
    CAPTURE(m);
    CAPTURE(n);
    for (double kappa : {1.0, 100.0}) {
      const auto c = ref::conditioned(m, n, kappa, 99);
      Md O;
      const Eigen::VectorXd s = ns_singular_values<st::PolarExpressSchedule, double>(c.G, 8, &O);
      CHECK((s.array() - 1.0).abs().maxCoeff() < 1e-9);
      CHECK((O - c.polar).norm() < 1e-8 * c.polar.norm());
    }
    const auto c = ref::conditioned(m, n, 1000.0, 5);
    const Eigen::VectorXd s = ns_singular_values<st::PolarExpressSchedule, double>(c.G, 8);
    CHECK((s.array() - 1.0).abs().maxCoeff() < 1e-3);
  }
}

TEST_CASE("Newton-Schulz output shares the SVD's singular vectors") {
  // Each step is an odd polynomial in G, so U and V are preserved exactly:
  // U^T NS(G) V must be diagonal up to round-off.
  const auto c = ref::conditioned(48, 96, 10.0, 4);
  Eigen::JacobiSVD<Md> svd(c.G, Eigen::ComputeThinU | Eigen::ComputeThinV);
  Md O;
  ns_singular_values<st::QuinticSchedule, double>(c.G, 5, &O);
  Md core = svd.matrixU().transpose() * O * svd.matrixV();
  Md off = core;
  off.diagonal().setZero();
  CHECK(off.norm() < 1e-10 * core.norm());
}

TEST_CASE("Newton-Schulz is scale-invariant and maps zero to zero") {
  const auto c = ref::conditioned(20, 30, 10.0, 8);
  Md a, b;
  ns_singular_values<st::QuinticSchedule, double>(c.G, 5, &a);
  ns_singular_values<st::QuinticSchedule, double>(Md(1e-12 * c.G), 5, &b);  // a tiny gradient
  CHECK((a - b).norm() < 1e-12 * a.norm());
  Md Z = Md::Zero(4, 6), out = Md::Constant(4, 6, 3.0);
  st::Spectral::dualize(Z, out);
  CHECK(out.isZero(0.0));
}

TEST_CASE("float Newton-Schulz: a gradient far below or above 1 gives the same direction") {
  // Entries near 2^-100 square to below float's range (and near 2^100 above it): a norm summed
  // from plain squares reads 0 (or inf), which zeroed the whole update. Powers of two scale a
  // float exactly, so the output must be the same to rounding of the norm.
  const auto c = ref::conditioned(20, 30, 10.0, 8);
  Md a, b;
  ns_singular_values<st::QuinticSchedule, float>(c.G, 5, &a);
  for (double scale : {std::ldexp(1.0, -100), std::ldexp(1.0, 100)}) {
    CAPTURE(scale);
    ns_singular_values<st::QuinticSchedule, float>(Md(scale * c.G), 5, &b);
    CHECK((a - b).norm() <= 1e-6 * a.norm());
  }
}

TEST_CASE("Spectral<NewtonSchulz> near the exact polar factor; 0 steps is the normalized input") {
  const auto c = ref::conditioned(40, 40, 100.0, 6);
  Md exact(40, 40), approx(40, 40), pe(40, 40);
  st::SpectralExact::dualize(c.G, exact);
  CHECK((exact - c.polar).norm() < 1e-10 * c.polar.norm());
  st::Spectral::dualize(c.G, approx);
  st::SpectralPolarExpress::dualize(c.G, pe);
  // Measured relative Frobenius errors: quintic ~0.19, Polar Express ~0.085 at kappa = 100.
  CHECK((approx - exact).norm() < 0.25 * exact.norm());
  CHECK((pe - exact).norm() < 0.12 * exact.norm());
  Md zero_steps(40, 40);
  st::NewtonSchulzWorkspace<double> ws;
  st::newton_schulz<st::QuinticSchedule>(c.G, zero_steps, 0, ws);
  CHECK((zero_steps - c.G / c.G.norm()).norm() < 1e-14);
}

TEST_CASE("exact polar of a rank-deficient matrix: <G, D> = nuclear norm, ||D||_2 = 1") {
  Md G = Md::Zero(5, 4);
  G.col(0) << 1, 2, 3, 4, 5;
  G.col(2) = 2 * G.col(0);  // rank 1
  Md D(5, 4);
  st::SpectralExact::dualize(G, D);
  const auto s = ref::singular_values_eig(G);
  double smax = 0;
  for (double v : s) smax = std::max(smax, v);
  CHECK(G.cwiseProduct(D).sum() == doctest::Approx(smax).epsilon(1e-10));  // nuclear = s_max
  double dmax = 0;
  for (double v : ref::singular_values_eig(D)) dmax = std::max(dmax, v);
  CHECK(dmax == doctest::Approx(1.0).epsilon(1e-10));
}

TEST_CASE("the copies in and out of the wide path: the same bits as a plain loop, either storage order") {
  // detail::assign_scaled / assign_cast copy G into an engine's iterate and the iterate out; when
  // the storage orders differ they go tile by tile. Either way each entry must be exactly
  // (scale * src(i, j)) cast, at (i, j), on and off the 32-entry tiles.
  using McF = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic>;
  using MrF = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
  std::mt19937 rng(6);
  for (auto [m, n] : kTileSeamShapes) {
    CAPTURE(m);
    CAPTURE(n);
    const MrD src = gaussian_rows(m, n, rng);
    const double scale = 1.0 / 3.0;
    McF col = McF::Constant(m, n, -1.f);  // row-major into column-major: tiles
    MrF row = MrF::Constant(m, n, -1.f);  // the same order: one assignment
    st::detail::assign_scaled(col, src, scale);
    st::detail::assign_scaled(row, src, scale);
    MrF back = MrF::Constant(m, n, -1.f);  // column-major back into row-major: tiles
    st::detail::assign_cast(back, col);
    McF col2 = McF::Constant(m, n, -1.f);
    st::detail::assign_cast(col2, src);
    bool same = true;
    for (int i = 0; i < m; ++i)
      for (int j = 0; j < n; ++j) {
        const float want = float(src(i, j) * scale);
        same = same && col(i, j) == want && row(i, j) == want && back(i, j) == want && col2(i, j) == float(src(i, j));
      }
    CHECK(same);
  }
}

TEST_CASE("the tiled transposed copy of the tall path: the same bits as a plain loop, at every tile seam") {
  // detail::assign_transposed is how every engine turns a tall G into its wide iterate and back;
  // it must be exactly (scale * src(i, j)) cast, placed at (j, i), for shapes on and off the
  // 32-entry tiles, for a strided destination, and for a scale that rounds.
  using MrF = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
  std::mt19937 rng(5);
  for (auto [m, n] : kTileSeamShapes) {
    CAPTURE(m);
    CAPTURE(n);
    const MrD src = gaussian_rows(m, n, rng);
    const double scale = 1.0 / 3.0;
    MrF dst = MrF::Constant(n, m, -1.f);
    st::detail::assign_transposed(dst, src, scale);
    // A column-major destination with padding between columns: the same values, nothing past them.
    std::vector<float> padded(std::size_t((n + 3) * m) + 1, 7.f);
    Eigen::Map<Eigen::MatrixXf, 0, Eigen::OuterStride<>> strided(padded.data(), n, m, Eigen::OuterStride<>(n + 3));
    st::detail::assign_transposed(strided, src.cast<float>());
    bool same = true, strided_same = true;
    for (int i = 0; i < m; ++i)
      for (int j = 0; j < n; ++j) {
        same = same && dst(j, i) == float(src(i, j) * scale);
        strided_same = strided_same && strided(j, i) == float(src(i, j));
      }
    CHECK(same);
    CHECK(strided_same);
    CHECK(padded.back() == 7.f);
  }
}
