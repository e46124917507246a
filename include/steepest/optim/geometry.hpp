// steepest/optim/geometry.hpp -- choosing a norm policy per layer at run time.
//
// Norm policies are compile-time types; a model's layers pick theirs by role when the parameter
// set is built. `Geometry` names the built-in policies and `dualize_layer` dispatches once per
// layer to the compiled policy, so the per-entry work is the policy's own kernel.
#pragma once

#include <string>

#include "../norms/operator_norm.hpp"

namespace steepest {

/// The built-in geometries, by the policy they dispatch to.
enum class Geometry {
  Identity,              ///< no geometry: D(G) = G (plain SGD / AdamW update)
  Sign,                  ///< SignNorm, 1 -> inf
  RowNormalize,          ///< RowNorm<2>, 2 -> inf
  ColNormalize,          ///< ColNorm<2>, 1 -> 2
  Spectral,              ///< SpectralNorm, quintic Newton-Schulz x5
  SpectralPolarExpress,  ///< SpectralNorm, Polar Express schedule x5
  SpectralExact,         ///< SpectralNorm, exact SVD polar factor
  VectorRMS,             ///< VectorNorm<2>: g / ||g|| (mean-normalized: g / rms(g))
  VectorSign,            ///< VectorNorm<Inf>: sign(g)
};

/// A geometry and whether its mean-normalized (width-aware) version is used.
struct LayerGeometry {
  Geometry kind = Geometry::Identity;
  bool mean_normalized = true;
};

inline std::string geometry_name(LayerGeometry g) {
  static const char* names[] = {"identity", "sign",     "row",    "col",       "spectral",
                                "spectral-pe", "spectral-svd", "vector-rms", "vector-sign"};
  return std::string(g.mean_normalized && g.kind != Geometry::Identity ? "mean " : "") +
         names[static_cast<int>(g.kind)];
}

/// Scratch for every built-in geometry, reused across steps.
template <class Scalar>
struct LayerWorkspace {
  eigen_detail::VectorwiseWorkspace<Scalar> vec;
  NewtonSchulzWorkspace<Scalar> ns;
};

namespace detail {
template <class Fn>
decltype(auto) with_policy(Geometry g, Fn&& fn) {
  switch (g) {
    case Geometry::Sign: return fn(static_cast<SignNorm*>(nullptr));
    case Geometry::RowNormalize: return fn(static_cast<RowNormalize*>(nullptr));
    case Geometry::ColNormalize: return fn(static_cast<ColNormalize*>(nullptr));
    case Geometry::Spectral: return fn(static_cast<steepest::Spectral*>(nullptr));
    case Geometry::SpectralPolarExpress:
      return fn(static_cast<steepest::SpectralPolarExpress*>(nullptr));
    case Geometry::SpectralExact: return fn(static_cast<steepest::SpectralExact*>(nullptr));
    case Geometry::VectorRMS: return fn(static_cast<VectorNorm<2>*>(nullptr));
    case Geometry::VectorSign: return fn(static_cast<VectorNorm<Inf>*>(nullptr));
    case Geometry::Identity: break;
  }
  return fn(static_cast<void*>(nullptr));
}

template <class N, class S>
auto& pick_workspace(LayerWorkspace<S>& ws) {
  if constexpr (std::is_same_v<workspace_t<N, S>, NewtonSchulzWorkspace<S>>) {
    return ws.ns;
  } else if constexpr (std::is_same_v<workspace_t<N, S>, NoWorkspace>) {
    static thread_local NoWorkspace none;
    return none;
  } else {
    return ws.vec;
  }
}
}  // namespace detail

/// The width-aware scale s(m, n) of the layer's geometry (1 when not mean-normalized or Identity).
inline double layer_scale(LayerGeometry g, Index m, Index n) {
  return detail::with_policy(g.kind, [&](auto* tag) -> double {
    using N = std::remove_pointer_t<decltype(tag)>;
    if constexpr (std::is_void_v<N>) {
      return 1.0;
    } else {
      return g.mean_normalized ? N::mean_normalized_scale(m, n) : 1.0;
    }
  });
}

/// u <- D_{p->q}(u) in the layer's geometry, in place. The width-aware factor s(m, n) of a
/// mean-normalized geometry is applied separately (GeometryScale), so a chain can place
/// moments between the direction and the scale.
template <class Mat, class S>
void dualize_layer(LayerGeometry g, Mat& u, LayerWorkspace<S>& ws) {
  detail::with_policy(g.kind, [&](auto* tag) {
    using N = std::remove_pointer_t<decltype(tag)>;
    if constexpr (!std::is_void_v<N>) N::dualize(u, u, detail::pick_workspace<N>(ws));
  });
}

inline bool is_spectral(Geometry g) {
  return g == Geometry::Spectral || g == Geometry::SpectralPolarExpress ||
         g == Geometry::SpectralExact;
}

/// ||W|| in the layer's geometry (mean-normalized when the layer is); Frobenius for Identity.
template <class Mat>
double layer_norm(LayerGeometry g, const Mat& W) {
  return detail::with_policy(g.kind, [&](auto* tag) -> double {
    using N = std::remove_pointer_t<decltype(tag)>;
    if constexpr (std::is_void_v<N>) {
      return double(W.norm());
    } else {
      return g.mean_normalized ? MeanNormalized<N>::value(W) : N::value(W);
    }
  });
}

}  // namespace steepest
