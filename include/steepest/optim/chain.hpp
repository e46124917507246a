// steepest/optim/chain.hpp -- an optimizer is a chain of transforms, applied per layer.
//
//   using MyOpt = Chain<Momentum<MomentumKind::Nesterov>, Dualize<MeanNormalized<RowNorm<2>>>,
//                       DecoupledStep>;
// Chain<Ts...>::LayerState<S> is the tuple of the transforms' states; Optimizer<Chain> adds the
// parameter set, per-role geometry, the step counter, checks and save/load.
#pragma once

#include <string>
#include <tuple>
#include <utility>

#include "transforms.hpp"

namespace steepest {

template <class... Ts>
struct Chain {
  static_assert(sizeof...(Ts) > 0, "steepest::Chain needs at least one transform (a step)");
  template <class S>
  using LayerState = std::tuple<typename Ts::template State<S>...>;

  static std::string name() {
    std::string s;
    ((s += (s.empty() ? "" : "+"), s += Ts::name()), ...);
    return s;
  }
  template <class Tuple>
  static void init(Tuple& st, Index m, Index n) {
    init_impl(st, m, n, std::index_sequence_for<Ts...>{});
  }
  template <class S, class Tuple>
  static void apply(Ctx<S>& ctx, Tuple& st) {
    apply_impl(ctx, st, std::index_sequence_for<Ts...>{});
  }
  /// Calls f(buffer) for every saved buffer of every transform, in chain order.
  template <class Tuple, class F>
  static void visit(Tuple& st, F&& f) {
    std::apply([&](auto&... s) { (s.visit(f), ...); }, st);
  }

 private:
  template <class Tuple, std::size_t... I>
  static void init_impl(Tuple& st, Index m, Index n, std::index_sequence<I...>) {
    (Ts::init(std::get<I>(st), m, n), ...);
  }
  template <class S, class Tuple, std::size_t... I>
  static void apply_impl(Ctx<S>& ctx, Tuple& st, std::index_sequence<I...>) {
    (Ts::apply(ctx, std::get<I>(st)), ...);
  }
};

}  // namespace steepest
