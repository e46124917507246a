// steepest/optim/geometry.hpp -- a layer's norm geometry chosen at run time, from any policy.
//
// Norm policies are compile-time types. A model picks one per layer when its parameter set is
// built (by role, by route, or per layer), so the choice has to be a value: `Geometry` is a
// handle to a table of functions instantiated from the policy type,
//
//   st::Geometry g = st::geometry<st::MeanNormalized<st::RowNorm<3>>>();
//
// and any type that satisfies the norm-policy contract (norms/traits.hpp) works, including a
// user's own: there is no central list to edit. The table is built once per policy type (an
// inline variable: one address per program, so handles compare by identity), and the per-entry
// work is still the policy's own compiled kernel: dispatch happens once per layer and step.
//
// How a handle splits a policy for the optimizer chains:
//   MeanNormalized<B>   direction = B's direction D_B, scale = s(m, n) of B      (p̄ -> q̄)
//   any other N         direction = N's direction,    scale = 1
// so a chain applies the direction and the width-aware scale as two transforms
// (optim/transforms.hpp) and can place moments between them (MOGA). The default handle is the
// identity: D(G) = G.
#pragma once

#include <Eigen/Core>

#include <memory>
#include <string>
#include <type_traits>

#include "../norms/operator_norm.hpp"

