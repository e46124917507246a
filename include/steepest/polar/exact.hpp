// steepest/polar/exact.hpp -- the exact polar factor and singular values, by SVD.
//
// This is the reference that Newton-Schulz is tested against, and the right choice for small
// matrices. It allocates (Eigen's SVD does) and costs O(m n min(m, n)).
// For a rank-deficient G the polar factor is taken on the range of G: U_r V_r^T over the
// singular values above the round-off threshold max(m, n) * eps * s_max, so that
// <G, D> = ||G||_nuclear and ||D||_2 = 1 still hold; a zero G gives a zero D.
//
// Build time: Eigen's BDCSVD<MatrixXd> (with the JacobiSVD it uses on small blocks) is the
// heaviest template the library instantiates: about 17 s of g++ -O3 and 1 GB in each translation
// unit that takes a spectral geometry's value or SpectralExact's direction (an optimizer with a
// spectral role does). A program of many translation units can compile it once:
//   - define STEEPEST_EXTERN_SVD in every translation unit (an explicit instantiation
//     declaration: the compiler then leaves the members to another unit), and
//   - in exactly one .cpp: `#define STEEPEST_SVD_INSTANCE` before `#include <steepest/polar/exact.hpp>`
//     (the explicit instantiation definition).
// The project's own tests and small examples build this way (CMake: steepest_svd_instance,
// through steepest_project_options); without either macro nothing changes.
#pragma once

#include <Eigen/SVD>

#include <limits>

#include "../core/config.hpp"

#if defined(STEEPEST_SVD_INSTANCE)
template class Eigen::JacobiSVD<Eigen::MatrixXd, Eigen::ColPivHouseholderQRPreconditioner>;
template class Eigen::BDCSVD<Eigen::MatrixXd>;
#elif defined(STEEPEST_EXTERN_SVD)
extern template class Eigen::JacobiSVD<Eigen::MatrixXd, Eigen::ColPivHouseholderQRPreconditioner>;
extern template class Eigen::BDCSVD<Eigen::MatrixXd>;
#endif

namespace steepest {

/// Singular values of G, descending, in double precision (the input is converted first).
template <class D>
Eigen::VectorXd singular_values(const Eigen::MatrixBase<D>& G) {
  if (G.size() == 0) return Eigen::VectorXd();
  Eigen::MatrixXd Gd = G.template cast<double>();
  Eigen::BDCSVD<Eigen::MatrixXd> svd(Gd);
  return svd.singularValues();
}

/// out = U_r V_r^T (see the file comment). Computed in double, written in out's scalar type.
template <class D, class O>
void exact_polar(const Eigen::MatrixBase<D>& G, const Eigen::MatrixBase<O>& out_) {
  require_same_shape(G, out_, "exact_polar");
  O& out = writable(out_);
  if (G.size() == 0) return;
  Eigen::MatrixXd Gd = G.template cast<double>();
  Eigen::BDCSVD<Eigen::MatrixXd> svd(Gd, Eigen::ComputeThinU | Eigen::ComputeThinV);
  const Eigen::VectorXd& s = svd.singularValues();
  const double tol = static_cast<double>(std::max(G.rows(), G.cols())) *
                     std::numeric_limits<double>::epsilon() * (s.size() ? s(0) : 0.0);
  Index r = 0;
  while (r < s.size() && s(r) > tol) ++r;
  out = (svd.matrixU().leftCols(r) * svd.matrixV().leftCols(r).transpose())
            .template cast<typename O::Scalar>();
}

}  // namespace steepest
