// steepest/norms/operator_norm.hpp -- OperatorNorm<P, Q> and the named geometries.
//
// OperatorNorm<P, Q> names the `P -> Q` operator norm and resolves to the policy that
// implements it. Only the tractable pairs have one (a closed-form dual / steepest direction):
//   1 -> Q      ColNorm<Q>        (column-wise)
//   P -> inf    RowNorm<P>        (row-wise; 1 -> inf resolves here: sign descent)
//   2 -> 2      SpectralNorm<>    (polar factor)
// Any other pair fails to compile with a message listing these.
#pragma once

#include "mean_normalized.hpp"
#include "row_col.hpp"
#include "spectral.hpp"

namespace steepest {

namespace detail {
template <int P, int Q, class Enable = void>
struct operator_norm_select {
  static_assert(dependent_false<std::integral_constant<int, P>, std::integral_constant<int, Q>>,
                "steepest::OperatorNorm<P, Q>: this p->q operator norm has no tractable steepest "
                "direction. Tractable pairs: 1->q (ColNorm<q>), p->inf (RowNorm<p>), "
                "2->2 (SpectralNorm<>). Examples: 1->inf sign, 2->inf row normalization, "
                "1->2 column normalization, inf->inf, 1->1, 2->2 spectral.");
  using type = void;
};
template <int P, int Q>
struct operator_norm_select<P, Q, std::enable_if_t<(Q == Inf)>> {
  using type = RowNorm<P>;
};
template <int Q>
struct operator_norm_select<1, Q, std::enable_if_t<(Q != Inf)>> {
  using type = ColNorm<Q>;
};
template <>
struct operator_norm_select<2, 2, void> {
  using type = SpectralNorm<>;
};
}  // namespace detail

/// The policy implementing the P -> Q operator norm (compile error when intractable).
template <int P, int Q>
using OperatorNorm = typename detail::operator_norm_select<P, Q>::type;

// ---- named geometries -------------------------------------------------------------------
using SignNorm = RowNorm<1>;          ///< 1 -> inf: max |W_ij|; direction sign(G)
using RowNormalize = RowNorm<2>;      ///< 2 -> inf: max row 2-norm; rows divided by their norms
using ColNormalize = ColNorm<2>;      ///< 1 -> 2: max column 2-norm; columns divided by their norms
using InfInfNorm = RowNorm<Inf>;      ///< inf -> inf: max row 1-norm; per-row signed one-hot
using OneOneNorm = ColNorm<1>;        ///< 1 -> 1: max column 1-norm; per-column signed one-hot
using Spectral = SpectralNorm<>;      ///< 2 -> 2 with 5 quintic Newton-Schulz steps
using SpectralExact = SpectralNorm<ExactSVD>;  ///< 2 -> 2 with the exact SVD polar factor
using SpectralPolarExpress = SpectralNorm<NewtonSchulz<PolarExpressSchedule>>;

using VectorSign = VectorNorm<Inf>;                 ///< sign descent on a vector
using VectorRMS = MeanNormalized<VectorNorm<2>>;    ///< direction g / rms(g) (unit RMS)

}  // namespace steepest
