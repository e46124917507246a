// steepest/optim/optimizers.hpp -- the named optimizers: each is a chain and a role table.
//
// Every function takes a Hyper (fields not set keep Hyper's AdamW defaults: lr 1e-3,
// betas 0.9/0.999, eps 1e-8, no weight decay) and returns an Optimizer<Chain>. Per-layer
// overrides (geometry, radius, lr_scale) live on the ParamSet's layers.
//
// | name            | chain                                             | matrices          | vectors |
// |-----------------|---------------------------------------------------|-------------------|---------|
// | sgd             | heavy-ball momentum, step                         | identity          | identity|
// | sgd_nesterov    | Nesterov momentum, step                           | identity          | identity|
// | adamw           | Adam moments, step                                | identity          | identity|
// | adamw_rescaled  | Adam moments, 1̄->inf scale 1/n, step             | hidden+head 1/n   | identity|
// | sign_descent    | sign, step                                        | sign              | sign    |
// | lion            | Lion moment + sign, step                          | (sign)            | (sign)  |
// | moga_row        | row-normalize, Adam, s = n^{-1/2}, step           | 2̄->inf           | identity|
// | moga_col        | column-normalize, Adam, s = sqrt(m)/n, step       | 1̄->2̄            | identity|
// | muon            | Nesterov-EMA, Newton-Schulz, shape factor, step   | spectral (hidden) | RMS     |
// | scion           | EMA, LMO, s(m,n), constrained step with radius    | per role          | RMS     |
#pragma once

#include <random>

#include "optimizer.hpp"

