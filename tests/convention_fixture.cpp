// Steps one matrix with the library's Muon or AdamW and prints the final weights, for the
// convention test against PyTorch's own optimizers (tests/python/check_torch_conventions.py):
//   convention_fixture muon ROWS COLS STEPS original|match_rms_adamw|spectral_unclamped
//   convention_fixture adamw ROWS COLS STEPS
//   convention_fixture muon_aux ROWS COLS STEPS
// muon_aux: st::muon(hp, adamw_hp) on the matrix (hidden) and a bias of COLS entries (AdamW
// route), printed after the matrix; the bias starts at 0.05 cos(i) and its gradient of step t is
// grad_at(COLS, t, 1.5). AdamW route: lr 0.01, betas (0.9, 0.95), eps 1e-10, weight decay 0.1.
// Weights start at 0.05 sin(i + 1); the gradient of step t is optim_test::grad_at(size, t, 0.5).
// Hyper-parameters: lr 0.02, weight decay 0.1; Muon: momentum 0.95 (Nesterov), 5 quintic
// Newton-Schulz steps; AdamW: betas (0.9, 0.99), eps 1e-8.
#include <steepest/steepest.hpp>
#include <steepest/torch/optimizer.hpp>

#include <cmath>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "optim_helpers.hpp"

namespace st = steepest;

int main(int argc, char** argv) {
  if (argc < 5) {
    std::fprintf(stderr, "usage: %s muon|adamw ROWS COLS STEPS [ADJUST_LR_FN]\n", argv[0]);
    return 64;
  }
  const std::string rule = argv[1];
  const int rows = std::atoi(argv[2]), cols = std::atoi(argv[3]), steps = std::atoi(argv[4]);
  std::vector<float> w(std::size_t(rows * cols));
  for (std::size_t i = 0; i < w.size(); ++i) w[i] = float(0.05 * std::sin(double(i) + 1.0));
  st::ParamSet<float> params;
  params.add("w", st::Role::Hidden, w.data(), rows, cols);
  st::Hyper hp;
  hp.lr = 0.02;
  hp.weight_decay = 0.1;
  std::vector<float> bias;
  if (rule == "muon_aux") {
    for (int i = 0; i < cols; ++i) bias.push_back(float(0.05 * std::cos(double(i))));
    params.add_vector("b", bias.data(), cols);
  }
  auto run = [&](auto opt) {
    auto state = opt.init(params);
    for (int t = 1; t <= steps; ++t) {
      const auto d = optim_test::grad_at(w.size(), t, 0.5);
      const std::vector<float> g(d.begin(), d.end());
      const auto db = optim_test::grad_at(bias.size(), t, 1.5);
      const std::vector<float> gb(db.begin(), db.end());
      st::Gradients<float> grads;
      grads.add(g.data(), rows, cols);
      if (!bias.empty()) grads.add_vector(gb.data(), cols);
      opt.step(params, grads, state);
    }
  };
  if (rule == "muon" && argc == 6) {
    hp.beta1 = 0.95;
    run(st::muon_chain(hp, st::libtorch::shape_factor_from_torch(argv[5])));
  } else if (rule == "muon_aux") {
    hp.beta1 = 0.95;
    st::Hyper adam_hp;
    adam_hp.lr = 0.01, adam_hp.beta1 = 0.9, adam_hp.beta2 = 0.95, adam_hp.eps = 1e-10, adam_hp.weight_decay = 0.1;
    run(st::muon(hp, adam_hp));
  } else if (rule == "adamw") {
    hp.beta1 = 0.9, hp.beta2 = 0.99, hp.eps = 1e-8;
    run(st::adamw(hp));
  } else {
    std::fprintf(stderr, "unknown rule\n");
    return 64;
  }
  for (float x : w) std::printf("%.9g\n", x);
  for (float x : bias) std::printf("%.9g\n", x);
  return 0;
}
