// Compile cost baseline: libtorch.cpp's model stepped by torch's own SGD, without steepest
// (scripts/compile_cost.sh; needs libtorch).
#include <torch/torch.h>

int main() {
  torch::nn::Sequential net(torch::nn::Linear(16, 32), torch::nn::ReLU(), torch::nn::Linear(32, 4));
  torch::optim::SGD opt(net->parameters(), torch::optim::SGDOptions(0.01));
  opt.zero_grad();
  net->forward(torch::randn({8, 16})).sum().backward();
  opt.step();
  return 0;
}
