// steepest/optim/hyper.hpp -- hyper-parameters shared by every transform of a chain.
//
// One aggregate, read by whichever transform needs a field (designated initializers in C++20,
// or set fields by name in C++17). Defaults are AdamW's; named optimizers set their own.
#pragma once

#include <algorithm>
#include <cmath>

namespace steepest {

/// What a step does when a gradient holds NaN or Inf.
enum class NonFinitePolicy {
  Error,  ///< throw steepest::non_finite_error; parameters, state and step counter unchanged
  Skip,   ///< skip the whole step (all layers); parameters, state and step counter unchanged
  /// No check: saves the read pass over the gradients (4 bytes/param); a NaN or Inf then
  /// propagates into the parameters and state. For callers that check gradients themselves.
  Unchecked,
};

/// How the update of a matrix layer is multiplied by a shape factor after the geometry.
enum class ShapeFactor {
  None,         ///< 1
  MuonMax1,     ///< sqrt(max(1, m/n))  (original Muon)
  MatchAdamW,   ///< 0.2 sqrt(max(m, n)) (matches AdamW's update RMS)
  SpectralMuP,  ///< sqrt(m/n)  (spectral muP; Scion)
};

struct Hyper {
  double lr = 1e-3;
  double beta1 = 0.9;     ///< first-moment / momentum coefficient
  double beta2 = 0.999;   ///< second-moment coefficient (Adam), or Lion's moment coefficient
  double eps = 1e-8;      ///< Adam's denominator epsilon
  double weight_decay = 0.0;  ///< decoupled: W <- (1 - lr*lambda) W before the update
  ShapeFactor shape_factor = ShapeFactor::None;
  NonFinitePolicy on_non_finite = NonFinitePolicy::Error;
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
