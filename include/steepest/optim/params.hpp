// steepest/optim/params.hpp -- a model's parameters as the optimizers see them.
//
// The model owns its memory. A ParamSet records its *tensors* (a pointer, a shape) and the
// *layers* the optimizer steps: logical row-major m x n matrices (fan_out x fan_in, y = W x)
// viewing a tensor in place, each with a role, its own geometry, state and optional overrides.
// Every access is an Eigen::Map (with a row stride), never a copy. Most tensors are one layer:
//   matrix m x n                          -> one layer
//   vector (bias, gain) of length d       -> d x 1
//   conv kernel [out, in, kh, kw]         -> out x (in*kh*kw)
// Fused weights are one tensor and several layers (add_blocks), each block its own matrix:
//   fused QKV [3d, d], Blocks::rows(3)             -> "qkv[0..2]", d x d each (contiguous)
//   output projection [d, h*dh], Blocks::cols(h)   -> per-head d x dh blocks (row stride h*dh)
//   interleaved gate/up [2f, d], Blocks::interleaved_rows(2) -> rows 0,2,4.. and 1,3,5.. (f x d)
//   batched experts [b, m, n] (add_batched)        -> b layers of m x n
// Gradients are given per tensor (Gradients, in the order the tensors were added), and each
// layer reads its block of its tensor's gradient through the same view. Float parameters also
// take bf16 gradients (Gradients<Eigen::bfloat16>, host or device memory): a step widens each entry
// exactly and does its arithmetic in float, reading 2 bytes per gradient entry instead of 4.
#pragma once

#include <Eigen/Core>

#include <optional>
#include <string>
#include <vector>

#include "../core/config.hpp"
#include "space.hpp"

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

/// One parameter as the optimizer sees it: a view of the caller's memory, a matrix or a strided block.
template <class Scalar>
struct Layer {
  /// The name (checkpoint key, routing).
  std::string name;
  /// The role (picks the geometry and the route).
  Role role;
  Scalar* data;          ///< first entry of the layer (inside its tensor)
  Index rows;  ///< Rows.
  Index cols;  ///< Columns.
  Index stride;          ///< entries between the starts of consecutive rows (cols when contiguous)
  std::size_t tensor;    ///< the tensor (and gradient) this layer views
  Index offset;          ///< where the layer starts in its tensor, in entries
  std::optional<Geometry> geometry;  ///< overrides the optimizer's choice for this role
  double lr_scale = 1.0;             ///< per-layer (or per-group) learning-rate multiplier
  std::optional<double> radius;      ///< overrides the optimizer's radius for this role

  /// The layer as an Eigen view (host memory only: a device layer's data is a device pointer).
  RowView<Scalar> matrix() const { return {data, rows, cols, Eigen::OuterStride<>(stride)}; }
  /// True when the rows follow each other in memory (the fused one-pass kernels need that).
  bool contiguous() const { return stride == cols || rows <= 1; }
};

/// How a tensor splits into logical matrices (ParamSet::add_blocks).
struct Blocks {
  /// How a fused tensor splits into blocks.
  enum class Kind { Rows, Cols, InterleavedRows };
  /// The split.
  Kind kind;
  /// Blocks.
  Index count;
  /// `k` equal blocks of consecutive rows (fused QKV: [3d, d] -> three d x d).
  static Blocks rows(Index k) { return {Kind::Rows, k}; }
  /// `k` equal blocks of consecutive columns (an output projection's per-head inputs).
  static Blocks cols(Index k) { return {Kind::Cols, k}; }
  /// Row i belongs to block i mod k (interleaved gate/up halves of a gated MLP).
  static Blocks interleaved_rows(Index k) { return {Kind::InterleavedRows, k}; }
};

/// A physical tensor of the model: what a gradient is given for.
struct TensorInfo {
  /// The tensor's name.
  std::string name;
  Index rows;  ///< Rows.
  Index cols;  ///< Columns.
};

/// A model's parameters in memory space `Space` (optim/space.hpp): Host, or cuda::Device with
/// its stream context (`ParamSet<float, st::cuda::Device> params(st::cuda::Device{&ctx})`).
/// Pointers are into that space's memory; the set never dereferences them itself.
template <class Scalar = float, class Space = Host>
class ParamSet {
 public:
  /// The parameters' scalar type.
  using scalar_type = Scalar;
  /// Their memory space.
  using space_type = Space;

  ParamSet() = default;
  /// A set whose pointers live in `space` (a device space carries its context).
  explicit ParamSet(Space space) : space_(space) {}
  /// The memory space.
  const Space& space() const { return space_; }

