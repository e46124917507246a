// steepest/optim/chain.hpp -- an optimizer is a chain of transforms, applied per layer.
//
//   using MyOpt = Chain<Momentum<MomentumKind::Nesterov>, Dualize<MeanNormalized<RowNorm<2>>>,
//                       DecoupledStep>;
// Chain<Ts...>::LayerState<S, Space> is the tuple of the transforms' states (host or device
// buffers, optim/space.hpp); Optimizer<Chain> adds the parameter set, per-role geometry, the step
// counter, checks and save/load. The host passes are here; the device executor is
// cuda/executor.cuh, over the same transforms.
#pragma once

#include <array>
#include <stdexcept>
#include <string>
#include <tuple>
#include <utility>

#include "transforms.hpp"

#if defined(_OPENMP)
#include <omp.h>
#endif

namespace steepest {

namespace detail {
template <class T, class S, class = void>
struct has_elem : std::false_type {};
template <class T, class S>
struct has_elem<T, S, std::void_t<typename T::template Elem<S>>> : std::true_type {};
template <class T, class S, class St, class = void>
struct has_apply : std::false_type {};
template <class T, class S, class St>
struct has_apply<T, S, St, std::void_t<decltype(T::apply(std::declval<Ctx<S>&>(), std::declval<St&>()))>>
    : std::true_type {};

template <class T, class = void>
struct has_fusable_at : std::false_type {};
template <class T>
struct has_fusable_at<T, std::void_t<decltype(T::fusable_at(std::declval<Geometry>(), std::size_t(0)))>>
    : std::true_type {};
template <class T, class = void>
struct has_needs_rows : std::false_type {};
template <class T>
struct has_needs_rows<T, std::void_t<decltype(T::needs_rows(FusedForm::None))>> : std::true_type {};

template <class T, class = void>
struct states_applies_geometry : std::false_type {};
template <class T>
struct states_applies_geometry<T, std::void_t<decltype(T::applies_geometry)>>
    : std::bool_constant<T::applies_geometry> {};
/// Whether T applies the layer's geometry direction (T::applies_geometry).
template <class T>
inline constexpr bool applies_geometry_v = states_applies_geometry<T>::value;

/// Whether T's Elem serves a layer of geometry g at `position` in its chain (T::fusable_at;
/// a transform that states nothing always fuses).
template <class T>
bool elem_fusable(Geometry g, std::size_t position) {
  if constexpr (has_fusable_at<T>::value) return T::fusable_at(g, position);
  else return true;
}

// A transform's State for memory space Space: NoState when it declares none. A transform
// written before spaces existed (`template <class S> struct State`) keeps working on the host;
// on a device it needs the second parameter so its buffers can live there.
template <class T, class = void>
struct declares_state : std::false_type {};
template <class T>
struct declares_state<T, std::void_t<typename T::template State<float>>> : std::true_type {};
template <class T, class S, class Space, class = void>
struct declared_state {
  static_assert(is_host_v<Space>,
                "steepest: this transform's State has no memory-space parameter; declare it as "
                "`template <class S, class Space = steepest::Host> struct State` with "
                "`steepest::buffer_t<S, Space>` buffers to run it on device memory");
  using type = typename T::template State<S>;
};
template <class T, class S, class Space>
struct declared_state<T, S, Space, std::void_t<typename T::template State<S, Space>>> {
  using type = typename T::template State<S, Space>;
};
struct no_declared_state {
  using type = NoState;
};
template <class T, class S, class Space>
struct state_of : std::conditional_t<declares_state<T>::value, declared_state<T, S, Space>, no_declared_state> {};

/// Sizes transform T's state for an m x n layer (T::init; a transform without one has nothing to size).
template <class T, class St, class = void>
struct has_init : std::false_type {};
template <class T, class St>
struct has_init<T, St, std::void_t<decltype(T::init(std::declval<St&>(), Index(0), Index(0)))>> : std::true_type {};
template <class T, class St>
void init_one(St& st, Index m, Index n) {
  if constexpr (has_init<T, St>::value) T::init(st, m, n);
}

template <class T, class = void>
struct has_buffer_specs : std::false_type {};
template <class T>
struct has_buffer_specs<T, std::void_t<decltype(T::buffers)>> : std::true_type {};

/// Calls f(key, buffer, domain) for each buffer of transform T's state `st`, `prefix` being the
/// transform's key in its chain ("adam" -> keys "adam.m", "adam.v").
template <class T, class St, class F>
void visit_named_one(St& st, const std::string& prefix, F& f) {
  std::size_t k = 0;
  st.visit([&](auto& b) {
    if constexpr (has_buffer_specs<T>::value) {
      if (k >= T::buffers.size())
        throw std::logic_error("steepest: transform '" + prefix + "' visits more buffers than its `buffers` names");
      f(prefix + "." + T::buffers[k].name, b, T::buffers[k].domain);
    } else {
      f(prefix + "." + std::to_string(k), b, Domain::Finite);
    }
    ++k;
  });
  if constexpr (has_buffer_specs<T>::value)
    if (k != T::buffers.size())
      throw std::logic_error("steepest: transform '" + prefix + "' visits fewer buffers than its `buffers` names");
}

/// Calls f(limit) for each buffer of transform T's state `st`, in visit order: what the buffer
/// can reach under hp with inputs below g (BufferSpec::reach), +infinity where T states nothing.
template <class T, class St, class F>
void visit_reach_one(St& st, const Hyper& hp, double g, F& f) {
  std::size_t k = 0;
  st.visit([&](auto&) {
    double limit = reach::unbounded;
    if constexpr (has_buffer_specs<T>::value)
      if (k < T::buffers.size() && T::buffers[k].reach) limit = T::buffers[k].reach(hp, g);
    f(limit);
    ++k;
  });
}

/// Whether the fused pass must call T's begin_row for each row (T::needs_rows).
template <class T>
bool elem_needs_rows(FusedForm f) {
  if constexpr (has_needs_rows<T>::value) return T::needs_rows(f);
  else return false;
}

/// Runs `elems` (a tuple of Elem kernels) over the flat range [begin, end) of a layer whose
/// column index starts at c0: SIMD packets, then a scalar tail. g holds the gradient as G: the
/// parameters' scalar S, or bf16 bits widened to float as they are read (simd::load_wide). The
/// kernels are copied into a local whose address never escapes, so the compiler keeps their
/// constants in registers (through a reference or a by-value parameter, every store to m, v or w
/// might alias them and forces reloads; measured 1.2x slower).
template <class G, class Tuple, std::size_t... I>
void run_range(const G* STEEPEST_RESTRICT g, const Tuple& kernels, Index begin, Index end,
               Index c0, std::index_sequence<I...>) {
  using S = simd::wide_t<G>;
  Tuple ks = kernels;
  using P = simd::Packet<S>;
  constexpr Index PS = simd::packet_size<S>;
  Index i = begin;
  for (; i + PS <= end; i += PS) {
    P u = simd::load_wide<P>(g + i);
    ((u = std::get<I>(ks).template apply<P>(u, i, c0 + (i - begin))), ...);
  }
  for (; i < end; ++i) {
    S u = simd::load_wide<S>(g + i);
    ((u = std::get<I>(ks).template apply<S>(u, i, c0 + (i - begin))), ...);
  }
}

/// A transform's unfused pass, derived from its fused kernel: `elem` over the running update in
/// place, row by row (begin_row(r), then SIMD packets and a scalar tail at flat index i = r n + c,
/// column c), so it computes exactly the fused pass's bits. run_range's loop, with the result
/// stored back (run_range's input is the gradient, which the fused pass does not write).
template <class E, class S>
void run_elem_by_rows(const E& elem, RowMatrix<S>& u) {
  E k = elem;
  using P = simd::Packet<S>;
  constexpr Index PS = simd::packet_size<S>;
  S* STEEPEST_RESTRICT p = u.data();
  const Index rows = u.rows(), cols = u.cols();
  for (Index r = 0; r < rows; ++r) {
    k.begin_row(r);
    const Index row = r * cols;
    Index c = 0;
    for (; c + PS <= cols; c += PS) simd::store(p + row + c, k.template apply<P>(simd::load<P>(p + row + c), row + c, c));
    for (; c < cols; ++c) p[row + c] = k.template apply<S>(p[row + c], row + c, c);
  }
}

/// Transform T's rule on the host, unfused: its own `apply`, or else the pass derived from its Elem.
template <class T, class S, class St>
void run_rule(Ctx<S>& ctx, St& st) {
  if constexpr (has_apply<T, S, St>::value) {
    T::apply(ctx, st);
  } else {
    static_assert(has_elem<T, S>::value,
                  "steepest: a transform needs its rule: an Elem (elementwise) or a static apply(Ctx<S>&, State&)");
    run_elem_by_rows(T::elem(ctx, st), ctx.u);
  }
}

/// Transform T's unfused host pass, with the coefficients it owns (`co`) in place of the
/// optimizer's.
template <class T, class S, class St>
void apply_one(Ctx<S>& ctx, St& st, const Coefficients& co) {
  if (co.empty()) return run_rule<T>(ctx, st);
  const Hyper hp = co.over(ctx.hp);
  Ctx<S> own = with_hyper(ctx, hp);
  run_rule<T>(own, st);
}

/// Transform T's fused kernel for this layer, made with the coefficients it owns (`co`).
template <class T, class S, class Sp, class St>
auto elem_one(Ctx<S, Sp>& ctx, St& st, const Coefficients& co) {
  if (co.empty()) return T::elem(ctx, st);
  const Hyper hp = co.over(ctx.hp);
  Ctx<S, Sp> own = with_hyper(ctx, hp);
  return T::elem(own, st);  // an Elem holds constants and pointers, not the context
}

/// The fused pass over one layer (Chain::fused): blocks of whole rows (by_rows) or of ~16K
/// entries, big enough to amortize, small enough to balance two threads; OpenMP over the blocks
/// when enabled and not already inside a parallel region.
template <class G, class Tuple, std::size_t... I>
void fused_pass(const G* g, const Tuple& kernels, Index rows, Index cols, bool by_rows,
                std::index_sequence<I...> seq) {
  const Index size = rows * cols;
  const Index block = by_rows ? std::max<Index>(1, 16384 / std::max<Index>(cols, 1)) : 16384;
  const Index units = by_rows ? rows : size;
  const Index nblocks = (units + block - 1) / block;
  const auto run_block = [&](Tuple& ks, Index b) {
    const Index lo = b * block, hi = std::min(units, lo + block);
    if (by_rows) {
      for (Index r = lo; r < hi; ++r) {
        (std::get<I>(ks).begin_row(r), ...);
        run_range(g, ks, r * cols, (r + 1) * cols, 0, seq);
      }
    } else {
      run_range(g, ks, lo, hi, 0, seq);
    }
  };
#if defined(_OPENMP)
  // One block runs here, without entering OpenMP at all: even a region that its `if` keeps to
  // one thread costs a team set-up, which is most of the step of a small tensor.
  if (nblocks > 1 && !omp_in_parallel()) {
    Tuple ks = kernels;
#pragma omp parallel for schedule(static) firstprivate(ks)
    for (Index b = 0; b < nblocks; ++b) run_block(ks, b);
    return;
  }
#endif
  Tuple ks = kernels;
  for (Index b = 0; b < nblocks; ++b) run_block(ks, b);
}
}  // namespace detail

/// An optimizer's rule as a chain of transforms Ts..., applied in order to each layer's update.
template <class... Ts>
struct Chain {
  static_assert(sizeof...(Ts) > 0, "steepest::Chain needs at least one transform (a step)");
  /// One layer's state: the tuple of the transforms' states (host or device buffers).
  template <class S, class Space = Host>
  using LayerState = std::tuple<typename detail::state_of<Ts, S, Space>::type...>;
  /// Transforms in the chain.
  static constexpr std::size_t size = sizeof...(Ts);
  /// The coefficients each transform owns, by position in the chain (see Coefficients).
  using CoefficientTable = std::array<Coefficients, sizeof...(Ts)>;

