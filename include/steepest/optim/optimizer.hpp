// steepest/optim/optimizer.hpp -- Optimizer<Chain>: one call steps every layer of a ParamSet.
//
//   auto opt = steepest::moga_row(hp);          // or adamw(...), scion(...), ...
//   auto state = opt.init(params);              // plain data: step counter + per-layer buffers
//   opt.step(params, grads, state);             // all layers; returns false when skipped
//
// A tensor given no gradient (grads.skip(name): torch's `.grad is None`) is not stepped at all,
// and its layers keep their own step counts for bias corrections, as torch's optimizers do.
//
// The same calls step a parameter set in host memory (ParamSet<float>) or on a CUDA device
// (ParamSet<float, cuda::Device>, with <steepest/cuda/cuda.cuh>): the state is built in the
// parameter set's memory space and each step runs that space's kernels (optim/space.hpp).
//
// An Optimizer is one chain with its hyper-parameters and a geometry per role. A model whose
// layers need different chains (Muon on hidden matrices, AdamW on the rest) routes them with
// `routed(...)` (optim/routing.hpp); both kinds share the checks and the per-layer loop here.
//
// Checks before anything is written (so a refused step changes nothing):
//   - one gradient per tensor of the parameter set, with the tensor's shape, and one state layer
//     per layer with the layer's name and shape (steepest::shape_error names the layer and both
//     shapes);
//   - every gradient entry is finite and below 2^gradient_limit_exponent<S> in magnitude (2^40
//     for float: hyper.hpp says why); otherwise hp.on_non_finite decides: Error throws
//     steepest::non_finite_error, Skip returns false. Either way the step counter is unchanged.
#pragma once

#include <algorithm>
#include <array>
#include <numeric>
#include <stdexcept>
#include <string>
#include <vector>

#include "chain.hpp"

namespace steepest {

class non_finite_error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

/// Geometry, radius and learning-rate multiplier an optimizer gives a role by default.
struct RoleDefaults {
  /// The geometry of layers of this role (the identity by default).
  Geometry geometry;
  /// Their radius (Scion's constrained step).
  double radius = 1.0;
  /// Their learning-rate factor.
  double lr_scale = 1.0;
};

/// What a state layer was made for, fixed at init: save() records it and load() refuses a file
/// whose layer differs in any field (a MOGA-row file into MOGA-col state, swapped roles, ...).
struct LayerRecord {
  /// The parameter's name.
  std::string name;
  Index rows = 0;  ///< Its rows.
  Index cols = 0;  ///< Its columns.
  /// Its role.
  Role role = Role::Hidden;
  std::string geometry;  ///< the layer's Geometry::name() (its norm, polar method and schedule)
};

/// Per-layer state of an optimizer: what `init` returns and `save`/`load` persist. Its buffers
/// live in the parameter set's memory space; the layout is the same in every space.
template <class S, class ChainT, class Space = Host>
struct OptimizerState {
  /// The chain whose state this is.
  using chain_type = ChainT;
  /// The parameters' scalar type.
  using scalar_type = S;
  /// The memory space of the state's buffers.
  using space_type = Space;
  long long step = 0;  ///< completed steps
  std::vector<std::size_t> index;  ///< the parameter-set layer each state layer belongs to
  std::vector<LayerRecord> records;  ///< what each state layer was made for
  /// Per state layer, the steps it had no gradient (Gradients::skip): its own step count, the t
  /// its bias corrections read, is step - skipped[j] (torch's per-parameter "step").
  std::vector<long long> skipped;
  /// Per layer, the chain's state.
  std::vector<typename ChainT::template LayerState<S, Space>> layers;
  /// The executor's scratch, reused across steps (not saved; see HostScratch).
  typename Space::template scratch<S> scratch;

