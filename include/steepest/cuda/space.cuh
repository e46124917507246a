// steepest/cuda/space.cuh -- device memory as a memory space of the one optimizer core: the
// state buffer type, the layer view and the executor's scratch (optim/space.hpp explains spaces;
// cuda/executor.cuh defines cuda::Device, which names these).
//
// State buffers are owning device arrays with the Eigen-like surface the transforms use
// (Zero(rows, cols), rows(), cols(), size(), data()), so a transform's State is the same type
// template on both backends. Everything that manages state (creating, copying, saving,
// loading) is device-synchronous: these run at init and at checkpoints, never inside a step,
// and a synchronous copy is safe whatever streams the caller uses.
#pragma once

#include <utility>
#include <vector>

#include "../optim/space.hpp"
#include "device.hpp"

namespace steepest {
namespace cuda {

/// An owning rows x cols row-major array in device memory: a transform's state buffer.
template <class S>
class DeviceArray {
 public:
  /// The entry type.
  using Scalar = S;
  DeviceArray() = default;
  /// rows x cols zeros (allocates and clears; synchronizes the device).
  static DeviceArray Zero(Index rows, Index cols) {
    DeviceArray a;
    a.allocate(rows, cols);
    if (a.size()) {
      check(cudaMemset(a.p_, 0, a.bytes()), "cudaMemset (state buffer)");
      check(cudaDeviceSynchronize(), "cudaDeviceSynchronize (state buffer)");
    }
    return a;
  }
  /// A deep copy (synchronizes the device).
  DeviceArray(const DeviceArray& o) {
    allocate(o.r_, o.c_);
    if (size()) {
      check(cudaMemcpy(p_, o.p_, bytes(), cudaMemcpyDeviceToDevice), "cudaMemcpy (state copy)");
      check(cudaDeviceSynchronize(), "cudaDeviceSynchronize (state copy)");
    }
  }
  /// A deep copy (synchronizes the device).
  DeviceArray& operator=(const DeviceArray& o) {
    if (this != &o) {
      DeviceArray t(o);
      swap(t);
    }
    return *this;
  }
  /// Takes o's allocation.
  DeviceArray(DeviceArray&& o) noexcept { swap(o); }
  /// Swaps allocations with o.
  DeviceArray& operator=(DeviceArray&& o) noexcept {
    swap(o);
    return *this;
  }
  ~DeviceArray() {
    if (p_) cudaFree(p_);
  }
  /// Rows.
  Index rows() const { return r_; }
  /// Columns.
  Index cols() const { return c_; }
  /// Entries.
  Index size() const { return r_ * c_; }
  /// The device pointer.
  S* data() { return p_; }
  /// The device pointer.
  const S* data() const { return p_; }
  /// Exchanges the two arrays' memory (no copy; what load() commits with, as Eigen's swap).
  void swap(DeviceArray& o) noexcept {
    std::swap(p_, o.p_), std::swap(r_, o.r_), std::swap(c_, o.c_);
  }

 private:
  void allocate(Index rows, Index cols) {
    if (rows < 0 || cols < 0) throw shape_error("cuda::DeviceArray: negative shape " + shape_string(rows, cols));
    r_ = rows, c_ = cols;
    if (size()) check(cudaMalloc(reinterpret_cast<void**>(&p_), bytes()), "cudaMalloc (state buffer)");
  }
  std::size_t bytes() const { return sizeof(S) * std::size_t(size()); }
  S* p_ = nullptr;
  Index r_ = 0, c_ = 0;
};

/// save / load's staging (optim/state_io.hpp), found by argument-dependent lookup. The device is
/// synchronized first, so the copy sees every step enqueued on any stream.
template <class S>
void copy_to_host(const DeviceArray<S>& b, Index first, Index count, void* dst) {
  if (count <= 0) return;
  check(cudaDeviceSynchronize(), "cudaDeviceSynchronize (saving state)");
  check(cudaMemcpy(dst, b.data() + first, sizeof(S) * std::size_t(count), cudaMemcpyDeviceToHost),
        "cudaMemcpy (saving state)");
}
template <class S>
void copy_from_host(DeviceArray<S>& b, Index first, Index count, const void* src) {
  if (count <= 0) return;
  check(cudaDeviceSynchronize(), "cudaDeviceSynchronize (loading state)");
  check(cudaMemcpy(b.data() + first, src, sizeof(S) * std::size_t(count), cudaMemcpyHostToDevice),
        "cudaMemcpy (loading state)");
  check(cudaDeviceSynchronize(), "cudaDeviceSynchronize (loading state)");
}

/// A layer's parameter as the device transforms see it (Ctx::w): a contiguous rows x cols
/// block (strided layers are gathered into scratch first: the Elem kernels index it flat).
template <class S>
struct LayerView {
  /// First entry of the layer (device memory).
  S* ptr = nullptr;
  Index r = 0;  ///< Rows.
  Index c = 0;  ///< Columns.
  /// First entry.
  S* data() const { return ptr; }
  /// Rows.
  Index rows() const { return r; }
  /// Columns.
  Index cols() const { return c; }
};

/// The device executor's scratch, per optimizer state (not saved; a copied state starts with
/// none). Every buffer only grows, so steady-state steps allocate nothing.
template <class S>
struct StepScratch {
  Buffer<S> u;            ///< running updates of the transform-by-transform layers
  Buffer<S> w;            ///< contiguous copies of strided layers' weights
  Buffer<float> factors;  ///< row / column / global factors of a fused geometry
  DeviceArray<S> none;    ///< what Ctx::u names on a device (device transforms use their Elem)
  StepScratch() = default;
  /// A copy starts empty: scratch is not state.
  StepScratch(const StepScratch&) {}
  /// Keeps this scratch: scratch is not state.
  StepScratch& operator=(const StepScratch&) { return *this; }
  /// Takes the buffers.
  StepScratch(StepScratch&&) = default;
  /// Takes the buffers.
  StepScratch& operator=(StepScratch&&) = default;
};

}  // namespace cuda
}  // namespace steepest