  /// The transforms' names joined by "+" (the chain's key in checkpoints).
  static std::string name() {
    std::string s;
    ((s += (s.empty() ? "" : "+"), s += Ts::name()), ...);
    return s;
  }
  /// Sizes every transform's state for an m x n layer.
  template <class Tuple>
  static void init(Tuple& st, Index m, Index n) {
    init_impl(st, m, n, std::index_sequence_for<Ts...>{});
  }
  /// The unfused pass: each transform in turn on ctx.u, with the coefficients each owns (co).
  template <class S, class Tuple>
  static void apply(Ctx<S>& ctx, Tuple& st, const CoefficientTable& co = {}) {
    apply_impl(ctx, st, co, std::index_sequence_for<Ts...>{});
  }
  /// True when every transform has a fused elementwise form for scalar type S.
  template <class S>
  static constexpr bool fusable_v = (detail::has_elem<Ts, S>::value && ...);

  /// True when this layer can take the fused path (compile-time forms exist and the layer's
  /// run-time geometry is elementwise or a row/column/global normalization).
  template <class S>
  static bool can_fuse(Geometry g) {
    if constexpr (fusable_v<S>) return can_fuse_impl(g, std::index_sequence_for<Ts...>{});
    else return false;
  }

  /// Whether the fused pass must tell the kernels each row (begin_row) for a layer whose
  /// geometry's fused form is f: some transform's factor is per row or per column.
  static bool needs_rows(FusedForm f) { return (detail::elem_needs_rows<Ts>(f) || ...); }

