// custom_optimizer: new optimizers from the library's parts, and from a transform of one's own.
//
// 1. "Nesterov momentum, then the width-aware row geometry 2̄->inf, then a decoupled step": the
//    chain of library transforms is the optimizer; state, checks, save/load and norm reporting
//    come with it.
// 2. TwoEmaRows (slow_ema.hpp): row normalization, a fast EMA (beta1), then SlowEma -- a
//    transform written in this folder, not in the library -- with its own coefficient (beta2),
//    the width scale and a step. It takes the one-pass fused path, gives the same bits as the
//    transform-by-transform path, saves and loads, and matches a plain loop written below.
// Exits 1 when a check fails.
#include <steepest/steepest.hpp>

#include <cmath>
#include <cstdio>
#include <vector>

#include "slow_ema.hpp"

namespace st = steepest;

using NesterovRows = st::Chain<st::Momentum<st::MomentumKind::Nesterov>,
                               st::Dualize<st::MeanNormalized<st::RowNorm<2>>>,
                               st::DecoupledStep>;

namespace {

constexpr int m = 64, n = 32;

/// The gradient of step t: the same for every run below.
std::vector<float> gradient(int t) {
  std::vector<float> g(m * n);
  for (int i = 0; i < m * n; ++i) g[std::size_t(i)] = float(std::sin(0.37 * i + 1.3 * t) + 0.05 * t);
  return g;
}

/// TwoEmaRows as a plain loop in double: x = g_row / ||g_row||, f = b1 f + (1 - b1) x,
/// s = b2 s + (1 - b2) f, W = (1 - lr wd) W - lr n^(-1/2) s.
std::vector<double> reference(const st::Hyper& hp, int steps) {
  std::vector<double> w(m * n, 0.0), f(m * n, 0.0), s(m * n, 0.0);
  for (int t = 0; t < steps; ++t) {
    const std::vector<float> g = gradient(t);
    for (int r = 0; r < m; ++r) {
      double sq = 0;
      for (int c = 0; c < n; ++c) sq += double(g[std::size_t(r * n + c)]) * g[std::size_t(r * n + c)];
      for (int c = 0; c < n; ++c) {
        const std::size_t i = std::size_t(r * n + c);
        f[i] = hp.beta1 * f[i] + (1 - hp.beta1) * (g[i] / std::sqrt(sq));
        s[i] = hp.beta2 * s[i] + (1 - hp.beta2) * f[i];
        w[i] = (1 - hp.lr * hp.weight_decay) * w[i] - hp.lr * s[i] / std::sqrt(double(n));
      }
    }
  }
  return w;
}

template <class Opt, class State>
void step(const Opt& opt, st::ParamSet<float>& params, State& state, int t) {
  const std::vector<float> g = gradient(t);
  st::Gradients<float> grads;
  grads.add(g.data(), m, n);
  opt.step(params, grads, state);
}

bool library_parts() {
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
  double first = 0, loss = 0;
  for (int t = 0; t < 200; ++t) {
    loss = 0;
    for (int i = 0; i < m * n; ++i) {
      const float target = float((i * 37) % 11) / 11.0f - 0.5f;
      g[std::size_t(i)] = w[std::size_t(i)] - target;
      loss += 0.5 * double(g[std::size_t(i)]) * g[std::size_t(i)];
    }
    if (t == 0) first = loss;
    if (t % 40 == 0) std::printf("step %3d  loss %.4f\n", t, loss);
    st::Gradients<float> grads;
    grads.add(g.data(), m, n);
    opt.step(params, grads, state);
  }
  std::printf("%s: %zu bytes of state for %lld parameters\n", opt.name().c_str(), state.state_bytes(),
              static_cast<long long>(params.num_params()));
  return loss < 0.05 * first;
}

bool own_transform() {
  st::Hyper hp;
  hp.lr = 0.02;
  hp.beta1 = 0.8;
  hp.beta2 = 0.95;
  hp.weight_decay = 0.1;
  auto fused = two_ema_rows(hp), unfused = two_ema_rows(hp);
  unfused.fuse = false;
  std::vector<float> w1(m * n, 0.0f), w2(m * n, 0.0f), w3(m * n, 0.0f);
  st::ParamSet<float> p1, p2, p3;
  p1.add("layer", st::Role::Hidden, w1.data(), m, n);
  p2.add("layer", st::Role::Hidden, w2.data(), m, n);
  p3.add("layer", st::Role::Hidden, w3.data(), m, n);
  auto s1 = fused.init(p1), s2 = unfused.init(p2), s3 = fused.init(p3);
  const bool fuses = TwoEmaRows::can_fuse<float>(fused.geometry_of(p1[0]));
  const int steps = 60, saved_at = 30;
  const std::string path = "two_ema_rows.safetensors";
  for (int t = 0; t < steps; ++t) {
    step(fused, p1, s1, t);
    step(unfused, p2, s2, t);
    if (t < saved_at) step(fused, p3, s3, t);
    if (t == saved_at - 1) {  // save, then go on from a fresh state loaded from the file
      st::save(fused, s3, path);
      s3 = fused.init(p3);
      st::load(fused, s3, path);
    }
    if (t >= saved_at) step(fused, p3, s3, t);
  }
  std::remove(path.c_str());
  const std::vector<double> ref = reference(hp, steps);
  double err = 0, norm = 0;
  for (std::size_t i = 0; i < ref.size(); ++i) err += (w1[i] - ref[i]) * (w1[i] - ref[i]), norm += ref[i] * ref[i];
  err = std::sqrt(err / norm);
  const bool same_bits = w1 == w2 && std::get<2>(s1.layers[0]).s == std::get<2>(s2.layers[0]).s;
  const bool resumed = w1 == w3;
  std::printf("%s: fused %s; fused and unfused %s; resumed from a checkpoint %s; "
              "||W - W_loop|| / ||W_loop|| = %.1e after %d steps\n",
              fused.name().c_str(), fuses ? "yes" : "NO", same_bits ? "the same bits" : "DIFFER",
              resumed ? "the same bits" : "DIFFERS", err, steps);
  return fuses && same_bits && resumed && err < 1e-5;
}

}  // namespace

int main() {
  const bool ok = library_parts() & own_transform();
  return ok ? 0 : 1;
}
