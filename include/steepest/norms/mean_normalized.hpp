// steepest/norms/mean_normalized.hpp -- the mean-normalized operator norms `p̄ -> q̄`.
//
// With mean-normalized vector norms ||x||_{p̄} = n^{-1/p} ||x||_p, for an m x n matrix
//   ||W||_{p̄->q̄} = n^{1/p} m^{-1/q} ||W||_{p->q}                    (1)
// so the unit ball shrinks by that factor and, with s(m, n) = n^{-1/p} m^{1/q},
//   D_{p̄->q̄}(G) = s(m, n) D_{p->q}(G),   ||G||_{*,p̄->q̄} = s(m, n) ||G||_{*,p->q}   (2)
// s is the width-aware learning-rate scale: a step W <- W - eta D_{p̄->q̄}(G) lets one eta
// transfer across widths (it recovers muP). Examples: 1̄->inf: 1/n ("rescaled AdamW"),
// 2̄->inf: n^{-1/2}, 1̄->2̄: sqrt(m)/n, 2̄->2̄: sqrt(m/n) (spectral muP).
#pragma once

#include <string>

#include "traits.hpp"

namespace steepest {

/// The mean-normalized (p̄ -> q̄) form of norm N: ||W|| / s(m, n), the width-aware scale (geometry.md).
template <class N>
struct MeanNormalized {
  static_assert(is_norm_policy_v<N>,
                "steepest::MeanNormalized<N>: N must be a norm policy (RowNorm<P>, ColNorm<Q>, "
                "VectorNorm<Q>, SpectralNorm<...>, or a type with the interface in norms/traits.hpp)");
  static_assert(has_mean_normalized_scale_v<N>,
                "steepest::MeanNormalized<N>: N must provide mean_normalized_scale(m, n); "
                "MeanNormalized cannot be nested");
  /// The plain policy N.
  using base = N;
  /// The operator norm is p -> q: this is p.
  static constexpr double p = N::p;
  /// The operator norm is p -> q: this is q.
  static constexpr double q = N::q;
  /// Scratch reused across calls (the workspace argument of dualize).
  template <class Scalar>
  using Workspace = typename N::template Workspace<Scalar>;

  /// The policy's name, as Geometry::name() reports it.
  static std::string name() { return "mean(" + N::name() + ")"; }
  /// s(m, n) = n^{-1/p} m^{1/q}; 0 for an empty matrix.
  static double scale(Index m, Index n) { return N::mean_normalized_scale(m, n); }

  /// ||W||_{p̄->q̄} = ||W||_{p->q} / s(m, n).
  template <class M>
  static double value(const M& W) {
    const double s = scale(W.rows(), W.cols());
    return s > 0.0 ? N::value(W) / s : 0.0;
  }
  /// ||G||_* in the mean-normalized norm: s(m, n) times N's dual.
  template <class M>
  static double dual(const M& G) {
    return scale(G.rows(), G.cols()) * N::dual(G);
  }
  /// out = D(G): N's direction times s(m, n).
  template <class M, class O, class Ws>
  static void dualize(const M& G, const O& out, Ws& ws) {
    N::dualize(G, out, ws);
    scale_in_place(out, scale(G.rows(), G.cols()), ws);
  }
  /// out = D(G) with a temporary workspace.
  template <class M, class O>
  static void dualize(const M& G, const O& out) {
    Workspace<typename M::Scalar> ws;
    dualize(G, out, ws);
  }
};

}  // namespace steepest
