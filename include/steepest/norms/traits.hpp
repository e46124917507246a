// steepest/norms/traits.hpp -- what a norm policy must provide, checked at compile time.
//
// A norm policy N is a type with static members (all Eigen arguments may be any dense
// expression: Matrix, Block, Map over a raw buffer, row- or column-major):
//   static constexpr double p, q;               operator-norm exponents (p -> q)
//   static std::string name();
//   static double scale(Index m, Index n);      width-aware factor folded into dualize (1 for p->q)
//   static double value(const M& W);            ||W||
//   static double dual(const M& G);             ||G||_* = max_{||D||<=1} <G, D>
//   static void dualize(const M& G, O&& out, Workspace& ws);   out = argmax_{||D||<=1} <G, D>
//   static void dualize(const M& G, O&& out);   same, with a temporary workspace
//   template <class Scalar> using Workspace = ...;             scratch reused across calls
// Policies built on a p->q family also give `mean_normalized_scale(m, n)` = n^{-1/p} m^{1/q},
// which is what MeanNormalized<N> needs.
#pragma once

#include <Eigen/Core>

#include <string>
#include <type_traits>
#include <utility>

namespace steepest {

namespace detail {
template <class N, class = void>
struct has_norm_interface : std::false_type {};
template <class N>
struct has_norm_interface<
    N, std::void_t<decltype(N::p), decltype(N::q), decltype(N::name()),
                   decltype(N::scale(Index{}, Index{})),
                   decltype(N::value(std::declval<const Eigen::MatrixXd&>())),
                   decltype(N::dual(std::declval<const Eigen::MatrixXd&>())),
                   decltype(N::dualize(std::declval<const Eigen::MatrixXd&>(),
                                       std::declval<Eigen::MatrixXd&>())),
                   typename N::template Workspace<double>>> : std::true_type {};

template <class N, class = void>
struct has_mean_scale : std::false_type {};
template <class N>
struct has_mean_scale<N, std::void_t<decltype(N::mean_normalized_scale(Index{}, Index{}))>>
    : std::true_type {};
}  // namespace detail

/// True when N provides the norm-policy interface described above.
template <class N>
inline constexpr bool is_norm_policy_v = detail::has_norm_interface<N>::value;

/// True when N is a p->q family that MeanNormalized<N> can be built on.
template <class N>
inline constexpr bool has_mean_normalized_scale_v = detail::has_mean_scale<N>::value;

/// The workspace type of policy N for scalar type S.
template <class N, class S>
using workspace_t = typename N::template Workspace<S>;

}  // namespace steepest
