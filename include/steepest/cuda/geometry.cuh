// steepest/cuda/geometry.cuh -- a run-time geometry's direction on device memory.
//
// A `Geometry` handle (optim/geometry.hpp) leads to its device direction in one of two ways:
//   * the built-in forms follow from what the handle states about itself: its fused form
//     (identity, sign, row / column / whole-matrix 2-normalization) or its Newton-Schulz
//     schedule (PolarInfo), so every built-in policy and every Newton-Schulz schedule, a user's
//     own included, has a device direction without registering anything;
//   * a user policy B with its own CUDA kernel (NormKernel<B, CudaBackend> and has_cuda_kernel<B>)
//     is registered once, from CUDA code, before the first step:
//         st::cuda::register_geometry<MyPolicy>();   // also serves MeanNormalized<MyPolicy>
//     The host table of every handle made from B points at the slot this fills.
// The executor asks `direction_of(g)` at init (a geometry with neither is refused, naming the
// layer) and runs it through `apply_direction`.
#pragma once

#include "newton_schulz.cuh"
#include "norms.cuh"
#include "../optim/geometry.hpp"

namespace steepest {
namespace cuda {

/// A geometry's direction on device memory: u <- D(u) in place for `count` m x n row-major
/// matrices stored back to back (a group of layers of one shape and geometry, so a batched
/// kernel serves them in one launch), enqueued on cx.stream().
struct Direction {
  /// What the direction is, for messages.
  const char* name;
  /// u <- D(u) for `count` m x n matrices back to back, enqueued on cx.stream().
  void (*apply)(Geometry g, float* u, Index count, Index m, Index n, Context& cx);
};

namespace detail {

inline void identity_direction(Geometry, float*, Index, Index, Index, Context&) {}
inline void sign_direction(Geometry, float* u, Index count, Index m, Index n, Context& cx) {
  kernels::sign_scale<<<kernels::grid_for(count * m * n), 256, 0, cx.stream()>>>(u, count * m * n, 1.0f, u);
  check_launch("sign_scale (direction)");
}
/// Rows normalize independently, so the group is one (count m) x n matrix.
inline void row2_direction(Geometry, float* u, Index count, Index m, Index n, Context& cx) {
  if (count * m == 0) return;
  kernels::row_normalize<<<unsigned(count * m), kernels::kRowThreads, 0, cx.stream()>>>(u, count * m, n, 1.0f, u);
  check_launch("row_normalize (direction)");
}
/// Each matrix on its own with policy B's kernel.
template <class B>
void policy_direction(Geometry, float* u, Index count, Index m, Index n, Context& cx) {
  for (Index k = 0; k < count; ++k) B::dualize(view(u + k * m * n, m, n), view(u + k * m * n, m, n), cx);
}
/// The polar factor by the handle's own Newton-Schulz schedule, one batched call for the group.
inline void polar_direction(Geometry g, float* u, Index count, Index m, Index n, Context& cx) {
  const PolarInfo p = g.polar();
  newton_schulz_batched(u, u, count, m, n, p.steps, p.at, p.safety, cx);
}

inline constexpr Direction kIdentity{"identity", &identity_direction};
inline constexpr Direction kSign{"sign", &sign_direction};
inline constexpr Direction kRow2{"row 2-normalization", &row2_direction};
inline constexpr Direction kCol2{"column 2-normalization", &policy_direction<ColNorm<2>>};
inline constexpr Direction kGlobal2{"2-normalization", &policy_direction<VectorNorm<2>>};
inline constexpr Direction kPolar{"Newton-Schulz polar factor", &polar_direction};
template <class B>
inline constexpr Direction kRegistered{"registered CUDA kernel", &policy_direction<B>};

}  // namespace detail

/// The device direction of geometry g: the kernel registered for its policy, else the built-in
/// form its handle describes, else null (no device form: route the layer elsewhere).
inline const Direction* direction_of(Geometry g) {
  if (const Direction* d = g.device_direction()) return d;
  switch (g.fused()) {
    case FusedForm::Identity: return &detail::kIdentity;
    case FusedForm::Sign: return &detail::kSign;
    case FusedForm::Row2: return &detail::kRow2;
    case FusedForm::Col2: return &detail::kCol2;
    case FusedForm::Global2: return &detail::kGlobal2;
    case FusedForm::None: break;
  }
  return g.spectral() && g.polar().at != nullptr ? &detail::kPolar : nullptr;
}

/// u <- D(u) for `count` m x n matrices back to back, by g's device direction (init has refused a
/// layer whose geometry has none; this throws if one gets here anyway).
inline void apply_direction(Geometry g, float* u, Index count, Index m, Index n, Context& cx) {
  const Direction* d = direction_of(g);
  if (!d) throw std::invalid_argument("geometry '" + g.name() + "' has no CUDA form");
  d->apply(g, u, count, m, n, cx);
}

/// Makes norm policy N usable as a per-layer geometry on device memory (`st::geometry<N>()`,
/// and MeanNormalized<N>, whose direction is N's). Call it from CUDA code before the first step
/// that needs it (not concurrently with a step); calling it again changes nothing.
template <class N>
void register_geometry() {
  using B = typename steepest::detail::mean_split<N>::base;
  static_assert(has_cuda_kernel<B>::value,
                "steepest::cuda::register_geometry<N>: N has no CUDA kernel. Write "
                "NormKernel<N, CudaBackend> and specialize has_cuda_kernel<N> first");
  steepest::detail::device_direction_slot<B> = &detail::kRegistered<B>;
}

}  // namespace cuda
}  // namespace steepest
