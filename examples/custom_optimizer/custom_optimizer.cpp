// custom_optimizer: a new optimizer written from the library's parts in a few lines.
//
// "Nesterov momentum, then the width-aware row geometry 2̄->inf, then a decoupled step":
// the chain is the optimizer; state, checks, save/load and norm reporting come with it.
#include <steepest/steepest.hpp>

#include <cstdio>
#include <vector>

namespace st = steepest;

using NesterovRows = st::Chain<st::Momentum<st::MomentumKind::Nesterov>,
                               st::Dualize<st::MeanNormalized<st::RowNorm<2>>>,
                               st::DecoupledStep>;

int main() {
  const int m = 64, n = 32;
  std::vector<float> w(m * n, 0.0f), g(m * n);
  st::ParamSet<float> params;
  params.add("layer", st::Role::Hidden, w.data(), m, n);

  st::Hyper hp;
  hp.lr = 0.05;
  hp.beta1 = 0.9;
  hp.weight_decay = 0.01;
  st::Optimizer<NesterovRows> opt(hp);
  auto state = opt.init(params);

  // Minimize ||W - T||_F^2 / 2 for a fixed target T: the gradient is W - T.
  for (int t = 0; t < 200; ++t) {
    double loss = 0;
    for (int i = 0; i < m * n; ++i) {
      const float target = float((i * 37) % 11) / 11.0f - 0.5f;
      g[std::size_t(i)] = w[std::size_t(i)] - target;
      loss += 0.5 * double(g[std::size_t(i)]) * g[std::size_t(i)];
    }
    if (t % 40 == 0) std::printf("step %3d  loss %.4f\n", t, loss);
    st::Gradients<float> grads;
    grads.add(g.data(), m, n);
    opt.step(params, grads, state);
  }
  std::printf("%s: %zu bytes of state for %lld parameters\n", opt.name().c_str(),
              state.state_bytes(), static_cast<long long>(params.num_params()));
  return 0;
}
