// steepest/norms/spectral.hpp -- the spectral norm `2 -> 2`.
//
//   ||W||_{2->2} = s_max(W)      dual: ||G||_nuclear = sum_i s_i(G)
//   steepest direction: the polar factor U V^T of G = U S V^T (what Muon approximates).
// How the polar factor is computed is a template parameter:
//   ExactSVD                         exact, allocates, O(m n min(m,n)); tests and small matrices
//   NewtonSchulz<Schedule, Steps, Products>
//                                    GEMM-only iteration, approximate (see polar/newton_schulz.hpp);
//                                    Products forms its GEMMs: AutoProducts (default: the planner
//                                    picks among the engines built in, polar/auto_products.hpp),
//                                    or one engine: EigenProducts (the scalar type), GramProducts,
//                                    OneDnnBf16 (bf16 products, fp32 sums), OpenBlas
// value() and dual() are exact; they are for monitoring and tests, not the hot path. value() takes
// s_max by Lanczos on the Gram operator (largest_singular_value), not an SVD: a spectral
// geometry's table holds value(), so every user of Muon compiles it.
#pragma once

#include <Eigen/Eigenvalues>

#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include "../backend/backend.hpp"
#include "../core/config.hpp"
#include "../polar/coefficients.hpp"
#include "../polar/exact.hpp"
#include "../polar/newton_schulz.hpp"

// The default products engine's namespace names the optional engines it was built with (see
// polar/auto_products.hpp, which defines it and is included at the end of this file).
#if defined(STEEPEST_ONEDNN) && defined(STEEPEST_OPENBLAS)
#define STEEPEST_AUTO_PRODUCTS_NAMESPACE auto_products_onednn_openblas
#elif defined(STEEPEST_ONEDNN)
#define STEEPEST_AUTO_PRODUCTS_NAMESPACE auto_products_onednn
#elif defined(STEEPEST_OPENBLAS)
#define STEEPEST_AUTO_PRODUCTS_NAMESPACE auto_products_openblas
#else
#define STEEPEST_AUTO_PRODUCTS_NAMESPACE auto_products_eigen
#endif

namespace steepest {

inline namespace STEEPEST_AUTO_PRODUCTS_NAMESPACE {
struct AutoProducts;
}

/// Polar method tag: exact polar factor by SVD.
struct ExactSVD {
  /// Scratch reused across calls (the workspace argument of dualize).
  template <class Scalar>
  using Workspace = NoWorkspace;
  /// The policy's name, as Geometry::name() reports it.
  static std::string name() { return "svd"; }
};

/// Polar method tag: `Steps` Newton-Schulz steps with the coefficients of `Schedule`, their
/// products formed by `Products` on the host (a CUDA device forms them at its Context's
/// GemmPrecision whatever Products says).
template <class Schedule = QuinticSchedule, int Steps = Schedule::default_steps, class Products = AutoProducts>
struct NewtonSchulz {
  static_assert(Steps >= 0, "steepest::NewtonSchulz: Steps must be >= 0");
  /// Newton-Schulz steps.
  static constexpr int steps = Steps;
  /// The coefficient schedule.
  using schedule = Schedule;
  /// How the products are formed (AutoProducts, EigenProducts, GramProducts, OneDnnBf16, OpenBlas).
  using products = Products;
  /// Scratch reused across calls (the workspace argument of dualize).
  template <class Scalar>
  using Workspace = typename Products::template Workspace<Scalar>;
  /// The policy's name, as Geometry::name() reports it.
  static std::string name() {
    const std::string p = Products::name();
    return std::string(Schedule::name()) + "x" + std::to_string(Steps) + (p.empty() ? "" : "/" + p);
  }
};

/// The `2 -> 2` operator norm. Width-aware scale of its mean-normalized version: sqrt(m / n).
template <class Polar = NewtonSchulz<>>
struct SpectralNorm : KernelPolicy<SpectralNorm<Polar>> {
  /// The operator norm is p -> q: this is p.
  static constexpr double p = 2.0;
  /// The operator norm is p -> q: this is q.
  static constexpr double q = 2.0;
  /// How the polar factor is computed.
  using polar_method = Polar;
  /// Scratch reused across calls (the workspace argument of dualize).
  template <class Scalar>
  using Workspace = typename Polar::template Workspace<Scalar>;

