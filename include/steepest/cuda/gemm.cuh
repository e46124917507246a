// steepest/cuda/gemm.cuh -- the CUDA backend's one GEMM entry point.
//
//   D_i = alpha op(A_i) op(B_i) + beta C_i,   i = 0 .. batch-1,   column-major, strided batches
//
// C and D may be different buffers: cuBLASLt applies the beta term in its epilogue while it
// writes D, so Newton-Schulz's "a X + B X" reads X once and never copies it. Classic cuBLAS is
// in-place (C = D); on that path a C != D call first copies C into D (one extra pass).
//
// The compute type follows Context::precision() (FP32, TF32 or BF16 products, always fp32
// storage, accumulation and epilogue). A cuBLASLt plan -- operation and layout descriptors and
// the algorithm the heuristic picked -- is built on the first call for a shape and cached in the
// Context, so steady-state calls create no descriptors and allocate nothing. If the heuristic
// finds no algorithm the plan is marked unusable and the call takes the Classic path.
#pragma once

#include <algorithm>
#include <cstdint>

#include "device.hpp"

namespace steepest {
namespace cuda {

/// One strided-batched GEMM description (column-major, as cuBLAS sees the data).
struct GemmArgs {
  cublasOperation_t ta = CUBLAS_OP_N;  ///< op(A): A or its transpose.
  cublasOperation_t tb = CUBLAS_OP_N;  ///< op(B): B or its transpose.
  int M = 0;  ///< op(A) is M x K; C and D are M x N.
  int N = 0;  ///< op(B) is K x N.
  int K = 0;  ///< The inner dimension.
  float alpha = 1.0f;  ///< D = alpha op(A) op(B) + beta C.
  float beta = 0.0f;   ///< D = alpha op(A) op(B) + beta C.
  const float* A = nullptr;  ///< A.
  int lda = 0;               ///< A's leading dimension.
  long long sA = 0;          ///< A's batch stride, in elements.
  const float* B = nullptr;  ///< B.
  int ldb = 0;               ///< B's leading dimension.
  long long sB = 0;          ///< B's batch stride, in elements.
  const float* C = nullptr;  ///< Read only when beta != 0; may equal D.
  float* D = nullptr;        ///< The output.
  int ldc = 0;               ///< C's and D's leading dimension (one layout).
  long long sC = 0;          ///< C's and D's batch stride, in elements.
  int batch = 1;             ///< Matrices in the batch.
};

namespace detail {

// Largest power of two (<= 256) dividing the address: cuBLASLt picks kernels by pointer
// alignment, and sub-buffers of the scratch (B after A, batch offsets) need not be 256-aligned.
inline std::uint32_t alignment_of(const void* p) {
  std::uint32_t a = 256;
  while (a > 4 && (reinterpret_cast<std::uintptr_t>(p) % a) != 0) a >>= 1;
  return a;
}

inline void classic_gemm(Context& ctx, const GemmArgs& g) {
  if (g.beta != 0.0f && g.C != g.D) {
    // In-place interface: D must hold C before the call. Layouts are equal and the batches
    // contiguous in every use here (stride = ldc * N), so one copy covers them all.
    const std::size_t count = std::size_t(g.batch - 1) * std::size_t(g.sC) + std::size_t(g.ldc) * std::size_t(g.N);
    check(cudaMemcpyAsync(g.D, g.C, sizeof(float) * count, cudaMemcpyDeviceToDevice, ctx.stream()),
          "cudaMemcpyAsync");
  }
  check(cublasGemmStridedBatchedEx(ctx.blas(), g.ta, g.tb, g.M, g.N, g.K, &g.alpha, g.A, CUDA_R_32F, g.lda, g.sA, g.B,
                                   CUDA_R_32F, g.ldb, g.sB, &g.beta, g.D, CUDA_R_32F, g.ldc, g.sC, g.batch,
                                   ctx.compute_type(), CUBLAS_GEMM_DEFAULT),
        "cublasGemmStridedBatchedEx");
}

inline cublasLtMatrixLayout_t lt_layout(std::uint64_t rows, std::uint64_t cols, std::int64_t ld, int batch,
                                        long long stride) {
  cublasLtMatrixLayout_t l = nullptr;
  check(cublasLtMatrixLayoutCreate(&l, CUDA_R_32F, rows, cols, ld), "cublasLtMatrixLayoutCreate");
  if (batch > 1) {
    const std::int32_t b = batch;
    const std::int64_t s = stride;
    check(cublasLtMatrixLayoutSetAttribute(l, CUBLASLT_MATRIX_LAYOUT_BATCH_COUNT, &b, sizeof b),
          "cublasLtMatrixLayoutSetAttribute(BATCH_COUNT)");
    check(cublasLtMatrixLayoutSetAttribute(l, CUBLASLT_MATRIX_LAYOUT_STRIDED_BATCH_OFFSET, &s, sizeof s),
          "cublasLtMatrixLayoutSetAttribute(STRIDED_BATCH_OFFSET)");
  }
  return l;
}

// Builds (once per shape, alignment and precision) the cuBLASLt plan for g.
inline Context::LtPlan& lt_plan(Context& ctx, const GemmArgs& g, std::uint32_t align) {
  const long long key[16] = {g.ta, g.tb, g.M, g.N, g.K, g.lda, g.ldb, g.ldc, g.sA, g.sB, g.sC, g.batch, align,
                             int(ctx.precision()), g.beta != 0.0f, 0};
  for (Context::LtPlan& p : ctx.plans)
    if (std::equal(key, key + 16, p.key)) return p;
  Context::LtPlan p;
  std::copy(key, key + 16, p.key);
  check(cublasLtMatmulDescCreate(&p.op, ctx.compute_type(), CUDA_R_32F), "cublasLtMatmulDescCreate");
  check(cublasLtMatmulDescSetAttribute(p.op, CUBLASLT_MATMUL_DESC_TRANSA, &g.ta, sizeof g.ta),
        "cublasLtMatmulDescSetAttribute(TRANSA)");
  check(cublasLtMatmulDescSetAttribute(p.op, CUBLASLT_MATMUL_DESC_TRANSB, &g.tb, sizeof g.tb),
        "cublasLtMatmulDescSetAttribute(TRANSB)");
  // Layouts describe the stored matrices: op(A) = A^T means A is stored K x M.
  const bool at = g.ta != CUBLAS_OP_N, bt = g.tb != CUBLAS_OP_N;
  p.a = lt_layout(at ? g.K : g.M, at ? g.M : g.K, g.lda, g.batch, g.sA);
  p.b = lt_layout(bt ? g.N : g.K, bt ? g.K : g.N, g.ldb, g.batch, g.sB);
  p.c = lt_layout(g.M, g.N, g.ldc, g.batch, g.sC);
  cublasLtMatmulPreference_t pref = nullptr;
  check(cublasLtMatmulPreferenceCreate(&pref), "cublasLtMatmulPreferenceCreate");
  const std::uint64_t ws = Context::kLtWorkspaceBytes;
  cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws, sizeof ws);
  for (auto attr : {CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES,
                    CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES})
    cublasLtMatmulPreferenceSetAttribute(pref, attr, &align, sizeof align);
  cublasLtMatmulHeuristicResult_t h{};
  int found = 0;
  const cublasStatus_t s =
      cublasLtMatmulAlgoGetHeuristic(ctx.lt(), p.op, p.a, p.b, p.c, p.c, pref, 1, &h, &found);
  cublasLtMatmulPreferenceDestroy(pref);
  p.usable = s == CUBLAS_STATUS_SUCCESS && found > 0 && h.state == CUBLAS_STATUS_SUCCESS;
  if (p.usable) p.algo = h.algo;
  ctx.plans.push_back(p);
  return ctx.plans.back();
}

}  // namespace detail

/// Enqueues the GEMM(s) described by g on ctx's stream (see the file comment).
inline void gemm(Context& ctx, const GemmArgs& g) {
  if (g.M == 0 || g.N == 0 || g.batch == 0) return;
  if (ctx.engine == GemmEngine::Lt) {
    std::uint32_t align = detail::alignment_of(g.A);
    align = std::min(align, detail::alignment_of(g.B));
    align = std::min(align, detail::alignment_of(g.D));
    if (g.beta != 0.0f) align = std::min(align, detail::alignment_of(g.C));
    if (g.batch > 1)  // every matrix of the batch must meet the alignment, not just the first
      for (long long s : {g.sA, g.sB, g.sC})
        align = std::min(align, detail::alignment_of(reinterpret_cast<const void*>(std::uintptr_t(s) * sizeof(float))));
    Context::LtPlan& p = detail::lt_plan(ctx, g, align);
    if (p.usable) {
      void* ws = ctx.lt_workspace.reserve(Context::kLtWorkspaceBytes);
      check(cublasLtMatmul(ctx.lt(), p.op, &g.alpha, g.A, p.a, g.B, p.b, &g.beta, g.beta != 0.0f ? g.C : g.D, p.c,
                           g.D, p.c, &p.algo, ws, Context::kLtWorkspaceBytes, ctx.stream()),
            "cublasLtMatmul");
      return;
    }
  }
  detail::classic_gemm(ctx, g);
}

}  // namespace cuda
}  // namespace steepest
