// Newton-Schulz in the Gram form (polar/gram_newton_schulz.hpp) against the plain iteration's
// polynomial evaluated in double (the reference it must reproduce), the plain fp32 iteration's
// own distance to it, and the exact polar factor's band (tests/test_newton_schulz.cpp).
#include <doctest/doctest.h>

#include <steepest/polar/gram_newton_schulz.hpp>
#include <steepest/steepest.hpp>

#include "reference.hpp"

#include <algorithm>
#include <cmath>
#include <string>

namespace st = steepest;
using Md = Eigen::MatrixXd;
using Mf = Eigen::MatrixXf;

namespace {

/// The plain iteration, written out in double: the polynomial both forms evaluate.
Md plain_polynomial(const Md& G, int steps) {
  const bool tall = G.rows() > G.cols();
  Md X = (tall ? Md(G.transpose()) : G) / G.norm();
  for (int s = 0; s < steps; ++s) {
    const Md A = X * X.transpose();
    const Md B = 2.0315 * A * A - 4.7750 * A;
    X = 3.4445 * X + B * X;
  }
  return tall ? Md(X.transpose()) : X;
}

template <class Products, class M>
M run(const M& G, int steps) {
  M out(G.rows(), G.cols());
  typename Products::template Workspace<typename M::Scalar> ws;
  Products::template run<st::QuinticSchedule>(G, out, steps, ws);
  return out;
}

/// G = U diag(s) V^T with orthonormal U, V from `seed` and the given singular values.
Md with_spectrum(int m, int n, const Eigen::VectorXd& s, unsigned seed) {
  const auto c = ref::conditioned(m, n, 1.0, seed);  // its U, V via an SVD of a random G
  Eigen::JacobiSVD<Md> svd(c.G, Eigen::ComputeThinU | Eigen::ComputeThinV);
  return svd.matrixU() * s.asDiagonal() * svd.matrixV().transpose();
}

}  // namespace

TEST_CASE("Gram Newton-Schulz with a restart: the plain polynomial to fp32 rounding, on structured spectra") {
  double worst_gram = 0, worst_plain = 0;
  for (auto [m, n] : {std::pair{48, 192}, std::pair{192, 48}, std::pair{64, 64}, std::pair{1, 9}, std::pair{9, 1}}) {
    const int k = std::min(m, n);
    Eigen::VectorXd idx = Eigen::VectorXd::LinSpaced(k, 1.0, double(k));
    const std::pair<const char*, Eigen::VectorXd> spectra[] = {
        {"power 1/i", idx.cwiseInverse()},
        {"power 1/i^2", idx.cwiseInverse().cwiseAbs2()},
        {"rank 4 + 1e-3", idx.unaryExpr([](double i) { return i <= 4 ? 1.0 : 1e-3; })},
        {"geometric 1..1e-4", Eigen::VectorXd::LinSpaced(k, 0.0, -4.0).unaryExpr([](double e) { return std::pow(10.0, e); })}};
    for (const auto& [label, s] : spectra) {
      const std::string name = label;
      CAPTURE(m);
      CAPTURE(n);
      CAPTURE(name);
      const Md G = with_spectrum(m, n, s, unsigned(m * 7 + n));
      const Md R = plain_polynomial(G, 5);
      const Md gram = run<st::GramProducts<>>(Mf(G.cast<float>()), 5).cast<double>();
      const Md plain = run<st::EigenProducts>(Mf(G.cast<float>()), 5).cast<double>();
      const double eg = (gram - R).norm() / R.norm(), ep = (plain - R).norm() / R.norm();
      worst_gram = std::max(worst_gram, eg);
      worst_plain = std::max(worst_plain, ep);
      CHECK(eg <= 1e-4);
      CHECK(eg <= 8.0 * ep + 2e-6);
      // double: the same polynomial to double rounding, with and without the restart.
      CHECK((run<st::GramProducts<>>(G, 5) - R).norm() <= 1e-11 * R.norm());
      CHECK((run<st::GramProducts<0>>(G, 5) - R).norm() <= 1e-11 * R.norm());
    }
  }
  MESSAGE("fp32 distance to the double polynomial, worst case: Gram form " << worst_gram << ", plain " << worst_plain);
}

TEST_CASE("Gram Newton-Schulz keeps the plain iteration's contract: band, edge cases, steps around the restart") {
  for (double kappa : {1.0, 10.0, 100.0}) {
    const auto c = ref::conditioned(40, 160, kappa, 7);
    const Mf O = run<st::GramProducts<>>(Mf(c.G.cast<float>()), 5);
    const Eigen::VectorXd sv = Eigen::JacobiSVD<Md>(O.cast<double>()).singularValues();
    CHECK(sv.minCoeff() >= 0.67);  // quintic x5's measured band (docs/GEOMETRY.md)
    CHECK(sv.maxCoeff() <= 1.22);
  }
  const Md G = ref::conditioned(12, 30, 10.0, 3).G;
  for (int steps : {0, 1, 2, 3, 4, 6, 8}) {  // before, at and after the restart
    CAPTURE(steps);
    const Md R = plain_polynomial(G, steps);
    CHECK((run<st::GramProducts<>>(G, steps) - R).norm() <= 1e-11 * R.norm());
  }
  CHECK(run<st::GramProducts<>>(Md(Md::Zero(4, 6)), 5).isZero(0));  // zero in, zero out
  CHECK(run<st::GramProducts<>>(Md(0, 5), 5).size() == 0);
  Md out(3, 3);
  st::GramProducts<>::Workspace<double> ws;
  CHECK_THROWS_AS(st::GramProducts<>::run<st::QuinticSchedule>(Md(Md::Ones(3, 4)), out, 5, ws), std::invalid_argument);
  // As a geometry: its name says the engine, and Muon's step through it matches the plain one.
  CHECK(st::SpectralGram::name().find("gram-restart3") != std::string::npos);
  using GramMuon = st::SpectralGram;
  Md D(12, 30), Dp(12, 30);
  st::workspace_t<GramMuon, double> gws;
  GramMuon::dualize(G, D, gws);
  st::workspace_t<st::Spectral, double> pws;
  st::Spectral::dualize(G, Dp, pws);
  CHECK((D - Dp).norm() <= 1e-11 * Dp.norm());
}
