// steepest/optim/transforms.hpp -- the small transforms optimizers are chained from.
//
// Each transform works on one layer's running update `u` (m x n, starts as the gradient) and has
//   static const char* name();
// and, when it keeps state (a transform without these has none):
//   template <class S, class Space = Host> struct State { ...; template <class F> void visit(F&& f); };
//   template <class S, class Space> static void init(State<S, Space>&, Index m, Index n);
// and its rule, written once: an elementwise rule as its fused form `Elem` (below), from which
// the chain derives the host's unfused pass, the fused pass and the device kernels; any other
// rule (a geometry's direction, a whole-matrix operation) as
//   template <class S> static void apply(Ctx<S>& ctx, State<S>& st);   // host: reads/writes ctx.u
// A transform with both (LayerDualize: fused for some geometries) uses `apply` when unfused.
// What the rest of the library needs to know about a transform is stated on it too, each
// optional (absent: the conservative answer):
//   static constexpr bool row_separable = true;  // an entry's work reads only its own row and
//       no shape but the row length, and gives the same bits on any row range: a sharded layer
//       may be split by rows (distributed/sharded.hpp); absent: the layer is stepped whole
//   static bool fusable_at(Geometry g, std::size_t position);  // its Elem serves this layer at
//       this position of its chain (absent: always)
//   static bool needs_rows(FusedForm f);  // the fused pass must call begin_row for each row
//   static constexpr bool applies_geometry = true;  // it applies the layer's geometry direction:
//       on device memory the layer's geometry must have a device form (checked at init)
// State buffers are `buffer_t<S, Space>` (an Eigen matrix on the host, a device array on a CUDA
// device: optim/space.hpp), so one State layout serves both backends. `visit` lists the state's
// buffers in a fixed order: that is what save/load and equality use. A transform with buffers
// names them and states what values they may hold, in visit order:
//   static constexpr std::array<BufferSpec, 2> buffers{{{"m", Domain::Finite}, {"v", Domain::NonNegative}}};
// A checkpoint stores each buffer under that name and load() refuses values outside the domain.
// Without `buffers`, the buffers are called "0", "1", ... and must be finite.
// A BufferSpec may also say how large its buffer can get (`reach`, below): from the bound g on
// the transform's input entries and the hyper-parameters, e.g. an EMA of inputs below g stays
// below g. load() then refuses larger values too, so a loaded state is one that some sequence
// of accepted gradients could have produced, and the next step from it is finite.
//
// Elementwise transforms also provide the fused form used when every transform of a chain has
// one (Chain::fused on the host, the multi-tensor kernels on a device):
// `template <class S, class Sp> static Elem<S> elem(Ctx<S, Sp>&, State<S, Sp>&)` returns
// a small struct of constants and raw pointers whose `apply<P>(u, i, c)` maps one entry (P = S)
// or one SIMD packet (P = simd::Packet<S>) at flat index i, column c, and `begin_row(r)` is told
// the row. Its code is STEEPEST_HD: the same rule compiles for the CPU passes and the CUDA
// kernels. The chain then runs as one pass over memory instead of one pass per transform, and on
// a device a transform with an Elem needs nothing else to run there.
// The last transform of a chain is a step (DecoupledStep or ConstrainedStep) that writes W.
#pragma once

#include <Eigen/Core>

#include <array>
#include <cmath>
#include <cstdint>
#include <limits>
#include <stdexcept>
#include <string>

#include "../backend/eigen/packet.hpp"
#include "../backend/eigen/vectorwise.hpp"
#include "../norms/traits.hpp"
#include "hyper.hpp"
#include "params.hpp"
#include "precision.hpp"

