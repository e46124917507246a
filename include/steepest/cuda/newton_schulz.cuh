// steepest/cuda/newton_schulz.cuh -- Newton-Schulz / Polar Express on cuBLAS(Lt).
//
//   X0 = G / (safety ||G||_F)         fp32 reduction, the norm read on the device (no host sync)
//   A  = X X^T                        on the small side (k x k, k = min(m, n)); a GEMM, or a syrk
//                                     of one triangle plus a mirror (Context::gram)
//   B  = b A + c A A                  one GEMM whose beta epilogue reads A and writes B
//   X' = a X + B X                    one GEMM whose beta epilogue reads X and writes X'
//                                     (ping-pong buffers; the last step writes the output)
//
// Row-major m x n data read by column-major cuBLAS is Y = X^T (n x m, ld n), so no transposes
// are ever materialized: for a wide X (m <= n) the Gram matrix is Y^T Y and the update is
// Y' = a Y + Y B; for a tall X it is Y Y^T and Y' = a Y + B Y (the polar factor of X^T is the
// transpose of X's, so one code path serves both orientations).
//
// With the cuBLASLt engine the beta epilogues write to a buffer other than the one they read,
// so a step is exactly three GEMMs and nothing else: no copies of X or A. Products run in the
// Context's precision (TF32 by default, BF16 or FP32 on request), accumulating in fp32.
// Same-shape matrices (a transformer's blocks, attention heads, experts) go through one
// strided-batched call per GEMM. Scratch buffers live in the Context and only grow, so
// steady-state steps allocate nothing.
#pragma once

#include <algorithm>

#include "../norms/spectral.hpp"
#include "gemm.cuh"
#include "reduce.cuh"

