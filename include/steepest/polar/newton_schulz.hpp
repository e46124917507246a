// steepest/polar/newton_schulz.hpp -- approximate polar factor U V^T of G = U S V^T.
//
// Algorithm (on the wide orientation k x l, k = min(m, n), so the Gram matrix is the small k x k):
//   X0 = G / (safety * ||G||_F)                 all singular values in (0, 1]
//   repeat: A = X X^T;  B = b A + c A A;  X = a X + B X
// Cost per step: 4 k^2 l + 2 k^3 flops. Products are written as `noalias()` GEMMs into buffers
// kept in `NewtonSchulzWorkspace`, so no step after the first allocates, and X ping-pongs
// between two buffers instead of making temporaries.
// The normalization is scale-invariant: a zero G gives a zero output, and a tiny G is scaled up
// exactly like a large one (no fixed epsilon that would silently break small gradients).
#pragma once

#include <Eigen/Core>

#include <algorithm>
#include <stdexcept>
#include <string>
#include <utility>

#include "../core/config.hpp"
#include "coefficients.hpp"

namespace steepest {

/// Buffers reused across calls; sized on first use for a shape, reused while it stays the same.
template <class Scalar>
struct NewtonSchulzWorkspace {
  /// A dense matrix of the scalar.
  using Mat = Eigen::Matrix<Scalar, Eigen::Dynamic, Eigen::Dynamic>;
  Mat X;  ///< The iterate, its next value, the Gram matrix and the polynomial in it.
  Mat Y;  ///< The iterate, its next value, the Gram matrix and the polynomial in it.
  Mat A;  ///< The iterate, its next value, the Gram matrix and the polynomial in it.
  Mat B;  ///< The iterate, its next value, the Gram matrix and the polynomial in it.
};

/// Where every products engine starts: the wide orientation and the scale of X0.
template <class Scalar>
struct NewtonSchulzStart {
  bool tall;   ///< G is m x n with m > n: the engine iterates on G^T
  /// The shape of X.
  Index k, l;  ///< X is k x l, k = min(m, n) <= l
  Scalar inv;  ///< X0 = inv * G (or G^T): 1 / (safety * ||G||_F)
};

/// The checks and the normalization every products engine begins with. Throws on a shape mismatch
/// or steps < 0 before writing anything. Returns false when there is nothing to iterate, with
/// `out` already written: an empty G, or a zero (NaN) G, whose output is zero (NaN) with no
/// division by zero. Otherwise fills `s` and returns true.
template <class Schedule, class D, class O>
bool newton_schulz_start(const Eigen::MatrixBase<D>& G, O& out, int steps, const char* who,
                         NewtonSchulzStart<typename D::Scalar>& s) {
  using Scalar = typename D::Scalar;
  require_same_shape(G, out, who);
  if (steps < 0) throw std::invalid_argument(std::string(who) + ": steps must be >= 0");
  if (G.size() == 0) return false;
  const Scalar fro = G.stableNorm();  // no under/overflow of the squares (|g| < 1e-19 or > 1e19 in float)
  if (!(fro > Scalar(0))) {
    out = G * Scalar(0);
    return false;
  }
  s.tall = G.rows() > G.cols();
  s.k = s.tall ? G.cols() : G.rows();
  s.l = s.tall ? G.rows() : G.cols();
  s.inv = Scalar(1) / (static_cast<Scalar>(Schedule::normalization_safety) * fro);
  return true;
}

namespace detail {

/// Calls f(i, j, r, c) for the r x c tiles at (i, j) that cover a rows x cols matrix, 32 x 32 each
/// but at its last row and column of tiles. Why tiles: a plain transposed assignment walks one of
/// the two matrices down its columns, a cache miss per entry once a row is a few KB long (34 ms
/// for a 4096 x 1024 float matrix on the bench machine, 3.5 ms tiled).
template <class F>
void for_each_tile(Index rows, Index cols, F&& f) {
  constexpr Index T = 32;
  for (Index i = 0; i < rows; i += T)
    for (Index j = 0; j < cols; j += T) f(i, j, std::min(T, rows - i), std::min(T, cols - j));
}

/// dst = (scale * src)^T, each entry cast to dst's scalar, tile by tile. Each entry is the same
/// expression as in the plain assignment, so the same bits.
template <class Dst, class Src, class Scale>
void assign_transposed(Dst& dst, const Eigen::MatrixBase<Src>& src, Scale scale) {
  for_each_tile(src.rows(), src.cols(), [&](Index i, Index j, Index r, Index c) {
    dst.block(j, i, c, r) = (src.block(i, j, r, c).transpose() * scale).template cast<typename Dst::Scalar>();
  });
}

/// dst = src^T, each entry cast to dst's scalar, tile by tile (no multiply: the same bits as a
/// plain cast, a signalling NaN's payload included).
template <class Dst, class Src>
void assign_transposed(Dst& dst, const Eigen::MatrixBase<Src>& src) {
  for_each_tile(src.rows(), src.cols(), [&](Index i, Index j, Index r, Index c) {
    dst.block(j, i, c, r) = src.block(i, j, r, c).transpose().template cast<typename Dst::Scalar>();
  });
}

/// dst = scale * src, each entry cast to dst's scalar: one assignment when both are stored in the
/// same order, tile by tile when they are not (a row-major layer into a column-major iterate or
/// back: a plain assignment then walks one of the two down its columns, as a transpose does;
/// 68 ms of the 195 ms a bf16 step took on a column-major 1024 x 4096 input). Same bits either way.
template <class Dst, class Src, class Scale>
void assign_scaled(Dst& dst, const Eigen::MatrixBase<Src>& src, Scale scale) {
  if constexpr (bool(Dst::IsRowMajor) == bool(Src::IsRowMajor)) {
    dst = (src * scale).template cast<typename Dst::Scalar>();
  } else {
    for_each_tile(src.rows(), src.cols(), [&](Index i, Index j, Index r, Index c) {
      dst.block(i, j, r, c) = (src.block(i, j, r, c) * scale).template cast<typename Dst::Scalar>();
    });
  }
}

/// dst = src, each entry cast to dst's scalar, tile by tile when the storage orders differ.
template <class Dst, class Src>
void assign_cast(Dst& dst, const Eigen::MatrixBase<Src>& src) {
  if constexpr (bool(Dst::IsRowMajor) == bool(Src::IsRowMajor)) {
    dst = src.template cast<typename Dst::Scalar>();
  } else {
    for_each_tile(src.rows(), src.cols(), [&](Index i, Index j, Index r, Index c) {
      dst.block(i, j, r, c) = src.block(i, j, r, c).template cast<typename Dst::Scalar>();
    });
  }
}

/// X = X0 in the wide orientation: inv * G, or (inv * G)^T when G is tall (sized here).
template <class M, class D, class Scalar>
void load_iterate(M& X, const Eigen::MatrixBase<D>& G, const NewtonSchulzStart<Scalar>& st) {
  X.resize(st.k, st.l);
  if (st.tall)
    assign_transposed(X, G, st.inv);
  else
    assign_scaled(X, G, st.inv);
}
/// out = X back in G's orientation.
template <class O, class M, class Scalar>
void store_iterate(O& out, const M& X, const NewtonSchulzStart<Scalar>& st) {
  if (st.tall)
    assign_transposed(out, X);
  else
    assign_cast(out, X);
}

}  // namespace detail

/// out = NS_steps(G) with the coefficients of `Schedule`. `out` has G's shape; may alias G.
template <class Schedule, class D, class O>
void newton_schulz(const Eigen::MatrixBase<D>& G, const Eigen::MatrixBase<O>& out_, int steps,
                   NewtonSchulzWorkspace<typename D::Scalar>& ws) {
  using Scalar = typename D::Scalar;
  O& out = writable(out_);
  NewtonSchulzStart<Scalar> st;
  if (!newton_schulz_start<Schedule>(G, out, steps, "newton_schulz", st)) return;
  detail::load_iterate(ws.X, G, st);
  ws.Y.resize(st.k, st.l);
  ws.A.resize(st.k, st.k);
  ws.B.resize(st.k, st.k);
  for (int s = 0; s < steps; ++s) {
    const PolarCoefficients c = Schedule::at(s, steps);
    ws.A.noalias() = ws.X * ws.X.transpose();
    ws.B = static_cast<Scalar>(c.b) * ws.A;
    ws.B.noalias() += static_cast<Scalar>(c.c) * (ws.A * ws.A);
    ws.Y = static_cast<Scalar>(c.a) * ws.X;
    ws.Y.noalias() += ws.B * ws.X;
    std::swap(ws.X, ws.Y);  // swaps buffers, not contents
  }
  detail::store_iterate(out, ws.X, st);
}

/// The products engine of Newton-Schulz: how the three products of a step are formed. The
/// default forms them in the scalar type with Eigen's GEMMs (newton_schulz above). An engine is a
/// type with
///   template <class Scalar> using Workspace = ...;       // reused across steps, default-constructible
///   static std::string name();                            // "" for the default; else in the geometry's name
///   template <class Schedule, class D, class O>
///   static void run(const Eigen::MatrixBase<D>& G, const Eigen::MatrixBase<O>& out, int steps,
///                   Workspace<typename D::Scalar>& ws);   // out = NS_steps(G), same contract as above
/// polar/onednn.hpp adds OneDnnBf16 (products in bf16 on oneDNN's matmul); polar/openblas.hpp adds
/// OpenBlas<GramProduct> (fp32/fp64 products on OpenBLAS, the symmetric ones as SYRK).
struct EigenProducts {
  /// Scratch reused across calls (the workspace argument of dualize).
  template <class Scalar>
  using Workspace = NewtonSchulzWorkspace<Scalar>;
  /// No suffix on the policy's name.
  static std::string name() { return ""; }
  /// Flops of `steps` steps on a k x l iterate (k <= l): 4 k^2 l + 2 k^3 a step.
  static double flops(Index k, Index l, int steps) {
    return double(steps) * (4.0 * double(k) * double(k) * double(l) + 2.0 * double(k) * double(k) * double(k));
  }
  /// out = Newton-Schulz_steps(G) with Eigen's products.
  template <class Schedule, class D, class O>
  static void run(const Eigen::MatrixBase<D>& G, const Eigen::MatrixBase<O>& out, int steps,
                  NewtonSchulzWorkspace<typename D::Scalar>& ws) {
    newton_schulz<Schedule>(G, out, steps, ws);
  }
};

}  // namespace steepest
