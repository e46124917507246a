// Newton-Schulz on OpenBLAS (polar/openblas.hpp), SYRK and plain-GEMM forms, against independent
// references: the exact polar factor from a double SVD (singular-value bands, singular vectors,
// <G, D(G)> ~ ||G||_nuclear), a double-precision Newton-Schulz written here as plain matrix
// algebra (the same polynomial, so the engines must agree with it to float rounding), and the
// edge cases of the Eigen path (zero, NaN, empty, 1-wide, tiny and huge inputs).
#include <doctest/doctest.h>

#include <steepest/polar/openblas.hpp>
#include <steepest/steepest.hpp>

#include <random>

#include "muon_engine_check.hpp"
#include "reference.hpp"

namespace st = steepest;
using Md = Eigen::MatrixXd;
using Mf = Eigen::MatrixXf;

namespace {

template <class Engine, class Schedule, class M>
M run_engine(const M& G, int steps) {
  M O(G.rows(), G.cols());
  typename Engine::template Workspace<typename M::Scalar> ws;
  Engine::template run<Schedule>(G, O, steps, ws);
  return O;
}

// Newton-Schulz in double, written from the formula: X0 = G / (safety ||G||_F) on the wide
// orientation; X <- a X + (b A + c A A) X with A = X X^T. No engine code involved.
template <class Schedule>
Md ns_reference(const Md& G, int steps) {
  const bool tall = G.rows() > G.cols();
  Md X = tall ? Md(G.transpose()) : G;
  X /= Schedule::normalization_safety * G.norm();
  for (int s = 0; s < steps; ++s) {
    const st::PolarCoefficients c = Schedule::at(s, steps);
    const Md A = X * X.transpose();
    const Md B = c.b * A + c.c * A * A;
    X = (c.a * X + B * X).eval();
  }
  return tall ? Md(X.transpose()) : X;
}

Mf to_float(const Md& M) { return M.cast<float>(); }
Md to_double(const Mf& M) { return M.cast<double>(); }
Eigen::VectorXd svals(const Md& M) { return Eigen::JacobiSVD<Md>(M).singularValues(); }

const std::pair<int, int> kShapes[] = {{64, 64}, {32, 128}, {200, 50}, {1, 9}, {9, 1}, {96, 300}, {130, 130}};

using Syrk = st::OpenBlas<st::GramProduct::Syrk>;
using Gemm = st::OpenBlas<st::GramProduct::Gemm>;

}  // namespace

TEST_CASE_TEMPLATE("OpenBLAS Newton-Schulz: the double-precision polynomial to float rounding", Engine, Syrk, Gemm) {
  for (auto [m, n] : kShapes) {
    for (double kappa : {1.0, 10.0, 100.0}) {
      CAPTURE(m);
      CAPTURE(n);
      CAPTURE(kappa);
      const auto c = ref::conditioned(m, n, kappa, unsigned(m * 31 + n));
      const Md R = ns_reference<st::QuinticSchedule>(c.G, 5);
      // float: the plain Eigen path measures the same distance to the double polynomial, so the
      // SYRK form costs no accuracy. At kappa = 1 every singular value rides the quintic's
      // steep slope together and float rounding is amplified most (both engines alike).
      const Md Of = to_double(run_engine<Engine, st::QuinticSchedule>(to_float(c.G), 5));
      const Md Oe = to_double(run_engine<st::EigenProducts, st::QuinticSchedule>(to_float(c.G), 5));
      const double ef = (Of - R).norm() / R.norm(), ee = (Oe - R).norm() / R.norm();
      CHECK(ef <= 2e-4);
      CHECK(ef <= 4.0 * ee + 1e-6);
      // double: the same polynomial to double rounding.
      const Md Od = run_engine<Engine, st::QuinticSchedule>(c.G, 5);
      CHECK((Od - R).norm() <= 1e-11 * R.norm());
      // Against the exact polar factor: the fp32 band of tests/test_newton_schulz.cpp.
      const Eigen::VectorXd s = svals(Of);
      CHECK(s.minCoeff() >= 0.67);
      CHECK(s.maxCoeff() <= 1.22);
      const double inner = (c.G.array() * Of.array()).sum(), nuclear = svals(c.G).sum();
      CHECK(inner >= 0.67 * nuclear);
      CHECK(inner <= 1.22 * nuclear);
      if (kappa > 1.0) {  // U^T O V diagonal: G's singular vectors kept
        Eigen::JacobiSVD<Md> svd(c.G, Eigen::ComputeThinU | Eigen::ComputeThinV);
        Md core = svd.matrixU().transpose() * Of * svd.matrixV();
        Md off = core;
        off.diagonal().setZero();
        CHECK(off.norm() <= 1e-4 * core.norm());
      }
    }
  }
}