  /// A matrix parameter m x n over `data` (row-major): one tensor, one layer.
  Layer<Scalar>& add(std::string name, Role role, Scalar* data, Index m, Index n) {
    const std::size_t t = add_tensor(name, data, m, n);
    return add_layer(std::move(name), role, data, m, n, n, t, 0);
  }
  /// A vector parameter of length d (stored as d x 1).
  Layer<Scalar>& add_vector(std::string name, Scalar* data, Index d) {
    return add(std::move(name), Role::Vector, data, d, 1);
  }
  /// A convolution kernel [out, in, kh, kw] viewed as out x (in*kh*kw).
  Layer<Scalar>& add_conv(std::string name, Scalar* data, Index out, Index in, Index kh, Index kw) {
    return add(std::move(name), Role::Hidden, data, out, in * kh * kw);
  }
  /// One m x n tensor stepped as `b.count` logical matrices "name[i]", each with its own
  /// geometry and state (see the file comment). Its gradient is given once, as m x n.
  void add_blocks(const std::string& name, Role role, Scalar* data, Index m, Index n, Blocks b) {
    if (b.count < 1) throw shape_error("parameter '" + name + "': the block count must be >= 1");
    const bool by_rows = b.kind != Blocks::Kind::Cols;
    if ((by_rows ? m : n) % b.count != 0)
      throw shape_error("parameter '" + name + "' (" + shape_string(m, n) + "): " +
                        std::to_string(by_rows ? m : n) + (by_rows ? " rows" : " columns") +
                        " do not split into " + std::to_string(b.count) + " equal blocks");
    for (Index i = 0; i < b.count; ++i) require_unique(name + "[" + std::to_string(i) + "]");
    const std::size_t t = add_tensor(name, data, m, n);
    for (Index i = 0; i < b.count; ++i) {
      Index off = 0, rows = m, cols = n, stride = n;
      switch (b.kind) {
        case Blocks::Kind::Rows: rows = m / b.count, off = i * rows * n; break;
        case Blocks::Kind::Cols: cols = n / b.count, off = i * cols; break;
        case Blocks::Kind::InterleavedRows: rows = m / b.count, off = i * n, stride = b.count * n; break;
      }
      add_layer(name + "[" + std::to_string(i) + "]", role, data + off, rows, cols, stride, t, off);
    }
  }
  /// A batch [b, m, n] of same-shape matrices (attention heads, experts): b layers "name[i]".
  /// Its gradient is one [b, m, n] buffer (Gradients::add_batched).
  void add_batched(const std::string& name, Role role, Scalar* data, Index b, Index m, Index n) {
    if (b < 1 || m < 0) throw shape_error("parameter '" + name + "': batch count must be >= 1, rows >= 0");
    add_blocks(name, role, data, b * m, n, Blocks::rows(b));
  }

  /// Number of layers (logical matrices).
  std::size_t size() const { return layers_.size(); }
  /// Layer i.
  Layer<Scalar>& operator[](std::size_t i) { return layers_[i]; }
  /// Layer i.
  const Layer<Scalar>& operator[](std::size_t i) const { return layers_[i]; }
  /// The layer called `name` (throws if none).
  Layer<Scalar>& at(const std::string& name) {
    for (auto& l : layers_)
      if (l.name == name) return l;
    throw std::out_of_range("no parameter named '" + name + "'");
  }
  /// The layer called `name` (throws if none).
  const Layer<Scalar>& at(const std::string& name) const { return const_cast<ParamSet*>(this)->at(name); }
  /// Iteration over the layers.
  auto begin() { return layers_.begin(); }
  /// Iteration over the layers.
  auto end() { return layers_.end(); }
  /// Iteration over the layers.
  auto begin() const { return layers_.begin(); }
  /// Iteration over the layers.
  auto end() const { return layers_.end(); }
  /// Entries over all layers.
  Index num_params() const {
    Index s = 0;
    for (const auto& l : layers_) s += l.rows * l.cols;
    return s;
  }
  /// The physical tensors, in the order added: gradients are given for these.
  const std::vector<TensorInfo>& tensors() const { return tensors_; }

  /// Which rows of which layer a sub-set keeps (select_rows).
  struct RowSelection {
    /// The layer.
    std::size_t layer;
    Index begin;  ///< rows [begin, end) of the layer
    Index end;  ///< rows [begin, end) of the layer
  };
  /// The same tensors with only the selected layers, each cut to its rows [begin, end) in place
  /// (same memory, same row stride; gradients are still given per whole tensor): what one rank
  /// of a sharded optimizer steps (distributed/sharded.hpp). Layers keep their names and overrides.
  ParamSet select_rows(const std::vector<RowSelection>& keep) const {
    ParamSet out(space_);
    out.tensors_ = tensors_;
    for (const RowSelection& k : keep) {
      if (k.layer >= layers_.size() || k.begin < 0 || k.begin > k.end || k.end > layers_[k.layer].rows)
        throw std::out_of_range("ParamSet::select_rows: no rows [" + std::to_string(k.begin) + ", " +
                                std::to_string(k.end) + ") in layer " + std::to_string(k.layer));
      Layer<Scalar> l = layers_[k.layer];
      l.data += k.begin * l.stride;
      l.offset += k.begin * l.stride;
      l.rows = k.end - k.begin;
      out.layers_.push_back(std::move(l));
    }
    return out;
  }

