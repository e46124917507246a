// quickstart: multi-output least squares fitted by steepest descent in several geometries.
//
// Problem: find W (m x n) minimizing L(W) = ||X W^T - Y||_F^2 / (2 N) for N samples x_i in R^n
// and targets y_i = W* x_i + noise. Each geometry's step is
//     W <- W - eta_t * D_{p̄->q̄}(grad L)       (mean-normalized steepest direction)
// with one eta for every geometry and a linear decay eta_t = eta (1 - t/T), which normalized
// steps need to settle (their length does not shrink with the gradient).
// Prints each geometry's loss curve; the exact least-squares solution's loss is the floor.
#include <steepest/steepest.hpp>

#include <cstdio>
#include <random>
#include <string>
#include <vector>

namespace st = steepest;
using Mat = Eigen::MatrixXd;

struct Problem {
  Mat X, Y;  // N x n inputs, N x m targets
  double loss(const Mat& W) const { return (X * W.transpose() - Y).squaredNorm() / (2.0 * X.rows()); }
  Mat grad(const Mat& W) const { return (X * W.transpose() - Y).transpose() * X / double(X.rows()); }
};

Problem make_problem(int N, int m, int n, unsigned seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<double> nd;
  auto gauss = [&](int r, int c) {
    Mat A(r, c);
    for (Eigen::Index i = 0; i < A.size(); ++i) A.data()[i] = nd(rng);
    return A;
  };
  const Mat Wstar = gauss(m, n) / std::sqrt(double(n));
  Problem p{gauss(N, n), Mat()};
  p.Y = p.X * Wstar.transpose() + 0.1 * gauss(N, m);
  return p;
}

template <class Geometry>
std::vector<double> fit(const Problem& p, int m, int n, double eta, int steps) {
  Mat W = Mat::Zero(m, n), D(m, n);
  st::workspace_t<Geometry, double> ws;  // reused every step: no allocation after the first
  std::vector<double> curve;
  for (int t = 0; t <= steps; ++t) {
    curve.push_back(p.loss(W));
    if (t == steps) break;
    Geometry::dualize(p.grad(W), D, ws);
    W -= eta * (1.0 - double(t) / steps) * D;
  }
  return curve;
}

int main() {
  const int N = 512, m = 16, n = 64, steps = 200;
  const double eta = 0.5;
  const Problem p = make_problem(N, m, n, 2026);
  // Exact solution by least squares: the loss floor.
  const Mat Wls = p.X.colPivHouseholderQr().solve(p.Y).transpose();

  struct Run {
    std::string name;
    std::vector<double> curve;
  };
  const std::vector<Run> runs = {
      {"sign  1bar->inf", fit<st::MeanNormalized<st::SignNorm>>(p, m, n, eta, steps)},
      {"row   2bar->inf", fit<st::MeanNormalized<st::RowNormalize>>(p, m, n, eta, steps)},
      {"col   1bar->2bar", fit<st::MeanNormalized<st::ColNormalize>>(p, m, n, eta, steps)},
      {"spec  2bar->2bar NS", fit<st::MeanNormalized<st::Spectral>>(p, m, n, eta, steps)},
      {"spec  2bar->2bar SVD", fit<st::MeanNormalized<st::SpectralExact>>(p, m, n, eta, steps)},
  };
  std::printf("least squares, W is %dx%d, N = %d, eta = %.2f with linear decay\n", m, n, N, eta);
  std::printf("loss floor (exact least squares): %.5f\n\n%-22s", p.loss(Wls), "step");
  for (int t = 0; t <= steps; t += 25) std::printf("%9d", t);
  std::printf("\n");
  for (const Run& r : runs) {
    std::printf("%-22s", r.name.c_str());
    for (int t = 0; t <= steps; t += 25) std::printf("%9.4f", r.curve[std::size_t(t)]);
    std::printf("\n");
  }
  return 0;
}