namespace steepest {

/// Everything a transform may read about the current layer and step, in memory space Space.
template <class S, class Space = Host>
struct Ctx {
  buffer_t<S, Space>& u;                ///< running update, in place
  typename Space::template view<S> w;   ///< the parameter (a layer may be a strided block)
  /// The hyper-parameters (the optimizer's, or those the transform owns).
  const Hyper& hp;
  long long t;                          ///< step number, 1-based
  Geometry geometry;                    ///< resolved geometry of the layer
  bool is_matrix;                       ///< false for Role::Vector
  double lr;                            ///< hp.lr times the layer's lr_scale
  double radius;                        ///< resolved radius of the layer
  /// The layer's workspace (the geometry's scratch on the host, the Context on a device).
  typename Space::template workspace<S>& ws;
  const S* grad = nullptr;              ///< the raw gradient (contiguous layers; the fused path)
  /// The raw gradient's bf16 bits instead, when a float layer's gradients are bf16 (then grad is
  /// null); the fused pass, and LayerDualize's factors, widen it as they read.
  const std::uint16_t* grad_bf16 = nullptr;
  /// Entries from one gradient row's start to the next (0: the layer's columns, contiguous).
  /// The host sets grad or grad_bf16 for a strided block too, for transforms that read the raw
  /// gradient (gradient_at); the fused pass runs on contiguous layers only.
  Index grad_stride = 0;
};

/// `ctx` with the hyper-parameters `hp` (which must outlive the copy): how a transform that
/// owns coefficients (Coefficients) sees them.
template <class S, class Space>
Ctx<S, Space> with_hyper(const Ctx<S, Space>& c, const Hyper& hp) {
  return {c.u, c.w, hp, c.t, c.geometry, c.is_matrix, c.lr, c.radius, c.ws, c.grad, c.grad_bf16, c.grad_stride};
}

/// The raw gradient's entry (r, c) of the layer `ctx` steps, widened from bf16 when it is one.
template <class S, class Space>
S gradient_at(const Ctx<S, Space>& ctx, Index r, Index c) {
  const Index i = r * (ctx.grad_stride ? ctx.grad_stride : Index(ctx.w.cols())) + c;
  if (ctx.grad) return ctx.grad[i];
  if constexpr (std::is_same_v<S, float>)
    if (ctx.grad_bf16) return simd::load_wide<S>(ctx.grad_bf16 + i);
  throw std::logic_error("steepest: a transform reads the raw gradient, which this step did not provide");
}

/// The values a saved state buffer may hold; load() refuses a checkpoint with others.
enum class Domain {
  Finite,       ///< finite (moments, momenta)
  NonNegative,  ///< finite and >= 0 (second moments)
  Any,          ///< anything, NaN and infinities included
};
/// The largest magnitude a state buffer can reach when every input entry of its transform is
/// below g in magnitude, under hyper-parameters `hp` (+infinity: no bound).
using ReachFn = double (*)(const Hyper& hp, double g);
/// One named state buffer of a transform (see the file comment).
struct BufferSpec {
  /// The buffer's key in a checkpoint ("<transform>.<name>").
  const char* name;
  /// What values it may hold.
  Domain domain;
  ReachFn reach = nullptr;  ///< nullptr: no bound but the domain's
};

/// Reachable bounds of the usual recurrences, for BufferSpec::reach. Inputs have |u| < g; a
/// coefficient outside the range where the recurrence is bounded gives +infinity.
namespace reach {
/// No bound.
inline constexpr double unbounded = std::numeric_limits<double>::infinity();
/// x <- b x + (1 - b) u, 0 <= b <= 1: a convex combination of inputs, so |x| <= g.
constexpr double ema(double b, double g) { return b >= 0.0 && b <= 1.0 ? g : unbounded; }
/// x <- b x + u, |b| < 1: |x| <= g (1 + |b| + |b|^2 + ...) = g / (1 - |b|).
constexpr double sum(double b, double g) {
  const double a = b < 0.0 ? -b : b;
  return a < 1.0 ? g / (1.0 - a) : unbounded;
}
/// x <- b x + (1 - b) u^2, 0 <= b <= 1: 0 <= x <= g^2.
constexpr double ema_of_squares(double b, double g) { return ema(b, g * g); }
}  // namespace reach

/// A host state buffer (kept for code written against it; transforms use buffer_t<S, Space>).
template <class S>
using Buffer = RowMatrix<S>;

/// The state of a transform that keeps none.
struct NoState {
  /// Calls f on each saved buffer, in checkpoint order (none: nothing is saved).
  template <class F>
  void visit(F&&) {}
};

namespace detail {
/// Entries between the end of one row of a layer view and the start of the next (0 when the
/// layer is contiguous; a device view is always contiguous to its kernels).
template <class V, class = void>
struct has_outer_stride : std::false_type {};
template <class V>
struct has_outer_stride<V, std::void_t<decltype(std::declval<const V&>().outerStride())>> : std::true_type {};
template <class V>
Index row_gap(const V& w) {
  if constexpr (has_outer_stride<V>::value) return Index(w.outerStride()) - Index(w.cols());
  else return 0;
}

/// A zero r x c state buffer stored in `Precision`, for parameters of scalar S in memory space
/// Space: what each transform with a precision policy allocates in init. The one place that
/// refuses, at compile time, a precision that cannot hold S's state.
template <class Precision, class S, class Space>
buffer_t<state_storage_t<Precision, S>, Space> zero_state(Index r, Index c) {
  static_assert(!Precision::rounds || std::is_same_v<S, float>,
                "steepest: bf16 optimizer state (Bf16State) needs float parameters");
  return buffer_t<state_storage_t<Precision, S>, Space>::Zero(r, c);
}
}  // namespace detail

enum class MomentumKind {
  HeavyBall,    ///< m = beta m + u;  u = m          (PyTorch SGD momentum)
  Nesterov,     ///< m = beta m + u;  u = u + beta m (PyTorch SGD nesterov)
  EMA,          ///< m = beta m + (1-beta) u;  u = m
  NesterovEMA,  ///< m = beta m + (1-beta) u;  u = (1-beta) u + beta m  (Muon's default)
};

/// Momentum with coefficient hp.beta1; its buffer stored in `Precision` (optim/precision.hpp).
template <MomentumKind Kind = MomentumKind::NesterovEMA, class Precision = FullPrecision>
struct Momentum {
  static_assert(is_state_precision<Precision>::value,
                "steepest::Momentum: Precision must be a state-precision policy (FullPrecision, Bf16State)");
  /// The per-layer state (host or device buffers, optim/space.hpp).
  template <class S, class Space = Host>
  struct State {
    /// The momentum buffer.
    buffer_t<state_storage_t<Precision, S>, Space> m;
    /// Calls f on each saved buffer, in checkpoint order (none: nothing is saved).
    template <class F>
    void visit(F&& f) { f(m); }
  };
  /// How large buffer m can get from inputs below g (BufferSpec::reach).
  static constexpr double reach_m(const Hyper& hp, double g) {
    return Kind == MomentumKind::HeavyBall || Kind == MomentumKind::Nesterov ? reach::sum(hp.beta1, g)
                                                                             : reach::ema(hp.beta1, g);
  }
  /// The saved buffers: names, domains, reachable bounds (BufferSpec).
  static constexpr std::array<BufferSpec, 1> buffers{{{"m", Domain::Finite, &reach_m}}};
  /// Rounded (bf16) state dithers by the flat index, which a row range would shift.
  static constexpr bool row_separable = !Precision::rounds;
  /// Sizes the state for an r x c layer (zeros).
  template <class S, class Space>
  static void init(State<S, Space>& st, Index r, Index c) {
    st.m = detail::zero_state<Precision, S, Space>(r, c);
  }
  template <class S>
  struct Elem {
    state_word_t<Precision, S>* STEEPEST_RESTRICT m;
    S b, omb;
    std::uint32_t seed;  ///< the step's dither seed (Bf16State)
    STEEPEST_HD void begin_row(Index) {}
    template <class P>
    STEEPEST_HD P apply(P u, Index i, Index) const {
      using namespace simd;
      const P mo = load_wide<P>(m + i), B = set1<P>(b);
      P mn;
      if constexpr (Kind == MomentumKind::HeavyBall || Kind == MomentumKind::Nesterov)
        mn = flush_subnormal<P, S>(add(mul(B, mo), u));
      else
        mn = flush_subnormal<P, S>(add(mul(B, mo), mul(set1<P>(omb), u)));
      store_state(m + i, mn, state_dither<Precision, P>(i, seed));
      // The update reads the unrounded momentum (arithmetic in S; only the stored copy rounds).
      if constexpr (Kind == MomentumKind::HeavyBall || Kind == MomentumKind::EMA) return mn;
      else if constexpr (Kind == MomentumKind::Nesterov) return add(u, mul(B, mn));
      else return add(mul(set1<P>(omb), u), mul(B, mn));
    }
  };
  /// The per-element kernel for this layer and step (see Elem).
  template <class S, class Sp>
  static Elem<S> elem(Ctx<S, Sp>& ctx, State<S, Sp>& st) {
    const S b = static_cast<S>(ctx.hp.beta1);
    return {detail::state_words<Precision, S>(st.m), b, S(1) - b, simd::dither_seed(ctx.t)};
  }
  /// The transform's name: its key in checkpoints and in Chain::name().
  static std::string name() {
    const char* base = "?";
    switch (Kind) {
      case MomentumKind::HeavyBall: base = "momentum"; break;
      case MomentumKind::Nesterov: base = "nesterov"; break;
      case MomentumKind::EMA: base = "ema"; break;
      case MomentumKind::NesterovEMA: base = "nesterov-ema"; break;
    }
    return std::string(base) + Precision::suffix();
  }
};

/// Adam's moments with bias correction:
///   m = b1 m + (1-b1) u;  v = b2 v + (1-b2) u^2;  u = (m / (1-b1^t)) / (sqrt(v / (1-b2^t)) + eps)
/// Both buffers stored in `Precision` (optim/precision.hpp); `AdamMoments` is the full-precision one.
template <class Precision = FullPrecision>
struct Adam {
  static_assert(is_state_precision<Precision>::value,
                "steepest::Adam: Precision must be a state-precision policy (FullPrecision, Bf16State)");
  /// The per-layer state (host or device buffers, optim/space.hpp).
  template <class S, class Space = Host>
  struct State {
    buffer_t<state_storage_t<Precision, S>, Space> m;  ///< First and second moments.
    buffer_t<state_storage_t<Precision, S>, Space> v;  ///< First and second moments.
    /// Calls f on each saved buffer, in checkpoint order (none: nothing is saved).
    template <class F>
    void visit(F&& f) { f(m); f(v); }
  };
  /// How large buffer m can get from inputs below g (BufferSpec::reach).
  static constexpr double reach_m(const Hyper& hp, double g) { return reach::ema(hp.beta1, g); }
  /// How large buffer v can get from inputs below g (BufferSpec::reach).
  static constexpr double reach_v(const Hyper& hp, double g) { return reach::ema_of_squares(hp.beta2, g); }
  /// The saved buffers: names, domains, reachable bounds (BufferSpec).
  static constexpr std::array<BufferSpec, 2> buffers{
      {{"m", Domain::Finite, &reach_m}, {"v", Domain::NonNegative, &reach_v}}};
  /// An entry reads only its own row: a sharded layer may be split by rows.
  static constexpr bool row_separable = !Precision::rounds;  // as Momentum's
  /// Sizes the state for an r x c layer (zeros).
  template <class S, class Space>
  static void init(State<S, Space>& st, Index r, Index c) {
    st.m = detail::zero_state<Precision, S, Space>(r, c);
    st.v = detail::zero_state<Precision, S, Space>(r, c);
  }
  template <class S>
  struct Elem {
    state_word_t<Precision, S>* STEEPEST_RESTRICT m;
    state_word_t<Precision, S>* STEEPEST_RESTRICT v;
    S b1, omb1, b2, omb2, c1, c2, eps;
    std::uint32_t seed;  ///< the step's dither seed (Bf16State): m rounds by its low half, v by its high
    STEEPEST_HD void begin_row(Index) {}
    template <class P>
    STEEPEST_HD P apply(P u, Index i, Index) const {
      using namespace simd;
      const P mn = flush_subnormal<P, S>(add(mul(set1<P>(b1), load_wide<P>(m + i)), mul(set1<P>(omb1), u)));
      const P vn = flush_subnormal<P, S>(add(mul(set1<P>(b2), load_wide<P>(v + i)), mul(set1<P>(omb2), mul(u, u))));
      const auto r = state_dither<Precision, P>(i, seed);
      store_state(m + i, mn, r);
      store_state(v + i, vn, state_dither_high<Precision, P>(r));
      // The update reads the unrounded moments (arithmetic in S; only the stored copies round).
      return div(mul(set1<P>(c1), mn), add(mul(set1<P>(c2), sqrt(vn)), set1<P>(eps)));
    }
  };
  /// The per-element kernel for this layer and step (see Elem).
  template <class S, class Sp>
  static Elem<S> elem(Ctx<S, Sp>& ctx, State<S, Sp>& st) {
    const double b1 = ctx.hp.beta1, b2 = ctx.hp.beta2;
    const S sb1 = static_cast<S>(b1), sb2 = static_cast<S>(b2);
    return {detail::state_words<Precision, S>(st.m), detail::state_words<Precision, S>(st.v),
            sb1, S(1) - sb1, sb2, S(1) - sb2,
            static_cast<S>(1.0 / (1.0 - std::pow(b1, double(ctx.t)))),
            static_cast<S>(1.0 / std::sqrt(1.0 - std::pow(b2, double(ctx.t)))),
            static_cast<S>(ctx.hp.eps), simd::dither_seed(ctx.t)};
  }
  /// The transform's name: its key in checkpoints and in Chain::name().
  static std::string name() { return std::string("adam") + Precision::suffix(); }
};
/// Adam's moments in the parameter's precision.
using AdamMoments = Adam<>;

/// Lion (Chen et al. 2023): u = sign(b1 m + (1-b1) u);  m = b2 m + (1-b2) u.
struct LionMoment {
  /// The per-layer state (host or device buffers, optim/space.hpp).
  template <class S, class Space = Host>
  struct State {
    /// The momentum buffer.
    buffer_t<S, Space> m;
    /// Calls f on each saved buffer, in checkpoint order (none: nothing is saved).
    template <class F>
    void visit(F&& f) { f(m); }
  };
  /// How large buffer m can get from inputs below g (BufferSpec::reach).
  static constexpr double reach_m(const Hyper& hp, double g) { return reach::ema(hp.beta2, g); }
  /// The saved buffers: names, domains, reachable bounds (BufferSpec).
  static constexpr std::array<BufferSpec, 1> buffers{{{"m", Domain::Finite, &reach_m}}};
  /// An entry reads only its own row: a sharded layer may be split by rows.
  static constexpr bool row_separable = true;
  /// Sizes the state for an r x c layer (zeros).
  template <class S, class Space>
  static void init(State<S, Space>& st, Index r, Index c) { st.m = buffer_t<S, Space>::Zero(r, c); }
  template <class S>
  struct Elem {
    S* STEEPEST_RESTRICT m;
    S b1, omb1, b2, omb2;
    STEEPEST_HD void begin_row(Index) {}
    template <class P>
    STEEPEST_HD P apply(P g, Index i, Index) const {
      using namespace simd;
      const P mo = load<P>(m + i);
      const P c = add(mul(set1<P>(b1), mo), mul(set1<P>(omb1), g));
      store(m + i, flush_subnormal<P, S>(add(mul(set1<P>(b2), mo), mul(set1<P>(omb2), g))));
      return sign<P, S>(c);
    }
  };
  /// The per-element kernel for this layer and step (see Elem).
  template <class S, class Sp>
  static Elem<S> elem(Ctx<S, Sp>& ctx, State<S, Sp>& st) {
    const S b1 = static_cast<S>(ctx.hp.beta1), b2 = static_cast<S>(ctx.hp.beta2);
    return {st.m.data(), b1, S(1) - b1, b2, S(1) - b2};
  }
  /// The transform's name: its key in checkpoints and in Chain::name().
  static const char* name() { return "lion"; }
};

/// The layer's geometry, chosen by role or per layer (runtime dispatch to the norm policy).
/// It states `applies_geometry`: a device backend runs the handle's own device direction when
/// the layer is staged (cuda/geometry.cuh), and builds this Elem from the factors of the
/// geometry's fused form (elem_with_factors) when it is fused; a geometry with no device form
/// is refused at init.
struct LayerDualize {
  /// It applies the layer's geometry direction.
  static constexpr bool applies_geometry = true;
  /// The host rule unfused: the geometry's direction in place.
  template <class S>
  static void apply(Ctx<S>& ctx, NoState&) { ctx.geometry.dualize(ctx.u, ctx.ws); }

