// steepest/optim/params.hpp -- a model's parameters as the optimizers see them.
//
// The model owns its memory; a ParamSet records, per layer, a pointer into it, the shape, a
// role and optional per-layer overrides. Buffers are row-major m x n (fan_out x fan_in, y = W x),
// the layout of PyTorch-style weights; every access is an Eigen::Map, never a copy.
// Shapes of other tensors map onto matrices:
//   vector (bias, gain) of length d      -> d x 1
//   conv kernel [out, in, kh, kw]        -> out x (in*kh*kw)
//   batched [b, m, n] (heads, experts)   -> b layers "name[i]" of m x n over the same buffer
#pragma once

#include <Eigen/Core>

#include <optional>
#include <string>
#include <vector>

#include "../core/config.hpp"
#include "geometry.hpp"

namespace steepest {

/// What a parameter does in the network; the optimizer picks a geometry per role.
enum class Role {
  Hidden,     ///< hidden matrix (also conv kernels and batched heads)
  Embedding,  ///< input embedding (one-hot inputs): vocab rows looked up, stored d x vocab or vocab x d
  Output,     ///< output head (logits)
  Vector,     ///< biases, norm gains: one vector
};

inline const char* role_name(Role r) {
  switch (r) {
    case Role::Hidden: return "hidden";
    case Role::Embedding: return "embedding";
    case Role::Output: return "output";
    case Role::Vector: return "vector";
  }
  return "?";
}

template <class Scalar>
struct Layer {
  std::string name;
  Role role;
  Scalar* data;
  Index rows, cols;
  std::optional<Geometry> geometry;         ///< overrides the optimizer's choice for this role
  double lr_scale = 1.0;                  ///< per-layer (or per-group) learning-rate multiplier
  std::optional<double> radius;           ///< overrides the optimizer's radius for this role

  Eigen::Map<RowMatrix<Scalar>> matrix() const { return {data, rows, cols}; }
};

template <class Scalar = float>
class ParamSet {
 public:
  using scalar_type = Scalar;

  /// A matrix parameter m x n over `data` (row-major).
  Layer<Scalar>& add(std::string name, Role role, Scalar* data, Index m, Index n) {
    if (m < 0 || n < 0) throw shape_error("parameter '" + name + "': negative shape");
    if (data == nullptr && m * n > 0) throw std::invalid_argument("parameter '" + name + "': null data");
    for (const auto& l : layers_)
      if (l.name == name) throw std::invalid_argument("parameter '" + name + "' added twice");
    layers_.push_back(Layer<Scalar>{std::move(name), role, data, m, n, std::nullopt, 1.0, std::nullopt});
    return layers_.back();
  }
  /// A vector parameter of length d (stored as d x 1).
  Layer<Scalar>& add_vector(std::string name, Scalar* data, Index d) {
    return add(std::move(name), Role::Vector, data, d, 1);
  }
  /// A convolution kernel [out, in, kh, kw] viewed as out x (in*kh*kw).
  Layer<Scalar>& add_conv(std::string name, Scalar* data, Index out, Index in, Index kh, Index kw) {
    return add(std::move(name), Role::Hidden, data, out, in * kh * kw);
  }
  /// A batch [b, m, n] of same-shape matrices: b layers named "name[i]".
  void add_batched(const std::string& name, Role role, Scalar* data, Index b, Index m, Index n) {
    for (Index i = 0; i < b; ++i)
      add(name + "[" + std::to_string(i) + "]", role, data + i * m * n, m, n);
  }

  std::size_t size() const { return layers_.size(); }
  Layer<Scalar>& operator[](std::size_t i) { return layers_[i]; }
  const Layer<Scalar>& operator[](std::size_t i) const { return layers_[i]; }
  Layer<Scalar>& at(const std::string& name) {
    for (auto& l : layers_)
      if (l.name == name) return l;
    throw std::out_of_range("no parameter named '" + name + "'");
  }
  auto begin() { return layers_.begin(); }
  auto end() { return layers_.end(); }
  auto begin() const { return layers_.begin(); }
  auto end() const { return layers_.end(); }
  Index num_params() const {
    Index s = 0;
    for (const auto& l : layers_) s += l.rows * l.cols;
    return s;
  }

 private:
  std::vector<Layer<Scalar>> layers_;
};

/// Gradients in the order their parameters were added; each knows its own shape so a mismatch
/// is caught with both shapes in the message.
template <class Scalar = float>
class Gradients {
 public:
  void add(const Scalar* data, Index m, Index n) { grads_.push_back({data, m, n}); }
  void add_vector(const Scalar* data, Index d) { add(data, d, 1); }
  std::size_t size() const { return grads_.size(); }
  Eigen::Map<const RowMatrix<Scalar>> operator[](std::size_t i) const {
    return {grads_[i].data, grads_[i].rows, grads_[i].cols};
  }

 private:
  struct View {
    const Scalar* data;
    Index rows, cols;
  };
  std::vector<View> grads_;
};

}  // namespace steepest
