// steepest/polar/coefficients.hpp -- coefficient schedules for Newton-Schulz polar iterations.
//
// One step maps X -> a X + b (X X^T) X + c (X X^T)^2 X, i.e. each singular value
// s -> a s + b s^3 + c s^5. A schedule gives (a, b, c) for step k and the factor by which the
// input is normalized (X0 = G / (safety * ||G||_F)), so every singular value starts in (0, 1].
//
// A schedule is any type with
//   static constexpr int default_steps;
//   static PolarCoefficients at(int step, int steps);   // coefficients of step `step` of `steps`
//   static constexpr double normalization_safety;        // >= 1
//   static const char* name();
#pragma once

#include <algorithm>
#include <array>

namespace steepest {

/// One step's coefficients: X <- a X + b (X X^T) X + c (X X^T)^2 X.
struct PolarCoefficients {
  double a;  ///< The quintic's coefficients.
  double b;  ///< The quintic's coefficients.
  double c;  ///< The quintic's coefficients.
};

/// The quintic iteration used by Muon: (a, b, c) = (3.4445, -4.7750, 2.0315) at every step.
/// It trades exactness for speed: after 5 steps singular values land in a band around 1
/// (measured band in tests/test_newton_schulz.cpp and docs/GEOMETRY.md), not exactly on 1.
struct QuinticSchedule {
  /// Steps when none are given.
  static constexpr int default_steps = 5;
  /// X0 = G / (safety ||G||_F).
  static constexpr double normalization_safety = 1.0;
  /// The same coefficients at every step.
  static PolarCoefficients at(int, int) { return {3.4445, -4.7750, 2.0315}; }
  /// "quintic".
  static const char* name() { return "quintic"; }
};

/// A per-step schedule in the style of Polar Express (Amsel et al., arXiv 2505.16932): each
/// step's polynomial is chosen for the interval the singular values occupy at that step, so it
/// converges closer to 1 in the same number of steps. The table is the published 8-step one;
/// steps beyond 8 repeat the last entry (1.875, -1.25, 0.375), the classic cubic-quintic fixed
/// point. A 1.01 safety factor guards against round-off pushing values past the interval: every
/// entry but the final one is evaluated on s/1.01, i.e. (a/1.01, b/1.01^3, c/1.01^5), and the
/// input is normalized by 1.01 ||G||_F.
struct PolarExpressSchedule {
  /// Steps when none are given.
  static constexpr int default_steps = 5;
  /// X0 = G / (safety ||G||_F): a margin for the schedule's first step.
  static constexpr double normalization_safety = 1.01;
  /// Step `step`'s coefficients.
  static PolarCoefficients at(int step, int) {
    static constexpr std::array<PolarCoefficients, 8> table{{
        {8.28721201814563, -23.595886519098837, 17.300387312530933},
        {4.107059111542203, -2.9478499167379106, 0.5448431082926601},
        {3.9486908534822946, -2.908902115962949, 0.5518191394370137},
        {3.3184196573706015, -2.488488024314874, 0.51004894012372},
        {2.300652019954817, -1.6689039845747493, 0.4188073119525673},
        {1.891301407787398, -1.2679958271945868, 0.37680408948524835},
        {1.8750014808534479, -1.2500016453999487, 0.3750001645474248},
        {1.875, -1.25, 0.375},
    }};
    const int k = std::min(step, 7);
    PolarCoefficients c = table[static_cast<std::size_t>(k)];
    if (k < 7) {
      const double s = 1.01;
      c.a /= s;
      c.b /= s * s * s;
      c.c /= s * s * s * s * s;
    }
    return c;
  }
  /// "polar-express".
  static const char* name() { return "polar-express"; }
};

}  // namespace steepest
