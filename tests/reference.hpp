// tests/reference.hpp -- independent references for the norm tests: plain loops in double,
// written from the definitions, sharing no code with the library's kernels.
#pragma once

#include <Eigen/Dense>

#include <algorithm>
#include <cmath>
#include <limits>
#include <random>
#include <vector>

namespace ref {

constexpr double kInf = std::numeric_limits<double>::infinity();

inline double conj(double r) { return r == 1.0 ? kInf : (r == kInf ? 1.0 : r / (r - 1.0)); }

/// ||v||_r by the definition (sum |v_i|^r)^{1/r}, or max |v_i|.
inline double pnorm(const std::vector<double>& v, double r) {
  double acc = 0.0;
  if (r == kInf) {
    for (double x : v) acc = std::max(acc, std::abs(x));
    return acc;
  }
  for (double x : v) acc += std::pow(std::abs(x), r);
  return std::pow(acc, 1.0 / r);
}

/// Mean-normalized vector norm ||v||_{r̄} = n^{-1/r} ||v||_r.
inline double mean_pnorm(const std::vector<double>& v, double r) {
  if (v.empty()) return 0.0;
  return r == kInf ? pnorm(v, r) : std::pow(double(v.size()), -1.0 / r) * pnorm(v, r);
}

inline std::vector<double> row(const Eigen::MatrixXd& W, Eigen::Index i) {
  std::vector<double> v;
  for (Eigen::Index j = 0; j < W.cols(); ++j) v.push_back(W(i, j));
  return v;
}
inline std::vector<double> col(const Eigen::MatrixXd& W, Eigen::Index j) {
  std::vector<double> v;
  for (Eigen::Index i = 0; i < W.rows(); ++i) v.push_back(W(i, j));
  return v;
}

/// Singular values via the eigenvalues of W^T W (a different algorithm from the SVD used by
/// the library).
inline std::vector<double> singular_values_eig(const Eigen::MatrixXd& W) {
  std::vector<double> s;
  if (W.size() == 0) return s;
  Eigen::MatrixXd A = W.rows() >= W.cols() ? Eigen::MatrixXd(W.transpose() * W)
                                           : Eigen::MatrixXd(W * W.transpose());
  Eigen::SelfAdjointEigenSolver<Eigen::MatrixXd> es(A);
  for (Eigen::Index i = 0; i < A.rows(); ++i) s.push_back(std::sqrt(std::max(0.0, es.eigenvalues()(i))));
  return s;
}

/// Closed-form ||W||_{p->q} for the tractable families, from the definitions in geometry.md.
inline double op_norm(const Eigen::MatrixXd& W, double p, double q) {
  double best = 0.0;
  if (p == 2.0 && q == 2.0) {
    for (double s : singular_values_eig(W)) best = std::max(best, s);
  } else if (q == kInf) {
    for (Eigen::Index i = 0; i < W.rows(); ++i) best = std::max(best, pnorm(row(W, i), conj(p)));
  } else {
    for (Eigen::Index j = 0; j < W.cols(); ++j) best = std::max(best, pnorm(col(W, j), q));
  }
  return best;
}

/// Closed-form dual norm of the p->q operator norm.
inline double op_dual(const Eigen::MatrixXd& G, double p, double q) {
  double acc = 0.0;
  if (p == 2.0 && q == 2.0) {
    for (double s : singular_values_eig(G)) acc += s;
  } else if (q == kInf) {
    for (Eigen::Index i = 0; i < G.rows(); ++i) acc += pnorm(row(G, i), p);
  } else {
    for (Eigen::Index j = 0; j < G.cols(); ++j) acc += pnorm(col(G, j), conj(q));
  }
  return acc;
}

inline std::vector<double> apply(const Eigen::MatrixXd& W, const std::vector<double>& x) {
  std::vector<double> y(static_cast<std::size_t>(W.rows()), 0.0);
  for (Eigen::Index i = 0; i < W.rows(); ++i)
    for (Eigen::Index j = 0; j < W.cols(); ++j) y[std::size_t(i)] += W(i, j) * x[std::size_t(j)];
  return y;
}

/// sup_x ||W x||_q / ||x||_p by search over the unit ball's extreme points when they are
/// finitely many (p = 1: +-e_j; p = inf: all sign vectors, n <= 12), else by random search plus
/// the extreme points of both (a lower bound). `mean` uses mean-normalized vector norms.
/// Returns {estimate, exact?}.
inline std::pair<double, bool> brute_op_norm(const Eigen::MatrixXd& W, double p, double q,
                                             bool mean, std::mt19937& rng, int samples = 20000) {
  const auto n = static_cast<std::size_t>(W.cols());
  auto ratio = [&](const std::vector<double>& x) {
    const double nx = mean ? mean_pnorm(x, p) : pnorm(x, p);
    if (nx == 0.0) return 0.0;
    const auto y = apply(W, x);
    return (mean ? mean_pnorm(y, q) : pnorm(y, q)) / nx;
  };
  double best = 0.0;
  for (std::size_t j = 0; j < n; ++j) {
    std::vector<double> x(n, 0.0);
    x[j] = 1.0;
    best = std::max(best, ratio(x));
  }
  if (p == 1.0) return {best, true};
  if (n <= 12) {
    for (unsigned mask = 0; mask < (1u << n); ++mask) {
      std::vector<double> x(n);
      for (std::size_t j = 0; j < n; ++j) x[j] = (mask >> j) & 1u ? 1.0 : -1.0;
      best = std::max(best, ratio(x));
    }
    if (p == kInf) return {best, true};
  }
  std::normal_distribution<double> nd;
  std::vector<double> arg(n, 1.0);
  for (int s = 0; s < samples; ++s) {
    std::vector<double> x(n);
    for (auto& v : x) v = nd(rng);
    const double r = ratio(x);
    if (r > best) best = r, arg = x;
  }
  // Hill-climb from the best sample with shrinking random perturbations.
  for (double step = 0.3; step > 1e-6; step *= 0.7) {
    for (int t = 0; t < 200; ++t) {
      std::vector<double> x = arg;
      const double nx = pnorm(x, 2.0);
      for (auto& v : x) v += step * nx * nd(rng);
      const double r = ratio(x);
      if (r > best) best = r, arg = x;
    }
  }
  return {best, false};
}


/// G = U diag(s) V^T with random orthonormal U, V (from a Gaussian matrix's SVD) and singular
/// values log-spaced from 1 down to 1/kappa, so a band is stated for a known condition number;
/// `polar` is the exact polar factor U V^T.
struct Conditioned {
  Eigen::MatrixXd G, polar;
};
inline Conditioned conditioned(int m, int n, double kappa, unsigned seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<double> nd;
  Eigen::MatrixXd A(m, n);
  for (Eigen::Index i = 0; i < A.size(); ++i) A.data()[i] = nd(rng);
  Eigen::JacobiSVD<Eigen::MatrixXd> svd(A, Eigen::ComputeThinU | Eigen::ComputeThinV);
  const int k = std::min(m, n);
  Eigen::VectorXd s(k);
  for (int i = 0; i < k; ++i) s(i) = std::pow(kappa, -double(i) / std::max(k - 1, 1));
  return {svd.matrixU() * s.asDiagonal() * svd.matrixV().transpose(), svd.matrixU() * svd.matrixV().transpose()};
}

}  // namespace ref