  /// The policy's name, as Geometry::name() reports it.
  static std::string name() { return "2->2 (" + Polar::name() + ")"; }
  /// The plain (not mean-normalized) policy has scale 1.
  static double scale(Index, Index) { return 1.0; }
  /// s(m, n): the factor MeanNormalized applies for an m x n matrix (geometry.md).
  static double mean_normalized_scale(Index m, Index n) {
    if (m == 0 || n == 0) return 0.0;
    return std::sqrt(static_cast<double>(m) / static_cast<double>(n));
  }
};

/// s_max(W) in double, from matrix-vector products only: the largest eigenvalue of the Gram
/// matrix A of W's shorter side (k x k, k = min(m, n); W scaled by max|W_ij| so no square
/// overflows) by Lanczos with full reorthogonalization. The Krylov basis grows until the top
/// Ritz pair's residual beta_j |s_j| is below 1e-15 of its value, or the space is invariant, or
/// it spans all k dimensions; the Ritz values come from Eigen's tridiagonal QR
/// (computeFromTridiagonal). A Ritz value lies within its residual of an eigenvalue, so s_max is
/// exact to ~1e-15 relative, as from an SVD. Why not a dense solver: a spectral geometry's table
/// holds value(), so every file that steps Muon compiles it, and Eigen's symmetric eigensolver
/// (or an SVD) costs several seconds of compile time there; this costs a fraction of one. The
/// start vector is fixed (a deterministic spread of values), so the result is reproducible.
template <class D>
double largest_singular_value(const Eigen::MatrixBase<D>& W) {
  using Vec = Eigen::VectorXd;
  if (W.size() == 0) return 0.0;
  Eigen::MatrixXd Wd = W.template cast<double>();
  const double scale = Wd.cwiseAbs().maxCoeff();
  if (!(scale > 0.0)) return scale == 0.0 ? 0.0 : scale;  // zero, or NaN
  if (!std::isfinite(scale)) return scale;
  Wd /= scale;
  const bool wide = Wd.rows() <= Wd.cols();  // A = W W^T when wide, W^T W when tall
  const Index k = wide ? Wd.rows() : Wd.cols();
  Eigen::MatrixXd Q(k, std::min<Index>(k, 16));  // the Krylov basis, grown as needed
  Vec q(k), w(k), tmp(wide ? Wd.cols() : Wd.rows());
  for (Index i = 0; i < k; ++i) q(i) = 1.0 + 0.5 * std::sin(1.0 + 2.7 * double(i));  // fixed start
  q.normalize();
  std::vector<double> alpha, beta;
  double theta = 0.0, size = 0.0;  // size: the largest alpha so far, a lower bound on ||A||
  Eigen::SelfAdjointEigenSolver<Eigen::MatrixXd> ritz;
  for (Index j = 0; j < k; ++j) {
    if (j == Q.cols()) Q.conservativeResize(k, std::min<Index>(k, 2 * Q.cols()));
    Q.col(j) = q;
    if (wide) tmp.noalias() = Wd.transpose() * q, w.noalias() = Wd * tmp;
    else tmp.noalias() = Wd * q, w.noalias() = Wd.transpose() * tmp;
    alpha.push_back(q.dot(w));
    size = std::max(size, alpha.back());
    for (int pass = 0; pass < 2; ++pass) {  // full reorthogonalization, twice
      const auto basis = Q.leftCols(j + 1);
      Vec c = basis.transpose() * w;
      w.noalias() -= basis * c;
    }
    const double b = w.norm();
    const bool last = j + 1 == k || !(b > 1e-15 * size);  // all of R^k, or an invariant space
    if (last || (j + 1) % 8 == 0) {  // the Ritz pairs so far
      const Vec d = Eigen::Map<const Vec>(alpha.data(), Index(alpha.size()));
      const Vec e = Eigen::Map<const Vec>(beta.data(), Index(beta.size()));
      ritz.computeFromTridiagonal(d, e, last ? Eigen::EigenvaluesOnly : Eigen::ComputeEigenvectors);
      const Index top = Index(alpha.size()) - 1;  // eigenvalues in increasing order
      theta = ritz.eigenvalues()(top);
      if (last || b * std::abs(ritz.eigenvectors()(top, top)) <= 1e-15 * theta) break;
    }
    beta.push_back(b);
    q = w / b;
  }
  return scale * std::sqrt(std::max(0.0, theta));
}

/// The spectral norm on Eigen matrices: value by Lanczos, dual by SVD, direction by the polar method.
template <class Polar>
struct NormKernel<SpectralNorm<Polar>, EigenBackend> {
  /// ||W|| in this norm (a host double).
  template <class D>
  static double value(const Eigen::MatrixBase<D>& W) {
    return largest_singular_value(W);
  }
  /// ||G||_*, the dual norm.
  template <class D>
  static double dual(const Eigen::MatrixBase<D>& G) {
    return singular_values(G).sum();
  }
  /// out = D(G), the steepest-descent direction (out may alias G).
  template <class D, class O, class Ws>
  static void dualize(const Eigen::MatrixBase<D>& G, const Eigen::MatrixBase<O>& out, Ws& ws) {
    require_same_shape(G, out, "SpectralNorm::dualize");
    if constexpr (std::is_same_v<Polar, ExactSVD>) {
      (void)ws;
      exact_polar(G, out);
    } else {
      Polar::products::template run<typename Polar::schedule>(G, out, Polar::steps, ws);
    }
  }
};

/// Power-iteration estimate of s_max(W) for monitoring large layers without an SVD:
/// iterates v <- W^T W v / ||.|| from a fixed start, `iters` times; a lower bound of s_max
/// that converges at rate (s_2/s_1)^(2 iters).
template <class D>
double spectral_norm_estimate(const Eigen::MatrixBase<D>& W, int iters = 30) {
  if (W.size() == 0) return 0.0;
  Eigen::VectorXd v = Eigen::VectorXd::LinSpaced(W.cols(), 1.0, 2.0);  // deterministic, generic
  Eigen::MatrixXd Wd = W.template cast<double>();
  double est = 0.0;
  for (int i = 0; i < iters; ++i) {
    const double nv = v.norm();
    if (!(nv > 0.0)) return 0.0;
    v /= nv;
    Eigen::VectorXd u = Wd * v;
    est = u.norm();
    v = Wd.transpose() * u;
  }
  return est;
}

}  // namespace steepest

// The default products engine needs SpectralNorm defined (its headers name aliases of it).
#include "../polar/auto_products.hpp"
