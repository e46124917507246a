// steepest/optim/reductions.hpp -- transforms whose rule reads a whole row or the whole update.
//
// An elementwise transform (optim/transforms.hpp) maps each entry from that entry alone; these
// first reduce (a row's mean square, the update's norm, a dot product, a count) and then scale.
// They run transform by transform (a static `apply` on the host, no Elem), so a chain that holds
// one takes the unfused path for that layer; each one's device form is in cuda/rules.cuh and
// shares its arithmetic through the STEEPEST_HD functions here. Each states whether it is
// row-separable (a per-row reduction is; a whole-matrix one is not).
#pragma once

#include <algorithm>
#include <cmath>

#include "transforms.hpp"

namespace steepest {

/// A per-row second moment of the update, each row divided by its root (NorMuon's neuron-wise
/// normalization, Li et al. 2025, arXiv 2510.05491, where u is the polar factor): per row r,
///   v_r <- b2 v_r + (1 - b2) mean_c(u_rc^2);   u_rc <- u_rc / (sqrt(v_r) + eps)
/// with b2 = hp.beta2, eps = hp.eps, no bias correction (the paper's update). One state entry
/// per row. A row reduction, so it runs transform by transform (no Elem).
struct RowSecondMoment {
  /// The per-layer state (host or device buffers, optim/space.hpp).
  template <class S, class Space = Host>
  struct State {
    buffer_t<S, Space> v;  ///< rows x 1
    /// Calls f on each saved buffer, in checkpoint order (none: nothing is saved).
    template <class F>
    void visit(F&& f) { f(v); }
  };
  /// How large buffer v can get from inputs below g (BufferSpec::reach).
  static constexpr double reach_v(const Hyper& hp, double g) { return reach::ema_of_squares(hp.beta2, g); }
  /// The saved buffers: names, domains, reachable bounds (BufferSpec).
  static constexpr std::array<BufferSpec, 1> buffers{{{"v", Domain::NonNegative, &reach_v}}};
  /// An entry reads only its own row: a sharded layer may be split by rows.
  static constexpr bool row_separable = true;
  /// Sizes the state for an r x c layer (zeros).
  template <class S, class Space>
  static void init(State<S, Space>& st, Index r, Index) { st.v = buffer_t<S, Space>::Zero(r, 1); }
  /// Row r's new second moment from its old one and the row's mean square, and the divisor of
  /// its entries: the rule both backends run (cuda/rules.cuh).
  template <class S>
  STEEPEST_HD static S next_moment(S v, S mean_sq, S b) {
    return simd::flush_subnormal<S, S>(b * v + (S(1) - b) * mean_sq);
  }
  /// The divisor of row r's entries: sqrt(v_r) + eps.
  template <class S>
  STEEPEST_HD static S divisor(S v, S eps) { return simd::sqrt<S>(v) + eps; }
  /// The host rule (see the struct comment).
  template <class S>
  static void apply(Ctx<S>& ctx, State<S>& st) {
    const S b = static_cast<S>(ctx.hp.beta2), eps = static_cast<S>(ctx.hp.eps);
    const Index n = ctx.u.cols();
    if (n == 0) return;
    for (Index r = 0; r < ctx.u.rows(); ++r) {
      const S mean_sq = static_cast<S>(eigen_detail::row_sumsq(ctx.u.row(r)) / double(n));
      st.v(r, 0) = next_moment(st.v(r, 0), mean_sq, b);
      ctx.u.row(r) /= divisor(st.v(r, 0), eps);
    }
  }
  /// The transform's name: its key in checkpoints and in Chain::name().
  static const char* name() { return "row-second-moment"; }
};

/// Scales the update to a typical AdamW update's RMS, 0.2 (NorMuon's way of keeping AdamW's
/// learning rate): u <- 0.2 sqrt(m n) u / ||u||_F. A zero update stays zero. A whole-matrix
/// reduction: not row-separable.
struct MatchAdamWRms {
  /// The RMS matched, times sqrt(m n): u's target Frobenius norm (both backends).
  static double target_norm(Index m, Index n) { return 0.2 * std::sqrt(double(m) * double(n)); }
  /// The host rule (see the struct comment).
  template <class S>
  static void apply(Ctx<S>& ctx, NoState&) {
    const Eigen::Map<const Eigen::Matrix<S, 1, Eigen::Dynamic>> flat(ctx.u.data(), ctx.u.size());
    const double norm = std::sqrt(eigen_detail::row_sumsq(flat));
    if (norm > 0) ctx.u *= static_cast<S>(target_norm(ctx.u.rows(), ctx.u.cols()) / norm);
  }
  /// The transform's name: its key in checkpoints and in Chain::name().
  static const char* name() { return "match-adamw-rms"; }
};

/// The layer's direction scaled by the update's dual norm: u <- <u, D(u)> D(u). For an exact
/// direction <u, D(u)> is the dual norm ||u||_* (geometry.md), so the step is the unnormalized
/// steepest-descent step; for the spectral geometry ||u||_* is the nuclear norm and this is
/// PolarGrad's update (Lau et al. 2025, arXiv 2505.21799). With Newton-Schulz the factor is the
/// inner product with the approximate polar factor, as PolarGrad computes it. Whole-matrix.
struct DualNormDualize {
  /// The per-layer state (host or device buffers, optim/space.hpp).
  template <class S, class Space = Host>
  struct State {
    buffer_t<S, Space> before;  ///< scratch for u before the direction (not saved)
    /// Calls f on each saved buffer, in checkpoint order (none: nothing is saved).
    template <class F>
    void visit(F&&) {}
  };
  /// It applies the layer's geometry: on device memory a layer whose geometry has no device
  /// direction is refused at init.
  static constexpr bool applies_geometry = true;
  /// Sizes the state for an r x c layer (zeros).
  template <class S, class Space>
  static void init(State<S, Space>& st, Index r, Index c) { st.before = buffer_t<S, Space>::Zero(r, c); }
  /// The host rule (see the struct comment).
  template <class S>
  static void apply(Ctx<S>& ctx, State<S>& st) {
    st.before = ctx.u;
    ctx.geometry.dualize(ctx.u, ctx.ws);
    const double dual = (st.before.template cast<double>().cwiseProduct(ctx.u.template cast<double>())).sum();
    ctx.u *= static_cast<S>(dual);
  }
  /// The transform's name: its key in checkpoints and in Chain::name().
  static const char* name() { return "dual-norm-direction"; }
};

/// Cautious masking (Liang et al. 2024, arXiv 2411.16085): entries of the update whose sign
/// disagrees with the raw gradient's are dropped and the rest rescaled by the fraction kept,
///   k_ij = [u_ij g_ij > 0];   u <- (u .* k) / max(mean(k), 1e-3)
/// (the 1e-3 floor is the authors' own; a gradient entry of 0 drops its entry). Goes anywhere
/// after the transform whose update it masks (C-AdamW: after Adam's moments). Whole-matrix mean.
struct CautiousMask {
  /// Whether an entry is kept, and the scale of the kept ones: the rule both backends run.
  template <class S>
  STEEPEST_HD static bool keep(S u, S g) { return u * g > S(0); }
  /// The scale of the kept entries: 1 / max(kept / size, 1e-3).
  STEEPEST_HD static double scale(double kept, double size) {
    const double frac = kept / size;
    return 1.0 / (frac > 1e-3 ? frac : 1e-3);
  }
  /// The host rule (see the struct comment).
  template <class S>
  static void apply(Ctx<S>& ctx, NoState&) {
    Index kept = 0;
    for (Index r = 0; r < ctx.u.rows(); ++r)
      for (Index c = 0; c < ctx.u.cols(); ++c) {
        S& u = ctx.u(r, c);
        if (keep(u, gradient_at(ctx, r, c))) ++kept;
        else u = S(0);
      }
    if (ctx.u.size() == 0) return;
    ctx.u *= static_cast<S>(scale(double(kept), double(ctx.u.size())));
  }
  /// The transform's name: its key in checkpoints and in Chain::name().
  static const char* name() { return "cautious"; }
};

}  // namespace steepest
