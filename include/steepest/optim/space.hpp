// steepest/optim/space.hpp -- where a parameter set's memory lives: the host or a device.
//
// One optimizer core serves both backends. The parameter set, the gradients and the optimizer
// state carry a memory-space type, and everything that touches memory is chosen from it:
//   ParamSet<float>                  host memory; Eigen kernels (the default: Host)
//   ParamSet<float, cuda::Device>    CUDA device memory; CUDA kernels (<steepest/cuda/cuda.cuh>)
// The chains, transforms, routing tables, hyper-parameters and the state's layout (one buffer
// per transform, visited in the same order) are the same types on both; only the buffers and
// the per-step executor differ. A space is a type with
//   template <class S> using buffer    = ...;  // an owning rows x cols state buffer: rows(), cols(),
//                                               // size(), data(), static Zero(rows, cols)
//   template <class S> using view      = ...;  // a layer's strided view: data(), rows(), cols()
//   template <class S> using workspace = ...;  // what a geometry's direction gets as scratch
//   template <class S> using scratch   = ...;  // per-state scratch of the executor (not saved)
//   static const char* name();
// and, for spaces other than Host, the executor entry points optimizer.hpp calls (see
// cuda/executor.cuh). Spaces are distinct types, so a program that uses both instantiates two
// sets of templates and never mixes them (no ODR hazard from including the CUDA headers in
// some translation units only).
#pragma once

#include <Eigen/Core>

#include <cstring>
#include <type_traits>
#include <vector>

#include "geometry.hpp"

namespace steepest {

/// A row-major view with a row stride: a whole tensor (stride = cols) or one block of it.
template <class Scalar>
using RowView = Eigen::Map<RowMatrix<Scalar>, 0, Eigen::OuterStride<>>;
template <class Scalar>
using ConstRowMap = Eigen::Map<const RowMatrix<Scalar>, 0, Eigen::OuterStride<>>;

/// Scratch of the host executor, one entry per state layer (not saved): the running update,
/// sized on a layer's first transform-by-transform step (layers that only ever take the fused
/// one-pass path never allocate it: it would be 4 B/param of dead memory), and the geometry's
/// workspace.
template <class S>
struct HostScratch {
  /// Per layer: the running update.
  std::vector<RowMatrix<S>> update;
  /// Per layer: the geometry's workspace.
  std::vector<LayerWorkspace<S>> workspace;
  /// Room for one more layer.
  void add_layer() {
    update.emplace_back();
    workspace.emplace_back();
  }
};

/// Host memory: Eigen matrices and maps, the CPU kernels. The default space everywhere.
struct Host {
  /// A state buffer: an Eigen row-major matrix.
  template <class S>
  using buffer = RowMatrix<S>;
  /// A layer's weights: a strided view.
  template <class S>
  using view = RowView<S>;
  /// A layer's geometry workspace.
  template <class S>
  using workspace = LayerWorkspace<S>;
  /// The step's scratch.
  template <class S>
  using scratch = HostScratch<S>;
  /// "host", as checkpoints and messages name the space.
  static const char* name() { return "host"; }
};

template <class Space>
inline constexpr bool is_host_v = std::is_same_v<Space, Host>;

/// The state-buffer type of scalar S in `Space`.
template <class S, class Space>
using buffer_t = typename Space::template buffer<S>;

/// Copies `count` scalars of a state buffer, from flat (row-major) position `first`, to / from
/// host bytes: what save and load stream through (the bytes need not be aligned, they are a
/// file's). Host buffers are plain memory; a device space overloads these for its buffer type
/// (found by argument-dependent lookup).
template <class S>
void copy_to_host(const RowMatrix<S>& b, Index first, Index count, void* dst) {
  if (count > 0) std::memcpy(dst, b.data() + first, sizeof(S) * std::size_t(count));
}
template <class S>
void copy_from_host(RowMatrix<S>& b, Index first, Index count, const void* src) {
  if (count > 0) std::memcpy(b.data() + first, src, sizeof(S) * std::size_t(count));
}

}  // namespace steepest