 private:
  std::size_t add_tensor(const std::string& name, Scalar* data, Index m, Index n) {
    if (m < 0 || n < 0) throw shape_error("parameter '" + name + "': negative shape");
    if (data == nullptr && m * n > 0) throw std::invalid_argument("parameter '" + name + "': null data");
    require_unique(name);
    tensors_.push_back({name, m, n});
    return tensors_.size() - 1;
  }
  Layer<Scalar>& add_layer(std::string name, Role role, Scalar* data, Index m, Index n, Index stride,
                           std::size_t tensor, Index offset) {
    layers_.push_back(Layer<Scalar>{std::move(name), role, data, m, n, stride, tensor, offset,
                                    std::nullopt, 1.0, std::nullopt});
    return layers_.back();
  }

  // Names are unique across tensors and layers, checked before anything is added.
  void require_unique(const std::string& name) const {
    for (const auto& t : tensors_)
      if (t.name == name) throw std::invalid_argument("parameter '" + name + "' added twice");
    for (const auto& l : layers_)
      if (l.name == name) throw std::invalid_argument("parameter '" + name + "' added twice");
  }

  Space space_{};
  std::vector<TensorInfo> tensors_;
  std::vector<Layer<Scalar>> layers_;
};

/// Gradients in the order their tensors were added to the ParamSet (in the same memory space);
/// each knows its own shape so a mismatch is caught with both shapes in the message. Scalar is
/// the parameters' scalar, or Eigen::bfloat16 for float parameters on the host (see above).
/// A gradient may also carry its tensor's name (the named overloads): a step then refuses one
/// given in another tensor's place, naming both, where shapes alone would not tell (two tensors
/// of one shape swapped). Position-only gradients stay possible; names may be given for some.
/// A tensor may have no gradient this step (`skip`, torch's `.grad is None`: a frozen layer, an
/// unused embedding row block): its layers are left exactly as they are, state included, and
/// their own step counts do not advance (OptimizerState::skipped).
template <class Scalar = float, class Space = Host>
class Gradients {
 public:
  /// The next tensor's gradient, matched by position.
  void add(const Scalar* data, Index m, Index n) { grads_.push_back({data, m, n, {}, false}); }
  /// The next vector's gradient, matched by position.
  void add_vector(const Scalar* data, Index d) { add(data, d, 1); }
  /// The gradient of a batched [b, m, n] tensor (ParamSet::add_batched).
  void add_batched(const Scalar* data, Index b, Index m, Index n) { add(data, b * m, n); }
  /// The gradient of the tensor called `name` (checked against the ParamSet's at each step).
  void add(std::string name, const Scalar* data, Index m, Index n) { grads_.push_back({data, m, n, std::move(name), false}); }
  /// A vector's gradient, matched by name (checked against the parameter's).
  void add_vector(std::string name, const Scalar* data, Index d) { add(std::move(name), data, d, 1); }
  /// A batched tensor's gradient, matched by name.
  void add_batched(std::string name, const Scalar* data, Index b, Index m, Index n) {
    add(std::move(name), data, b * m, n);
  }
  /// The next tensor has no gradient this step: its layers are not stepped (no moment decay,
  /// no weight decay) and their step counts stay where they are.
  void skip() { grads_.push_back({nullptr, 0, 0, {}, true}); }
  /// The tensor called `name` has no gradient this step (checked against the ParamSet's).
  void skip(std::string name) { grads_.push_back({nullptr, 0, 0, std::move(name), true}); }
  /// Room for `n` tensors' gradients (a step that builds its list each time allocates once).
  void reserve(std::size_t n) { grads_.reserve(n); }
  /// True when tensor i has no gradient this step (skip()).
  bool skipped(std::size_t i) const { return grads_[i].skipped; }
  /// The tensor name gradient i was given with ("" when given by position only).
  const std::string& name(std::size_t i) const { return grads_[i].name; }
  /// Tensors given.
  std::size_t size() const { return grads_.size(); }
  /// Tensor i's data.
  const Scalar* data(std::size_t i) const { return grads_[i].data; }
  /// Tensor i's rows.
  Index rows(std::size_t i) const { return grads_[i].rows; }
  /// Tensor i's columns.
  Index cols(std::size_t i) const { return grads_[i].cols; }
  /// Tensor i's gradient as a contiguous rows x cols matrix (host memory).
  Eigen::Map<const RowMatrix<Scalar>> operator[](std::size_t i) const {
    return {grads_[i].data, grads_[i].rows, grads_[i].cols};
  }
  /// The block of its tensor's gradient that layer `l` steps (same offset and row stride; host).
  template <class LayerScalar>
  ConstRowMap<Scalar> of(const Layer<LayerScalar>& l) const {
    return {grads_[l.tensor].data + l.offset, l.rows, l.cols, Eigen::OuterStride<>(l.stride)};
  }

 private:
  struct View {
    const Scalar* data;
    Index rows, cols;
    std::string name;
    bool skipped;
  };
  std::vector<View> grads_;
};

}  // namespace steepest
