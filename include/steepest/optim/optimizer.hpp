// steepest/optim/optimizer.hpp -- Optimizer<Chain>: one call steps every layer of a ParamSet.
//
//   auto opt = steepest::moga_row(hp);          // or muon(...), scion(...), adamw(...), ...
//   auto state = opt.init(params);              // plain data: step counter + per-layer buffers
//   opt.step(params, grads, state);             // all layers; returns false when skipped
//
// Checks before anything is written (so a refused step changes nothing):
//   - the number of gradients and of state layers equals the number of parameters, and every
//     gradient and state layer has its parameter's shape (steepest::shape_error names the layer
//     and both shapes);
//   - every gradient entry is finite; otherwise hp.on_non_finite decides: Error throws
//     steepest::non_finite_error, Skip returns false. Either way the step counter is unchanged.
#pragma once

#include <array>
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
  Geometry geometry;
  double radius = 1.0;
  double lr_scale = 1.0;
};

/// Per-layer state of an optimizer: what `init` returns and `save`/`load` persist.
template <class S, class ChainT>
struct OptimizerState {
  long long step = 0;  ///< completed steps
  std::vector<std::string> names;
  std::vector<std::pair<Index, Index>> shapes;
  std::vector<typename ChainT::template LayerState<S>> layers;
  // Scratch, reused across steps (not saved): the running update and geometry workspaces. The
  // update buffer is sized on a layer's first transform-by-transform step; layers that only
  // ever take the fused one-pass path never allocate it (it would be 4 B/param of dead memory).
  std::vector<RowMatrix<S>> update;
  std::vector<LayerWorkspace<S>> workspace;

  /// Bytes of saved state (the buffers), for reporting state bytes per parameter.
  std::size_t state_bytes() {
    std::size_t b = 0;
    for (auto& l : layers) ChainT::visit(l, [&](auto& buf) { b += sizeof(S) * std::size_t(buf.size()); });
    return b;
  }
};

/// One layer's operator norm in its geometry, as reported by operator_norms().
struct LayerNorm {
  std::string name;
  Role role;
  std::string geometry;
  double value;
};

template <class ChainT>
class Optimizer {
 public:
  using chain = ChainT;
  template <class S>
  using State = OptimizerState<S, ChainT>;

  Hyper hp;
  /// Use the one-pass fused kernels where the chain allows (set false to run transform by
  /// transform, e.g. to compare).
  bool fuse = true;
  /// Defaults per role, indexed by Role (Hidden, Embedding, Output, Vector).
  std::array<RoleDefaults, 4> roles;

  Optimizer(Hyper h, std::array<RoleDefaults, 4> r) : hp(h), roles(r) {}
  /// For chains whose geometry is fixed at compile time (Dualize<N>): every role Identity.
  explicit Optimizer(Hyper h = {}) : hp(h) {}

  static std::string name() { return ChainT::name(); }

  template <class S>
  Geometry geometry_of(const Layer<S>& l) const {
    return l.geometry ? *l.geometry : roles[std::size_t(l.role)].geometry;
  }
  template <class S>
  double radius_of(const Layer<S>& l) const {
    return l.radius ? *l.radius : roles[std::size_t(l.role)].radius;
  }

  template <class S>
  State<S> init(const ParamSet<S>& params) const {
    State<S> st;
    for (const auto& l : params) {
      st.names.push_back(l.name);
      st.shapes.emplace_back(l.rows, l.cols);
      st.layers.emplace_back();
      ChainT::init(st.layers.back(), l.rows, l.cols);
      st.update.emplace_back();  // sized lazily by `u = grads[k]` in step()
      st.workspace.emplace_back();
    }
    return st;
  }

  /// Steps every layer. Returns true when taken, false when skipped (NonFinitePolicy::Skip).
  template <class S>
  bool step(ParamSet<S>& params, const Gradients<S>& grads, State<S>& st) const {
    validate(params, grads, st);
    for (std::size_t i = 0; i < params.size(); ++i) {
      if (hp.on_non_finite == NonFinitePolicy::Unchecked) break;
      if (!simd::all_finite(grads[i].data(), grads[i].size())) {
        if (hp.on_non_finite == NonFinitePolicy::Skip) return false;
        throw non_finite_error("parameter '" + params[i].name +
                               "': gradient has NaN or Inf entries; step refused, nothing changed");
      }
    }
    const long long t = st.step + 1;
    const std::size_t n = params.size();
    // Layers run one after another; the work inside a layer is what runs in parallel (the fused
    // kernels' OpenMP blocks, Eigen's GEMMs). An OpenMP loop over layers made every inner region
    // a nested one, which libgomp serves with a fresh team: ~0.1 ms per layer per step measured
    // on 256x256 at 2 threads, 5-10x the step itself.
    for (std::ptrdiff_t i = 0; i < std::ptrdiff_t(n); ++i) {
      const auto k = std::size_t(i);
      const Layer<S>& l = params[k];
      RowMatrix<S>& u = st.update[k];
      const double lr = hp.lr * l.lr_scale * roles[std::size_t(l.role)].lr_scale;
      Ctx<S> ctx{u, l.matrix(), hp, t, geometry_of(l), l.role != Role::Vector, lr, radius_of(l),
                 st.workspace[k], grads[k].data()};
      if (fuse && ChainT::can_fuse(ctx)) {
        ChainT::fused(ctx, st.layers[k]);  // one pass: u is not used
      } else {
        u = grads[k];
        ChainT::apply(ctx, st.layers[k]);
      }
    }
    st.step = t;
    return true;
  }

  /// Each layer's operator norm in its own geometry (mean-normalized when the layer's is),
  /// output head(s) first, then the others in insertion order.
  template <class S>
  std::vector<LayerNorm> operator_norms(const ParamSet<S>& params) const {
    std::vector<LayerNorm> out;
    for (int pass = 0; pass < 2; ++pass)
      for (const auto& l : params)
        if ((l.role == Role::Output) == (pass == 0)) {
          const Geometry g = geometry_of(l);
          out.push_back({l.name, l.role, g.name(), g.value(l.matrix())});
        }
    return out;
  }

 private:
  template <class S>
  void validate(const ParamSet<S>& params, const Gradients<S>& grads, const State<S>& st) const {
    if (grads.size() != params.size())
      throw shape_error("step: " + std::to_string(grads.size()) + " gradients for " +
                        std::to_string(params.size()) + " parameters");
    if (st.layers.size() != params.size())
      throw shape_error("step: optimizer state has " + std::to_string(st.layers.size()) +
                        " layers but there are " + std::to_string(params.size()) +
                        " parameters (state from another model?)");
    for (std::size_t i = 0; i < params.size(); ++i) {
      const auto& l = params[i];
      if (grads[i].rows() != l.rows || grads[i].cols() != l.cols)
        throw shape_error("parameter '" + l.name + "': gradient is " +
                          shape_string(grads[i].rows(), grads[i].cols()) + " but the weight is " +
                          shape_string(l.rows, l.cols));
      if (st.shapes[i] != std::make_pair(l.rows, l.cols) || st.names[i] != l.name)
        throw shape_error("parameter '" + l.name + "' (" + shape_string(l.rows, l.cols) +
                          "): optimizer state layer " + std::to_string(i) + " is '" + st.names[i] +
                          "' " + shape_string(st.shapes[i].first, st.shapes[i].second));
    }
  }
};

/// Free-function spelling of Optimizer::operator_norms.
template <class ChainT, class S>
std::vector<LayerNorm> operator_norms(const ParamSet<S>& params, const Optimizer<ChainT>& opt) {
  return opt.operator_norms(params);
}

}  // namespace steepest
