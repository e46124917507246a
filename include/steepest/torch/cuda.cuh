// steepest/torch/cuda.cuh -- the libtorch adapter on CUDA tensors: CudaOptimizer<Opt>.
//
// Optional, for a translation unit compiled by nvcc against a CUDA build of libtorch (a pip
// torch's; Debian's libtorch-dev is CPU-only):
//
//   #include <steepest/torch/cuda.cuh>
//   model->to(torch::kCUDA);
//   auto opt = steepest::libtorch::make_cuda_optimizer(*model, st::muon(hp));
//   opt.zero_grad(); loss.backward(); opt.step();            // enqueued on torch's current stream
//
// It is steepest::libtorch::Optimizer (torch/optimizer.hpp) with the memory space cuda::Device:
// the same roles, param groups, refusals and checkpoints (a checkpoint saved on CUDA loads on
// the CPU and back). What differs:
//   * every parameter must be a float32 CUDA tensor on the device of the first one;
//   * the optimizer owns a cuda::Context (cuBLAS handles, scratch) on that device; each step
//     sets it to torch's *current* stream of the device (c10::cuda::getCurrentCUDAStream), so
//     the step is ordered after the backward pass that wrote the gradients and before whatever
//     the caller enqueues next, with no host synchronization; if the current stream changed
//     since the last step, the new stream first waits on the old one (cuda::Context::set_stream);
//   * the state buffers are cudaMalloc'd by the library (not torch's caching allocator): a
//     model's optimizer state is allocated once, at construction;
//   * GEMMs (Muon's Newton-Schulz) run in the context's precision, TF32 by default;
//     tensor_space().context() gives the cuda::Context to choose the engine or Gram product.
#pragma once

#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include <memory>

#include "../cuda/cuda.cuh"
#include "optimizer.hpp"

namespace steepest::libtorch {

/// CUDA tensors of one device; see the file comment.
template <>
struct TensorSpace<cuda::Device> {
  /// Where the tensors must be, for messages.
  static constexpr const char* where = "on one CUDA device (all parameters on the first one's)";

  /// A tensor on this device.
  bool accepts(const ::torch::Device& d) const { return d.is_cuda() && d.index() == device_; }
  /// The device is the first parameter's; the context is created there, on its current stream.
  void bind(const ::torch::Tensor& first) {
    if (!first.is_cuda()) return;  // check_tensor refuses it with the parameter's name
    device_ = first.device().index();
    c10::cuda::CUDAGuard on(device_);
    ctx_ = std::make_unique<cuda::Context>(c10::cuda::getCurrentCUDAStream(device_).stream());
  }
  /// The memory space the parameter set uses.
  cuda::Device space() const { return cuda::Device{ctx_.get()}; }

  /// What a step runs under: the device made current, the context moved to its current stream.
  /// (Returned as a prvalue: the guard can be neither copied nor moved.)
  struct Entered {
    /// Switches to the tensors' device for the scope.
    c10::cuda::OptionalCUDAGuard on;
    /// Enters the device and points the context at torch's current stream.
    Entered(c10::DeviceIndex device, cuda::Context* ctx) {
      if (device < 0) return;  // no CUDA parameter yet: check_tensor refuses before anything runs
      on.set_index(device);
      if (ctx) ctx->set_stream(c10::cuda::getCurrentCUDAStream(device).stream());
    }
  };
  /// Enters the tensors' device and stream for one step.
  Entered enter() { return Entered(device_, ctx_.get()); }

  /// The device the parameters are on, and the context the steps run in.
  c10::DeviceIndex device() const { return device_; }
  /// The CUDA context.
  cuda::Context& context() { return *ctx_; }

 private:
  c10::DeviceIndex device_ = -1;
  std::unique_ptr<cuda::Context> ctx_;  // stable address: the ParamSet's cuda::Device points at it
};

/// The adapter on CUDA tensors.
template <class Opt>
using CudaOptimizer = Optimizer<Opt, cuda::Device>;

/// The CUDA adapter for `model`'s trainable parameters (deduces Opt).
template <class Opt>
CudaOptimizer<Opt> make_cuda_optimizer(::torch::nn::Module& model, Opt opt, const RoleRules& rules = {}) {
  return CudaOptimizer<Opt>(model, std::move(opt), rules);
}

}  // namespace steepest::libtorch