  /// Bytes of saved state (the buffers), for reporting state bytes per parameter.
  std::size_t state_bytes() {
    std::size_t b = 0;
    for (auto& l : layers)
      ChainT::visit(l, [&](auto& buf) { b += sizeof(*buf.data()) * std::size_t(buf.size()); });
    return b;
  }
  /// f(record, chain_name, visit) for each layer in order; visit(g) calls
  /// g(key, buffer, domain) per saved buffer (ChainT::visit_named).
  template <class F>
  void for_each_layer(F&& f) {
    const std::string chain = ChainT::name();
    for (std::size_t i = 0; i < layers.size(); ++i)
      f(records[i], chain, [&](auto&& g) { ChainT::visit_named(layers[i], g); });
  }
  /// Sets the step counter (checkpoint loading).
  void set_step(long long t) { step = t; }
  /// Each layer's skipped-step count, in for_each_layer's order (checkpoint saving and loading).
  std::vector<long long*> skip_counts() {
    std::vector<long long*> out;
    for (auto& k : skipped) out.push_back(&k);
    return out;
  }
};

/// One layer's operator norm in its geometry, as reported by operator_norms().
struct LayerNorm {
  /// The layer's name.
  std::string name;
  /// Its role.
  Role role;
  /// Its geometry's name.
  std::string geometry;
  /// ||W|| in that geometry (mean-normalized when it is).
  double value;
};

namespace detail {

/// Refuses, at compile time, gradients a step cannot take for parameters of scalar S: they are
/// S, or bf16 (Eigen::bfloat16) for float parameters, in either memory space.
template <class S, class G>
constexpr void check_gradient_type() {
  static_assert(std::is_same_v<G, S> || (std::is_same_v<G, Eigen::bfloat16> && std::is_same_v<S, float>),
                "steepest: gradients must have the parameters' scalar type, or be Eigen::bfloat16 "
                "for float parameters");
}
/// A gradient's entries as the kernels address them: G itself, or the raw bits of a bf16.
template <class G>
const auto* gradient_words(const G* p) {
  if constexpr (std::is_same_v<G, Eigen::bfloat16>) return reinterpret_cast<const std::uint16_t*>(p);
  else return p;
}

/// The checks every optimizer runs before a step that do not depend on its chain: one gradient
/// per tensor, each with its tensor's shape, and a state made for as many layers as there are.
template <class S, class G, class Space>
void check_step_inputs(const ParamSet<S, Space>& params, const Gradients<G, Space>& grads,
                       std::size_t state_layers) {
  check_gradient_type<S, G>();
  const auto& ts = params.tensors();
  if (grads.size() != ts.size())
    throw shape_error("step: " + std::to_string(grads.size()) + " gradients for " + std::to_string(ts.size()) +
                      " parameters");
  for (std::size_t i = 0; i < ts.size(); ++i)
    if (!grads.name(i).empty() && grads.name(i) != ts[i].name)
      throw shape_error("step: gradient " + std::to_string(i) + " is given for '" + grads.name(i) +
                        "' but parameter " + std::to_string(i) + " is '" + ts[i].name + "'");
  for (std::size_t i = 0; i < ts.size(); ++i)
    if (!grads.skipped(i) && (grads.rows(i) != ts[i].rows || grads.cols(i) != ts[i].cols))
      throw shape_error("parameter '" + ts[i].name + "': gradient is " +
                        shape_string(grads.rows(i), grads.cols(i)) + " but the weight is " +
                        shape_string(ts[i].rows, ts[i].cols));
  if (state_layers != params.size())
    throw shape_error("step: optimizer state has " + std::to_string(state_layers) + " layers but there are " +
                      std::to_string(params.size()) + " parameters (state from another model?)");
}

/// True when every gradient is finite; otherwise throws (Error) or returns false (Skip).
/// One contiguous read pass per tensor (Unchecked: none). On a device: one check kernel over
/// every gradient and one 4-byte read of its flag (the only host synchronization of a step).
/// bf16 gradients are tested as the floats they widen to, against the same bound.
template <class S, class G, class Space>
bool gradients_finite(const ParamSet<S, Space>& params, const Gradients<G, Space>& grads, NonFinitePolicy policy) {
  if (policy == NonFinitePolicy::Unchecked) return true;
  std::size_t bad = grads.size();
  if constexpr (is_host_v<Space>) {
    for (std::size_t i = 0; i < grads.size() && bad == grads.size(); ++i)
      if (!grads.skipped(i) && !simd::all_finite<gradient_limit_exponent<S>>(gradient_words(grads.data(i)), grads.rows(i) * grads.cols(i)))
        bad = i;
  } else {
    bad = Space::first_non_finite(params, grads);
  }
  if (bad == grads.size()) return true;
  if (policy == NonFinitePolicy::Skip) return false;
  throw non_finite_error("parameter '" + params.tensors()[bad].name +
                         "': gradient has NaN or Inf entries, or entries of magnitude >= 2^" +
                         std::to_string(gradient_limit_exponent<S>) + "; step refused, nothing changed");
}

/// Each layer's norm in the geometry `opt.geometry_of(layer)` gives it (plain or routed
/// optimizer), output heads first. Device layers are copied to the host first (a diagnostic,
/// not part of a step: it synchronizes).
template <class S, class Space, class Opt>
std::vector<LayerNorm> operator_norms(const ParamSet<S, Space>& params, const Opt& opt) {
  std::vector<LayerNorm> out;
  for (int pass = 0; pass < 2; ++pass)
    for (const auto& l : params)
      if ((l.role == Role::Output) == (pass == 0)) {
        const Geometry g = opt.geometry_of(l);
        if constexpr (is_host_v<Space>) {
          out.push_back({l.name, l.role, g.name(), g.value(l.matrix())});
        } else {
          const RowMatrix<S> host = Space::layer_to_host(params, l);
          out.push_back({l.name, l.role, g.name(), g.value(host)});
        }
      }
  return out;
}

}  // namespace detail

/// One chain, its hyper-parameters and a geometry per role: a one-route optimizer (see Routed).
template <class ChainT>
class Optimizer {
 public:
  /// The chain.
  using chain = ChainT;
  /// Its state for parameters of scalar S in memory space Space.
  template <class S, class Space = Host>
  using State = OptimizerState<S, ChainT, Space>;

