// steepest/cuda/device.hpp -- the CUDA backend's basic types: errors, device-matrix views, an
// owning device buffer, and the per-stream context (stream, cuBLAS handle, scratch).
//
// Compiled by the user's nvcc (or any host compiler with the CUDA runtime headers); CPU users
// never include it. Conventions match the CPU backend: matrices are row-major m x n views
// (y = W x), the caller owns the memory, and nothing here synchronizes the host: every call
// enqueues work on the context's stream and returns.
#pragma once

#include <cublasLt.h>
#include <cublas_v2.h>
#include <cuda_runtime.h>

#include <cstddef>
#include <stdexcept>
#include <string>
#include <vector>

#include "../backend/backend.hpp"
#include "../core/config.hpp"

namespace steepest {

/// Thrown when a CUDA runtime or cuBLAS call fails; the message names the call and the error.
class cuda_error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

namespace cuda {

/// How Newton-Schulz forms X X^T (core/config.hpp); named here too, as cuda::GramProduct, for the
/// code written against the CUDA Context before the host engines shared it.
using steepest::GramProduct;

inline void check(cudaError_t e, const char* what) {
  if (e != cudaSuccess) throw cuda_error(std::string("steepest::cuda: ") + what + ": " + cudaGetErrorString(e));
}
inline void check(cublasStatus_t e, const char* what) {
  if (e != CUBLAS_STATUS_SUCCESS)
    throw cuda_error(std::string("steepest::cuda: ") + what + ": cuBLAS status " + std::to_string(int(e)));
}
/// Checks the last kernel launch (launch errors only: no synchronization).
inline void check_launch(const char* what) { check(cudaGetLastError(), what); }

/// Refuses to start `what` while an error from an earlier CUDA call is pending: an unchecked call
/// of the caller's would otherwise be reported by steepest's next launch check under its own
/// name (an optimizer step reporting "invalid argument" for a failed cudaMemcpyAsync before it).
inline void check_pending(const char* what) {
  const cudaError_t e = cudaPeekAtLastError();
  if (e != cudaSuccess)
    throw cuda_error(std::string("steepest::cuda: ") + what + ": a CUDA error from an earlier call was pending (" +
                     cudaGetErrorString(e) + "); check the return value of every CUDA call before this one");
}

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
  /// The entry type.
  using Scalar = S;
  /// First entry, row-major.
  S* data = nullptr;
  Index m = 0;  ///< Rows.
  Index n = 0;  ///< Columns.
  /// Rows.
  Index rows() const { return m; }
  /// Columns.
  Index cols() const { return n; }
  /// Entries.
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
  /// Takes o's allocation.
  Buffer(Buffer&& o) noexcept : p_(o.p_), cap_(o.cap_) { o.p_ = nullptr, o.cap_ = 0; }
  /// Swaps allocations with o.
  Buffer& operator=(Buffer&& o) noexcept {
    std::swap(p_, o.p_), std::swap(cap_, o.cap_);
    return *this;
  }
  ~Buffer() {
    if (p_) cudaFree(p_);
  }
  /// At least `count` entries (reallocates only to grow; the contents are not kept).
  S* reserve(std::size_t count) {
    if (count > cap_) {
      if (p_) check(cudaFree(p_), "cudaFree");
      p_ = nullptr;
      check(cudaMalloc(reinterpret_cast<void**>(&p_), count * sizeof(S)), "cudaMalloc");
      cap_ = count;
    }
    return p_;
  }
  /// The allocation (null before the first reserve).
  S* get() const { return p_; }
  /// Entries allocated.
  std::size_t capacity() const { return cap_; }

 private:
  S* p_ = nullptr;
  std::size_t cap_ = 0;
};

/// Where GEMM products are computed. Operands stay fp32 in memory in every mode; the reduced
/// modes round them to a narrower format inside the tensor-core kernel and accumulate in fp32:
///   FP32  plain fp32 products (CUBLAS_COMPUTE_32F): the reference for tests
///   TF32  10-bit mantissa inputs (CUBLAS_COMPUTE_32F_FAST_TF32): the default
///   BF16  8-bit mantissa inputs (CUBLAS_COMPUTE_32F_FAST_16BF): twice TF32's tensor-core rate
/// Newton-Schulz needs only ~1e-2 relative accuracy per product (its iteration is self-correcting
/// and its fp32 normalization keeps the input scale exact), which is why the reduced modes suit it.
enum class GemmPrecision { FP32, TF32, BF16 };

/// Which cuBLAS interface runs the GEMMs. Lt (cuBLASLt) writes D = alpha A B + beta C with
/// C != D, so "a X + B X" costs no copy of X; Classic (cublasGemmStridedBatchedEx) is in-place
/// and copies C into D first. Lt falls back to Classic by itself for a shape it has no algorithm
/// for; Classic is selectable to compare the two.
enum class GemmEngine { Lt, Classic };


/// Per-stream context: the stream every call is enqueued on, cuBLAS and cuBLASLt handles bound to
/// it, cached GEMM plans and scratch buffers reused across calls. One Context per stream; not
/// thread-safe. Everything it allocates only grows, so steady-state steps allocate nothing.
class Context {
 public:
  /// A context on `stream` (null: the legacy default stream) whose products use `precision`.
  explicit Context(cudaStream_t stream = nullptr, GemmPrecision precision = GemmPrecision::TF32)
      : stream_(stream), precision_(precision) {
    check(cublasCreate(&blas_), "cublasCreate");
    check(cublasSetStream(blas_, stream_), "cublasSetStream");
    // Scalars (alpha, beta) come from the host: the Newton-Schulz coefficients are constants.
    check(cublasSetPointerMode(blas_, CUBLAS_POINTER_MODE_HOST), "cublasSetPointerMode");
    // Only cublasSsyrk reads the math mode; the GEMMs pass their compute type explicitly.
    check(cublasSetMathMode(blas_, precision_ == GemmPrecision::FP32 ? CUBLAS_DEFAULT_MATH
                                                                      : CUBLAS_TF32_TENSOR_OP_MATH),
          "cublasSetMathMode");
    check(cublasLtCreate(&lt_), "cublasLtCreate");
  }
  Context(const Context&) = delete;
  Context& operator=(const Context&) = delete;
  ~Context() {
    for (LtPlan& p : plans) p.release();
    if (handoff_) cudaEventDestroy(handoff_);
    cublasLtDestroy(lt_);
    cublasDestroy(blas_);
  }

