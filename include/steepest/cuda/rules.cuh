// steepest/cuda/rules.cuh -- device forms of the transforms whose rule is not elementwise.
//
// An elementwise transform runs on a device through its Elem alone. A transform that reduces
// first (a row's mean square, the update's norm, a dot product, a count) has a device form here:
// DeviceRule<T>::run over a group of layers of one shape whose running updates lie back to back
// (the executor's staged path), with the arithmetic taken from the transform's own STEEPEST_HD
// functions (optim/reductions.hpp), so the two backends share one rule. A transform with neither
// an Elem nor a DeviceRule is a compile-time error on device memory.
//
// A DeviceRule<T> provides
//   template <class S, class In, class StateOf>
//   static void run(std::vector<LayerJob<S, In>>& jobs, Index m, Index n, const Hyper& hp,
//                   StateOf state_of, Context& cx);
// where hp holds the coefficients the transform owns and state_of(job) is its device state.
#pragma once

#include <algorithm>
#include <type_traits>
#include <vector>

#include "../optim/reductions.hpp"
#include "geometry.cuh"
#include "reduce.cuh"

namespace steepest {
namespace cuda {

namespace detail {
/// One layer's part of a device step; In is what its gradient holds (S, or __nv_bfloat16).
template <class S, class In = S>
struct LayerJob {
  std::size_t j;        ///< state layer
  const Layer<S>* l;
  const In* g;          ///< its gradient (a strided block when the layer is)
  S* w;                 ///< the weights the Elem kernels write (scratch when strided)
  S* u = nullptr;       ///< running update (staged layers)
  float* factors = nullptr;  ///< fused geometry's factors
  double lr, radius;
  Geometry geometry;
  long long t = 0;  ///< the layer's own step (the optimizer's, less the steps it was skipped)
};
}  // namespace detail

/// The device form of transform T, when its rule is not elementwise (see the file comment).
template <class T>
struct DeviceRule;

template <class T, class = void>
struct has_device_rule : std::false_type {};
template <class T>
struct has_device_rule<T, std::void_t<decltype(sizeof(DeviceRule<T>))>> : std::true_type {};

namespace kernels {

/// RowSecondMoment on an m x n update, one block per row: v_r <- next_moment(v_r, mean_c u_rc^2),
/// then the row divided by divisor(v_r). v_r is read before the block's reduction (whose barrier
/// orders it before thread 0's write).
/// (Templates, here and below: a kernel defined in a header must not be defined once per
/// translation unit that includes it.)
template <class F>
__global__ void __launch_bounds__(kRowThreads) row_second_moment(F* u, Index m, Index n, F* v, float b, float eps) {
  const Index r = blockIdx.x;
  if (r >= m) return;
  const float old = v[r];
  float* row = u + r * n;
  const float mean_sq = float(double(block_row_sumsq(row, n)) / double(n));
  const float vn = RowSecondMoment::next_moment(old, mean_sq, b);
  if (threadIdx.x == 0) v[r] = vn;
  const float d = RowSecondMoment::divisor(vn, eps);
  for (Index j = threadIdx.x; j < n; j += blockDim.x) row[j] /= d;
}

/// *out += <a, b> over count entries (out zeroed by the caller): fp32 per block, one atomic each.
template <class F>
__global__ void dot(const F* __restrict__ a, const F* __restrict__ b, Index count, F* __restrict__ out) {
  float acc = 0.0f;
  for (Index i = Index(blockIdx.x) * blockDim.x + threadIdx.x; i < count; i += Index(gridDim.x) * blockDim.x)
    acc = fmaf(a[i], b[i], acc);
  acc = block_sum(acc);
  if (threadIdx.x == 0) atomicAdd(out, acc);
}

/// a <- a * (*s), the factor read on the device.
template <class F>
__global__ void scale_by(F* a, Index count, const F* __restrict__ s) {
  const float f = *s;
  for (Index i = Index(blockIdx.x) * blockDim.x + threadIdx.x; i < count; i += Index(gridDim.x) * blockDim.x)
    a[i] *= f;
}

/// *kept += the number of entries CautiousMask keeps (u: rows x cols contiguous; g: the raw
/// gradient with row stride g_stride).
template <class In>
__global__ void cautious_count(const float* __restrict__ u, const In* __restrict__ g, Index rows, Index cols,
                               Index g_stride, unsigned long long* __restrict__ kept) {
  unsigned long long k = 0;
  const Index count = rows * cols;
  for (Index i = Index(blockIdx.x) * blockDim.x + threadIdx.x; i < count; i += Index(gridDim.x) * blockDim.x) {
    const Index r = i / cols;
    k += CautiousMask::keep(u[i], float(widen(g[r * g_stride + (i - r * cols)]))) ? 1 : 0;
  }
  for (int o = 16; o > 0; o >>= 1) k += __shfl_xor_sync(0xffffffffu, k, o);
  if ((threadIdx.x & 31) == 0 && k) atomicAdd(kept, k);
}

/// u <- u * scale(kept, size) where kept, 0 elsewhere.
template <class In>
__global__ void cautious_apply(float* u, const In* __restrict__ g, Index rows, Index cols, Index g_stride,
                               const unsigned long long* __restrict__ kept) {
  const Index count = rows * cols;
  const float s = float(CautiousMask::scale(double(*kept), double(count)));
  for (Index i = Index(blockIdx.x) * blockDim.x + threadIdx.x; i < count; i += Index(gridDim.x) * blockDim.x) {
    const Index r = i / cols;
    u[i] = CautiousMask::keep(u[i], float(widen(g[r * g_stride + (i - r * cols)]))) ? u[i] * s : 0.0f;
  }
}

}  // namespace kernels

/// RowSecondMoment on the device: one block per row reduces, updates v_r and divides.
template <>
struct DeviceRule<RowSecondMoment> {
  /// Runs the rule over a group of layers (see DeviceRule).
  template <class S, class In, class StateOf>
  static void run(std::vector<detail::LayerJob<S, In>>& jobs, Index m, Index n, const Hyper& hp, StateOf state_of,
                  Context& cx) {
    if (m == 0 || n == 0) return;
    for (auto& job : jobs) {
      kernels::row_second_moment<<<unsigned(m), kernels::kRowThreads, 0, cx.stream()>>>(
          job.u, m, n, state_of(job).v.data(), float(hp.beta2), float(hp.eps));
      check_launch("row_second_moment (optimizer step)");
    }
  }
};

/// MatchAdamWRms on the device: batched sums of squares, then the scale.
template <>
struct DeviceRule<MatchAdamWRms> {
  /// Each layer's sum of squares, then u scaled by target / ||u||_F: two batched launches.
  template <class S, class In, class StateOf>
  static void run(std::vector<detail::LayerJob<S, In>>& jobs, Index m, Index n, const Hyper&, StateOf, Context& cx) {
    const Index size = m * n, count = Index(jobs.size());
    if (size == 0) return;
    float* u = jobs.front().u;  // the group's updates are back to back
    const float target = float(MatchAdamWRms::target_norm(m, n));
    for (Index k0 = 0; k0 < count; k0 += 65535) {  // gridDim.y's limit
      const Index batch = std::min<Index>(65535, count - k0);
      float* sq = cx.scratch_f32[3].reserve(std::size_t(batch));
      check(cudaMemsetAsync(sq, 0, sizeof(float) * std::size_t(batch), cx.stream()), "cudaMemsetAsync");
      const dim3 grid(kernels::grid_for(size), unsigned(batch));
      kernels::sumsq<<<grid, 256, 0, cx.stream()>>>(u + k0 * size, size, size, sq);
      kernels::scale_by_inv_norm<<<grid, 256, 0, cx.stream()>>>(u + k0 * size, size, size, sq, target, 0.0f,
                                                                u + k0 * size);
      check_launch("match-adamw-rms (optimizer step)");
    }
  }
};

/// DualNormDualize on the device: the update kept, the direction, <before, D(u)>, the scale.
template <>
struct DeviceRule<DualNormDualize> {
  /// Each update kept, the group's direction (one batched call), then <before, D(u)> per layer
  /// as the scale of its D(u), read on the device.
  template <class S, class In, class StateOf>
  static void run(std::vector<detail::LayerJob<S, In>>& jobs, Index m, Index n, const Hyper&, StateOf state_of,
                  Context& cx) {
    const Index size = m * n;
    if (size == 0) return;
    for (auto& job : jobs)
      check(cudaMemcpyAsync(state_of(job).before.data(), job.u, sizeof(float) * std::size_t(size),
                            cudaMemcpyDeviceToDevice, cx.stream()),
            "cudaMemcpyAsync (update before the direction)");
    apply_direction(jobs.front().geometry, jobs.front().u, Index(jobs.size()), m, n, cx);
    float* dots = cx.scratch_f32[3].reserve(jobs.size());
    check(cudaMemsetAsync(dots, 0, sizeof(float) * jobs.size(), cx.stream()), "cudaMemsetAsync");
    for (std::size_t k = 0; k < jobs.size(); ++k) {
      kernels::dot<<<kernels::grid_for(size), 256, 0, cx.stream()>>>(state_of(jobs[k]).before.data(), jobs[k].u, size,
                                                                    dots + k);
      kernels::scale_by<<<kernels::grid_for(size), 256, 0, cx.stream()>>>(jobs[k].u, size, dots + k);
    }
    check_launch("dual-norm-direction (optimizer step)");
  }
};

/// CautiousMask on the device: the kept entries counted against the raw gradient, then masked.
template <>
struct DeviceRule<CautiousMask> {
  /// Per layer: the entries kept, counted against the raw gradient; then the mask and scale.
  template <class S, class In, class StateOf>
  static void run(std::vector<detail::LayerJob<S, In>>& jobs, Index m, Index n, const Hyper&, StateOf, Context& cx) {
    const Index size = m * n;
    if (size == 0) return;
    auto* kept = reinterpret_cast<unsigned long long*>(cx.scratch_f32[3].reserve(2 * jobs.size()));
    check(cudaMemsetAsync(kept, 0, sizeof(unsigned long long) * jobs.size(), cx.stream()), "cudaMemsetAsync");
    for (std::size_t k = 0; k < jobs.size(); ++k) {
      const auto& job = jobs[k];
      kernels::cautious_count<<<kernels::grid_for(size), 256, 0, cx.stream()>>>(job.u, job.g, m, n, job.l->stride,
                                                                               kept + k);
      kernels::cautious_apply<<<kernels::grid_for(size), 256, 0, cx.stream()>>>(job.u, job.g, m, n, job.l->stride,
                                                                               kept + k);
    }
    check_launch("cautious (optimizer step)");
  }
};

}  // namespace cuda
}  // namespace steepest
