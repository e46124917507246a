// steepest/optim/optimizers.hpp -- the named optimizers: each is a chain and a role table.
//
// Every function takes a Hyper (fields not set keep Hyper's AdamW defaults: lr 1e-3,
// betas 0.9/0.999, eps 1e-8, no weight decay) and returns an Optimizer<Chain>, or for muon a
// routed optimizer (optim/routing.hpp) of two. Per-layer
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
// | muon            | routed: hidden -> Muon chain; the rest -> AdamW   | spectral (hidden) | AdamW   |
// | muon_scion      | Nesterov-EMA, Newton-Schulz, shape factor, step   | spectral (hidden) | RMS     |
// | normuon         | routed: hidden -> EMA, polar, per-row 2nd moment, | spectral (hidden) | AdamW   |
// |                 | RMS 0.2, step; the rest -> AdamW                  |                   |         |
// | adamuon         | routed: hidden -> EMA, sign, polar, elementwise   | spectral (hidden) | AdamW   |
// |                 | 2nd moment, RMS 0.2, step; the rest -> AdamW      |                   |         |
// | polargrad       | routed: hidden -> EMA, nuclear-norm x polar, step | spectral (hidden) | AdamW   |
// | muon_eq         | routed: hidden -> Muon with rows normalized first | spectral (hidden) | AdamW   |
// | muon_plus       | routed: hidden -> Muon, rows then columns normed  | spectral (hidden) | AdamW   |
// | cautious_adamw  | Adam moments, cautious mask, step                 | identity          | identity|
// | scion           | EMA, LMO, s(m,n), constrained step with radius    | per role          | RMS     |
#pragma once

#include <random>