  /// The stream every kernel and product of this context is enqueued on.
  cudaStream_t stream() const { return stream_; }
  /// Moves the context to stream `s` (a host adapter follows its framework's current stream,
  /// which the caller may change between steps). The scratch buffers are shared by all calls, so
  /// `s` first waits on everything already enqueued on the old stream (an event, no host
  /// synchronization); calls then enqueue on `s`.
  void set_stream(cudaStream_t s) {
    if (s == stream_) return;
    if (!handoff_) check(cudaEventCreateWithFlags(&handoff_, cudaEventDisableTiming), "cudaEventCreateWithFlags");
    check(cudaEventRecord(handoff_, stream_), "cudaEventRecord (stream hand-off)");
    check(cudaStreamWaitEvent(s, handoff_, 0), "cudaStreamWaitEvent (stream hand-off)");
    check(cublasSetStream(blas_, s), "cublasSetStream");
    stream_ = s;
  }
  /// The cuBLAS handle, bound to stream().
  cublasHandle_t blas() const { return blas_; }
  /// The cuBLASLt handle.
  cublasLtHandle_t lt() const { return lt_; }
  /// The precision of the Newton-Schulz products.
  GemmPrecision precision() const { return precision_; }
  /// Changes the GEMM precision of later calls (cached plans are per precision, so none is stale).
  void set_precision(GemmPrecision p) {
    check(cublasSetMathMode(blas_, p == GemmPrecision::FP32 ? CUBLAS_DEFAULT_MATH : CUBLAS_TF32_TENSOR_OP_MATH),
          "cublasSetMathMode");
    precision_ = p;
  }
  /// The cuBLAS compute type that precision() selects.
  cublasComputeType_t compute_type() const {
    return precision_ == GemmPrecision::FP32   ? CUBLAS_COMPUTE_32F
           : precision_ == GemmPrecision::TF32 ? CUBLAS_COMPUTE_32F_FAST_TF32
                                               : CUBLAS_COMPUTE_32F_FAST_16BF;
  }

  GemmEngine engine = GemmEngine::Lt;  ///< see GemmEngine
  /// How Newton-Schulz forms X X^T (GramProduct, core/config.hpp). Gemm: a full GEMM (tensor
  /// cores in every precision). Syrk: cublasSsyrk computes one triangle and a small kernel mirrors
  /// it; cublasSsyrk runs under the handle's math mode (TF32 allowed unless FP32) and has no BF16
  /// mode, so with BF16 the Gram product is TF32. steepest_cuda_bench measures both.
  GramProduct gram = GramProduct::Gemm;

  Buffer<float> scratch_f32[4];   ///< Newton-Schulz ping-pong and Gram buffers, reductions
  Buffer<double> scratch_f64[1];  ///< norm accumulators
  Buffer<int> scratch_flag;       ///< the optimizer step's non-finite check
  Buffer<unsigned char> lt_workspace;  ///< cuBLASLt workspace (kLtWorkspaceBytes, allocated once)
  static constexpr std::size_t kLtWorkspaceBytes = std::size_t(32) << 20;  ///< NVIDIA's advice for Hopper

  /// A cached cuBLASLt plan: the operation and layout descriptors of one GEMM shape and the
  /// algorithm the heuristic chose for it (usable = false: no algorithm, use Classic).
  struct LtPlan {
    /// The shape and options this plan was made for.
    long long key[16] = {};
    /// The matmul descriptor.
    cublasLtMatmulDesc_t op = nullptr;
    cublasLtMatrixLayout_t a = nullptr;  ///< A's layout.
    cublasLtMatrixLayout_t b = nullptr;  ///< B's layout.
    cublasLtMatrixLayout_t c = nullptr;  ///< C's and D's layout.
    /// The algorithm cuBLASLt's heuristic chose.
    cublasLtMatmulAlgo_t algo{};
    /// False when cuBLASLt offered no algorithm (the classic cuBLAS call is used).
    bool usable = false;
    /// Destroys the descriptors.
    void release() {
      if (a) cublasLtMatrixLayoutDestroy(a);
      if (b) cublasLtMatrixLayoutDestroy(b);
      if (c) cublasLtMatrixLayoutDestroy(c);
      if (op) cublasLtMatmulDescDestroy(op);
      a = b = c = nullptr, op = nullptr;
    }
  };
  std::vector<LtPlan> plans;  ///< a handful per model (Newton-Schulz uses three shapes per group)

 private:
  cudaStream_t stream_;
  GemmPrecision precision_;
  cublasHandle_t blas_ = nullptr;
  cublasLtHandle_t lt_ = nullptr;
  cudaEvent_t handoff_ = nullptr;  // set_stream's ordering event (created on the first switch)
};

}  // namespace cuda

/// Tag of the CUDA backend.
struct CudaBackend {};

/// CUDA device views dispatch to the CUDA kernels.
template <class S>
struct backend_of<cuda::DeviceMatrix<S>> {
  /// CudaBackend.
  using type = CudaBackend;
};

}  // namespace steepest
