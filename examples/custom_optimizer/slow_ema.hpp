// slow_ema.hpp -- a transform written outside the library: an EMA with the second coefficient.
//
//   s <- b2 s + (1 - b2) u;  u <- s        (b2 = hp.beta2)
//
// Placed after Momentum<EMA> (coefficient hp.beta1), it makes a chain with two EMAs of different
// betas: a fast average of the direction inside a slow one. The whole transform is its state,
// its per-entry rule (Elem, STEEPEST_HD: the same code for the CPU's fused pass and the CUDA
// kernels; the unfused pass is derived from it) and what its buffer may hold in a checkpoint.
#pragma once

#include <steepest/steepest.hpp>

#include <array>

namespace st = steepest;

struct SlowEma {  // s <- b2 s + (1 - b2) u;  u <- s
  template <class S, class Space = st::Host>
  struct State {
    st::buffer_t<S, Space> s;
    template <class F> void visit(F&& f) { f(s); }
  };
  template <class S, class Space>
  static void init(State<S, Space>& state, st::Index r, st::Index c) { state.s = st::buffer_t<S, Space>::Zero(r, c); }
  static constexpr double reach(const st::Hyper& hp, double g) { return st::reach::ema(hp.beta2, g); }
  static constexpr std::array<st::BufferSpec, 1> buffers{{{"s", st::Domain::Finite, &reach}}};
  static constexpr bool row_separable = true;
  template <class S>
  struct Elem {
    S* STEEPEST_RESTRICT s;
    S b, omb;
    STEEPEST_HD void begin_row(st::Index) {}
    template <class P>
    STEEPEST_HD P apply(P u, st::Index i, st::Index) const {
      using namespace st::simd;
      const P sn = add(mul(set1<P>(b), load<P>(s + i)), mul(set1<P>(omb), u));
      store(s + i, sn);
      return sn;
    }
  };
  template <class S, class Space>
  static Elem<S> elem(st::Ctx<S, Space>& ctx, State<S, Space>& state) {
    const S b = static_cast<S>(ctx.hp.beta2);
    return {state.s.data(), b, S(1) - b};
  }
  static const char* name() { return "slow-ema"; }
};
/// Row-normalize the gradient (2̄->inf, MOGA-row's geometry), a fast EMA (beta1), the slow EMA
/// (beta2), the width scale n^(-1/2), a decoupled step.
using TwoEmaRows = st::Chain<st::LayerDualize, st::Momentum<st::MomentumKind::EMA>, SlowEma,
                             st::GeometryScale, st::DecoupledStep>;

/// The optimizer: the chain with the row geometry 2̄->inf on every role.
inline st::Optimizer<TwoEmaRows> two_ema_rows(st::Hyper hp) {
  st::Optimizer<TwoEmaRows> opt(hp);
  for (auto& r : opt.roles) r.geometry = st::geometry<st::MeanNormalized<st::RowNormalize>>();
  return opt;
}