namespace steepest {

namespace cuda {
struct Direction;  // a geometry's direction on device memory (cuda/geometry.cuh)
}

template <class Scalar>
using RowMatrix = Eigen::Matrix<Scalar, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;

/// A read-only row-major view with a row stride: parameters may be logical blocks of a larger
/// buffer (params.hpp), so norms are taken through this type.
template <class Scalar>
using ConstRowView = Eigen::Ref<const RowMatrix<Scalar>, 0, Eigen::OuterStride<>>;

/// Scratch for a layer's geometry, reused across steps. The built-in workspaces have slots; a
/// user policy's own Workspace type is created on first use and kept in `other`.
template <class Scalar>
struct LayerWorkspace {
  /// Row / column / vector scratch.
  eigen_detail::VectorwiseWorkspace<Scalar> vec;
  /// Newton-Schulz scratch.
  NewtonSchulzWorkspace<Scalar> ns;
  /// A user policy's own workspace, made on first use.
  std::shared_ptr<void> other;
  /// Which type `other` holds.
  const void* other_type = nullptr;
};

/// How the fused one-pass kernels (optim/chain.hpp) can apply a geometry's direction: pointwise
/// (Identity, Sign) or one factor per row, per column or for the whole matrix computed from the
/// gradient in a first read pass. None: the direction needs the whole matrix (spectral, or a
/// user policy the fused kernels know nothing about), so the layer runs transform by transform.
enum class FusedForm { None, Identity, Sign, Row2, Col2, Global2 };

/// The fused form of a policy, from its type. A user policy is None unless it specializes this.
template <class N>
struct fused_form_of : std::integral_constant<FusedForm, FusedForm::None> {};
template <>
struct fused_form_of<RowNorm<1>> : std::integral_constant<FusedForm, FusedForm::Sign> {};
template <>
struct fused_form_of<ColNorm<Inf>> : std::integral_constant<FusedForm, FusedForm::Sign> {};
template <>
struct fused_form_of<VectorNorm<Inf>> : std::integral_constant<FusedForm, FusedForm::Sign> {};
template <>
struct fused_form_of<RowNorm<2>> : std::integral_constant<FusedForm, FusedForm::Row2> {};
template <>
struct fused_form_of<ColNorm<2>> : std::integral_constant<FusedForm, FusedForm::Col2> {};
template <>
struct fused_form_of<VectorNorm<2>> : std::integral_constant<FusedForm, FusedForm::Global2> {};

template <class N>
struct is_spectral_policy : std::false_type {};
template <class Polar>
struct is_spectral_policy<SpectralNorm<Polar>> : std::true_type {};

/// How a spectral policy computes its polar factor, as data: a backend that has its own
/// Newton-Schulz (the CUDA executor) runs the same schedule from this, without the policy type.
struct PolarInfo {
  int steps = 0;                                  ///< Newton-Schulz steps
  double safety = 1.0;                            ///< X0 = G / (safety ||G||_F)
  PolarCoefficients (*at)(int step, int steps) = nullptr;  ///< null: not Newton-Schulz (e.g. SVD)
};
namespace detail {
template <class N>
struct polar_info_of {
  static constexpr PolarInfo value{};
};
template <class Schedule, int Steps, class Products>
struct polar_info_of<SpectralNorm<NewtonSchulz<Schedule, Steps, Products>>> {
  static constexpr PolarInfo value{Steps, Schedule::normalization_safety, &Schedule::at};
};
}  // namespace detail

namespace detail {
template <class N>
struct mean_split {  // a plain policy: its own direction, no separate scale
  using base = N;
  static constexpr bool mean = false;
};
template <class B>
struct mean_split<MeanNormalized<B>> {
  using base = B;
  static constexpr bool mean = true;
};

/// Where a device backend keeps policy B's direction kernel (null: none registered). The
/// host table points at it, so a handle reaches a kernel that only CUDA code can name.
template <class B>
inline const cuda::Direction* device_direction_slot = nullptr;

template <class T>
inline constexpr char type_key = 0;  // one address per type: identifies `other` workspaces

template <class N, class S>
auto& pick_workspace(LayerWorkspace<S>& ws) {
  using W = workspace_t<N, S>;
  if constexpr (std::is_same_v<W, NewtonSchulzWorkspace<S>>) {
    return ws.ns;
  } else if constexpr (std::is_same_v<W, eigen_detail::VectorwiseWorkspace<S>>) {
    return ws.vec;
  } else {
    if (ws.other_type != &type_key<W>) {
      ws.other = std::make_shared<W>();
      ws.other_type = &type_key<W>;
    }
    return *static_cast<W*>(ws.other.get());
  }
}
}  // namespace detail

/// The function table behind a Geometry handle (one per policy type).
struct GeometryOps {
  /// The policy's name.
  std::string (*name)();
  double p;  ///< the policy's operator norm is p -> q: this is p
  double q;  ///< and this is q
  bool mean_normalized;     ///< MeanNormalized<B>: the scale below is B's s(m, n)
  bool spectral;            ///< the direction is a polar factor (Muon's shape factors apply)
  /// How the fused passes can apply the direction.
  FusedForm fused;
  PolarInfo polar;          ///< the polar method (spectral policies only)
  double (*scale)(Index m, Index n);  ///< the factor GeometryScale applies (1 if not mean)
  void (*dualize_f)(RowMatrix<float>& u, LayerWorkspace<float>& ws);    ///< u <- D(u), in place
  /// u <- D(u) in place, double.
  void (*dualize_d)(RowMatrix<double>& u, LayerWorkspace<double>& ws);
  double (*value_f)(const ConstRowView<float>& W);  ///< ||W|| in the (mean-normalized) norm
  /// ||W|| in the (mean-normalized) norm, double.
  double (*value_d)(const ConstRowView<double>& W);
  /// The direction's registered device kernel (cuda::register_geometry); the built-in device
  /// forms follow from `fused` and `polar` instead (cuda/geometry.cuh).
  const cuda::Direction* const* device;
};

namespace detail {
template <class N>
struct GeometryTable {
  static_assert(is_norm_policy_v<N>,
                "steepest::geometry<N>(): N must be a norm policy (RowNorm<P>, ColNorm<Q>, "
                "VectorNorm<Q>, SpectralNorm<...>, MeanNormalized<...>, or a type with the "
                "interface in norms/traits.hpp)");
  using split = mean_split<N>;
  using B = typename split::base;
  template <class S>
  static void dualize(RowMatrix<S>& u, LayerWorkspace<S>& ws) {
    B::dualize(u, u, pick_workspace<B>(ws));
  }
  template <class S>
  static double value(const ConstRowView<S>& W) { return N::value(W); }
  static double scale(Index m, Index n) {
    if constexpr (split::mean) return B::mean_normalized_scale(m, n);
    else return 1.0;
  }
  static constexpr GeometryOps ops{&N::name,        N::p,          N::q,
                                   split::mean,     is_spectral_policy<B>::value,
                                   fused_form_of<B>::value,
                                   polar_info_of<B>::value,
                                   &scale,          &dualize<float>, &dualize<double>,
                                   &value<float>,   &value<double>,
                                   &device_direction_slot<B>};
};
}  // namespace detail

/// A layer's geometry: a handle to the policy it was made from, or the identity (D(G) = G).
class Geometry {
 public:
  /// The identity geometry: no direction map, scale 1, Frobenius norm for reporting.
  constexpr Geometry() = default;
  /// The handle of a table (geometry<N>() makes them).
  constexpr explicit Geometry(const GeometryOps* ops) : ops_(ops) {}

