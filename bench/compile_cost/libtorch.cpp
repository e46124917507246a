// Compile cost: the libtorch adapter with Muon on a two-layer torch model, one step
// (scripts/compile_cost.sh; needs libtorch).
#include <steepest/steepest.hpp>
#include <steepest/torch/optimizer.hpp>

#include <torch/torch.h>

namespace st = steepest;

int main() {
  torch::nn::Sequential net(torch::nn::Linear(16, 32), torch::nn::ReLU(), torch::nn::Linear(32, 4));
  auto opt = st::libtorch::make_optimizer(*net, st::muon(st::Hyper{}));
  opt.zero_grad();
  net->forward(torch::randn({8, 16})).sum().backward();
  opt.step();
  return 0;
}
