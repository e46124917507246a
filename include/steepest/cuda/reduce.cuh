// steepest/cuda/reduce.cuh -- reductions and vectorwise scalings on the device.
//
// Sums of squares accumulate in fp32 per thread and are combined with warp shuffles (a tree:
// error grows like log(n), not n). Row kernels use one block per row, so a row is read from
// DRAM once and its second read (the scaling pass) hits L1/L2 for rows up to the cache size.
//
// The direction kernels (scale_by_inv_norm, row_normalize, col_scale, sign_scale) accept
// out == input, as the CPU policies do, so their input/output pair is not __restrict__: each
// thread reads element i and then writes element i, which is safe in place.
#pragma once

#include <cuda_bf16.h>

#include "device.hpp"

namespace steepest {
namespace cuda {
namespace kernels {

constexpr int kRowThreads = 256;

/// An entry as the arithmetic sees it: itself, or a bf16 gradient widened to float (exactly).
/// __bfloat162float rather than the conversion operator, which __CUDA_NO_BFLOAT16_CONVERSIONS__
/// (set by some builds, PyTorch's among them) removes.
template <class T>
STEEPEST_HD inline T widen(T x) {
  return x;
}
STEEPEST_HD inline float widen(__nv_bfloat16 x) { return __bfloat162float(x); }

__device__ __forceinline__ float warp_sum(float v) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

/// Block-wide sum; every thread gets the result. blockDim.x must be a multiple of 32, <= 1024.
__device__ __forceinline__ float block_sum(float v) {
  __shared__ float part[32];
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  v = warp_sum(v);
  __syncthreads();  // `part` may still be read by a previous call
  if (lane == 0) part[warp] = v;
  __syncthreads();
  const int warps = (blockDim.x + 31) >> 5;
  v = lane < warps ? part[lane] : 0.0f;
  return warp_sum(v);
}

/// Sum of squares of one row, reduced over the block; every thread gets it. Strided by
/// blockDim.x, so each warp reads consecutive addresses. S may be __nv_bfloat16 (a bf16
/// gradient, widened as it is read), as in col_sumsq and sumsq.
template <class S>
__device__ __forceinline__ float block_row_sumsq(const S* row, Index n) {
  float acc = 0.0f;
  for (Index j = threadIdx.x; j < n; j += blockDim.x) {
    const float x = float(widen(row[j]));
    acc = fmaf(x, x, acc);
  }
  return block_sum(acc);
}

/// out[i] = ||row_i||_2 (p = 2) or ||row_i||_1 (p = 1), or max |.| (p = 0 meaning inf).
template <class S>
__global__ void row_norms(const S* __restrict__ a, Index m, Index n, int p, float* __restrict__ out) {
  const Index r = blockIdx.x;
  if (r >= m) return;
  const S* row = a + r * n;
  float acc = 0.0f;
  for (Index j = threadIdx.x; j < n; j += blockDim.x) {
    const float x = float(row[j]);
    acc = p == 2 ? fmaf(x, x, acc) : (p == 1 ? acc + fabsf(x) : fmaxf(acc, fabsf(x)));
  }
  if (p == 0) {
    for (int o = 16; o > 0; o >>= 1) acc = fmaxf(acc, __shfl_xor_sync(0xffffffffu, acc, o));
    __shared__ float part[32];
    __syncthreads();
    if ((threadIdx.x & 31) == 0) part[threadIdx.x >> 5] = acc;
    __syncthreads();
    if (threadIdx.x == 0) {
      float mx = 0.0f;
      for (int w = 0; w < int(blockDim.x >> 5); ++w) mx = fmaxf(mx, part[w]);
      out[r] = mx;
    }
    return;
  }
  acc = block_sum(acc);
  if (threadIdx.x == 0) out[r] = p == 2 ? sqrtf(acc) : acc;
}

/// Column sums of squares, accumulated into out[n] (zeroed by the caller): a 2-D grid of
/// 32-column x 256-row tiles; each thread walks down its column (coalesced across the warp) and
/// the tile's partial sum is added with one atomic per column.
template <class S>
__global__ void col_sumsq(const S* __restrict__ a, Index m, Index n, Index rows_per_block, float* __restrict__ out) {
  const Index c = Index(blockIdx.x) * 32 + (threadIdx.x & 31);
  const Index r0 = Index(blockIdx.y) * rows_per_block;
  const Index r1 = r0 + rows_per_block < m ? r0 + rows_per_block : m;
  float acc = 0.0f;
  if (c < n)
    for (Index r = r0 + (threadIdx.x >> 5); r < r1; r += blockDim.x >> 5) {
      const float x = float(widen(a[r * n + c]));
      acc = fmaf(x, x, acc);
    }
  __shared__ float part[32][33];  // [row-group][column], padded against bank conflicts
  part[threadIdx.x >> 5][threadIdx.x & 31] = acc;
  __syncthreads();
  if (threadIdx.x < 32 && Index(blockIdx.x) * 32 + threadIdx.x < n) {
    float s = 0.0f;
    for (int g = 0; g < int(blockDim.x >> 5); ++g) s += part[g][threadIdx.x];
    atomicAdd(out + Index(blockIdx.x) * 32 + threadIdx.x, s);
  }
}

/// Sum of squares of a whole array into *out (zeroed by the caller), fp32 per block then one
/// atomic per block. Batched over blockIdx.y: array y starts at a + y * stride and sums into
/// out[y] (a plain call has gridDim.y = 1).
template <class S>
__global__ void sumsq(const S* __restrict__ a, Index count, Index stride, float* __restrict__ out) {
  a += Index(blockIdx.y) * stride;
  float acc = 0.0f;
  for (Index i = Index(blockIdx.x) * blockDim.x + threadIdx.x; i < count; i += Index(gridDim.x) * blockDim.x) {
    const float x = float(widen(a[i]));
    acc = fmaf(x, x, acc);
  }
  acc = block_sum(acc);
  if (threadIdx.x == 0) atomicAdd(out + blockIdx.y, acc);
}

/// out = a * s / f(norm) elementwise, where f(norm) = sqrt(*norm_sq) (zero norm -> zero output).
/// The norm is read on the device: no host round trip between the reduction and the scaling.
/// Batched over blockIdx.y like sumsq: array y uses norm_sq[y].
template <class S>
__global__ void scale_by_inv_norm(const S* a, Index count, Index stride, const float* __restrict__ norm_sq, float s,
                                  float eps_rel, S* out) {
  a += Index(blockIdx.y) * stride;
  out += Index(blockIdx.y) * stride;
  const float nrm = sqrtf(norm_sq[blockIdx.y]);
  const float f = nrm > 0.0f ? s / (nrm * (1.0f + eps_rel)) : 0.0f;
  for (Index i = Index(blockIdx.x) * blockDim.x + threadIdx.x; i < count; i += Index(gridDim.x) * blockDim.x)
    out[i] = S(float(a[i]) * f);
}

/// Row p-normalization in one block per row: the norm reduction and the scaling in one kernel.
/// p = 2: d = g / ||g||_2 (2->inf); p = 1 is handled by the sign kernel instead.
template <class S>
__global__ void row_normalize(const S* g, Index m, Index n, float s, S* out) {
  const Index r = blockIdx.x;
  if (r >= m) return;
  const S* row = g + r * n;
  const float acc = block_row_sumsq(row, n);
  const float f = acc > 0.0f ? s * rsqrtf(acc) : 0.0f;  // a zero row has a zero direction
  S* o = out + r * n;
  for (Index j = threadIdx.x; j < n; j += blockDim.x) o[j] = S(float(row[j]) * f);
}

/// out[i, j] = g[i, j] * s / sqrt(colsq[j]) (zero column -> zero).
template <class S>
__global__ void col_scale(const S* g, Index m, Index n, const float* __restrict__ colsq, float s, S* out) {
  const Index count = m * n;
  for (Index i = Index(blockIdx.x) * blockDim.x + threadIdx.x; i < count; i += Index(gridDim.x) * blockDim.x) {
    const float c = colsq[i % n];
    out[i] = S(c > 0.0f ? float(g[i]) * s * rsqrtf(c) : 0.0f);
  }
}

/// out = s * sign(g) (sign(0) = 0): the 1->inf direction.
template <class S>
__global__ void sign_scale(const S* g, Index count, float s, S* out) {
  for (Index i = Index(blockIdx.x) * blockDim.x + threadIdx.x; i < count; i += Index(gridDim.x) * blockDim.x) {
    const float x = float(g[i]);
    out[i] = S(x > 0.0f ? s : (x < 0.0f ? -s : 0.0f));
  }
}

template <class S>
__global__ void scale(S* __restrict__ a, Index count, float s) {
  for (Index i = Index(blockIdx.x) * blockDim.x + threadIdx.x; i < count; i += Index(gridDim.x) * blockDim.x)
    a[i] = S(float(a[i]) * s);
}

/// Grid size for grid-stride elementwise kernels: enough blocks to fill the device a few times.
inline unsigned grid_for(Index count, int threads = 256) {
  const Index blocks = (count + threads - 1) / threads;
  return unsigned(blocks < 4096 ? (blocks > 0 ? blocks : 1) : 4096);
}

}  // namespace kernels

/// Enqueues out[j] = sum_i a[i, j]^2 for an m x n row-major matrix (out zeroed first).
template <class S>
void enqueue_col_sumsq(const S* a, Index m, Index n, float* out, cudaStream_t stream) {
  check(cudaMemsetAsync(out, 0, sizeof(float) * std::size_t(n), stream), "cudaMemsetAsync");
  const Index rows_per_block = 256;
  dim3 grid(unsigned((n + 31) / 32), unsigned((m + rows_per_block - 1) / rows_per_block));
  kernels::col_sumsq<<<grid, 1024, 0, stream>>>(a, m, n, rows_per_block, out);
  check_launch("col_sumsq");
}

/// Enqueues *out = sum_i a[i]^2 (out zeroed first).
template <class S>
void enqueue_sumsq(const S* a, Index count, float* out, cudaStream_t stream) {
  check(cudaMemsetAsync(out, 0, sizeof(float), stream), "cudaMemsetAsync");
  kernels::sumsq<<<kernels::grid_for(count), 256, 0, stream>>>(a, count, 0, out);
  check_launch("sumsq");
}

/// MeanNormalized's scaling of a device direction (one extra pass; the fused optimizer kernels
/// fold the scale in instead).
template <class S>
void scale_in_place(const DeviceMatrix<S>& out, double s, Context& ctx) {
  if (out.size() == 0 || s == 1.0) return;
  kernels::scale<<<kernels::grid_for(out.size()), 256, 0, ctx.stream()>>>(out.data, out.size(), float(s));
  check_launch("scale");
}

}  // namespace cuda
}  // namespace steepest
