// Must NOT compile: bf16 gradients for double parameters (bf16 gradients are for float
// parameters only: a step widens them to float).
#include <steepest/steepest.hpp>

#include <vector>

#ifdef STEEPEST_CONTROL
using Scalar = float;
#else
using Scalar = double;
#endif

int main() {
  std::vector<Scalar> w(6, Scalar(1));
  std::vector<Eigen::bfloat16> g(6, Eigen::bfloat16(0.5f));
  steepest::ParamSet<Scalar> params;
  params.add("w", steepest::Role::Hidden, w.data(), 2, 3);
  steepest::Gradients<Eigen::bfloat16> grads;
  grads.add(g.data(), 2, 3);
  auto opt = steepest::adamw();
  auto state = opt.init(params);
  return opt.step(params, grads, state) ? 0 : 1;
}