namespace steepest {

namespace detail {
inline std::array<RoleDefaults, 4> all_roles(Geometry matrices, Geometry vectors) {
  return {RoleDefaults{matrices}, RoleDefaults{matrices}, RoleDefaults{matrices},
          RoleDefaults{vectors}};
}
inline constexpr Geometry kIdentity{};
}  // namespace detail

using SGDChain = Chain<Momentum<MomentumKind::HeavyBall>, DecoupledStep>;
using SGDNesterovChain = Chain<Momentum<MomentumKind::Nesterov>, DecoupledStep>;
using AdamWChain = Chain<AdamMoments, DecoupledStep>;
using RescaledAdamWChain = Chain<AdamMoments, GeometryScale, DecoupledStep>;
using SignDescentChain = Chain<LayerDualize, DecoupledStep>;
using LionChain = Chain<LionMoment, DecoupledStep>;
using MuonChain = Chain<Momentum<MomentumKind::NesterovEMA>, LayerDualize, GeometryScale, ShapeScale,
                        DecoupledStep>;
using ScionChain = Chain<Momentum<MomentumKind::EMA>, LayerDualize, GeometryScale, ConstrainedStep>;
using ScionUnconstrainedChain =
    Chain<Momentum<MomentumKind::EMA>, LayerDualize, GeometryScale, DecoupledStep>;

/// SGD with heavy-ball momentum hp.beta1 (set beta1 = 0 for plain SGD).
inline Optimizer<SGDChain> sgd(Hyper hp = {}) {
  return {hp, detail::all_roles(detail::kIdentity, detail::kIdentity)};
}
/// SGD with Nesterov momentum hp.beta1.
inline Optimizer<SGDNesterovChain> sgd_nesterov(Hyper hp = {}) {
  return {hp, detail::all_roles(detail::kIdentity, detail::kIdentity)};
}
/// AdamW (Loshchilov & Hutter): Adam with bias correction and decoupled weight decay.
inline Optimizer<AdamWChain> adamw(Hyper hp = {}) {
  return {hp, detail::all_roles(detail::kIdentity, detail::kIdentity)};
}
/// AdamW with the 1̄->inf width-aware scale: hidden and output matrices' updates are multiplied
/// by s(m, n) = 1/n (fan-in), Adam's muP rule; embeddings and vectors are left at scale 1.
inline Optimizer<RescaledAdamWChain> adamw_rescaled(Hyper hp = {}) {
  auto r = detail::all_roles(geometry<MeanNormalized<SignNorm>>(), detail::kIdentity);
  r[std::size_t(Role::Embedding)].geometry = detail::kIdentity;
  return {hp, r};
}
/// Sign descent: W <- (1 - lr wd) W - lr sign(G) (the 1->inf steepest direction, no scale).
inline Optimizer<SignDescentChain> sign_descent(Hyper hp = {}) {
  return {hp, detail::all_roles(geometry<SignNorm>(), geometry<VectorSign>())};
}
/// Lion (Chen et al., 2023): u = sign(b1 m + (1-b1) g), m = b2 m + (1-b2) g. Its usual defaults
/// are lr 1e-4, betas (0.9, 0.99): set them in hp.
inline Optimizer<LionChain> lion(Hyper hp = {}) {
  return {hp, detail::all_roles(detail::kIdentity, detail::kIdentity)};
}

/// Where MOGA's normalization sits relative to Adam's moments.
enum class MogaOrder {
  /// Default. Normalize the raw gradient, then Adam moments, then the width scale s(m, n): the
  /// order the MOGA paper describes (a normalization step in front of an unchanged AdamW), so
  /// Adam's moments see gradients of a width-independent scale.
  NormalizeThenAdam,
  /// Adam moments on the raw gradient, then normalize the Adam update, then s(m, n): the update
  /// has exactly unit p̄->q̄ norm.
  AdamThenNormalize,
};

template <MogaOrder O>
using MogaChain = std::conditional_t<
    O == MogaOrder::NormalizeThenAdam,
    Chain<LayerDualize, AdamMoments, GeometryScale, DecoupledStep>,
    Chain<AdamMoments, LayerDualize, GeometryScale, DecoupledStep>>;

/// MOGA-row: row normalization 2̄->inf (scale n^{-1/2}) with AdamW's hyper-parameters only.
template <MogaOrder O = MogaOrder::NormalizeThenAdam>
Optimizer<MogaChain<O>> moga_row(Hyper hp = {}) {
  return {hp, detail::all_roles(geometry<MeanNormalized<RowNormalize>>(), detail::kIdentity)};
}
/// MOGA-col: column normalization 1̄->2̄ (scale sqrt(m)/n) with AdamW's hyper-parameters only.
template <MogaOrder O = MogaOrder::NormalizeThenAdam>
Optimizer<MogaChain<O>> moga_col(Hyper hp = {}) {
  return {hp, detail::all_roles(geometry<MeanNormalized<ColNormalize>>(), detail::kIdentity)};
}

/// Muon: Nesterov-EMA momentum (hp.beta1), the polar factor of the momentum (quintic Newton-
/// Schulz by default; Geometry::SpectralPolarExpress or ::SpectralExact for the others), the
/// shape factor (original Muon's sqrt(max(1, m/n)) by default), decoupled weight decay.
/// Hidden matrices only are spectral; embeddings, heads and vectors get Scion's geometries
/// (mean column normalization, mean sign, RMS) so one optimizer steps the whole model.
inline Optimizer<MuonChain> muon(Hyper hp = {}, ShapeFactor shape = ShapeFactor::MuonMax1,
                                 Geometry polar = geometry<Spectral>()) {
  if (!polar.spectral() || polar.mean_normalized())
    throw std::invalid_argument("muon: polar must be a plain spectral geometry, e.g. "
                                "st::geometry<st::SpectralExact>()");
  hp.shape_factor = shape;
  std::array<RoleDefaults, 4> r{RoleDefaults{polar},
                                RoleDefaults{geometry<MeanNormalized<ColNormalize>>()},
                                RoleDefaults{geometry<MeanNormalized<SignNorm>>()},
                                RoleDefaults{geometry<VectorRMS>()}};
  return {hp, r};
}

/// Per-role radii of Scion (defaults: its example's 50 for hidden/embedding/vectors, 3000 for
/// the sign head).
struct ScionRadii {
  double hidden = 50.0, embedding = 50.0, output = 3000.0, vector = 50.0;
};

namespace detail {
inline std::array<RoleDefaults, 4> scion_roles(ScionRadii r) {
  return {RoleDefaults{geometry<MeanNormalized<Spectral>>(), r.hidden},
          RoleDefaults{geometry<MeanNormalized<ColNormalize>>(), r.embedding},
          RoleDefaults{geometry<MeanNormalized<SignNorm>>(), r.output},
          RoleDefaults{geometry<VectorRMS>(), r.vector}};
}
}  // namespace detail

/// Scion, constrained mode: M = EMA of gradients (hp.beta1), D = the role's mean-normalized LMO
/// (spectral sqrt(m/n) U V^T, columns sqrt(m)/n, sign/n, RMS), W <- (1 - lr) W - lr rho D(M).
/// Keeps ||W|| <= rho in each layer's geometry. Weight decay is not used (the constraint
/// replaces it). Note: the embedding's column LMO here carries the mean-normalized 1/n (n = vocab,
/// fixed across widths), so its radius is rho/n in Scion's own convention.
inline Optimizer<ScionChain> scion(Hyper hp = {}, ScionRadii radii = {}) {
  return {hp, detail::scion_roles(radii)};
}
/// Scion, unconstrained mode: W <- (1 - lr wd) W - lr rho D(M).
inline Optimizer<ScionUnconstrainedChain> scion_unconstrained(Hyper hp = {}, ScionRadii radii = {}) {
  return {hp, detail::scion_roles(radii)};
}

/// Norm-matched initialization: each layer gets Gaussian entries rescaled so that its norm in the
/// optimizer's geometry for it equals its radius (Identity geometries: entries N(0, 1/fan_in)).
template <class ChainT, class S>
void norm_matched_init(ParamSet<S>& params, const Optimizer<ChainT>& opt, unsigned seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<double> nd;
  for (auto& l : params) {
    auto W = l.matrix();
    for (Index i = 0; i < W.size(); ++i) W.data()[i] = static_cast<S>(nd(rng));
    const Geometry g = opt.geometry_of(l);
    if (g.is_identity()) {
      W *= static_cast<S>(1.0 / std::sqrt(double(std::max<Index>(1, l.cols))));
      continue;
    }
    const double v = g.value(W);
    if (v > 0) W *= static_cast<S>(opt.radius_of(l) / v);
  }
}

}  // namespace steepest