  /// One pass over memory for the whole chain: reads the gradient (ctx.grad or ctx.grad_bf16),
  /// the states and W once, writes the states and W once. Rows are the unit of work when a
  /// per-row/column factor is used (and of OpenMP parallelism when enabled and not already inside
  /// a parallel region).
  template <class S, class Tuple>
  static void fused(Ctx<S>& ctx, Tuple& st, const CoefficientTable& co = {}) {
    if constexpr (fusable_v<S>) {
      fused_impl(ctx, st, co, std::index_sequence_for<Ts...>{});
    }
  }

  /// Calls f(buffer) for every saved buffer of every transform, in chain order.
  template <class Tuple, class F>
  static void visit(Tuple& st, F&& f) {
    std::apply([&](auto&... s) { (s.visit(f), ...); }, st);
  }
  /// Calls f(key, buffer, domain) for every saved buffer, in chain order. The key is
  /// "<transform name>.<buffer name>" (see BufferSpec), with "#<position>" after the transform
  /// name when an earlier transform of the chain has the same name.
  template <class Tuple, class F>
  static void visit_named(Tuple& st, F&& f) {
    visit_named_impl(st, f, std::index_sequence_for<Ts...>{});
  }
  /// Calls f(limit) for every saved buffer, in visit_named's order: the largest magnitude it can
  /// reach under hp when each transform's input entries are below g (BufferSpec::reach), or
  /// +infinity. g is the gradient bound: the gradient and every geometry's direction (entries
  /// at most 1, or sqrt(n) for the RMS direction) stay below it.
  /// `co`: the coefficients each transform owns, which its reach reads in place of hp's.
  template <class Tuple, class F>
  static void visit_reach(Tuple& st, const Hyper& hp, double g, F&& f, const CoefficientTable& co = {}) {
    visit_reach_impl(st, hp, g, f, co, std::index_sequence_for<Ts...>{});
  }