  /// The hyper-parameters (lr, betas, eps, weight decay, shape factor, non-finite policy).
  Hyper hp;
  /// Use the one-pass fused kernels where the chain allows (set false to run transform by
  /// transform, e.g. to compare).
  bool fuse = true;
  /// Defaults per role, indexed by Role (Hidden, Embedding, Output, Vector).
  std::array<RoleDefaults, 4> roles;
  /// The coefficients each transform of the chain owns, by position (none by default: every
  /// transform reads hp). `opt.coefficients.at(1).beta1 = 0.99` gives the second its own beta1.
  typename ChainT::CoefficientTable coefficients{};
  /// Multiplies every layer's learning rate (a schedule's factor), on top of hp.lr; as a route
  /// of a routed optimizer, on top of that optimizer's factor too.
  double lr_factor = 1.0;

  /// An optimizer with hyper-parameters h and per-role defaults r (Hidden, Embedding, Output, Vector).
  Optimizer(Hyper h, std::array<RoleDefaults, 4> r) : hp(h), roles(r) {}
  /// For chains whose geometry is fixed at compile time (Dualize<N>): every role Identity.
  explicit Optimizer(Hyper h = {}) : hp(h) {}

  /// The chain's name.
  static std::string name() { return ChainT::name(); }

  // ---- the surface a routed optimizer shares: a plain one is a table of one route ----------

  /// What a step does on a non-finite gradient, for every layer (hp.on_non_finite).
  NonFinitePolicy& non_finite_policy() { return hp.on_non_finite; }
  /// What a step does with a non-finite gradient.
  NonFinitePolicy non_finite_policy() const { return hp.on_non_finite; }
  /// One route: every layer.
  static constexpr std::size_t route_count = 1;
  /// The route that takes layer l: the only one.
  template <class S>
  std::size_t route_of(const Layer<S>&) const { return 0; }
  /// f(route i's optimizer): this one.
  template <class F>
  void with_route(std::size_t, F&& f) const { f(*this); }

  /// The layer's geometry: its own, else its role's.
  template <class S>
  Geometry geometry_of(const Layer<S>& l) const {
    return l.geometry ? *l.geometry : roles[std::size_t(l.role)].geometry;
  }
  /// The layer's radius: its own, else its role's.
  template <class S>
  double radius_of(const Layer<S>& l) const {
    return l.radius ? *l.radius : roles[std::size_t(l.role)].radius;
  }

  /// A fresh state (zero moments, step 0) for every layer of `params`, in its memory space.
  template <class S, class Space>
  State<S, Space> init(const ParamSet<S, Space>& params) const {
    std::vector<std::size_t> all(params.size());
    std::iota(all.begin(), all.end(), std::size_t(0));
    return init_layers(params, all);
  }
  /// A state with every layer routed as `route_index` says: route 0, the only one (the routed
  /// optimizer's init_routed, for code written for either).
  template <class S, class Space>
  State<S, Space> init_routed(const ParamSet<S, Space>& params, const std::vector<std::size_t>& route_index) const {
    if (route_index.size() != params.size() ||
        std::any_of(route_index.begin(), route_index.end(), [](std::size_t r) { return r != 0; }))
      throw std::invalid_argument("optimizer: init_routed needs route 0 for every layer (one route)");
    return init(params);
  }
  /// State for the given layers of `params` only (what a route of a routed optimizer owns).
  template <class S, class Space>
  State<S, Space> init_layers(const ParamSet<S, Space>& params, const std::vector<std::size_t>& index) const {
    State<S, Space> st;
    st.index = index;
    for (std::size_t k : index) {
      const Layer<S>& l = params[k];
      if constexpr (!is_host_v<Space>) Space::check_layer(*this, l);  // a geometry the device lacks
      st.records.push_back({l.name, l.rows, l.cols, l.role, geometry_of(l).name()});
      st.layers.emplace_back();
      st.skipped.push_back(0);
      ChainT::init(st.layers.back(), l.rows, l.cols);
      if constexpr (is_host_v<Space>) st.scratch.add_layer();
    }
    return st;
  }

  /// Steps every layer. Returns true when taken, false when skipped (NonFinitePolicy::Skip).
  /// `grads` holds S, or bf16 for float parameters (params.hpp).
  template <class S, class Space, class G>
  bool step(ParamSet<S, Space>& params, const Gradients<G, Space>& grads, State<S, Space>& st) const {
    detail::check_step_inputs(params, grads, st.layers.size());
    check_state(params, st);
    if (!detail::gradients_finite(params, grads, hp.on_non_finite)) return false;
    run(params, grads, st, st.step + 1, fuse, lr_factor);
    return true;
  }