namespace steepest {
namespace cuda {

namespace kernels {

/// Copies the lower triangle of each k x k column-major matrix of a batch onto its upper
/// triangle (syrk writes one triangle; the GEMMs that follow read the whole matrix).
/// O(k^2) against the O(k^2 min(m, n)) products around it.
/// (A template: a kernel defined in a header must not be defined once per translation unit
/// that includes it.)
template <class F>
__global__ void mirror_lower(F* __restrict__ a, int k, long long stride) {
  a += (long long)blockIdx.z * stride;
  const int i = blockIdx.x * 32 + threadIdx.x, j = blockIdx.y * 32 + threadIdx.y;
  if (i < k && j < k && i < j) a[(long long)j * k + i] = a[(long long)i * k + j];
}

}  // namespace kernels

/// Batched Newton-Schulz with a schedule given at run time (`at(step, steps)` and the input's
/// normalization safety: what PolarInfo carries for a geometry handle): `batch` same-shape
/// m x n row-major fp32 matrices stored back to back in G, results in out (which may alias G).
/// Each matrix is normalized by its own Frobenius norm, so the result equals `batch` separate
/// calls. Enqueued on ctx.stream(); never synchronizes.
inline void newton_schulz_batched(const float* G, float* out, Index batch, Index m, Index n, int steps,
                                  PolarCoefficients (*at)(int, int), double safety, Context& ctx) {
  if (batch < 0 || m < 0 || n < 0) throw shape_error("newton_schulz_batched: negative shape");
  if (steps < 0) throw std::invalid_argument("newton_schulz: steps must be >= 0");
  if (batch == 0 || m == 0 || n == 0) return;
  if (batch > 65535) throw std::invalid_argument("newton_schulz_batched: at most 65535 matrices per call");
  const Index size = m * n;
  const bool tall = m > n;
  const int k = int(tall ? n : m), ld = int(n), nb = int(batch);
  const long long sx = size;
  // Gram blocks padded to 64 floats (256 bytes) so every matrix of A and B is 256-byte aligned,
  // which lets cuBLASLt pick its vectorized kernels.
  const long long sa = ((long long)k * k + 63) / 64 * 64;
  float* X = ctx.scratch_f32[0].reserve(std::size_t(batch * size));
  float* Xn = ctx.scratch_f32[1].reserve(std::size_t(batch * size));
  float* A = ctx.scratch_f32[2].reserve(std::size_t(2 * batch * sa + batch));
  float* B = A + batch * sa;
  float* nrm = B + batch * sa;  // batch floats: ||G_b||_F^2
  const cudaStream_t st = ctx.stream();

  // X0 = G / (safety ||G||_F), one batched reduction and one batched scaling (grid y = matrix);
  // a zero G gives a zero X0 and so a zero output (no eps to tune). With no steps the scaled
  // input is the output.
  check(cudaMemsetAsync(nrm, 0, sizeof(float) * std::size_t(batch), st), "cudaMemsetAsync");
  const dim3 grid(std::max(1u, std::min(kernels::grid_for(size), unsigned(8192 / batch))), unsigned(batch));
  kernels::sumsq<<<grid, 256, 0, st>>>(G, size, size, nrm);
  kernels::scale_by_inv_norm<<<grid, 256, 0, st>>>(G, size, size, nrm, 1.0f,
                                                   float(safety) - 1.0f, steps ? X : out);
  check_launch("Newton-Schulz normalization");

  for (int s = 0; s < steps; ++s) {
    const PolarCoefficients c = at(s, steps);
    float* next = s + 1 == steps ? out : Xn;  // G is no longer read, so out may alias it
    // A = X X^T: Y^T Y (wide, k = m) or Y Y^T (tall, k = n).
    if (ctx.gram == GramProduct::Syrk) {
      const float one = 1.0f, zero = 0.0f;
      for (int b = 0; b < nb; ++b)
        check(cublasSsyrk(ctx.blas(), CUBLAS_FILL_MODE_LOWER, tall ? CUBLAS_OP_N : CUBLAS_OP_T, k,
                          tall ? int(m) : int(n), &one, X + b * sx, ld, &zero, A + b * sa, k),
              "cublasSsyrk");
      const dim3 tiles(unsigned((k + 31) / 32), unsigned((k + 31) / 32), unsigned(batch));
      kernels::mirror_lower<<<tiles, dim3(32, 32), 0, st>>>(A, k, sa);
      check_launch("mirror_lower");
    } else {
      GemmArgs g;
      g.ta = tall ? CUBLAS_OP_N : CUBLAS_OP_T, g.tb = tall ? CUBLAS_OP_T : CUBLAS_OP_N;
      g.M = g.N = k, g.K = tall ? int(m) : int(n);
      g.A = X, g.lda = ld, g.sA = sx, g.B = X, g.ldb = ld, g.sB = sx;
      g.C = g.D = A, g.ldc = k, g.sC = sa, g.batch = nb;
      gemm(ctx, g);
    }
    {  // B = b A + c A A: beta epilogue reads A, writes B
      GemmArgs g;
      g.M = g.N = g.K = k, g.alpha = float(c.c), g.beta = float(c.b);
      g.A = A, g.lda = k, g.sA = sa, g.B = A, g.ldb = k, g.sB = sa;
      g.C = A, g.D = B, g.ldc = k, g.sC = sa, g.batch = nb;
      gemm(ctx, g);
    }
    {  // X' = a X + B X: Y' = a Y + Y B (wide) or a Y + B Y (tall); beta epilogue reads X
      GemmArgs g;
      g.M = int(n), g.N = int(m), g.K = k, g.alpha = 1.0f, g.beta = float(c.a);
      if (!tall)
        g.A = X, g.lda = ld, g.sA = sx, g.B = B, g.ldb = k, g.sB = sa;
      else
        g.A = B, g.lda = k, g.sA = sa, g.B = X, g.ldb = ld, g.sB = sx;
      g.C = X, g.D = next, g.ldc = ld, g.sC = sx, g.batch = nb;
      gemm(ctx, g);
    }
    std::swap(X, Xn);  // (after the last step X is stale: the result is already in out)
  }
}

/// The same with the coefficients of `Schedule` (the schedules of polar/coefficients.hpp).
template <class Schedule>
void newton_schulz_batched(const float* G, float* out, Index batch, Index m, Index n, int steps, Context& ctx) {
  newton_schulz_batched(G, out, batch, m, n, steps, &Schedule::at, Schedule::normalization_safety, ctx);
}

/// out = NS_steps(G) for one m x n row-major fp32 device matrix; out may alias G.
template <class Schedule>
void newton_schulz(const DeviceMatrix<float>& G, const DeviceMatrix<float>& out, int steps, Context& ctx) {
  if (G.m != out.m || G.n != out.n)
    throw shape_error("newton_schulz (CUDA): output is " + shape_string(out.m, out.n) + ", input is " +
                      shape_string(G.m, G.n));
  newton_schulz_batched<Schedule>(G.data, out.data, 1, G.m, G.n, steps, ctx);
}

}  // namespace cuda

/// Newton-Schulz on the device: batched cuBLAS(Lt) products, the same schedule as the host.
template <class Schedule, int Steps, class Products>
struct NormKernel<SpectralNorm<NewtonSchulz<Schedule, Steps, Products>>, CudaBackend> {
  /// out = D(G), the steepest-descent direction (out may alias G).
  template <class Ws>
  static void dualize(const cuda::DeviceMatrix<float>& G, const cuda::DeviceMatrix<float>& out, Ws& ctx) {
    static_assert(std::is_same_v<std::decay_t<Ws>, cuda::Context>,
                  "steepest: on the CUDA backend, pass a steepest::cuda::Context as the workspace");
    cuda::newton_schulz<Schedule>(G, out, Steps, ctx);
  }
};

}  // namespace steepest
