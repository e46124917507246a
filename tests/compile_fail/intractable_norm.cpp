// Must NOT compile: 2 -> 1 has no tractable steepest direction. The test passes when the
// compiler's output contains the static_assert's message listing the tractable pairs.
// With -DSTEEPEST_CONTROL the file uses a tractable pair and must compile: that proves the
// failure comes from the static_assert and nothing else.
#include <steepest/steepest.hpp>

#ifdef STEEPEST_CONTROL
using Norm = steepest::OperatorNorm<2, steepest::Inf>;
#else
using Norm = steepest::OperatorNorm<2, 1>;
#endif

int main() {
  Eigen::MatrixXd G = Eigen::MatrixXd::Ones(2, 2), D(2, 2);
  Norm::dualize(G, D);
  return 0;
}