  /// Fusable geometries: identity, sign, and row / column / vector 2-normalization, whose
  /// per-row, per-column or global factors 1/||g|| are computed in a first (read-only) pass.
  static bool fusable(FusedForm f) { return f != FusedForm::None; }
  /// Identity and sign: no factor needed.
  static bool pointwise(FusedForm f) { return f == FusedForm::Identity || f == FusedForm::Sign; }
  /// A normalization's factors come from the raw gradient, before the pass: it fuses only as
  /// the chain's first transform; later in a chain only pointwise geometries fuse.
  static bool fusable_at(Geometry g, std::size_t position) {
    return position == 0 ? fusable(g.fused()) : pointwise(g.fused());
  }
  /// Row by row, when the layer's geometry is row-local (the sharded planner asks it per layer).
  static constexpr bool row_separable = true;
  /// Row: per-row factors computed before the pass (the device executor's way). RowFromGrad: the
  /// host's way, each row's factor taken from the gradient row in begin_row, just before the
  /// row's update reads the same row again from L1/L2 (one DRAM read of g instead of two, and no
  /// separate parallel region; see elem()).
  enum class Mode { Identity, Sign, Row, Col, Global, RowFromGrad };
  /// How the per-element kernel applies a fused form (both backends build their Elem from it).
  static constexpr Mode mode_of(FusedForm f) {
    switch (f) {
      case FusedForm::Sign: return Mode::Sign;
      case FusedForm::Row2: return Mode::Row;
      case FusedForm::Col2: return Mode::Col;
      case FusedForm::Global2: return Mode::Global;
      default: return Mode::Identity;
    }
  }
  template <class S>
  struct Elem {
    Mode mode;
    const S* factors;  // per row (Row) or per column (Col)
    S f;               // current row's factor, or the global one
    const S* grad = nullptr;  // RowFromGrad: the raw gradient, `cols` per row
    const std::uint16_t* grad_bf16 = nullptr;  // RowFromGrad: or its bf16 bits (grad null)
    Index cols = 0, rows = 0;
    const S* next_row = nullptr;  // RowFromGrad: the gradient row after the current one, if any
    const std::uint16_t* next_row_bf16 = nullptr;  // the same, bf16 gradients
    STEEPEST_HD void begin_row(Index r) {
      if (mode == Mode::Row) f = factors[r];
      else if (mode == Mode::Global && factors) f = factors[0];  // a factor left in device memory
#if !defined(__CUDA_ARCH__)
      else if (mode == Mode::RowFromGrad) {
        if constexpr (std::is_same_v<S, float>) {
          if (grad_bf16) {
            f = factor_of(eigen_detail::row_sumsq_bf16(grad_bf16 + r * cols, cols));
            next_row_bf16 = r + 1 < rows ? grad_bf16 + (r + 1) * cols : nullptr;
            return;
          }
        }
        f = row_factor(grad + r * cols, cols);
        next_row = r + 1 < rows ? grad + (r + 1) * cols : nullptr;
      }
#endif
    }
    /// 1 / sqrt(sum of squares) (0 for a zero row), the expression the unfused factors use.
    static S factor_of(double sumsq) {
      const S nrm = static_cast<S>(std::sqrt(sumsq));
      return nrm > S(0) ? S(1) / nrm : S(0);
    }
    /// 1 / ||row||_2 (0 for a zero row), the same expression the unfused path's factors use.
    static S row_factor(const S* row, Index n) {
      return factor_of(eigen_detail::row_sumsq(Eigen::Map<const Eigen::Matrix<S, 1, Eigen::Dynamic>>(row, n)));
    }
    template <class P>
    STEEPEST_HD P apply(P u, Index, Index c) const {
      using namespace simd;
#if !defined(__CUDA_ARCH__) && defined(__GNUC__)
      // RowFromGrad: the next row's gradient is fetched while this row is updated, so that
      // row_factor's sum of squares (a single read stream, which alone runs at a fraction of the
      // bandwidth) finds it in cache; g is still read from DRAM once.
      if (next_row) __builtin_prefetch(next_row + c);
      else if (next_row_bf16) __builtin_prefetch(next_row_bf16 + c);
#endif
      switch (mode) {
        case Mode::Identity: return u;
        case Mode::Sign: return sign<P, S>(u);
        case Mode::Col: return mul(u, load<P>(factors + c));
        default: return mul(u, set1<P>(f));
      }
    }
  };
  /// The Elem of fused form f with factors computed elsewhere (the device executor's prepass):
  /// per row (Row2), per column (Col2) or one in memory (Global2); null for the pointwise forms.
  template <class S>
  static Elem<S> elem_with_factors(FusedForm f, const S* factors) { return {mode_of(f), factors, S(1)}; }
  /// The host's factors (device factors are computed by the device executor, cuda/executor.cuh).
  template <class S>
  static Elem<S> elem(Ctx<S>& ctx, NoState&) {
    const Eigen::Map<const RowMatrix<S>> g(ctx.grad, ctx.w.rows(), ctx.w.cols());
    auto& a = ctx.ws.vec.a;
    auto inv = [](S v) { return v > S(0) ? S(1) / v : S(0); };
    const FusedForm form = ctx.geometry.fused();
    switch (form) {
      case FusedForm::Identity:
      case FusedForm::Sign: return {mode_of(form), nullptr, S(1)};
      case FusedForm::Row2: {
        // Each row's factor is taken in begin_row, as the fused pass reaches the row: the row is
        // then read from DRAM once (a separate norm pass read all of g once more, +4 B/param, in
        // a parallel region of its own).
        Elem<S> e{Mode::RowFromGrad, nullptr, S(1)};
        e.grad = ctx.grad;
        e.grad_bf16 = ctx.grad_bf16;
        e.cols = g.cols();
        e.rows = g.rows();
        return e;
      }
      case FusedForm::Col2:
        // Sum of squares per column, row by row (contiguous, vectorized reads of g), its columns
        // split over the threads: the same sums at any thread count.
        if constexpr (std::is_same_v<S, float>) {
          if (ctx.grad_bf16) eigen_detail::col_sumsq(ctx.grad_bf16, g.rows(), g.cols(), a);
          else eigen_detail::col_sumsq(ctx.grad, g.rows(), g.cols(), a);
        } else {
          eigen_detail::col_sumsq(ctx.grad, g.rows(), g.cols(), a);
        }
        a = a.unaryExpr([&](S v) { return inv(std::sqrt(v)); });
        return {mode_of(form), a.data(), S(1)};
      default: {
        if constexpr (std::is_same_v<S, float>)
          if (ctx.grad_bf16)
            return {mode_of(form), nullptr, inv(static_cast<S>(std::sqrt(eigen_detail::row_sumsq_bf16(ctx.grad_bf16, g.size()))))};
        const Eigen::Map<const Eigen::Matrix<S, 1, Eigen::Dynamic>> flat(ctx.grad, g.size());
        return {mode_of(form), nullptr, inv(static_cast<S>(std::sqrt(eigen_detail::row_sumsq(flat))))};
      }
    }
  }
  /// The fused pass calls begin_row for per-row and per-column factors.
  static constexpr bool needs_rows(FusedForm f) { return f == FusedForm::Row2 || f == FusedForm::Col2; }
  /// The transform's name: its key in checkpoints and in Chain::name().
  static const char* name() { return "geometry"; }
};

/// A compile-time geometry: u <- N::dualize(u). Use in chains written for one geometry.
template <class N>
struct Dualize {
  static_assert(is_norm_policy_v<N>, "steepest::Dualize<N>: N must be a norm policy "
                                     "(RowNorm<P>, ColNorm<Q>, SpectralNorm<>, MeanNormalized<...>)");
  /// The per-layer state (host or device buffers, optim/space.hpp).
  template <class S, class Space = Host>
  struct State {
    // The policy's scratch on the host; a device direction uses the stream's context instead.
    /// The policy's workspace (host only).
    std::conditional_t<is_host_v<Space>, workspace_t<N, S>, NoWorkspace> ws;
    /// Calls f on each saved buffer, in checkpoint order (none: nothing is saved).
    template <class F>
    void visit(F&&) {}  // scratch only, nothing to save
  };
  /// Nothing to size: the workspace grows on first use.
  template <class S, class Space>
  static void init(State<S, Space>&, Index, Index) {}
  /// The host rule: N's direction in place.
  template <class S>
  static void apply(Ctx<S>& ctx, State<S>& st) { N::dualize(ctx.u, ctx.u, st.ws); }
  /// Sign and row normalization read one row at a time; their mean-normalized scale depends on
  /// the row length only.
  static constexpr bool row_separable = fused_form_of<typename detail::mean_split<N>::base>::value == FusedForm::Sign ||
                                        fused_form_of<typename detail::mean_split<N>::base>::value == FusedForm::Row2;
  /// The transform's name: its key in checkpoints and in Chain::name().
  static const char* name() { return "dualize"; }
};

/// Multiplies by the width-aware scale s(m, n) of the layer's geometry when it is mean-normalized
/// (LayerDualize + GeometryScale = the p̄->q̄ direction). Alone, after Adam, it gives rescaled AdamW.
struct GeometryScale {
  template <class S>
  struct Elem {
    S f;
    STEEPEST_HD void begin_row(Index) {}
    template <class P>
    STEEPEST_HD P apply(P u, Index, Index) const { return simd::mul(u, simd::set1<P>(f)); }
  };
  /// The per-element kernel for this layer and step (see Elem).
  template <class S, class Sp>
  static Elem<S> elem(Ctx<S, Sp>& ctx, NoState&) {
    return {static_cast<S>(ctx.geometry.scale(ctx.w.rows(), ctx.w.cols()))};
  }
  /// s(m, n) of a geometry the planner splits by rows depends on n only.
  static constexpr bool row_separable = true;
  /// The transform's name: its key in checkpoints and in Chain::name().
  static const char* name() { return "geometry-scale"; }
};

/// Multiplies spectral layers' updates by the optimizer's shape factor (hp.shape_factor):
/// Muon's conventions for sqrt(m/n)-like factors. Layers of other geometries are untouched.
struct ShapeScale {
  /// GeometryScale's kernel, with the shape factor.
  template <class S>
  using Elem = typename GeometryScale::template Elem<S>;
  /// The per-element kernel for this layer and step (see Elem).
  template <class S, class Sp>
  static Elem<S> elem(Ctx<S, Sp>& ctx, NoState&) {
    if (!ctx.geometry.spectral() || ctx.hp.shape_factor == ShapeFactor::None) return {S(1)};
    return {static_cast<S>(
        shape_factor_value(ctx.hp.shape_factor, double(ctx.w.rows()), double(ctx.w.cols())))};
  }
  /// An entry reads only its own row: a sharded layer may be split by rows.
  static constexpr bool row_separable = true;  // 1 on non-spectral layers; spectral ones are never split
  /// The transform's name: its key in checkpoints and in Chain::name().
  static const char* name() { return "shape"; }
};

/// The elementwise sign of the update, u <- sign(u) (0 stays 0): a fixed map, whatever the
/// layer's geometry (AdaMuon's sign step before the polar factor).
struct Sign {
  template <class S>
  struct Elem {
    STEEPEST_HD void begin_row(Index) {}
    template <class P>
    STEEPEST_HD P apply(P u, Index, Index) const { return simd::sign<P, S>(u); }
  };
  /// The per-element kernel for this layer and step (see Elem).
  template <class S, class Sp>
  static Elem<S> elem(Ctx<S, Sp>&, NoState&) { return {}; }
  /// An entry reads only its own row: a sharded layer may be split by rows.
  static constexpr bool row_separable = true;
  /// The transform's name: its key in checkpoints and in Chain::name().
  static const char* name() { return "sign"; }
};

/// An elementwise second moment of the update, the update divided by its root (AdaMuon's
/// variance adaptation, Si et al. 2025, arXiv 2507.11005, where u is the polar factor):
///   v <- b2 v + (1 - b2) u^2;   u <- u / (sqrt(v) + eps)
/// with b2 = hp.beta2, eps = hp.eps and no bias correction (a scale the RMS match after it removes).
struct ElementSecondMoment {
  /// The per-layer state (host or device buffers, optim/space.hpp).
  template <class S, class Space = Host>
  struct State {
    /// The second moment.
    buffer_t<S, Space> v;
    /// Calls f on each saved buffer, in checkpoint order (none: nothing is saved).
    template <class F>
    void visit(F&& f) { f(v); }
  };
  /// How large buffer v can get from inputs below g (BufferSpec::reach).
  static constexpr double reach_v(const Hyper& hp, double g) { return reach::ema_of_squares(hp.beta2, g); }
  /// The saved buffers: names, domains, reachable bounds (BufferSpec).
  static constexpr std::array<BufferSpec, 1> buffers{{{"v", Domain::NonNegative, &reach_v}}};
  /// An entry reads only its own row: a sharded layer may be split by rows.
  static constexpr bool row_separable = true;
  /// Sizes the state for an r x c layer (zeros).
  template <class S, class Space>
  static void init(State<S, Space>& st, Index r, Index c) { st.v = buffer_t<S, Space>::Zero(r, c); }
  template <class S>
  struct Elem {
    S* STEEPEST_RESTRICT v;
    S b, omb, eps;
    STEEPEST_HD void begin_row(Index) {}
    template <class P>
    STEEPEST_HD P apply(P u, Index i, Index) const {
      using namespace simd;
      const P vn = flush_subnormal<P, S>(add(mul(set1<P>(b), load<P>(v + i)), mul(set1<P>(omb), mul(u, u))));
      store(v + i, vn);
      return div(u, add(sqrt(vn), set1<P>(eps)));
    }
  };
  /// The per-element kernel for this layer and step (see Elem).
  template <class S, class Sp>
  static Elem<S> elem(Ctx<S, Sp>& ctx, State<S, Sp>& st) {
    const S b = static_cast<S>(ctx.hp.beta2);
    return {st.v.data(), b, S(1) - b, static_cast<S>(ctx.hp.eps)};
  }
  /// The transform's name: its key in checkpoints and in Chain::name().
  static const char* name() { return "second-moment"; }
};

/// Unconstrained step with decoupled weight decay: W <- (1 - lr*lambda) W - lr * rho * u.
struct DecoupledStep {
  /// The weights are addressed as row r's start plus the flat index: w + r gap + i, gap the
  /// entries between rows of a strided block (0 for a contiguous layer, where the pass may not
  /// call begin_row at all).
  template <class S>
  struct Elem {
    S* STEEPEST_RESTRICT w;
    S keep, step;
    Index gap = 0;
    S* STEEPEST_RESTRICT wr = w;  ///< w + r gap for the current row r
    STEEPEST_HD void begin_row(Index r) { wr = w + r * gap; }
    template <class P>
    STEEPEST_HD P apply(P u, Index i, Index) const {
      using namespace simd;
#if !defined(__CUDA_ARCH__) && defined(__GNUC__)
      // The weight is the step's one 4-byte read stream beside 2-byte ones when gradients and
      // state are bf16; fetching it 2 KiB ahead (an address computed as an integer: prefetches
      // past the end do not fault) measured that step 1.2-1.3x faster (docs/PERFORMANCE.md).
      if constexpr (!std::is_arithmetic_v<P>)
        __builtin_prefetch(reinterpret_cast<const void*>(reinterpret_cast<std::uintptr_t>(wr + i) + 2048), 1);
#endif
      store(wr + i, sub(mul(set1<P>(keep), load<P>(wr + i)), mul(set1<P>(step), u)));
      return u;
    }
  };
  /// The per-element kernel for this layer and step (see Elem).
  template <class S, class Sp>
  static Elem<S> elem(Ctx<S, Sp>& ctx, NoState&) {
    S* w = ctx.w.data();
    return {w, static_cast<S>(1.0 - ctx.lr * ctx.hp.weight_decay), static_cast<S>(ctx.lr * ctx.radius),
            detail::row_gap(ctx.w), w};
  }
  /// An entry reads only its own row: a sharded layer may be split by rows.
  static constexpr bool row_separable = true;
  /// The transform's name: its key in checkpoints and in Chain::name().
  static const char* name() { return "step"; }
};

/// Constrained (Frank-Wolfe) step: W <- (1 - lr) W - lr * rho * u with u = D(M), i.e.
/// W <- (1 - lr) W + lr * rho * D(-M) for the symmetric unit balls used here. A convex
/// combination of W and a point of the radius-rho ball: ||W|| <= rho is kept once it holds.
struct ConstrainedStep {
  /// DecoupledStep's kernel, with the radius as the step's scale.
  template <class S>
  using Elem = typename DecoupledStep::template Elem<S>;
  /// The per-element kernel for this layer and step (see Elem).
  template <class S, class Sp>
  static Elem<S> elem(Ctx<S, Sp>& ctx, NoState&) {
    S* w = ctx.w.data();
    return {w, static_cast<S>(1.0 - ctx.lr), static_cast<S>(ctx.lr * ctx.radius), detail::row_gap(ctx.w), w};
  }
  /// An entry reads only its own row: a sharded layer may be split by rows.
  static constexpr bool row_separable = true;
  /// The transform's name: its key in checkpoints and in Chain::name().
  static const char* name() { return "constrained-step"; }
};

}  // namespace steepest
