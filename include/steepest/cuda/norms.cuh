// steepest/cuda/norms.cuh -- the norm policies' kernels on the CUDA backend.
//
// Called through the policies themselves: `RowNormalize::dualize(G, D, ctx)` with G, D
// `cuda::DeviceMatrix<float>` views and `ctx` a `cuda::Context` (the workspace argument).
// dualize enqueues on ctx.stream() and returns without synchronizing. value() and dual() return
// a host double, so they synchronize the stream (they are diagnostics, not part of a step).
//
// Implemented: RowNorm<1> (sign, 1->inf), RowNorm<2> (2->inf), ColNorm<2> (1->2), VectorNorm<2>,
// SpectralNorm<NewtonSchulz<...>> (see newton_schulz.cuh), each also under MeanNormalized<>.
#pragma once

#include <vector>

#include "../norms/mean_normalized.hpp"
#include "../norms/row_col.hpp"
#include "../norms/spectral.hpp"
#include "reduce.cuh"

namespace steepest {
namespace cuda {
namespace detail {

template <class Ws>
constexpr bool is_context_v = std::is_same_v<std::decay_t<Ws>, Context>;

inline void require_same_shape(Index m, Index n, Index m2, Index n2, const char* what) {
  if (m != m2 || n != n2)
    throw shape_error(std::string(what) + ": output is " + shape_string(m2, n2) + ", input is " + shape_string(m, n));
}

// Host-side reduction of a small device vector (synchronizes: value()/dual() only).
inline std::vector<float> to_host(const float* d, Index count, Context& ctx) {
  std::vector<float> h(static_cast<std::size_t>(count));
  if (count == 0) return h;
  check(cudaMemcpyAsync(h.data(), d, sizeof(float) * std::size_t(count), cudaMemcpyDeviceToHost, ctx.stream()),
        "cudaMemcpyAsync");
  check(cudaStreamSynchronize(ctx.stream()), "cudaStreamSynchronize");
  return h;
}

// Row norms (p = 1, 2, or 0 for inf) of an m x n device matrix, or of its transpose's rows
// (columns; p = 2 only) when cols = true.
template <class S>
std::vector<float> vector_norms(const DeviceMatrix<S>& A, int p, bool cols, Context& ctx) {
  if (!cols) {
    float* out = ctx.scratch_f32[3].reserve(std::size_t(A.m));
    kernels::row_norms<<<unsigned(A.m), kernels::kRowThreads, 0, ctx.stream()>>>(A.data, A.m, A.n, p, out);
    check_launch("row_norms");
    return to_host(out, A.m, ctx);
  }
  float* out = ctx.scratch_f32[3].reserve(std::size_t(A.n));
  enqueue_col_sumsq(A.data, A.m, A.n, out, ctx.stream());
  std::vector<float> h = to_host(out, A.n, ctx);
  for (float& x : h) x = std::sqrt(x);
  return h;
}

inline double max_of(const std::vector<float>& v) {
  double m = 0;
  for (float x : v) m = std::max(m, double(x));
  return m;
}
inline double sum_of(const std::vector<float>& v) {
  double s = 0;
  for (float x : v) s += double(x);
  return s;
}

// value(W) and dual(G) without a caller's Context (what KernelPolicy forwards to): each makes a
// temporary Context (a cuBLAS handle) and calls the kernel's Context overload. Diagnostics only.
template <class Kernel>
struct OwnContext {
  template <class S>
  static double value(const DeviceMatrix<S>& W) {
    Context ctx;
    return Kernel::value(W, ctx);
  }
  template <class S>
  static double dual(const DeviceMatrix<S>& G) {
    Context ctx;
    return Kernel::dual(G, ctx);
  }
};

}  // namespace detail
}  // namespace cuda

// ---- 1 -> inf (sign) and 2 -> inf (row normalization) ----------------------------------------
/// Sign (p = 1) and row 2-normalization (p = 2) on the device.
template <int P>
struct NormKernel<RowNorm<P>, CudaBackend> : cuda::detail::OwnContext<NormKernel<RowNorm<P>, CudaBackend>> {
  static_assert(P == 1 || P == 2, "steepest: the CUDA backend implements RowNorm<1> and RowNorm<2>");
  // ||W||_{p->inf} = max_i ||W_i||_{p*}: p = 1 -> max |w_ij|, p = 2 -> max row 2-norm.
  /// ||W|| in this norm (a host double).
  template <class S>
  static double value(const cuda::DeviceMatrix<S>& W, cuda::Context& ctx) {
    if (W.size() == 0) return 0.0;
    return cuda::detail::max_of(cuda::detail::vector_norms(W, P == 1 ? 0 : 2, false, ctx));
  }
  /// ||G||_*, the dual norm.
  template <class S>
  static double dual(const cuda::DeviceMatrix<S>& G, cuda::Context& ctx) {
    if (G.size() == 0) return 0.0;
    return cuda::detail::sum_of(cuda::detail::vector_norms(G, P, false, ctx));
  }
  using cuda::detail::OwnContext<NormKernel>::value;
  using cuda::detail::OwnContext<NormKernel>::dual;
  /// out = D(G), the steepest-descent direction (out may alias G).
  template <class S, class Ws>
  static void dualize(const cuda::DeviceMatrix<S>& G, const cuda::DeviceMatrix<S>& out, Ws& ctx) {
    static_assert(cuda::detail::is_context_v<Ws>,
                  "steepest: on the CUDA backend, pass a steepest::cuda::Context as the workspace");
    cuda::detail::require_same_shape(G.m, G.n, out.m, out.n, "RowNorm::dualize (CUDA)");
    if (G.size() == 0) return;
    if (P == 1) {
      cuda::kernels::sign_scale<<<cuda::kernels::grid_for(G.size()), 256, 0, ctx.stream()>>>(G.data, G.size(), 1.0f,
                                                                                            out.data);
    } else {
      cuda::kernels::row_normalize<<<unsigned(G.m), cuda::kernels::kRowThreads, 0, ctx.stream()>>>(G.data, G.m, G.n,
                                                                                                  1.0f, out.data);
    }
    cuda::check_launch("RowNorm::dualize");
  }
};

// ---- 1 -> 2 (column normalization) ------------------------------------------------------------
/// Column 2-normalization on the device.
template <int Q>
struct NormKernel<ColNorm<Q>, CudaBackend> : cuda::detail::OwnContext<NormKernel<ColNorm<Q>, CudaBackend>> {
  static_assert(Q == 2, "steepest: the CUDA backend implements ColNorm<2>");
  /// ||W|| in this norm (a host double).
  template <class S>
  static double value(const cuda::DeviceMatrix<S>& W, cuda::Context& ctx) {
    if (W.size() == 0) return 0.0;
    return cuda::detail::max_of(cuda::detail::vector_norms(W, 2, true, ctx));
  }
  /// ||G||_*, the dual norm.
  template <class S>
  static double dual(const cuda::DeviceMatrix<S>& G, cuda::Context& ctx) {
    if (G.size() == 0) return 0.0;
    return cuda::detail::sum_of(cuda::detail::vector_norms(G, 2, true, ctx));
  }
  using cuda::detail::OwnContext<NormKernel>::value;
  using cuda::detail::OwnContext<NormKernel>::dual;
  /// Two passes: column sums of squares (tiles + one atomic per column), then the scaling.
  template <class S, class Ws>
  static void dualize(const cuda::DeviceMatrix<S>& G, const cuda::DeviceMatrix<S>& out, Ws& ctx) {
    static_assert(cuda::detail::is_context_v<Ws>,
                  "steepest: on the CUDA backend, pass a steepest::cuda::Context as the workspace");
    cuda::detail::require_same_shape(G.m, G.n, out.m, out.n, "ColNorm::dualize (CUDA)");
    if (G.size() == 0) return;
    float* colsq = ctx.scratch_f32[3].reserve(std::size_t(G.n));
    cuda::enqueue_col_sumsq(G.data, G.m, G.n, colsq, ctx.stream());
    cuda::kernels::col_scale<<<cuda::kernels::grid_for(G.size()), 256, 0, ctx.stream()>>>(G.data, G.m, G.n, colsq,
                                                                                        1.0f, out.data);
    cuda::check_launch("col_scale");
  }
};

// ---- a whole tensor as one l2 vector (biases, gains) ------------------------------------------
/// A whole tensor as one 2-norm vector on the device.
template <int Q>
struct NormKernel<VectorNorm<Q>, CudaBackend>
    : cuda::detail::OwnContext<NormKernel<VectorNorm<Q>, CudaBackend>> {
  static_assert(Q == 2, "steepest: the CUDA backend implements VectorNorm<2>");
  /// ||A||_2 of the whole array (synchronizes).
  template <class S>
  static double norm(const cuda::DeviceMatrix<S>& A, cuda::Context& ctx) {
    if (A.size() == 0) return 0.0;
    float* acc = ctx.scratch_f32[3].reserve(1);
    cuda::enqueue_sumsq(A.data, A.size(), acc, ctx.stream());
    return std::sqrt(double(cuda::detail::to_host(acc, 1, ctx)[0]));
  }
  /// ||W|| in this norm (a host double).
  template <class S>
  static double value(const cuda::DeviceMatrix<S>& W, cuda::Context& ctx) { return norm(W, ctx); }
  /// ||G||_*, the dual norm.
  template <class S>
  static double dual(const cuda::DeviceMatrix<S>& G, cuda::Context& ctx) { return norm(G, ctx); }
  using cuda::detail::OwnContext<NormKernel>::value;
  using cuda::detail::OwnContext<NormKernel>::dual;
  /// out = D(G), the steepest-descent direction (out may alias G).
  template <class S, class Ws>
  static void dualize(const cuda::DeviceMatrix<S>& G, const cuda::DeviceMatrix<S>& out, Ws& ctx) {
    static_assert(cuda::detail::is_context_v<Ws>,
                  "steepest: on the CUDA backend, pass a steepest::cuda::Context as the workspace");
    cuda::detail::require_same_shape(G.m, G.n, out.m, out.n, "VectorNorm::dualize (CUDA)");
    if (G.size() == 0) return;
    float* acc = ctx.scratch_f32[3].reserve(1);
    cuda::enqueue_sumsq(G.data, G.size(), acc, ctx.stream());
    cuda::kernels::scale_by_inv_norm<<<cuda::kernels::grid_for(G.size()), 256, 0, ctx.stream()>>>(
        G.data, G.size(), 0, acc, 1.0f, 0.0f, out.data);
    cuda::check_launch("scale_by_inv_norm");
  }
};

// ---- which policies have a CUDA direction ----------------------------------------------------
/// True when N's dualize has a CUDA kernel (what `Dualize<N>` needs on device memory). A user
/// who writes NormKernel<TheirPolicy, CudaBackend> specializes this too.
template <class N>
struct has_cuda_kernel : std::false_type {};
template <>
struct has_cuda_kernel<RowNorm<1>> : std::true_type {};
template <>
struct has_cuda_kernel<RowNorm<2>> : std::true_type {};
template <>
struct has_cuda_kernel<ColNorm<2>> : std::true_type {};
template <>
struct has_cuda_kernel<VectorNorm<2>> : std::true_type {};
template <class Schedule, int Steps, class Products>
struct has_cuda_kernel<SpectralNorm<NewtonSchulz<Schedule, Steps, Products>>> : std::true_type {};
template <class B>
struct has_cuda_kernel<MeanNormalized<B>> : has_cuda_kernel<B> {};

}  // namespace steepest
