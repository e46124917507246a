#include <steepest/steepest.hpp>

#include <cmath>
#include <iostream>

int main() {
  Eigen::MatrixXf G = Eigen::MatrixXf::Random(8, 4), D(8, 4);
  steepest::MeanNormalized<steepest::RowNormalize>::dualize(G, D);
  // Each row of D has 2-norm s(m, n) = 4^{-1/2}.
  const float err = std::abs(D.row(0).norm() - 0.5f);
  std::cout << "consumer: row norm error " << err << "\n";
  return err < 1e-5f ? 0 : 1;
}
