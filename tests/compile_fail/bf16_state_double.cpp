// Must NOT compile: bf16 optimizer state (Bf16State) for double parameters.
#include <steepest/steepest.hpp>

#include <vector>

#ifdef STEEPEST_CONTROL
using Scalar = float;
#else
using Scalar = double;
#endif

int main() {
  std::vector<Scalar> w(6, Scalar(1));
  steepest::ParamSet<Scalar> params;
  params.add("w", steepest::Role::Hidden, w.data(), 2, 3);
  auto opt = steepest::adamw<steepest::Bf16State>();
  auto state = opt.init(params);
  return state.step == 0 ? 0 : 1;
}
