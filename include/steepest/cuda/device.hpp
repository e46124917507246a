// steepest/cuda/device.hpp -- the CUDA backend's basic types: errors, device-matrix views, an
// owning device buffer, and the per-stream context (stream, cuBLAS handle, scratch).
//
// Compiled by the user's nvcc (or any host compiler with the CUDA runtime headers); CPU users
// never include it. Conventions match the CPU backend: matrices are row-major m x n views
// (y = W x), the caller owns the memory, and nothing here synchronizes the host: every call
// enqueues work on the context's stream and returns.
#pragma once

#include <cublas_v2.h>
#include <cuda_runtime.h>

#include <cstddef>
#include <stdexcept>
#include <string>

#include "../backend/backend.hpp"
#include "../core/config.hpp"

namespace steepest {

/// Thrown when a CUDA runtime or cuBLAS call fails; the message names the call and the error.
class cuda_error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

namespace cuda {

inline void check(cudaError_t e, const char* what) {
  if (e != cudaSuccess) throw cuda_error(std::string("steepest::cuda: ") + what + ": " + cudaGetErrorString(e));
}
inline void check(cublasStatus_t e, const char* what) {
  if (e != CUBLAS_STATUS_SUCCESS)
    throw cuda_error(std::string("steepest::cuda: ") + what + ": cuBLAS status " + std::to_string(int(e)));
}
/// Checks the last kernel launch (launch errors only: no synchronization).
inline void check_launch(const char* what) { check(cudaGetLastError(), what); }

/// Number of usable CUDA devices; 0 when there is no device or no driver (never throws).
inline int device_count() {
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess) {
    cudaGetLastError();  // clear the sticky "no device" error
    return 0;
  }
  return n;
}

/// A row-major m x n matrix in device memory, not owned. The CUDA backend's argument type:
/// policies called with a DeviceMatrix dispatch to NormKernel<Policy, CudaBackend>.
template <class S>
struct DeviceMatrix {
  using Scalar = S;
  S* data = nullptr;
  Index m = 0, n = 0;
  Index rows() const { return m; }
  Index cols() const { return n; }
  Index size() const { return m * n; }
};

template <class S>
DeviceMatrix<S> view(S* data, Index m, Index n) {
  return {data, m, n};
}

/// Owning device buffer that only grows: after the first step, steady-state steps allocate
/// nothing (the "no allocation after the first step").
template <class S>
class Buffer {
 public:
  Buffer() = default;
  Buffer(const Buffer&) = delete;
  Buffer& operator=(const Buffer&) = delete;
  Buffer(Buffer&& o) noexcept : p_(o.p_), cap_(o.cap_) { o.p_ = nullptr, o.cap_ = 0; }
  Buffer& operator=(Buffer&& o) noexcept {
    std::swap(p_, o.p_), std::swap(cap_, o.cap_);
    return *this;
  }
  ~Buffer() {
    if (p_) cudaFree(p_);
  }
  S* reserve(std::size_t count) {
    if (count > cap_) {
      if (p_) check(cudaFree(p_), "cudaFree");
      p_ = nullptr;
      check(cudaMalloc(reinterpret_cast<void**>(&p_), count * sizeof(S)), "cudaMalloc");
      cap_ = count;
    }
    return p_;
  }
  S* get() const { return p_; }
  std::size_t capacity() const { return cap_; }

 private:
  S* p_ = nullptr;
  std::size_t cap_ = 0;
};

/// Where GEMMs' products are computed. TF32 tensor cores by default (fp32 storage and
/// accumulation, 10-bit-mantissa inputs): Newton-Schulz only needs ~1e-3 relative accuracy per
/// product, and its fp32 normalization keeps the input scale exact. (BF16 products are not
/// implemented yet.)
enum class GemmPrecision { FP32, TF32 };

/// Per-stream context: the stream every call is enqueued on, a cuBLAS handle bound to it, and
/// scratch buffers reused across calls. One Context per stream; not thread-safe.
class Context {
 public:
  explicit Context(cudaStream_t stream = nullptr, GemmPrecision precision = GemmPrecision::TF32)
      : stream_(stream), precision_(precision) {
    check(cublasCreate(&blas_), "cublasCreate");
    check(cublasSetStream(blas_, stream_), "cublasSetStream");
    // Scalars (alpha, beta) come from the host: the Newton-Schulz coefficients are constants.
    check(cublasSetPointerMode(blas_, CUBLAS_POINTER_MODE_HOST), "cublasSetPointerMode");
    check(cublasSetMathMode(blas_, precision_ == GemmPrecision::FP32 ? CUBLAS_DEFAULT_MATH
                                                                      : CUBLAS_TF32_TENSOR_OP_MATH),
          "cublasSetMathMode");
  }
  Context(const Context&) = delete;
  Context& operator=(const Context&) = delete;
  ~Context() { cublasDestroy(blas_); }

  cudaStream_t stream() const { return stream_; }
  cublasHandle_t blas() const { return blas_; }
  GemmPrecision precision() const { return precision_; }

  Buffer<float> scratch_f32[4];   // Newton-Schulz ping-pong and Gram buffers, reductions
  Buffer<double> scratch_f64[1];  // norm accumulators

 private:
  cudaStream_t stream_;
  GemmPrecision precision_;
  cublasHandle_t blas_ = nullptr;
};

}  // namespace cuda

/// Tag of the CUDA backend.
struct CudaBackend {};

template <class S>
struct backend_of<cuda::DeviceMatrix<S>> {
  using type = CudaBackend;
};

}  // namespace steepest
