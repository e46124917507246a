// steepest._core on a GPU: Where<cuda::Device>, how a Core reaches device memory. Compiled by
// nvcc, in a build of the module with CUDA (python/CMakeLists.txt).
//
// The tensors are torch's CUDA tensors (or any device memory), viewed in place: the core holds
// their device pointers, as on the CPU it holds host pointers. Each Core owns a cuda::Context
// (cuBLAS handles, scratch) made on the parameters' device; the Python side hands it torch's
// current stream before each step (use_stream), so a step is ordered after the backward pass
// that wrote the gradients and before what the caller enqueues next, with no host
// synchronization (cuda::Context::set_stream makes the new stream wait for the old one).
#pragma once

// The host engines that the module's CPU part links (oneDNN, OpenBLAS) stay out of these
// translation units: nvcc does not compile oneDNN's bf16 packing, and a step on device memory
// runs the device's own Newton-Schulz. Muon's default engine here is then the planner over the
// Eigen and Gram engines, a type of its own (polar/auto_products.hpp names its namespace after
// the engines), so the two never meet at link time.
#undef STEEPEST_ONEDNN
#undef STEEPEST_OPENBLAS

#include <steepest/cuda/cuda.cuh>

#include "kinds.hpp"

namespace steepest_python {

template <>
class Where<st::cuda::Device> {
 public:
  explicit Where(const MakeArgs& a) : device_(a.device) {
    if (device_ < 0) throw std::invalid_argument("steepest: no CUDA device given for device tensors");
    [[maybe_unused]] const Entered on = enter();
    ctx_ = std::make_unique<st::cuda::Context>(reinterpret_cast<cudaStream_t>(a.stream));
  }
  st::cuda::Device space() const { return st::cuda::Device{ctx_.get()}; }
  int device() const { return device_; }
  void use_stream(std::uintptr_t stream) {
    [[maybe_unused]] const Entered on = enter();
    ctx_->set_stream(reinterpret_cast<cudaStream_t>(stream));
  }
  /// The device made current for a scope (the caller's restored after).
  class Entered {
   public:
    explicit Entered(int device) {
      int current = -1;
      st::cuda::check(cudaGetDevice(&current), "cudaGetDevice");
      if (current != device) st::cuda::check(cudaSetDevice(device), "cudaSetDevice"), previous_ = current;
    }
    ~Entered() {
      if (previous_ >= 0) cudaSetDevice(previous_);
    }
    Entered(const Entered&) = delete;
    Entered& operator=(const Entered&) = delete;

   private:
    int previous_ = -1;
  };
  Entered enter() const { return Entered(device_); }
  /// Between two state buffers (loading a checkpoint: rare, so simply synchronous).
  static void copy(float* to, const float* from, std::size_t n) {
    if (n == 0) return;
    st::cuda::check(cudaDeviceSynchronize(), "cudaDeviceSynchronize (loading state)");
    st::cuda::check(cudaMemcpy(to, from, n * sizeof(float), cudaMemcpyDeviceToDevice), "cudaMemcpy (loading state)");
  }

 private:
  int device_;
  std::unique_ptr<st::cuda::Context> ctx_;  // stable address: the ParamSet's cuda::Device points at it
};

}  // namespace steepest_python