  /// The identity geometry: D(G) = G.
  bool is_identity() const { return ops_ == nullptr; }
  /// The policy's name (its norm, polar method and schedule).
  std::string name() const { return ops_ ? ops_->name() : "identity"; }
  /// The operator norm is p -> q: this is p.
  double p() const { return ops_ ? ops_->p : 2.0; }
  /// The operator norm is p -> q: this is q.
  double q() const { return ops_ ? ops_->q : 2.0; }
  /// Mean-normalized (p̄ -> q̄): the scale s(m, n) applies.
  bool mean_normalized() const { return ops_ && ops_->mean_normalized; }
  /// The direction is a polar factor (Muon's shape factors apply).
  bool spectral() const { return ops_ && ops_->spectral; }
  /// How the fused passes can apply the direction.
  FusedForm fused() const { return ops_ ? ops_->fused : FusedForm::Identity; }
  /// The polar method of a spectral geometry (steps 0 and no coefficients otherwise).
  PolarInfo polar() const { return ops_ ? ops_->polar : PolarInfo{}; }
  /// The direction's device kernel registered for this policy, if any (cuda/geometry.cuh).
  const cuda::Direction* device_direction() const { return ops_ ? *ops_->device : nullptr; }
  /// The width-aware factor s(m, n) of a mean-normalized geometry; 1 otherwise.
  double scale(Index m, Index n) const { return ops_ ? ops_->scale(m, n) : 1.0; }

  /// u <- D(u) in place (without the width-aware scale: see the file comment).
  template <class S>
  void dualize(RowMatrix<S>& u, LayerWorkspace<S>& ws) const {
    static_assert(std::is_same_v<S, float> || std::is_same_v<S, double>,
                  "steepest::Geometry: run-time geometries serve float and double parameters");
    if (!ops_) return;
    if constexpr (std::is_same_v<S, float>) ops_->dualize_f(u, ws);
    else ops_->dualize_d(u, ws);
  }
  /// ||W|| in this geometry (mean-normalized when it is); the Frobenius norm for the identity.
  template <class M>
  double value(const M& W) const {
    using S = typename M::Scalar;
    if (!ops_) return double(W.norm());
    if constexpr (std::is_same_v<S, float>) return ops_->value_f(W);
    else return ops_->value_d(W);
  }

  /// The same policy.
  friend bool operator==(Geometry a, Geometry b) { return a.ops_ == b.ops_; }
  /// Different policies.
  friend bool operator!=(Geometry a, Geometry b) { return a.ops_ != b.ops_; }

 private:
  const GeometryOps* ops_ = nullptr;
};

/// The run-time handle of norm policy N: `st::geometry<st::MeanNormalized<st::RowNorm<2>>>()`.
template <class N>
constexpr Geometry geometry() {
  return Geometry(&detail::GeometryTable<N>::ops);
}

/// The identity geometry (plain SGD / AdamW updates).
constexpr Geometry identity_geometry() { return Geometry(); }

}  // namespace steepest
