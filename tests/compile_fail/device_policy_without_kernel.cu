// A user's norm policy with only CPU kernels, used by a compile-time Dualize<N> on device memory:
// must fail with the library's message (not an error from inside a kernel template).
#include <steepest/steepest.hpp>
#include <steepest/cuda/cuda.cuh>

#include "../frobenius_norm.hpp"  // a user policy with CPU kernels only

namespace st = steepest;

using UserChain = st::Chain<st::Momentum<>, st::Dualize<FrobeniusNorm>, st::DecoupledStep>;

int main() {
  st::cuda::Context ctx;
  st::ParamSet<float, st::cuda::Device> params(st::cuda::Device{&ctx});
  st::Gradients<float, st::cuda::Device> grads;
  st::Optimizer<UserChain> opt;
  auto state = opt.init(params);
  opt.step(params, grads, state);
  return 0;
}
