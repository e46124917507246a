// Newton-Schulz with bf16 products on oneDNN (polar/onednn.hpp), against independent references:
// the exact polar factor from a double SVD (singular-value bands, the identity
// <G, D(G)> ~ ||G||_nuclear), the fp32 Eigen iteration (how far bf16 products move the result),
// and the edge cases of the fp32 path (zero, empty, 1-wide, tiny inputs). Bands measured on these
// shapes and recorded in docs/GEOMETRY.md; asserted with a margin of 0.01.
#include <doctest/doctest.h>

#include "skip.hpp"

#include <steepest/polar/onednn.hpp>
#include <steepest/steepest.hpp>

#include <Eigen/Eigenvalues>
#include <Eigen/QR>

#include <cmath>
#include <cstdint>
#include <memory>
#include <random>
#include <vector>

#if defined(_OPENMP)
#include <omp.h>
#endif

#include "muon_engine_check.hpp"
#include "reference.hpp"

namespace st = steepest;
using Md = Eigen::MatrixXd;
using Mf = Eigen::MatrixXf;

namespace {

// convolution_from_k = 0 runs the last product as the 1x1 convolution at every size (by default
// only from k = 1536, too large for these tests' references).
template <class Schedule>
Md bf16_ns(const Md& G, int steps, Eigen::Index convolution_from_k = st::OneDnnNewtonSchulzWorkspace().convolution_from_k) {
  const Mf Gf = G.cast<float>();
  Mf O(G.rows(), G.cols());
  st::OneDnnNewtonSchulzWorkspace ws;
  ws.convolution_from_k = convolution_from_k;
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
// a std::runtime_error before anything is written, which this checks; the test cases that need
// bf16 products (named "bf16 ...", their own CTest test) then end the program as skipped.
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
void require_bf16() {
  if (!bf16_available()) test_skip::skip_program("oneDNN bf16 matmul unavailable on this CPU");
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
  require_bf16();
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
  require_bf16();
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

TEST_CASE("bf16 Newton-Schulz on wide iterates: both symmetric products on their block triangles") {
  // From k = min(m, n) >= 768 with l >= 2k the Gram product and the square are formed as 10
  // block products each, the 6 lower blocks written by the passes that round A and B (blocks of
  // 200 rows here, and 198 / 196 at 790: uneven). The result must stay in the same band as the
  // full products, and near the fp32 Eigen iteration.
  require_bf16();
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

TEST_CASE("bf16 Newton-Schulz with the last product as a 1x1 convolution") {
  // X <- Bb Xb + a X as oneDNN's convolution, its weights Xb^T reordered into the kernel's
  // blocked layout each step (the default from k = 1536; forced here on small, odd, tall, blocked
  // and 1-wide shapes). Judged as the matmul path is: near the fp32 Eigen iteration and (Polar
  // Express) the polar factor. Against the matmul path (the same bf16 inputs, fp32 sums): the
  // same bits on this machine's AMX kernels (measured 0); checked at 1e-2 of the norm, as another
  // kernel may sum in another order and flip a few bf16 roundings.
  require_bf16();
  std::vector<std::pair<int, int>> shapes(std::begin(kShapes), std::end(kShapes));
  shapes.insert(shapes.end(), {{790, 1600}, {1030, 1100}, {1100, 1030}});
  for (auto [m, n] : shapes) {
    CAPTURE(m);
    CAPTURE(n);
    const auto c = orthogonal_conditioned(m, n, 10.0, unsigned(3 * m + n));
    const Md O = bf16_ns<st::QuinticSchedule>(c.G, 5, 0);
    // Singular values in the quintic's bf16 band, from the k x k Gram matrix of O.
    const Md gram = m <= n ? Md(O * O.transpose()) : Md(O.transpose() * O);
    const Eigen::VectorXd ev = Eigen::SelfAdjointEigenSolver<Md>(gram, Eigen::EigenvaluesOnly).eigenvalues();
    CHECK(std::sqrt(ev.minCoeff()) >= 0.65);
    CHECK(std::sqrt(ev.maxCoeff()) <= 1.23);
    // Near the fp32 iteration, except at k = 1 (one singular value: where it lands after 5 steps
    // in the band is sensitive to rounding; the quintic test above says why).
    const Md F = fp32_ns<st::QuinticSchedule>(c.G, 5);
    if (std::min(m, n) > 1) CHECK((O - F).norm() <= 0.03 * F.norm());
    const Md M = bf16_ns<st::QuinticSchedule>(c.G, 5, 1 << 30);
    CHECK((O - M).norm() <= 1e-2 * M.norm());
    MESSAGE("convolution against matmul: " << (O - M).norm() / M.norm());
    const Md P = bf16_ns<st::PolarExpressSchedule>(c.G, 5, 0);
    CHECK((P - c.polar).norm() <= 0.15 * c.polar.norm());
  }
}

TEST_CASE("bf16 workspace switches between the convolution and the matmul for one shape") {
  // prepare() rebuilds the primitives when convolution_from_k moves across k, and a copy keeps
  // the setting: the same result either way, and the same as a fresh workspace's.
  require_bf16();
  const auto c = orthogonal_conditioned(96, 300, 10.0, 7u);
  const Mf G = c.G.cast<float>();
  Mf O1(96, 300), O2(96, 300), O3(96, 300);
  st::OneDnnNewtonSchulzWorkspace ws;
  ws.convolution_from_k = 0;
  st::OneDnnBf16::run<st::QuinticSchedule>(G, O1, 5, ws);
  CHECK(ws.apply_conv);
  ws.convolution_from_k = 1 << 30;
  st::OneDnnBf16::run<st::QuinticSchedule>(G, O2, 5, ws);
  CHECK_FALSE(ws.apply_conv);
  CHECK(O2.isApprox(Mf(bf16_ns<st::QuinticSchedule>(c.G, 5, 1 << 30).cast<float>()), 1e-6f));
  ws.convolution_from_k = 0;
  const st::OneDnnNewtonSchulzWorkspace copy = ws;
  CHECK(copy.convolution_from_k == 0);
  st::OneDnnNewtonSchulzWorkspace w2 = copy;
  st::OneDnnBf16::run<st::QuinticSchedule>(G, O3, 5, w2);
  CHECK(w2.apply_conv);
  CHECK(O3 == O1);
}

TEST_CASE("symmetric_blocks_to_bf16: upper blocks rounded to nearest even, mirrored below") {
  // Against a plain loop: entry (i, j) of the result comes from (min, max) of the block pair,
  // i.e. from the upper block triangle only (the lower blocks of P and Q hold poison). alpha and
  // beta are powers of two, so alpha p + beta q is one rounding whether or not the compiler
  // fuses it, and Eigen::bfloat16's conversion (round to nearest even) is the reference.
  for (int threads : {1, 2}) {
    CAPTURE(threads);
#if defined(_OPENMP)
    omp_set_num_threads(threads);
#endif
    const Eigen::Index k = 70;
    const std::vector<Eigen::Index> cut = {0, 18, 36, 54, 70};  // uneven, not packet multiples
    std::mt19937 rng(5);
    std::normal_distribution<float> nd;
    st::RowMatrix<float> P(k, k), Q(k, k);
    for (Eigen::Index i = 0; i < P.size(); ++i) {
      P.data()[i] = nd(rng);
      Q.data()[i] = nd(rng);
    }
    auto block = [&](Eigen::Index i) {
      Eigen::Index b = 0;
      while (cut[std::size_t(b) + 1] <= i) ++b;
      return b;
    };
    for (Eigen::Index i = 0; i < k; ++i)
      for (Eigen::Index j = 0; j < k; ++j)
        if (block(i) > block(j)) P(i, j) = Q(i, j) = std::nanf("");  // never read
    P(3, 5) = 1.0f + 1.0f / 256;   // halfway between two bf16: ties to even (1.0)
    P(3, 6) = 1.0f + 3.0f / 256;   // halfway: ties to even (1 + 4/256)
    Q(3, 5) = Q(3, 6) = 0.0f;
    std::vector<std::uint16_t> out(std::size_t(k * k), 0xFFFF);
    st::detail::symmetric_blocks_to_bf16(P.data(), 0.5f, Q.data(), -2.0f, k, cut, out.data());
    int wrong = 0;
    for (Eigen::Index i = 0; i < k; ++i)
      for (Eigen::Index j = 0; j < k; ++j) {
        const bool upper = block(i) <= block(j);
        const Eigen::Index r = upper ? i : j, c = upper ? j : i;
        const float v = 0.5f * P(r, c) + -2.0f * Q(r, c);
        const std::uint16_t want = Eigen::numext::bit_cast<std::uint16_t>(Eigen::bfloat16(v));
        wrong += out[std::size_t(i * k + j)] != want;
      }
    CHECK(wrong == 0);
    CHECK(out[std::size_t(3 * k + 5)] == 0x3F00);  // 0.5 * (1 + 1/256) = 0.5 + 1/512: ties to 0.5
    CHECK(out[std::size_t(3 * k + 6)] == 0x3F02);  // 0.5 + 3/512: ties up to 0.5 + 4/512
    // Without Q: alpha P alone.
    st::detail::symmetric_blocks_to_bf16(P.data(), 1.0f, nullptr, 0.0f, k, cut, out.data());
    CHECK(out[std::size_t(69 * k + 1)] == Eigen::numext::bit_cast<std::uint16_t>(Eigen::bfloat16(P(1, 69))));
  }
}

TEST_CASE("bf16 Newton-Schulz on square-ish iterates: both symmetric products on their block triangles") {
  // From k >= 1024 (any l) the Gram product and the square are formed as 10 block products each,
  // and the bf16 rounding of A and of B = c C + b A run in one pass over the upper blocks each
  // (blocks of 258 and 256 rows here: uneven, not a multiple of the tile or the packet). The
  // result must stay near the fp32 Eigen iteration and (Polar Express) the polar factor, as on
  // smaller shapes; tall too (the transposed orientation).
  require_bf16();
  for (auto [m, n] : {std::pair<int, int>{1030, 1100}, {1100, 1030}}) {
    CAPTURE(m);
    CAPTURE(n);
    const auto c = orthogonal_conditioned(m, n, 10.0, unsigned(m + 2 * n));
    const Md O = bf16_ns<st::QuinticSchedule>(c.G, 5);
    const Md F = fp32_ns<st::QuinticSchedule>(c.G, 5);
    CHECK((O - F).norm() <= 0.03 * F.norm());
    const Md P = bf16_ns<st::PolarExpressSchedule>(c.G, 5);
    CHECK((P - c.polar).norm() <= 0.15 * c.polar.norm());
  }
}

TEST_CASE("bf16 Newton-Schulz keeps the fp32 path's edge cases") {
  require_bf16();
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

TEST_CASE("bf16 products in Muon: the geometry says so, the step is near the fp32 Muon step") {
  require_bf16();
  const auto r = muon_engine_check::compare_with_eigen_muon<st::SpectralBf16>();
  CHECK(r.geometry == "2->2 (quinticx5/onednn-bf16)");
  CHECK(r.moved > 0);
  CHECK(r.diff <= 0.03 * r.moved);  // the steps differ by bf16's rounding only
  CHECK(r.bias_equal);              // AdamW's route does not touch Newton-Schulz
}
