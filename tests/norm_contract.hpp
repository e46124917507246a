// tests/norm_contract.hpp -- the norm-policy contract, shared by the test files.
// Contract tests of every norm policy against independent references (tests/reference.hpp):
//   value and dual norm vs closed forms written as plain loops (and vs brute force on small
//   sizes), ||D(G)|| = 1 (0 for zero input), <G, D(G)> = ||G||_*, optimality of D against random
//   feasible directions, identities (1) and (2) of the design note, Map inputs, errors.
#pragma once

#include <doctest/doctest.h>

#include <steepest/steepest.hpp>

#include <functional>
#include <random>
#include <string>
#include <type_traits>
#include <vector>

#include "frobenius_norm.hpp"
#include "reference.hpp"

namespace st = steepest;
using Md = Eigen::MatrixXd;

static_assert(st::is_norm_policy_v<FrobeniusNorm>);
static_assert(!st::is_norm_policy_v<int>);

// ---- what the reference knows about each policy -----------------------------------------
// The reference value/dual of a policy from its (p, q) facts via plain-loop closed forms; vector
// policies act on the reshaped N x 1 matrix; mean-normalized ones apply (1) with an independently
// written s(m, n) = n^{-1/p} m^{1/q}.
template <class N>
struct Ref {
  static Md as_operator(const Md& W) { return W; }
  static double s(const Md& W) { (void)W; return 1.0; }
  static double value(const Md& W) { return ref::op_norm(W, N::p, N::q); }
  static double dual(const Md& G) { return ref::op_dual(G, N::p, N::q); }
};
template <int Q>
struct Ref<st::VectorNorm<Q>> {
  static Md as_operator(const Md& W) { return Eigen::Map<const Md>(W.data(), W.size(), 1); }
  static double s(const Md&) { return 1.0; }
  static double value(const Md& W) { return ref::op_norm(as_operator(W), 1.0, st::VectorNorm<Q>::q); }
  static double dual(const Md& G) { return ref::op_dual(as_operator(G), 1.0, st::VectorNorm<Q>::q); }
};
template <>
struct Ref<FrobeniusNorm> {
  static double s(const Md&) { return 1.0; }
  static double value(const Md& W) { return std::sqrt(W.cwiseAbs2().sum()); }
  static double dual(const Md& G) { return value(G); }
};
template <class N>
struct Ref<st::MeanNormalized<N>> {
  static double s(const Md& W) {
    const Md A = Ref<N>::as_operator(W);
    if (A.size() == 0) return 0.0;
    const double m = double(A.rows()), n = double(A.cols());
    const double qpart = N::q == ref::kInf ? 1.0 : std::pow(m, 1.0 / N::q);
    return std::pow(n, -1.0 / N::p) * qpart;
  }
  static Md as_operator(const Md& W) { return Ref<N>::as_operator(W); }
  static double value(const Md& W) { return W.size() ? Ref<N>::value(W) / s(W) : 0.0; }
  static double dual(const Md& G) { return s(G) * Ref<N>::dual(G); }
};

// ---- shapes ------------------------------------------------------------------------------
struct Shape {
  std::string name;
  std::function<Md(std::mt19937&)> make;
};

inline Md gaussian(Eigen::Index m, Eigen::Index n, std::mt19937& rng) {
  std::normal_distribution<double> nd;
  Md A(m, n);
  for (Eigen::Index i = 0; i < A.size(); ++i) A.data()[i] = nd(rng);
  return A;
}

inline std::vector<Shape> shapes() {
  return {
      {"1x1", [](std::mt19937&) { return Md::Constant(1, 1, -0.7); }},
      {"1x5", [](std::mt19937& r) { return gaussian(1, 5, r); }},
      {"5x1", [](std::mt19937& r) { return gaussian(5, 1, r); }},
      {"tall 7x3", [](std::mt19937& r) { return gaussian(7, 3, r); }},
      {"wide 3x7", [](std::mt19937& r) { return gaussian(3, 7, r); }},
      {"square 6x6", [](std::mt19937& r) { return gaussian(6, 6, r); }},
      {"zero 4x5", [](std::mt19937&) { return Md::Zero(4, 5); }},
      {"zero row and column 5x4",
       [](std::mt19937& r) {
         Md A = gaussian(5, 4, r);
         A.row(2).setZero();
         A.col(1).setZero();
         return A;
       }},
      {"scaled tiny 4x3", [](std::mt19937& r) { return Md(1e-15 * gaussian(4, 3, r)); }},
  };
}

