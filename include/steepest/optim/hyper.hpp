// steepest/optim/hyper.hpp -- hyper-parameters shared by every transform of a chain.
//
// One aggregate, read by whichever transform needs a field (designated initializers in C++20,
// or set fields by name in C++17). Defaults are AdamW's; named optimizers set their own.
#pragma once

#include <algorithm>
#include <cmath>
#include <limits>
#include <optional>

namespace steepest {

/// What a step does when a gradient holds NaN, Inf, or an entry of magnitude >= 2^E, E =
/// gradient_limit_exponent<S> (2^40 ~ 1.1e12 for float, 2^488 for double).
///
/// Why a finite bound: finite input must not give non-finite output. With |g| < 2^(E_max/2 - 24)
/// a square is < 2^(E_max - 48), so a sum of up to 2^47 squares (every 2-norm of a row, a column
/// or a whole tensor, and Adam's second moment) is still finite in the scalar type. Without it,
/// a FLT_MAX gradient made AdamW's second moment Inf (the entry then never moves again),
/// SGD-Nesterov's parameter -Inf, and a row or column norm Inf (its update silently zero).
enum class NonFinitePolicy {
  Error,  ///< throw steepest::non_finite_error; parameters, state and step counter unchanged
  Skip,   ///< skip the whole step (all layers); parameters, state and step counter unchanged
  /// No check: saves the read pass over the gradients (4 bytes/param). A NaN, an Inf or an
  /// entry past the limit then reaches the parameters and state, and stays there: a NaN in a
  /// moment (Lion's, Adam's) is carried by every later step. For callers that check gradients
  /// themselves.
  Unchecked,
};

/// Gradient entries must have |g| < 2^gradient_limit_exponent<S> to be stepped under
/// NonFinitePolicy::Error or Skip (see NonFinitePolicy).
template <class S>
inline constexpr int gradient_limit_exponent = std::numeric_limits<S>::max_exponent / 2 - 24;

/// How the update of a matrix layer is multiplied by a shape factor after the geometry.
enum class ShapeFactor {
  None,         ///< 1
  MuonMax1,     ///< sqrt(max(1, m/n))  (original Muon)
  MatchAdamW,   ///< 0.2 sqrt(max(m, n)) (matches AdamW's update RMS)
  SpectralMuP,  ///< sqrt(m/n)  (spectral muP; Scion)
};

/// The hyper-parameters of an optimizer (AdamW's defaults); each transform reads what it needs.
struct Hyper {
  /// Learning rate (times a layer's lr_scale and the schedule factor).
  double lr = 1e-3;
  double beta1 = 0.9;     ///< first-moment / momentum coefficient
  double beta2 = 0.999;   ///< second-moment coefficient (Adam), or Lion's moment coefficient
  double eps = 1e-8;      ///< Adam's denominator epsilon
  double weight_decay = 0.0;  ///< decoupled: W <- (1 - lr*lambda) W before the update
  /// Muon's shape factor (ShapeScale).
  ShapeFactor shape_factor = ShapeFactor::None;
  /// What a step does with a non-finite or out-of-range gradient.
  NonFinitePolicy on_non_finite = NonFinitePolicy::Error;
};

/// The coefficients one transform of a chain owns: each one set here replaces the optimizer's
/// Hyper field of that name for this transform alone, each one unset is read from the Hyper.
/// A chain can then hold two transforms of a kind with different coefficients (a fast and a
/// slow EMA): `opt.coefficients.at(1).beta1 = 0.99` gives the chain's second transform its own
/// beta1. Saved in a checkpoint's routes (recorded, not compared, as the Hyper is).
struct Coefficients {
  std::optional<double> beta1;  ///< Each set field replaces the optimizer's for this transform.
  std::optional<double> beta2;  ///< Each set field replaces the optimizer's for this transform.
  std::optional<double> eps;  ///< Each set field replaces the optimizer's for this transform.
  std::optional<double> weight_decay;  ///< Each set field replaces the optimizer's for this transform.
  /// No field set: the transform reads the optimizer's Hyper.
  bool empty() const { return !beta1 && !beta2 && !eps && !weight_decay; }
  /// hp with these coefficients in place of its own.
  Hyper over(Hyper hp) const {
    if (beta1) hp.beta1 = *beta1;
    if (beta2) hp.beta2 = *beta2;
    if (eps) hp.eps = *eps;
    if (weight_decay) hp.weight_decay = *weight_decay;
    return hp;
  }
};

inline double shape_factor_value(ShapeFactor f, double m, double n) {
  switch (f) {
    case ShapeFactor::None: return 1.0;
    case ShapeFactor::MuonMax1: return std::sqrt(std::max(1.0, m / n));
    case ShapeFactor::MatchAdamW: return 0.2 * std::sqrt(std::max(m, n));
    case ShapeFactor::SpectralMuP: return std::sqrt(m / n);
  }
  return 1.0;
}

}  // namespace steepest
