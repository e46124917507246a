// steepest/norms/row_col.hpp -- the two tractable operator-norm families that act row by row or
// column by column: `p -> inf` (RowNorm<P>) and `1 -> q` (ColNorm<Q>).
//
//   ||W||_{p->inf} = max_i ||W_i,:||_{p*}      dual: sum_i ||G_i,:||_p
//     steepest direction, row by row: d = sign(g)|g|^{p-1} / ||g||_p^{p-1}
//   ||W||_{1->q}   = max_j ||W_:,j||_q         dual: sum_j ||G_:,j||_{q*}
//     steepest direction, column by column: d = sign(g)|g|^{q*-1} / ||g||_{q*}^{q*-1}
//
// Named cases: RowNorm<1> = 1->inf (sign descent), RowNorm<2> = 2->inf (row normalization),
// RowNorm<Inf> = inf->inf (per-row one-hot), ColNorm<2> = 1->2 (column normalization),
// ColNorm<Inf> = 1->inf again (same geometry as RowNorm<1>), ColNorm<1> = 1->1 (per-column one-hot).
// Exponents are any integer >= 1 or Inf; conjugates such as 3* = 1.5 are handled exactly.
#pragma once

#include <string>

#include "../backend/backend.hpp"
#include "../backend/eigen/vectorwise.hpp"
#include "../core/config.hpp"

namespace steepest {

/// The `P -> inf` operator norm of an m x n matrix (rows are the unit of geometry).
/// Width-aware scale of its mean-normalized version: s(m, n) = n^{-1/P}.
template <int P>
struct RowNorm : KernelPolicy<RowNorm<P>> {
  static_assert(P >= 1, "steepest::RowNorm<P>: P must be an integer >= 1 or steepest::Inf");
  /// The operator norm is p -> q: this is p.
  static constexpr double p = exponent_value(P);
  /// The operator norm is p -> q: this is q.
  static constexpr double q = std::numeric_limits<double>::infinity();
  /// Scratch reused across calls (the workspace argument of dualize).
  template <class Scalar>
  using Workspace = eigen_detail::VectorwiseWorkspace<Scalar>;

  /// The policy's name, as Geometry::name() reports it.
  static std::string name() { return exponent_name(p) + "->inf"; }
  /// The plain (not mean-normalized) policy has scale 1.
  static double scale(Index, Index) { return 1.0; }
  /// s(m, n) = n^{-1/p} m^{1/q} = n^{-1/P}: the factor MeanNormalized<RowNorm<P>> applies.
  static double mean_normalized_scale(Index m, Index n) {
    if (m == 0 || n == 0) return 0.0;
    return std::pow(static_cast<double>(n), -1.0 / p);
  }
};

/// The `1 -> Q` operator norm of an m x n matrix (columns are the unit of geometry).
/// Width-aware scale of its mean-normalized version: s(m, n) = m^{1/Q} / n.
template <int Q>
struct ColNorm : KernelPolicy<ColNorm<Q>> {
  static_assert(Q >= 1, "steepest::ColNorm<Q>: Q must be an integer >= 1 or steepest::Inf");
  /// The operator norm is p -> q: this is p.
  static constexpr double p = 1.0;
  /// The operator norm is p -> q: this is q.
  static constexpr double q = exponent_value(Q);
  /// Scratch reused across calls (the workspace argument of dualize).
  template <class Scalar>
  using Workspace = eigen_detail::VectorwiseWorkspace<Scalar>;

  /// The policy's name, as Geometry::name() reports it.
  static std::string name() { return "1->" + exponent_name(q); }
  /// The plain (not mean-normalized) policy has scale 1.
  static double scale(Index, Index) { return 1.0; }
  /// s(m, n) = n^{-1} m^{1/Q}.
  static double mean_normalized_scale(Index m, Index n) {
    if (m == 0 || n == 0) return 0.0;
    return std::pow(static_cast<double>(m), 1.0 / q) / static_cast<double>(n);
  }
};

/// A whole parameter (any shape) taken as one vector in the l_Q norm -- the geometry of biases
/// and gains. Equivalent to ColNorm<Q> on the N x 1 reshaped tensor, N = m n, so the
/// mean-normalized scale is N^{1/Q}: MeanNormalized<VectorNorm<2>> is the RMS geometry
/// (direction g / rms(g)); VectorNorm<Inf> is sign descent on the vector.
template <int Q>
struct VectorNorm : KernelPolicy<VectorNorm<Q>> {
  static_assert(Q >= 1, "steepest::VectorNorm<Q>: Q must be an integer >= 1 or steepest::Inf");
  /// The operator norm is p -> q: this is p.
  static constexpr double p = 1.0;
  /// The operator norm is p -> q: this is q.
  static constexpr double q = exponent_value(Q);
  /// Scratch reused across calls (the workspace argument of dualize).
  template <class Scalar>
  using Workspace = eigen_detail::VectorwiseWorkspace<Scalar>;

