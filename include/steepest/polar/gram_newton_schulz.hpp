// steepest/polar/gram_newton_schulz.hpp -- Newton-Schulz in its Gram form, with a restart.
//
//   #include <steepest/polar/gram_newton_schulz.hpp>     // Eigen only
//   using Polar = st::SpectralGram;                      // or NewtonSchulz<Schedule, Steps, GramProducts<R>>
//
// Every step of Newton-Schulz multiplies the wide iterate X (k x l, k <= l) by a polynomial in
// its own Gram matrix, and all of those polynomials are polynomials in R0 = X0 X0^T, so the
// iteration can run on k x k matrices and touch X only at the ends:
//   R = X0 X0^T;  Q = I
//   each step:  P = a I + b R + c R^2;  Q <- P Q;  R <- P R P
//   at the end: X = Q X0
// In exact arithmetic X is the plain iteration's. A step costs 8 k^3 flops (R^2, P Q and the
// two products of P R P) instead of 4 k^2 l + 2 k^3, plus 2 k^2 l at each end: for 5 steps at
// l = 4 k, 0.56 of the plain iteration's flops; for a square X, more than the plain iteration.
//
// In floating point, R drifts from Q X0 (Q X0)^T as the steps repeat R's rounding through P R P;
// a restart before step `Restart` forms X0 <- Q X0 and R <- X0 X0^T again from the iterate
// (2 k^2 l more). scripts/gram_newton_schulz_study.py measured, against the float64 polynomial
// at 512 x 2048 in fp32 products, on spectra a gradient has (Gaussian, power laws 1/i and
// 1/i^2, rank 16 over a floor, geometric to 1e-4): the plain iteration 1.4e-6 to 1.2e-5, the
// Gram form without restart 4.9e-5 to 2.5e-4, with a restart before step 3 of 5 3.5e-6 to
// 2.6e-5 (before step 2: up to 3.1e-5; before 2 and 4: no better than 3 alone). Hence
// Restart = 3. With it, 5 quintic steps at l = 4 k cost 0.67 of the plain flops.
// R is symmetrized after each update (its two triangles are rounded differently by P R P).
#pragma once

#include <Eigen/Core>

#include <string>
#include <utility>

#include "newton_schulz.hpp"

namespace steepest {

/// Scratch of GramProducts: the scaled input (k x l) and its restarted form, and four k x k
/// matrices (R, Q, P and a product).
template <class Scalar>
struct GramNewtonSchulzWorkspace {
  /// A dense matrix of the scalar.
  using Mat = Eigen::Matrix<Scalar, Eigen::Dynamic, Eigen::Dynamic>;
  Mat X;  ///< X0, and at a restart Q X0
  Mat Y;  ///< the other buffer of X
  Mat R;  ///< the Gram matrix of the current iterate
  Mat Q;  ///< the product of the step polynomials since the last restart
  Mat P;  ///< this step's polynomial in R
  Mat T;  ///< a k x k product
};

/// Newton-Schulz's products engine in the Gram form (see the file comment), restarted before
/// step `Restart` (0: never) when there are more steps than that. Same contract as
/// EigenProducts: out = NS_steps(G) for the schedule, to rounding.
template <int Restart = 3>
struct GramProducts {
  static_assert(Restart >= 0, "steepest::GramProducts: Restart is a step index, or 0 for none");
  /// Scratch reused across calls.
  template <class Scalar>
  using Workspace = GramNewtonSchulzWorkspace<Scalar>;
  /// Appears in the geometry's name.
  static std::string name() { return Restart ? "gram-restart" + std::to_string(Restart) : "gram"; }
  /// Flops of `steps` steps on a k x l iterate (k <= l), product by product as run() forms them.
  static double flops(Index k_, Index l_, int steps) {
    const double k = double(k_), l = double(l_), end = 2.0 * k * k * l, cube = 2.0 * k * k * k;
    if (steps <= 0) return 0.0;
    double f = 2.0 * end;  // R0 = X0 X0^T and X = Q X0
    bool have_q = false;
    for (int s = 0; s < steps; ++s) {
      if (s == Restart && have_q) f += 2.0 * end, have_q = false;
      f += cube;                   // R^2
      if (have_q) f += cube;       // P Q
      have_q = true;
      if (s + 1 < steps && s + 1 != Restart) f += 2.0 * cube;  // P R P
    }
    return f;
  }

  /// out = Newton-Schulz_steps(G) in the Gram form.
  template <class Schedule, class D, class O>
  static void run(const Eigen::MatrixBase<D>& G, const Eigen::MatrixBase<O>& out_, int steps,
                  GramNewtonSchulzWorkspace<typename D::Scalar>& ws) {
    using Scalar = typename D::Scalar;
    O& out = writable(out_);
    NewtonSchulzStart<Scalar> st;
    if (!newton_schulz_start<Schedule>(G, out, steps, "newton_schulz (Gram form)", st)) return;
    detail::load_iterate(ws.X, G, st);
    if (steps > 0) {
      ws.R.resize(st.k, st.k);
      ws.R.noalias() = ws.X * ws.X.transpose();
      bool have_q = false;  // Q = I until the first step's polynomial
      for (int s = 0; s < steps; ++s) {
        if (s == Restart && have_q) {  // X0 <- Q X0, R <- X0 X0^T, Q <- I
          ws.Y.resize(st.k, st.l);
          ws.Y.noalias() = ws.Q * ws.X;
          std::swap(ws.X, ws.Y);
          ws.R.noalias() = ws.X * ws.X.transpose();
          have_q = false;
        }
        const PolarCoefficients c = Schedule::at(s, steps);
        ws.P.noalias() = static_cast<Scalar>(c.c) * (ws.R * ws.R);
        ws.P += static_cast<Scalar>(c.b) * ws.R;
        ws.P.diagonal().array() += static_cast<Scalar>(c.a);
        if (have_q) {
          ws.T.noalias() = ws.P * ws.Q;
          std::swap(ws.Q, ws.T);
        } else {
          ws.Q = ws.P;
          have_q = true;
        }
        if (s + 1 < steps && s + 1 != Restart) {  // R is formed afresh at a restart
          ws.T.noalias() = ws.P * ws.R;
          ws.R.noalias() = ws.T * ws.P;
          ws.T = Scalar(0.5) * (ws.R + ws.R.transpose());
          std::swap(ws.R, ws.T);
        }
      }
      ws.Y.resize(st.k, st.l);
      ws.Y.noalias() = ws.Q * ws.X;
      std::swap(ws.X, ws.Y);
    }
    detail::store_iterate(out, ws.X, st);
  }
};

}  // namespace steepest

// SpectralNorm, for the aliases below: included after the engine because the default engine
// (polar/auto_products.hpp, included by spectral.hpp) includes this header.
#include "../norms/spectral.hpp"

namespace steepest {

/// The spectral norm with quintic x5 Newton-Schulz in the Gram form, restarted before step 3.
using SpectralGram = SpectralNorm<NewtonSchulz<QuinticSchedule, QuinticSchedule::default_steps, GramProducts<>>>;

}  // namespace steepest