#include "reductions.hpp"
#include "routing.hpp"

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
/// AdamW's chain with its moments stored in `Precision` (optim/precision.hpp).
template <class Precision = FullPrecision>
using AdamWChainIn = Chain<Adam<Precision>, DecoupledStep>;
using AdamWChain = AdamWChainIn<>;
/// Rescaled AdamW's chain with its moments stored in `Precision`.
template <class Precision = FullPrecision>
using RescaledAdamWChainIn = Chain<Adam<Precision>, GeometryScale, DecoupledStep>;
using RescaledAdamWChain = RescaledAdamWChainIn<>;
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
/// AdamW (Loshchilov & Hutter): Adam with bias correction and decoupled weight decay. Its moments
/// are kept in `Precision`: adamw<Bf16State>(hp) stores them as bf16 (20 bytes moved per fp32
/// parameter instead of 28, 18 given bf16 gradients; optim/precision.hpp).
template <class Precision = FullPrecision>
Optimizer<AdamWChainIn<Precision>> adamw(Hyper hp = {}) {
  return {hp, detail::all_roles(detail::kIdentity, detail::kIdentity)};
}
/// AdamW with the 1̄->inf width-aware scale: hidden and output matrices' updates are multiplied
/// by s(m, n) = 1/n (fan-in), Adam's muP rule; embeddings and vectors are left at scale 1. Its
/// moments are kept in `Precision`, as adamw's are.
template <class Precision = FullPrecision>
Optimizer<RescaledAdamWChainIn<Precision>> adamw_rescaled(Hyper hp = {}) {
  auto r = detail::all_roles(geometry<MeanNormalized<SignNorm>>(), detail::kIdentity);
  r[std::size_t(Role::Embedding)].geometry = detail::kIdentity;
  return {hp, r};
}
/// Sign descent: W <- (1 - lr wd) W - lr sign(G) (the 1->inf steepest direction, no scale).
/// A template (called as sign_descent(hp)) so that its geometries' tables are compiled only in
/// files that use it: as an inline function it cost every includer of the library 2.5 s.
template <class = void>
Optimizer<SignDescentChain> sign_descent(Hyper hp = {}) {
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

/// MOGA-row's momentum-only form: rows of the raw gradient normalized, EMA momentum (hp.beta1)
/// of the normalized rows, the width scale n^{-1/2}, decoupled weight decay. No second moment:
/// a step moves 20 bytes per parameter (gradient, momentum, weight) instead of AdamW's 28, in one
/// fused pass. Vectors get the RMS-normalized direction g / rms(g) (their norm is the only scale a
/// momentum-only rule has), so one learning rate serves both.
/// Its momentum is kept in `Precision`: moga_row_momentum<Bf16State>(hp) moves 16 bytes per fp32
/// parameter (14 given bf16 gradients).
template <class Precision = FullPrecision>
using MogaMomentumChainIn = Chain<LayerDualize, Momentum<MomentumKind::EMA, Precision>, GeometryScale, DecoupledStep>;
using MogaMomentumChain = MogaMomentumChainIn<>;
template <class Precision = FullPrecision>
Optimizer<MogaMomentumChainIn<Precision>> moga_row_momentum(Hyper hp = {}) {
  return {hp, detail::all_roles(geometry<MeanNormalized<RowNormalize>>(), geometry<VectorRMS>())};
}

/// The Muon chain (Nesterov-EMA momentum, polar factor, shape factor, decoupled step) with the
/// polar method `Polar` on every role: what muon() routes hidden matrices to.
template <class Polar = Spectral>
Optimizer<MuonChain> muon_chain(Hyper hp = {}, ShapeFactor shape = ShapeFactor::MuonMax1) {
  static_assert(is_spectral_policy<Polar>::value,
                "steepest::muon: Polar must be a spectral policy (Spectral, SpectralPolarExpress, "
                "SpectralExact, or SpectralNorm<NewtonSchulz<Schedule, Steps>>)");
  hp.shape_factor = shape;
  const Geometry polar = geometry<Polar>();
  return {hp, {RoleDefaults{polar}, RoleDefaults{polar}, RoleDefaults{polar}, RoleDefaults{polar}}};
}

/// What muon() returns: route 0 the Muon chain (hidden), route 1 AdamW (the rest).
using MuonOptimizer = Routed<Optimizer<MuonChain>, Optimizer<AdamWChain>>;

/// Muon as it is used in practice (torch.optim.Muon with an AdamW group, the Muon papers):
/// hidden matrices (Role::Hidden: also conv kernels and batched heads) get Muon -- Nesterov-EMA
/// momentum (hp.beta1), the polar factor by `Polar` (quintic Newton-Schulz x5 by default;
/// SpectralPolarExpress, SpectralExact), the shape factor `shape` (original Muon's
/// sqrt(max(1, m/n)) by default), decoupled weight decay hp.weight_decay. Embeddings, output
/// heads and vectors get AdamW with `adamw_hp` (AdamW's defaults unless given). One step
/// counter and one non-finite policy (hp.on_non_finite) for the whole model.
/// Hyper-parameters afterwards: opt.optimizer<0>().hp (Muon), opt.optimizer<1>().hp (AdamW).
template <class Polar = Spectral>
MuonOptimizer muon(Hyper hp = {}, Hyper adamw_hp = {}, ShapeFactor shape = ShapeFactor::MuonMax1) {
  adamw_hp.on_non_finite = hp.on_non_finite;
  return routed(route(roles({Role::Hidden}), muon_chain<Polar>(hp, shape)),
                route(everything(), adamw(adamw_hp)));
}

namespace detail {
/// Hidden matrices (Role::Hidden) to `ChainT` with the spectral geometry `Polar`, everything
/// else to AdamW with `adamw_hp`; one step counter and non-finite policy (hp's).
template <class ChainT, class Polar>
Routed<Optimizer<ChainT>, Optimizer<AdamWChain>> spectral_hidden(Hyper hp, Hyper adamw_hp) {
  static_assert(is_spectral_policy<Polar>::value,
                "steepest: Polar must be a spectral policy (Spectral, SpectralPolarExpress, "
                "SpectralExact, or SpectralNorm<NewtonSchulz<Schedule, Steps>>)");
  adamw_hp.on_non_finite = hp.on_non_finite;
  const RoleDefaults polar{geometry<Polar>()};
  return routed(route(roles({Role::Hidden}), Optimizer<ChainT>{hp, {polar, polar, polar, polar}}),
                route(everything(), adamw(adamw_hp)));
}
}  // namespace detail

// The Muon family below: each routes hidden matrices to its chain and the rest to AdamW with
// `adamw_hp`, as muon() does; `Polar` computes the polar factor (quintic Newton-Schulz x5 by
// default). Each comment gives the paper's update and the conventions chosen where it leaves one.

/// NorMuon (Li et al. 2025, arXiv 2510.05491):
///   M <- b1 M + (1 - b1) G;  O = polar(M);  v_r <- b2 v_r + (1 - b2) mean_c(O_rc^2);
///   O_rc <- O_rc / (sqrt(v_r) + eps);  W <- (1 - lr wd) W - lr 0.2 sqrt(m n) O / ||O||_F
/// with b1 = hp.beta1, b2 = hp.beta2, eps = hp.eps; a row is a row of W as stored (out x in).
/// The paper trains with b1 = b2 = 0.95.
using NorMuonChain = Chain<Momentum<MomentumKind::EMA>, LayerDualize, RowSecondMoment, MatchAdamWRms, DecoupledStep>;
template <class Polar = Spectral>
auto normuon(Hyper hp = {}, Hyper adamw_hp = {}) { return detail::spectral_hidden<NorMuonChain, Polar>(hp, adamw_hp); }
/// What normuon() returns: route 0 the NorMuon chain (hidden), route 1 AdamW (the rest). Named
/// as a type, not as decltype(normuon()): that would instantiate the spectral geometry (and its
/// exact SVD) in every file that includes the library.
using NorMuonOptimizer = Routed<Optimizer<NorMuonChain>, Optimizer<AdamWChain>>;

/// AdaMuon (Si et al. 2025, arXiv 2507.11005), with its sign step before the polar factor:
///   M <- b1 M + (1 - b1) G;  O = polar(sign(M));  V <- b2 V + (1 - b2) O .* O;
///   O <- O ./ (sqrt(V) + eps);  W <- (1 - lr wd) W - lr 0.2 sqrt(m n) O / ||O||_F
/// sign(M) is the same for an EMA and a heavy-ball M (they differ by the factor 1 - b1), so the
/// momentum form is no choice; V has no bias correction (the RMS match cancels it).
using AdaMuonChain =
    Chain<Momentum<MomentumKind::EMA>, Sign, LayerDualize, ElementSecondMoment, MatchAdamWRms, DecoupledStep>;
template <class Polar = Spectral>
auto adamuon(Hyper hp = {}, Hyper adamw_hp = {}) { return detail::spectral_hidden<AdaMuonChain, Polar>(hp, adamw_hp); }

/// PolarGrad (Lau et al. 2025, arXiv 2505.21799), momentum first:
///   M <- b1 M + (1 - b1) G;  U H = polar decomposition of M;  W <- (1 - lr wd) W - lr tr(H) U
/// where tr(H) = <M, U> is M's nuclear norm: the update is large where M is, so its learning
/// rate is far below Muon's.
using PolarGradChain = Chain<Momentum<MomentumKind::EMA>, DualNormDualize, DecoupledStep>;
template <class Polar = Spectral>
auto polargrad(Hyper hp = {}, Hyper adamw_hp = {}) { return detail::spectral_hidden<PolarGradChain, Polar>(hp, adamw_hp); }

/// Row normalization before the polar factor (MuonEq's row variant, arXiv 2603.28254; the RMNP
/// family, arXiv 2603.20527): Muon with each row of the momentum update scaled to unit 2-norm
/// before Newton-Schulz,   O = polar(rownorm(M~));  W <- (1 - lr wd) W - lr s(m, n) O
/// with M~ Muon's Nesterov-EMA update and s the shape factor `shape` (Muon's by default). The
/// stored momentum is not normalized.
using MuonEqChain = Chain<Momentum<MomentumKind::NesterovEMA>, Dualize<RowNormalize>, LayerDualize, GeometryScale,
                          ShapeScale, DecoupledStep>;
template <class Polar = Spectral>
auto muon_eq(Hyper hp = {}, Hyper adamw_hp = {}, ShapeFactor shape = ShapeFactor::MuonMax1) {
  hp.shape_factor = shape;
  return detail::spectral_hidden<MuonEqChain, Polar>(hp, adamw_hp);
}

/// Muon+ (Zhang et al. 2026, arXiv 2602.21545): Muon with a normalization after the polar
/// factor, rows then columns (the authors' row_col mode) to unit 2-norm,
///   O = colnorm(rownorm(polar(M~)));  W <- (1 - lr wd) W - lr s(m, n) O
/// s = 0.2 sqrt(max(m, n)) by default (their RMS scaling).
using MuonPlusChain = Chain<Momentum<MomentumKind::NesterovEMA>, LayerDualize, Dualize<RowNormalize>,
                            Dualize<ColNormalize>, GeometryScale, ShapeScale, DecoupledStep>;
template <class Polar = Spectral>
auto muon_plus(Hyper hp = {}, Hyper adamw_hp = {}, ShapeFactor shape = ShapeFactor::MatchAdamW) {
  hp.shape_factor = shape;
  return detail::spectral_hidden<MuonPlusChain, Polar>(hp, adamw_hp);
}

/// Cautious AdamW (C-AdamW, Liang et al. 2024, arXiv 2411.16085): AdamW's update with the
/// entries that disagree in sign with the gradient dropped (CautiousMask), every layer.
using CautiousAdamWChain = Chain<AdamMoments, CautiousMask, DecoupledStep>;
inline Optimizer<CautiousAdamWChain> cautious_adamw(Hyper hp = {}) {
  return {hp, detail::all_roles(detail::kIdentity, detail::kIdentity)};
}

/// Muon's chain on every layer, with Scion's mean-normalized geometries for the roles that are
/// not hidden (embeddings: columns sqrt(m)/n, output: sign 1/n, vectors: RMS), so one chain and
/// one set of hyper-parameters step the whole model; the hidden geometry is `Polar`'s.
template <class Polar = Spectral>
Optimizer<MuonChain> muon_scion(Hyper hp = {}, ShapeFactor shape = ShapeFactor::MuonMax1) {
  auto opt = muon_chain<Polar>(hp, shape);
  opt.roles[std::size_t(Role::Embedding)].geometry = geometry<MeanNormalized<ColNormalize>>();
  opt.roles[std::size_t(Role::Output)].geometry = geometry<MeanNormalized<SignNorm>>();
  opt.roles[std::size_t(Role::Vector)].geometry = geometry<VectorRMS>();
  return opt;
}

/// Per-role radii of Scion (defaults: its example's 50 for hidden/embedding/vectors, 3000 for
/// the sign head).
struct ScionRadii {
  double hidden = 50.0;     ///< Hidden matrices' radius.
  double embedding = 50.0;  ///< Embeddings' radius.
  double output = 3000.0;   ///< The output head's radius.
  double vector = 50.0;     ///< Vectors' radius (biases, gains).
};

namespace detail {
template <class Polar>
std::array<RoleDefaults, 4> scion_roles(ScionRadii r) {
  static_assert(is_spectral_policy<Polar>::value,
                "steepest::scion: Polar must be a spectral policy (Spectral, SpectralPolarExpress, "
                "SpectralExact, or SpectralNorm<NewtonSchulz<Schedule, Steps>>)");
  return {RoleDefaults{geometry<MeanNormalized<Polar>>(), r.hidden},
          RoleDefaults{geometry<MeanNormalized<ColNormalize>>(), r.embedding},
          RoleDefaults{geometry<MeanNormalized<SignNorm>>(), r.output},
          RoleDefaults{geometry<VectorRMS>(), r.vector}};
}
}  // namespace detail

/// Scion, constrained mode: M = EMA of gradients (hp.beta1), D = the role's mean-normalized LMO
/// (spectral sqrt(m/n) U V^T, columns sqrt(m)/n, sign/n, RMS), W <- (1 - lr) W - lr rho D(M).
/// Keeps ||W|| <= rho in each layer's geometry. Weight decay is not used (the constraint
/// replaces it). Note: the embedding's column LMO here carries the mean-normalized 1/n (n = vocab,
/// fixed across widths), so its radius is rho/n in Scion's own convention. `Polar` computes the
/// hidden matrices' polar factor, as in muon<Polar> (quintic Newton-Schulz x5 by default;
/// SpectralExact keeps ||D|| = 1 exactly, so the constraint holds to round-off).
template <class Polar = Spectral>
Optimizer<ScionChain> scion(Hyper hp = {}, ScionRadii radii = {}) {
  return {hp, detail::scion_roles<Polar>(radii)};
}
/// Scion, unconstrained mode: W <- (1 - lr wd) W - lr rho D(M).
template <class Polar = Spectral>
Optimizer<ScionUnconstrainedChain> scion_unconstrained(Hyper hp = {}, ScionRadii radii = {}) {
  return {hp, detail::scion_roles<Polar>(radii)};
}

/// Norm-matched initialization: each layer gets Gaussian entries rescaled so that its norm in the
/// optimizer's geometry for it equals its radius (Identity geometries: entries N(0, 1/fan_in)).
template <class Opt, class S>
void norm_matched_init(ParamSet<S>& params, const Opt& opt, unsigned seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<double> nd;
  for (auto& l : params) {
    auto W = l.matrix();
    for (Index r = 0; r < W.rows(); ++r)  // a layer may be a strided block of its tensor
      for (Index c = 0; c < W.cols(); ++c) W(r, c) = static_cast<S>(nd(rng));
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
