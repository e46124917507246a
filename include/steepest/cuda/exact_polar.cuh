// steepest/cuda/exact_polar.cuh -- the exact polar factor U V^T on the device through cuSOLVER's
// SVD: the reference the Newton-Schulz kernels are tested against on the GPU (link
// CUDA::cusolver). Synchronizes (cuSOLVER's gesvd returns its status through device memory and
// the workspace size through the host); not for use inside a training step.
#pragma once

#include <cusolverDn.h>

#include "device.hpp"

namespace steepest {
namespace cuda {

/// out = U V^T of the row-major m x n device matrix G (thin SVD), computed in fp32 by
/// cusolverDnSgesvd on G's column-major view Y = G^T (n x m; gesvd needs rows >= cols, so the
/// tall case works on Y^T through a transposed copy).
inline void exact_polar(const DeviceMatrix<float>& G, const DeviceMatrix<float>& out, Context& ctx) {
  if (G.m != out.m || G.n != out.n)
    throw shape_error("exact_polar (CUDA): output is " + shape_string(out.m, out.n) + ", input is " +
                      shape_string(G.m, G.n));
  if (G.size() == 0) return;
  cusolverDnHandle_t h = nullptr;
  if (cusolverDnCreate(&h) != CUSOLVER_STATUS_SUCCESS) throw cuda_error("steepest::cuda: cusolverDnCreate failed");
  struct Guard {
    cusolverDnHandle_t h;
    ~Guard() { cusolverDnDestroy(h); }
  } guard{h};
  cusolverDnSetStream(h, ctx.stream());
  // Column-major M (rows r >= cols c) whose polar factor gives ours: Y = G^T (n x m) when n >= m,
  // else Y^T = G (as an m x n column-major copy, made by a transposing GEMM-free geam).
  const bool wide = G.n >= G.m;
  const int r = int(wide ? G.n : G.m), c = int(wide ? G.m : G.n);
  Buffer<float> M, S, U, VT, work;
  Buffer<int> info;
  M.reserve(std::size_t(r) * c), S.reserve(std::size_t(c)), U.reserve(std::size_t(r) * c),
      VT.reserve(std::size_t(c) * c), info.reserve(1);
  const float one = 1.0f, zero = 0.0f;
  if (wide) {
    check(cudaMemcpyAsync(M.get(), G.data, sizeof(float) * std::size_t(G.size()), cudaMemcpyDeviceToDevice,
                          ctx.stream()),
          "cudaMemcpyAsync");
  } else {  // M = (G^T)^T in column-major = transpose of the n x m view
    check(cublasSgeam(ctx.blas(), CUBLAS_OP_T, CUBLAS_OP_N, r, c, &one, G.data, c, &zero, G.data, r, M.get(), r),
          "cublasSgeam");
  }
  int lwork = 0;
  if (cusolverDnSgesvd_bufferSize(h, r, c, &lwork) != CUSOLVER_STATUS_SUCCESS)
    throw cuda_error("steepest::cuda: cusolverDnSgesvd_bufferSize failed");
  work.reserve(std::size_t(lwork));
  if (cusolverDnSgesvd(h, 'S', 'S', r, c, M.get(), r, S.get(), U.get(), r, VT.get(), c, work.get(), lwork, nullptr,
                       info.get()) != CUSOLVER_STATUS_SUCCESS)
    throw cuda_error("steepest::cuda: cusolverDnSgesvd failed");
  // P = U V^T (r x c column-major) is the polar factor of M.
  Buffer<float> P;
  P.reserve(std::size_t(r) * c);
  check(cublasSgemm(ctx.blas(), CUBLAS_OP_N, CUBLAS_OP_N, r, c, c, &one, U.get(), r, VT.get(), c, &zero, P.get(), r),
        "cublasSgemm");
  if (wide) {  // M = Y = G^T, so polar(G)^T = P: P's buffer is polar(G) row-major
    check(cudaMemcpyAsync(out.data, P.get(), sizeof(float) * std::size_t(G.size()), cudaMemcpyDeviceToDevice,
                          ctx.stream()),
          "cudaMemcpyAsync");
  } else {  // M = G (column-major m x n): write P^T's column-major buffer = P row-major
    check(cublasSgeam(ctx.blas(), CUBLAS_OP_T, CUBLAS_OP_N, c, r, &one, P.get(), r, &zero, P.get(), c, out.data, c),
          "cublasSgeam");
  }
  int hinfo = 0;
  check(cudaMemcpyAsync(&hinfo, info.get(), sizeof(int), cudaMemcpyDeviceToHost, ctx.stream()), "cudaMemcpyAsync");
  check(cudaStreamSynchronize(ctx.stream()), "cudaStreamSynchronize");
  if (hinfo != 0) throw cuda_error("steepest::cuda: gesvd did not converge (info " + std::to_string(hinfo) + ")");
}

}  // namespace cuda
}  // namespace steepest