 private:
  template <class Tuple, std::size_t... I>
  static void init_impl(Tuple& st, Index m, Index n, std::index_sequence<I...>) {
    (detail::init_one<Ts>(std::get<I>(st), m, n), ...);
  }
  template <class Tuple, class F, std::size_t... I>
  static void visit_named_impl(Tuple& st, F& f, std::index_sequence<I...>) {
    const std::string names[] = {std::string(Ts::name())...};
    auto prefix = [&](std::size_t i) {
      for (std::size_t j = 0; j < i; ++j)
        if (names[j] == names[i]) return names[i] + "#" + std::to_string(i);
      return names[i];
    };
    (detail::visit_named_one<Ts>(std::get<I>(st), prefix(I), f), ...);
  }
  template <class Tuple, class F, std::size_t... I>
  static void visit_reach_impl(Tuple& st, const Hyper& hp, double g, F& f, const CoefficientTable& co,
                               std::index_sequence<I...>) {
    (detail::visit_reach_one<Ts>(std::get<I>(st), co[I].over(hp), g, f), ...);
  }
  template <std::size_t... I>
  static bool can_fuse_impl(Geometry g, std::index_sequence<I...>) {
    return (detail::elem_fusable<Ts>(g, I) && ...);
  }

  template <class S, class Tuple, std::size_t... I>
  static void fused_impl(Ctx<S>& ctx, Tuple& st, const CoefficientTable& co, std::index_sequence<I...> seq) {
    const auto ks = std::make_tuple(detail::elem_one<Ts>(ctx, std::get<I>(st), co[I])...);
    const bool by_rows = needs_rows(ctx.geometry.fused());
    if constexpr (std::is_same_v<S, float>) {
      if (ctx.grad_bf16) {
        detail::fused_pass(ctx.grad_bf16, ks, ctx.w.rows(), ctx.w.cols(), by_rows, seq);
        return;
      }
    }
    detail::fused_pass(ctx.grad, ks, ctx.w.rows(), ctx.w.cols(), by_rows, seq);
  }

  template <class S, class Tuple, std::size_t... I>
  static void apply_impl(Ctx<S>& ctx, Tuple& st, const CoefficientTable& co, std::index_sequence<I...>) {
    (detail::apply_one<Ts>(ctx, std::get<I>(st), co[I]), ...);
  }
};

}  // namespace steepest