  /// Each layer's operator norm in its own geometry (mean-normalized when the layer's is),
  /// output head(s) first, then the others in insertion order.
  template <class S, class Space>
  std::vector<LayerNorm> operator_norms(const ParamSet<S, Space>& params) const {
    return detail::operator_norms(params, *this);
  }

  // ---- the parts of a step, shared with routed optimizers ----------------------------------

  /// Every state layer belongs to the layer of `params` it was made for (name and shape).
  template <class S, class Space>
  void check_state(const ParamSet<S, Space>& params, const State<S, Space>& st) const {
    for (std::size_t j = 0; j < st.layers.size(); ++j) {
      const std::size_t k = st.index[j];
      const LayerRecord& r = st.records[j];
      if (k >= params.size())
        throw shape_error("step: optimizer state layer '" + r.name + "' has no parameter (state from another model?)");
      const auto& l = params[k];
      if (r.rows != l.rows || r.cols != l.cols || r.name != l.name)
        throw shape_error("parameter '" + l.name + "' (" + shape_string(l.rows, l.cols) +
                          "): optimizer state layer " + std::to_string(j) + " is '" + r.name + "' " +
                          shape_string(r.rows, r.cols));
    }
  }

  /// The learning rate of layer l: hp.lr times the schedule's factor, the layer's lr_scale and
  /// its role's.
  template <class S>
  double lr_of(const Layer<S>& l, double lr_factor) const {
    return hp.lr * lr_factor * l.lr_scale * roles[std::size_t(l.role)].lr_scale;
  }

  /// Step t (1-based) of every layer the state owns; no checks (step() and routed optimizers
  /// check first). `lr_factor` multiplies every layer's learning rate. A layer whose tensor has
  /// no gradient (Gradients::skip) is left alone and counted in st.skipped; the others take
  /// their own step t - st.skipped[j].
  template <class S, class Space, class G>
  void run(ParamSet<S, Space>& params, const Gradients<G, Space>& grads, State<S, Space>& st, long long t,
           bool fused, double lr_factor = 1.0) const {
    detail::check_gradient_type<S, G>();
    if constexpr (!is_host_v<Space>) {
      Space::run(*this, params, grads, st, t, fused, lr_factor);  // the device executor
    } else {
      run_host(params, grads, st, t, fused, lr_factor);
    }
    st.step = t;
  }

 private:
  template <class S, class G>
  void run_host(ParamSet<S>& params, const Gradients<G>& grads, State<S>& st, long long t, bool fused,
                double lr_factor) const {
    constexpr bool bf16_grads = !std::is_same_v<G, S>;
    // Layers run one after another; the work inside a layer is what runs in parallel (the fused
    // kernels' OpenMP blocks, Eigen's GEMMs). An OpenMP loop over layers made every inner region
    // a nested one, which libgomp serves with a fresh team: ~0.1 ms per layer per step measured
    // on 256x256 at 2 threads, 5-10x the step itself.
    for (std::size_t j = 0; j < st.layers.size(); ++j) {
      const Layer<S>& l = params[st.index[j]];
      if (grads.skipped(l.tensor)) {  // no gradient: nothing of this layer changes but its count
        ++st.skipped[j];
        continue;
      }
      RowMatrix<S>& u = st.scratch.update[j];
      const auto g = grads.of(l);
      Ctx<S> ctx{u, l.matrix(), hp, t - st.skipped[j], geometry_of(l), l.role != Role::Vector, lr_of(l, lr_factor), radius_of(l),
                 st.scratch.workspace[j]};
      // The raw gradient, strided blocks included (gradient_at); only contiguous layers fuse.
      if constexpr (bf16_grads) ctx.grad_bf16 = detail::gradient_words(g.data());
      else ctx.grad = g.data();
      ctx.grad_stride = l.stride;
      if (fused && l.contiguous() && ChainT::template can_fuse<S>(ctx.geometry)) {
        ChainT::fused(ctx, st.layers[j], coefficients);  // one pass (bf16 widened as it is read): u is not used
      } else {
        // A strided block is gathered here (bf16 widened exactly); the step writes W through its view.
        if constexpr (bf16_grads) u = g.template cast<S>();
        else u = g;
        ChainT::apply(ctx, st.layers[j], coefficients);
      }
    }
  }
};

/// Free-function spelling of operator_norms, for any optimizer (plain or routed).
template <class Opt, class S, class Space>
std::vector<LayerNorm> operator_norms(const ParamSet<S, Space>& params, const Opt& opt) {
  return opt.operator_norms(params);
}

}  // namespace steepest