template <class N_, class S_>
struct Case {
  using N = N_;
  using S = S_;
};

// Relative tolerances. The spectral reference takes singular values as sqrt(eig(G^T G)), which
// resolves a zero singular value only to ~sqrt(eps) s_max: hence the looser double tolerance.
template <class S, class N>
double tol() {
  if (std::is_same_v<S, float>) return 2e-5;
  return (N::p == 2.0 && N::q == 2.0) ? 1e-7 : 1e-9;
}

#define POLICY_CASES(S)                                                                       \
  Case<st::RowNorm<1>, S>, Case<st::RowNorm<2>, S>, Case<st::RowNorm<3>, S>,                   \
      Case<st::RowNorm<st::Inf>, S>, Case<st::ColNorm<1>, S>, Case<st::ColNorm<2>, S>,         \
      Case<st::ColNorm<3>, S>, Case<st::ColNorm<st::Inf>, S>, Case<st::SpectralExact, S>,      \
      Case<st::VectorNorm<2>, S>, Case<st::VectorNorm<st::Inf>, S>, Case<st::VectorNorm<3>, S>, \
      Case<st::MeanNormalized<st::RowNorm<1>>, S>, Case<st::MeanNormalized<st::RowNorm<2>>, S>, \
      Case<st::MeanNormalized<st::RowNorm<3>>, S>,                                             \
      Case<st::MeanNormalized<st::RowNorm<st::Inf>>, S>,                                       \
      Case<st::MeanNormalized<st::ColNorm<1>>, S>, Case<st::MeanNormalized<st::ColNorm<2>>, S>, \
      Case<st::MeanNormalized<st::ColNorm<3>>, S>,                                             \
      Case<st::MeanNormalized<st::SpectralExact>, S>, Case<st::VectorRMS, S>,                  \
      Case<st::MeanNormalized<st::VectorNorm<st::Inf>>, S>, Case<FrobeniusNorm, S>

template <class C>
void check_norm_contract() {
  using N = typename C::N;
  using S = typename C::S;
  using Ms = Eigen::Matrix<S, Eigen::Dynamic, Eigen::Dynamic>;
  static_assert(st::is_norm_policy_v<N>);
  const double eps = tol<S, N>();
  std::mt19937 rng(12345);
  for (const Shape& shape : shapes()) {
    CAPTURE(shape.name);
    CAPTURE(N::name());
    const Ms Gs = shape.make(rng).template cast<S>();
    const Md G = Gs.template cast<double>();  // the reference sees exactly what the library sees
    Ms D(Gs.rows(), Gs.cols());
    D.setConstant(S(42));  // poison: every entry must be written
    N::dualize(Gs, D);
    const Md Dd = D.template cast<double>();
    REQUIRE(Dd.allFinite());

    const double gscale = std::max(G.cwiseAbs().maxCoeff(), 1e-300);
    const double ref_dual = Ref<N>::dual(G);
    const double ref_val = Ref<N>::value(G);
    CHECK(N::value(Gs) == doctest::Approx(ref_val).epsilon(eps).scale(gscale));
    CHECK(N::dual(Gs) == doctest::Approx(ref_dual).epsilon(eps).scale(gscale));
    CHECK(N::scale(Gs.rows(), Gs.cols()) == doctest::Approx(Ref<N>::s(G)).epsilon(1e-12));

    if (G.isZero(0.0)) {
      CHECK(Dd.isZero(0.0));
      CHECK(N::dual(Gs) == 0.0);
      continue;
    }
    // ||D|| = 1 in the policy's own norm, measured by the reference.
    CHECK(Ref<N>::value(Dd) == doctest::Approx(1.0).epsilon(10 * eps));
    // <G, D> = ||G||_*
    const double inner = G.cwiseProduct(Dd).sum();
    CHECK(inner == doctest::Approx(ref_dual).epsilon(10 * eps));
    // Optimality: no feasible direction does better (random directions and perturbations of D).
    for (int t = 0; t < 200; ++t) {
      Md R = gaussian(G.rows(), G.cols(), rng);
      if (t % 2) R = Dd + 0.05 * R;
      const double nr = Ref<N>::value(R);
      if (!(nr > 0.0)) continue;
      const double cand = G.cwiseProduct(R / nr).sum();
      CHECK(cand <= inner + 10 * eps * std::abs(inner) + 1e-300);
    }
  }
}
