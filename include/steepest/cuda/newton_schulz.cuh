// steepest/cuda/newton_schulz.cuh -- Newton-Schulz / Polar Express on cuBLAS.
//
//   X0 = G / (safety ||G||_F)         fp32 reduction, the norm read on the device (no host sync)
//   A  = X X^T                        on the small side (k x k, k = min(m, n))
//   B  = b A + c A A                  one GEMM with beta = b over a copy of A
//   X' = a X + B X                    one GEMM with beta = a over a copy of X (ping-pong buffers)
//
// Row-major m x n data read by column-major cuBLAS is Y = X^T (n x m, ld n), so no transposes
// are ever materialized: for a wide X (m <= n) the Gram matrix is Y^T Y and the update is
// Y' = a Y + Y B; for a tall X it is Y Y^T and Y' = a Y + B Y (the polar factor of X^T is the
// transpose of X's, so one code path serves both orientations).
//
// Products run in TF32 on tensor cores by default (Context's GemmPrecision), accumulating in
// fp32; GemmPrecision::FP32 gives plain SGEMM for reference runs. Scratch buffers live in the
// Context and only grow, so steady-state steps allocate nothing.
#pragma once

#include "../norms/spectral.hpp"
#include "reduce.cuh"

namespace steepest {
namespace cuda {

namespace detail {

// C = alpha op(A) op(B) + beta C in column-major terms.
inline void gemm(Context& ctx, cublasOperation_t ta, cublasOperation_t tb, int M, int N, int K, float alpha,
                 const float* A, int lda, const float* B, int ldb, float beta, float* C, int ldc) {
  check(cublasSgemm(ctx.blas(), ta, tb, M, N, K, &alpha, A, lda, B, ldb, &beta, C, ldc), "cublasSgemm");
}

}  // namespace detail

/// out = NS_steps(G) with the coefficients of `Schedule` (the same schedules as the CPU path).
/// G and out are m x n row-major fp32 device matrices; out may alias G. Enqueued on ctx.stream().
template <class Schedule>
void newton_schulz(const DeviceMatrix<float>& G, const DeviceMatrix<float>& out, int steps, Context& ctx) {
  if (G.m != out.m || G.n != out.n)
    throw shape_error("newton_schulz (CUDA): output is " + shape_string(out.m, out.n) + ", input is " +
                      shape_string(G.m, G.n));
  if (steps < 0) throw std::invalid_argument("newton_schulz: steps must be >= 0");
  if (G.size() == 0) return;
  const Index m = G.m, n = G.n, size = G.size();
  const bool tall = m > n;
  const int k = int(tall ? n : m);   // Gram side
  const int ld = int(n);             // leading dimension of Y = X^T (column-major n x m)
  float* X = ctx.scratch_f32[0].reserve(std::size_t(size));
  float* Xn = ctx.scratch_f32[1].reserve(std::size_t(size));
  float* A = ctx.scratch_f32[2].reserve(std::size_t(k) * std::size_t(k) * 2 + 1);
  float* B = A + std::size_t(k) * std::size_t(k);
  float* nrm = B + std::size_t(k) * std::size_t(k);  // one float: ||G||_F^2
  const cudaStream_t st = ctx.stream();

  enqueue_sumsq(G.data, size, nrm, st);
  // X0 = G / (safety ||G||_F); a zero G gives a zero X0 and so a zero output (no eps to tune).
  const float safety = float(Schedule::normalization_safety);
  kernels::scale_by_inv_norm<<<kernels::grid_for(size), 256, 0, st>>>(G.data, size, nrm, 1.0f, safety - 1.0f, X);
  check_launch("scale_by_inv_norm");

  for (int s = 0; s < steps; ++s) {
    const PolarCoefficients c = Schedule::at(s, steps);
    if (!tall) {
      // A = X X^T = Y^T Y  (k = m)
      detail::gemm(ctx, CUBLAS_OP_T, CUBLAS_OP_N, k, k, int(n), 1.0f, X, ld, X, ld, 0.0f, A, k);
    } else {
      // A = X^T X = Y Y^T  (k = n)
      detail::gemm(ctx, CUBLAS_OP_N, CUBLAS_OP_T, k, k, int(m), 1.0f, X, ld, X, ld, 0.0f, A, k);
    }
    // B = b A + c A A: B starts as A, then one GEMM with beta = b.
    check(cudaMemcpyAsync(B, A, sizeof(float) * std::size_t(k) * std::size_t(k), cudaMemcpyDeviceToDevice, st),
          "cudaMemcpyAsync");
    detail::gemm(ctx, CUBLAS_OP_N, CUBLAS_OP_N, k, k, k, float(c.c), A, k, A, k, float(c.b), B, k);
    // X' = a X + (B X): Xn starts as X, then one GEMM with beta = a.
    check(cudaMemcpyAsync(Xn, X, sizeof(float) * std::size_t(size), cudaMemcpyDeviceToDevice, st), "cudaMemcpyAsync");
    if (!tall)
      detail::gemm(ctx, CUBLAS_OP_N, CUBLAS_OP_N, int(n), int(m), k, 1.0f, X, ld, B, k, float(c.a), Xn, ld);  // Y B
    else
      detail::gemm(ctx, CUBLAS_OP_N, CUBLAS_OP_N, int(n), int(m), k, 1.0f, B, k, X, ld, float(c.a), Xn, ld);  // B Y
    std::swap(X, Xn);
  }
  check(cudaMemcpyAsync(out.data, X, sizeof(float) * std::size_t(size), cudaMemcpyDeviceToDevice, st),
        "cudaMemcpyAsync");
}

/// Batched Newton-Schulz: `batch` same-shape m x n matrices stored back to back (attention heads,
/// MoE experts, a `[b, m, n]` weight). Every GEMM is one strided-batched cuBLAS call, and each
/// matrix is normalized by its own Frobenius norm (one block per matrix), so the result equals
/// `batch` separate calls. out may alias G.
template <class Schedule>
void newton_schulz_batched(const float* G, float* out, Index batch, Index m, Index n, int steps, Context& ctx) {
  if (batch < 0 || m < 0 || n < 0) throw shape_error("newton_schulz_batched: negative shape");
  if (steps < 0) throw std::invalid_argument("newton_schulz: steps must be >= 0");
  if (batch == 0 || m == 0 || n == 0) return;
  const Index size = m * n;
  const bool tall = m > n;
  const int k = int(tall ? n : m), ld = int(n);
  const long long sx = size, sa = (long long)k * k;
  float* X = ctx.scratch_f32[0].reserve(std::size_t(batch * size));
  float* Xn = ctx.scratch_f32[1].reserve(std::size_t(batch * size));
  float* A = ctx.scratch_f32[2].reserve(std::size_t(2 * batch * sa + batch));
  float* B = A + batch * sa;
  float* nrm = B + batch * sa;  // batch floats: ||G_b||_F^2
  const cudaStream_t st = ctx.stream();
  check(cudaMemsetAsync(nrm, 0, sizeof(float) * std::size_t(batch), st), "cudaMemsetAsync");
  for (Index b = 0; b < batch; ++b) {
    // One reduction and one scaling launch per matrix: cheap next to the GEMMs (O(mn) vs O(k^2 l)).
    kernels::sumsq<<<kernels::grid_for(size), 256, 0, st>>>(G + b * size, size, nrm + b);
    kernels::scale_by_inv_norm<<<kernels::grid_for(size), 256, 0, st>>>(
        G + b * size, size, nrm + b, 1.0f, float(Schedule::normalization_safety) - 1.0f, X + b * size);
  }
  check_launch("batched normalization");
  auto gemm = [&](cublasOperation_t ta, cublasOperation_t tb, int M, int N, int K, float alpha, const float* a,
                  int lda, long long stra, const float* bb, int ldb, long long strb, float beta, float* c, int ldc,
                  long long strc) {
    check(cublasSgemmStridedBatched(ctx.blas(), ta, tb, M, N, K, &alpha, a, lda, stra, bb, ldb, strb, &beta, c, ldc,
                                    strc, int(batch)),
          "cublasSgemmStridedBatched");
  };
  for (int s = 0; s < steps; ++s) {
    const PolarCoefficients c = Schedule::at(s, steps);
    if (!tall)
      gemm(CUBLAS_OP_T, CUBLAS_OP_N, k, k, int(n), 1.0f, X, ld, sx, X, ld, sx, 0.0f, A, k, sa);
    else
      gemm(CUBLAS_OP_N, CUBLAS_OP_T, k, k, int(m), 1.0f, X, ld, sx, X, ld, sx, 0.0f, A, k, sa);
    check(cudaMemcpyAsync(B, A, sizeof(float) * std::size_t(batch * sa), cudaMemcpyDeviceToDevice, st),
          "cudaMemcpyAsync");
    gemm(CUBLAS_OP_N, CUBLAS_OP_N, k, k, k, float(c.c), A, k, sa, A, k, sa, float(c.b), B, k, sa);
    check(cudaMemcpyAsync(Xn, X, sizeof(float) * std::size_t(batch * size), cudaMemcpyDeviceToDevice, st),
          "cudaMemcpyAsync");
    if (!tall)
      gemm(CUBLAS_OP_N, CUBLAS_OP_N, int(n), int(m), k, 1.0f, X, ld, sx, B, k, sa, float(c.a), Xn, ld, sx);
    else
      gemm(CUBLAS_OP_N, CUBLAS_OP_N, int(n), int(m), k, 1.0f, B, k, sa, X, ld, sx, float(c.a), Xn, ld, sx);
    std::swap(X, Xn);
  }
  check(cudaMemcpyAsync(out, X, sizeof(float) * std::size_t(batch * size), cudaMemcpyDeviceToDevice, st),
        "cudaMemcpyAsync");
}

}  // namespace cuda

template <class Schedule, int Steps>
struct NormKernel<SpectralNorm<NewtonSchulz<Schedule, Steps>>, CudaBackend> {
  template <class Ws>
  static void dualize(const cuda::DeviceMatrix<float>& G, const cuda::DeviceMatrix<float>& out, Ws& ctx) {
    static_assert(std::is_same_v<std::decay_t<Ws>, cuda::Context>,
                  "steepest: on the CUDA backend, pass a steepest::cuda::Context as the workspace");
    cuda::newton_schulz<Schedule>(G, out, Steps, ctx);
  }
};

}  // namespace steepest