TEST_CASE_TEMPLATE("OpenBLAS Polar Express x5: near the exact polar factor (SVD)", Engine, Syrk, Gemm) {
  for (auto [m, n] : kShapes) {
    CAPTURE(m);
    CAPTURE(n);
    const auto c = ref::conditioned(m, n, 10.0, unsigned(m * 17 + n));
    const Md O = to_double(run_engine<Engine, st::PolarExpressSchedule>(to_float(c.G), 5));
    const Eigen::VectorXd s = svals(O);
    CHECK(s.minCoeff() >= 0.86);  // the fp32 band [0.87, 1.13]
    CHECK(s.maxCoeff() <= 1.14);
    const Md R = ns_reference<st::PolarExpressSchedule>(c.G, 5);
    CHECK((O - R).norm() <= 2e-4 * R.norm());
  }
}

TEST_CASE_TEMPLATE("OpenBLAS Newton-Schulz keeps the Eigen path's edge cases", Engine, Syrk, Gemm) {
  typename Engine::template Workspace<float> ws;
  SUBCASE("zero maps to zero, NaN to NaN, empty is a no-op, steps = 0 is the normalization") {
    Mf Z = Mf::Zero(4, 6), out = Mf::Constant(4, 6, 3.f);
    Engine::template run<st::QuinticSchedule>(Z, out, 5, ws);
    CHECK(out.isZero(0.f));
    Mf N = Mf::Ones(3, 5);
    N(1, 2) = std::numeric_limits<float>::quiet_NaN();
    Mf outn(3, 5);
    Engine::template run<st::QuinticSchedule>(N, outn, 5, ws);
    CHECK(std::isnan(outn(1, 2)));  // G * 0: NaN where G is NaN, 0 elsewhere
    outn(1, 2) = 0.f;
    CHECK(outn.isZero(0.f));
    Mf E(0, 7), oute(0, 7);
    Engine::template run<st::QuinticSchedule>(E, oute, 5, ws);
    CHECK(oute.size() == 0);
    Mf G = Mf::Constant(2, 2, 1.f), out0(2, 2);  // ||G||_F = 2
    Engine::template run<st::QuinticSchedule>(G, out0, 0, ws);
    CHECK((out0.array() - float(0.5 / st::QuinticSchedule::normalization_safety)).abs().maxCoeff() <= 1e-7f);
    CHECK_THROWS_AS(Engine::template run<st::QuinticSchedule>(G, out0, -1, ws), std::invalid_argument);
  }
  SUBCASE("scale-invariant: a tiny or a huge float gradient gives the same direction") {
    const auto c = ref::conditioned(20, 30, 10.0, 8);
    const Mf G = to_float(c.G);
    const Mf a = run_engine<Engine, st::QuinticSchedule>(G, 5);
    for (float scale : {std::ldexp(1.f, -100), std::ldexp(1.f, 100)}) {
      CAPTURE(scale);
      const Mf b = run_engine<Engine, st::QuinticSchedule>(Mf(scale * G), 5);
      CHECK((a - b).norm() <= 1e-6f * a.norm());
    }
  }
  SUBCASE("shape mismatch is refused before anything is written") {
    Mf G = Mf::Ones(3, 4), out = Mf::Constant(4, 3, 7.f);
    CHECK_THROWS_AS(Engine::template run<st::QuinticSchedule>(G, out, 5, ws), st::shape_error);
    CHECK((out.array() == 7.f).all());
  }
  SUBCASE("one workspace serves shapes in turn, output may alias the input") {
    const auto c1 = ref::conditioned(40, 24, 10.0, 1), c2 = ref::conditioned(24, 40, 10.0, 2);
    for (const Md* G : {&c1.G, &c2.G, &c1.G}) {
      Mf O = to_float(*G);
      Engine::template run<st::QuinticSchedule>(O, O, 5, ws);
      const Md R = ns_reference<st::QuinticSchedule>(*G, 5);
      CHECK((to_double(O) - R).norm() <= 2e-4 * R.norm());
    }
  }
}

TEST_CASE("Muon on OpenBLAS: the geometry says so, the step is the Eigen Muon step to float rounding") {
  const auto r = muon_engine_check::compare_with_eigen_muon<st::SpectralOpenBlas>();
  CHECK(r.geometry == "2->2 (quinticx5/openblas-syrk)");
  CHECK(r.moved > 0);
  CHECK(r.diff <= 1e-4 * r.moved);
  CHECK(r.bias_equal);
}
