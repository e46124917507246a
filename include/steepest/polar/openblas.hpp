// steepest/polar/openblas.hpp -- Newton-Schulz with its products on OpenBLAS (CPU, fp32 / fp64),
// the two symmetric products of a step as symmetric rank-k updates (SYRK).
//
//   #include <steepest/polar/openblas.hpp>        // link OpenBLAS: CMake target steepest::openblas
//   auto opt = st::muon<st::SpectralOpenBlas>(hp);  // quintic x5, X X^T and A A by SYRK
//
// Why: a step of the quintic iteration on the wide orientation X (k x l, k <= l) is
//   A = X X^T          symmetric: SYRK computes one triangle, k^2 l flops instead of 2 k^2 l
//   C = A A = A A^T    symmetric again (A is): SYRK, k^3 instead of 2 k^3
//   X = (a I + b A + c C) X      B = b A + c C + a I is symmetric: SYMM reads its upper triangle
// so a square step costs 4 k^3 flops instead of 6 k^3 (at most 1.5x), with every product and sum
// in the input's precision: the same accuracy as the plain products. Folding a X into the last
// product as a I + B saves the separate a X + B X pass over the k x l iterate; it only moves the
// rounding of that sum into the product's accumulation.
// OpenBlas<GramProduct::Gemm> forms the same step with three plain GEMMs: that is the reference
// the SYRK form is measured against (docs/PERFORMANCE.md), and it is what Eigen's GEMM does, on
// OpenBLAS's kernels.
//
// Threads: OpenBLAS (Debian's libopenblas0-pthread) runs on its own thread pool, not OpenMP:
// openblas_set_num_threads(n) or OPENBLAS_NUM_THREADS set its size.
// Shapes: k and l must fit BLAS's int (2^31 - 1); a larger one is refused (std::invalid_argument)
// before anything is written.
#pragma once

#include <cblas.h>

#include <Eigen/Core>

#include <algorithm>
#include <climits>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <utility>

#include "newton_schulz.hpp"

namespace steepest {

/// Scratch of OpenBlas<>: the iterate and its next value (k x l), the Gram matrix and its square
/// (k x k), row-major so that BLAS's row-major calls read them in place. Sized on first use for a
/// shape, reused while it stays the same.
template <class Scalar>
struct OpenBlasNewtonSchulzWorkspace {
  /// A row-major matrix of the scalar.
  using Mat = Eigen::Matrix<Scalar, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
  Mat X;  ///< The iterate, its next value, the Gram matrix and the polynomial in it.
  Mat Y;  ///< The iterate, its next value, the Gram matrix and the polynomial in it.
  Mat A;  ///< The iterate, its next value, the Gram matrix and the polynomial in it.
  Mat C;  ///< The iterate, its next value, the Gram matrix and the polynomial in it.
};

namespace detail {

// The four BLAS calls of a step, for float and double (OpenBLAS's CBLAS, row-major).
inline void blas_gemm(CBLAS_TRANSPOSE tb, blasint m, blasint n, blasint k, const float* a, blasint lda,
                      const float* b, blasint ldb, float* c, blasint ldc) {
  cblas_sgemm(CblasRowMajor, CblasNoTrans, tb, m, n, k, 1.0f, a, lda, b, ldb, 0.0f, c, ldc);
}
inline void blas_gemm(CBLAS_TRANSPOSE tb, blasint m, blasint n, blasint k, const double* a, blasint lda,
                      const double* b, blasint ldb, double* c, blasint ldc) {
  cblas_dgemm(CblasRowMajor, CblasNoTrans, tb, m, n, k, 1.0, a, lda, b, ldb, 0.0, c, ldc);
}
// C (n x n, upper triangle) = A A^T, A n x k.
inline void blas_syrk(blasint n, blasint k, const float* a, blasint lda, float* c, blasint ldc) {
  cblas_ssyrk(CblasRowMajor, CblasUpper, CblasNoTrans, n, k, 1.0f, a, lda, 0.0f, c, ldc);
}
inline void blas_syrk(blasint n, blasint k, const double* a, blasint lda, double* c, blasint ldc) {
  cblas_dsyrk(CblasRowMajor, CblasUpper, CblasNoTrans, n, k, 1.0, a, lda, 0.0, c, ldc);
}
// C (m x n) = S B, S m x m symmetric, read from its upper triangle.
inline void blas_symm(blasint m, blasint n, const float* s, blasint lds, const float* b, blasint ldb, float* c,
                      blasint ldc) {
  cblas_ssymm(CblasRowMajor, CblasLeft, CblasUpper, m, n, 1.0f, s, lds, b, ldb, 0.0f, c, ldc);
}
inline void blas_symm(blasint m, blasint n, const double* s, blasint lds, const double* b, blasint ldb,
                      double* c, blasint ldc) {
  cblas_dsymm(CblasRowMajor, CblasLeft, CblasUpper, m, n, 1.0, s, lds, b, ldb, 0.0, c, ldc);
}

/// Copies the upper triangle of the square row-major `a` onto its lower triangle. In 64 x 64
/// tiles: one side of a transpose is read down a column, and a whole column of a large matrix
/// (rows a power-of-two bytes apart) maps to a few cache sets; a tile's 64 rows stay in L1/L2.
template <class Scalar>
void mirror_upper_to_lower(Scalar* a, Index k) {
  constexpr Index T = 64;
  for (Index ib = 0; ib < k; ib += T)
    for (Index jb = 0; jb <= ib; jb += T) {
      const Index ie = std::min(ib + T, k), je = std::min(jb + T, k);
      for (Index i = ib; i < ie; ++i)
        for (Index j = jb, je_i = std::min(je, i); j < je_i; ++j) a[i * k + j] = a[j * k + i];
    }
}

}  // namespace detail

/// Newton-Schulz products engine on OpenBLAS, in the input's precision (float or double).
/// Gram = Syrk (default): X X^T and A A by SYRK, the last product by SYMM; Gram = Gemm: three
/// GEMMs (the reference). See the file comment.
template <GramProduct Gram = GramProduct::Syrk>
struct OpenBlas {
  /// Scratch reused across calls (the workspace argument of dualize).
  template <class Scalar>
  using Workspace = OpenBlasNewtonSchulzWorkspace<Scalar>;
  /// "openblas-syrk" or "openblas-gemm".
  static std::string name() { return Gram == GramProduct::Syrk ? "openblas-syrk" : "openblas-gemm"; }

