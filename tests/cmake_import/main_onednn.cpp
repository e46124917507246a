// Built by the consumer project where oneDNN is found: the installed headers and steepest::onednn.
#include <steepest/polar/onednn.hpp>

int main() {
  Eigen::MatrixXf G = Eigen::MatrixXf::Identity(8, 16), out(8, 16);
  steepest::OneDnnNewtonSchulzWorkspace ws;
  steepest::OneDnnBf16::run<steepest::QuinticSchedule>(G, out, 5, ws);
  return out.allFinite() ? 0 : 1;
}
