// steepest/backend/backend.hpp -- the one dispatch point between norm policies and kernels.
//
// A norm policy (RowNorm<2>, Spectral<...>) states facts about a geometry; the arithmetic lives
// in `NormKernel<Policy, Backend>` specializations. The backend is chosen from the *argument
// type*: Eigen dense expressions (matrices, blocks, `Eigen::Map` over user buffers) go to
// `EigenBackend`. A device-memory view type only has to specialize `backend_of` to name its
// backend and provide `NormKernel<Policy, ThatBackend>`; the policies' public functions do not change.
#pragma once

#include <type_traits>

namespace steepest {

/// Tag of the CPU backend built on Eigen.
struct EigenBackend {};

/// Maps an argument type to its backend. Primary template: Eigen (every dense Eigen expression).
template <class Arg, class Enable = void>
struct backend_of {
  /// The backend of an argument type (EigenBackend, or CudaBackend for cuda::DeviceMatrix).
  using type = EigenBackend;
};

template <class Arg>
using backend_of_t = typename backend_of<std::decay_t<Arg>>::type;

template <class...>
inline constexpr bool dependent_false = false;

/// Kernels of a norm policy on a backend. Specialized per (policy family, backend).
template <class Policy, class Backend>
struct NormKernel {
  static_assert(dependent_false<Policy, Backend>,
                "steepest: no kernel for this norm policy on this backend (did you include the "
                "backend's header, e.g. <steepest/steepest.hpp>?)");
};

/// Base of the built-in policies: forwards value / dual / dualize to the kernel of the argument's
/// backend, so each policy states only its facts (p, q, scales, workspace). The 2-argument
/// dualize makes a temporary workspace (allocates); pass one to reuse it.
template <class Policy>
struct KernelPolicy {
  /// ||W|| in the policy's norm, by the kernel of W's backend.
  template <class M>
  static double value(const M& W) { return NormKernel<Policy, backend_of_t<M>>::value(W); }
  /// ||G||_*, the dual norm, by the kernel of G's backend.
  template <class M>
  static double dual(const M& G) { return NormKernel<Policy, backend_of_t<M>>::dual(G); }
  /// out = D(G), the steepest-descent direction, with the caller's workspace (out may alias G).
  template <class M, class O, class Ws>
  static void dualize(const M& G, const O& out, Ws& ws) {
    NormKernel<Policy, backend_of_t<M>>::dualize(G, out, ws);
  }
  /// out = D(G) with a temporary workspace (allocates; pass one to reuse it).
  template <class M, class O>
  static void dualize(const M& G, const O& out) {
    typename Policy::template Workspace<typename M::Scalar> ws;
    NormKernel<Policy, backend_of_t<M>>::dualize(G, out, ws);
  }
};

}  // namespace steepest