  /// out = Newton-Schulz_steps(G) with OpenBLAS's products.
  template <class Schedule, class D, class O>
  static void run(const Eigen::MatrixBase<D>& G, const Eigen::MatrixBase<O>& out_, int steps,
                  OpenBlasNewtonSchulzWorkspace<typename D::Scalar>& ws) {
    using Scalar = typename D::Scalar;
    static_assert(std::is_same_v<Scalar, float> || std::is_same_v<Scalar, double>,
                  "steepest::OpenBlas: BLAS multiplies float or double matrices");
    O& out = writable(out_);
    NewtonSchulzStart<Scalar> st;
    if (!newton_schulz_start<Schedule>(G, out, steps, "newton_schulz (OpenBLAS)", st)) return;
    if (st.l > INT_MAX)
      throw std::invalid_argument("newton_schulz (OpenBLAS): " + shape_string(G.rows(), G.cols()) +
                                  " has a side past BLAS's int");
    const Index k = st.k, l = st.l;
    const blasint bk = blasint(k), bl = blasint(l);
    ws.X.resize(k, l);
    ws.Y.resize(k, l);
    ws.A.resize(k, k);
    ws.C.resize(k, k);
    if (st.tall)
      detail::assign_transposed(ws.X, G, st.inv);
    else
      detail::assign_scaled(ws.X, G, st.inv);
    for (int s = 0; s < steps; ++s) {
      const PolarCoefficients pc = Schedule::at(s, steps);
      const Scalar a = static_cast<Scalar>(pc.a), b = static_cast<Scalar>(pc.b), c = static_cast<Scalar>(pc.c);
      if constexpr (Gram == GramProduct::Syrk) {
        detail::blas_syrk(bk, bl, ws.X.data(), bl, ws.A.data(), bk);  // A = X X^T (upper)
        detail::mirror_upper_to_lower(ws.A.data(), k);                 // SYRK below reads all of A
        detail::blas_syrk(bk, bk, ws.A.data(), bk, ws.C.data(), bk);  // C = A A^T = A A (upper)
        for (Index i = 0; i < k; ++i) {  // B = b A + c C + a I on the upper triangle, in C
          ws.C.row(i).tail(k - i) = b * ws.A.row(i).tail(k - i) + c * ws.C.row(i).tail(k - i);
          ws.C(i, i) += a;
        }
        detail::blas_symm(bk, bl, ws.C.data(), bk, ws.X.data(), bl, ws.Y.data(), bl);  // Y = B X
      } else {
        detail::blas_gemm(CblasTrans, bk, bk, bl, ws.X.data(), bl, ws.X.data(), bl, ws.A.data(), bk);
        detail::blas_gemm(CblasNoTrans, bk, bk, bk, ws.A.data(), bk, ws.A.data(), bk, ws.C.data(), bk);
        ws.C = b * ws.A + c * ws.C;
        ws.C.diagonal().array() += a;
        detail::blas_gemm(CblasNoTrans, bk, bl, bk, ws.C.data(), bk, ws.X.data(), bl, ws.Y.data(), bl);
      }
      std::swap(ws.X, ws.Y);  // swaps buffers, not contents
    }
    if (st.tall)
      detail::assign_transposed(out, ws.X);
    else
      detail::assign_cast(out, ws.X);
  }
};

}  // namespace steepest

// SpectralNorm, for the aliases below: included after the engine because the default engine
// (polar/auto_products.hpp, included by spectral.hpp) includes this header.
#include "../norms/spectral.hpp"

namespace steepest {

/// The spectral norm with Newton-Schulz on OpenBLAS, symmetric products by SYRK: quintic x5, and
/// its Polar Express counterpart.
using SpectralOpenBlas = SpectralNorm<NewtonSchulz<QuinticSchedule, QuinticSchedule::default_steps, OpenBlas<>>>;
using SpectralPolarExpressOpenBlas =
    SpectralNorm<NewtonSchulz<PolarExpressSchedule, PolarExpressSchedule::default_steps, OpenBlas<>>>;

}  // namespace steepest
