// Built by the consumer project where OpenBLAS is found: the installed headers and steepest::openblas.
#include <steepest/polar/openblas.hpp>

int main() {
  Eigen::MatrixXf G = Eigen::MatrixXf::Identity(8, 16), out(8, 16);
  steepest::OpenBlasNewtonSchulzWorkspace<float> ws;
  steepest::OpenBlas<>::run<steepest::QuinticSchedule>(G, out, 5, ws);
  return out.allFinite() ? 0 : 1;
}