  /// The policy's name, as Geometry::name() reports it.
  static std::string name() { return "vector l" + exponent_name(q); }
  /// The plain (not mean-normalized) policy has scale 1.
  static double scale(Index, Index) { return 1.0; }
  /// s(m, n): the factor MeanNormalized applies for an m x n matrix (geometry.md).
  static double mean_normalized_scale(Index m, Index n) {
    if (m == 0 || n == 0) return 0.0;
    return std::pow(static_cast<double>(m) * static_cast<double>(n), 1.0 / q);
  }
};

// ---- Eigen backend -------------------------------------------------------------------------

/// Sign and row 2-normalization on Eigen matrices.
template <int P>
struct NormKernel<RowNorm<P>, EigenBackend> {
  /// ||W|| in this norm (a host double).
  template <class D>
  static double value(const Eigen::MatrixBase<D>& W) {
    if (W.size() == 0) return 0.0;
    typename RowNorm<P>::template Workspace<typename D::Scalar> ws;
    eigen_detail::row_norms(W, conjugate(RowNorm<P>::p), ws.a);
    return static_cast<double>(ws.a.maxCoeff());
  }
  /// ||G||_*, the dual norm.
  template <class D>
  static double dual(const Eigen::MatrixBase<D>& G) {
    if (G.size() == 0) return 0.0;
    typename RowNorm<P>::template Workspace<typename D::Scalar> ws;
    eigen_detail::row_norms(G, RowNorm<P>::p, ws.a);
    return ws.a.template cast<double>().sum();
  }
  /// out = D(G), the steepest-descent direction (out may alias G).
  template <class D, class O>
  static void dualize(const Eigen::MatrixBase<D>& G, const Eigen::MatrixBase<O>& out,
                      eigen_detail::VectorwiseWorkspace<typename D::Scalar>& ws) {
    require_same_shape(G, out, "RowNorm::dualize");
    eigen_detail::row_dualize(G, RowNorm<P>::p, out, ws);
  }
};

/// Column q-norms on Eigen matrices.
template <int Q>
struct NormKernel<ColNorm<Q>, EigenBackend> {
  /// ||W|| in this norm (a host double).
  template <class D>
  static double value(const Eigen::MatrixBase<D>& W) {
    if (W.size() == 0) return 0.0;
    typename ColNorm<Q>::template Workspace<typename D::Scalar> ws;
    eigen_detail::row_norms(W.transpose(), ColNorm<Q>::q, ws.a);
    return static_cast<double>(ws.a.maxCoeff());
  }
  /// ||G||_*, the dual norm.
  template <class D>
  static double dual(const Eigen::MatrixBase<D>& G) {
    if (G.size() == 0) return 0.0;
    typename ColNorm<Q>::template Workspace<typename D::Scalar> ws;
    eigen_detail::row_norms(G.transpose(), conjugate(ColNorm<Q>::q), ws.a);
    return ws.a.template cast<double>().sum();
  }
  /// out = D(G), the steepest-descent direction (out may alias G).
  template <class D, class O>
  static void dualize(const Eigen::MatrixBase<D>& G, const Eigen::MatrixBase<O>& out,
                      eigen_detail::VectorwiseWorkspace<typename D::Scalar>& ws) {
    require_same_shape(G, out, "ColNorm::dualize");
    eigen_detail::row_dualize(G.transpose(), conjugate(ColNorm<Q>::q), writable(out).transpose(),
                              ws);
  }
};

/// A whole matrix as one q-norm vector, on Eigen matrices.
template <int Q>
struct NormKernel<VectorNorm<Q>, EigenBackend> {
  // The whole matrix as one row of length m*n (Eigen 3.4 reshaped views: no copy), read in
  // storage order (AutoOrder): contiguous for a contiguous matrix, whatever its layout.
  /// ||W|| in this norm (a host double).
  template <class D>
  static double value(const Eigen::MatrixBase<D>& W) {
    if (W.size() == 0) return 0.0;
    typename VectorNorm<Q>::template Workspace<typename D::Scalar> ws;
    eigen_detail::row_norms(W.template reshaped<Eigen::AutoOrder>(1, W.size()), VectorNorm<Q>::q, ws.a);
    return static_cast<double>(ws.a(0));
  }
  /// ||G||_*, the dual norm.
  template <class D>
  static double dual(const Eigen::MatrixBase<D>& G) {
    if (G.size() == 0) return 0.0;
    typename VectorNorm<Q>::template Workspace<typename D::Scalar> ws;
    eigen_detail::row_norms(G.template reshaped<Eigen::AutoOrder>(1, G.size()), conjugate(VectorNorm<Q>::q), ws.a);
    return static_cast<double>(ws.a(0));
  }
  /// out = D(G), the steepest-descent direction (out may alias G).
  template <class D, class O>
  static void dualize(const Eigen::MatrixBase<D>& G, const Eigen::MatrixBase<O>& out,
                      eigen_detail::VectorwiseWorkspace<typename D::Scalar>& ws) {
    require_same_shape(G, out, "VectorNorm::dualize");
    if (G.size() == 0) return;
    eigen_detail::row_dualize(G.template reshaped<Eigen::AutoOrder>(1, G.size()), conjugate(VectorNorm<Q>::q),
                              writable(out).template reshaped<Eigen::AutoOrder>(1, G.size()), ws);
  }
};

}  // namespace steepest
