// tree_ab: one step of several rules at 1024x4096, for comparing two source trees side by side.
// Built by hand against each tree, run interleaved (old, new, old, new, ...):
//   g++ -std=c++17 -O2 -fopenmp -DNDEBUG -I TREE/include -isystem /usr/include/eigen3
//       bench/tree_ab.cpp -o ab_TREE   (one line)
// Prints the best of 15 timed steps (after 3 warm-up steps) per rule. "strided" layers are 8
// column blocks of one tensor (per-head views), which take the transform-by-transform path;
// "100 x 10x10" is a step of 100 small tensors, where per-layer costs show (biases, norms).
#include <steepest/steepest.hpp>
#include <chrono>
#include <cstdio>
#include <string>
#include <vector>
namespace st = steepest;
/// Prints and returns the best time of `step` over `timed` runs after `warm` untimed ones.
template <class F>
double best_of(const char* what, int warm, int timed, F&& step) {
  double best = 1e9;
  for (int k = 0; k < warm + timed; ++k) {
    const auto t0 = std::chrono::steady_clock::now();
    step();
    const double dt = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    if (k >= warm) best = std::min(best, dt);
  }
  std::printf("%-28s %8.3f ms\n", what, best * 1e3);
  return best;
}
template <class Opt>
double time_step(const char* what, Opt opt, bool blocks) {
  const st::Index m = 1024, n = 4096;
  std::vector<float> w(m * n, 0.01f), g(m * n);
  for (std::size_t i = 0; i < g.size(); ++i) g[i] = 0.001f * float((i * 7919) % 1000) - 0.5f;
  st::ParamSet<float> p;
  if (blocks) p.add_blocks("w", st::Role::Hidden, w.data(), m, n, st::Blocks::cols(8));  // 8 strided 1024x512 heads
  else p.add("w", st::Role::Hidden, w.data(), m, n);
  st::Gradients<float> G;
  G.add(g.data(), m, n);
  auto s = opt.init(p);
  return best_of(what, 3, 15, [&] { opt.step(p, G, s); });
}
template <class Opt>
double time_small(const char* what, Opt opt) {
  std::vector<std::vector<float>> w(100, std::vector<float>(100, 0.01f)), g(100, std::vector<float>(100, 0.25f));
  st::ParamSet<float> p;
  st::Gradients<float> G;
  for (int i = 0; i < 100; ++i) {
    p.add("w" + std::to_string(i), st::Role::Hidden, w[std::size_t(i)].data(), 10, 10);
    G.add(g[std::size_t(i)].data(), 10, 10);
  }
  auto s = opt.init(p);
  return best_of(what, 3, 200, [&] { opt.step(p, G, s); });
}
int main() {
  st::Hyper hp;
  hp.weight_decay = 0.1;
  time_step("adamw fused", st::adamw(hp), false);
  time_step("adamw strided (unfused)", st::adamw(hp), true);
  time_step("moga_row fused (by rows)", st::moga_row(hp), false);
  time_step("sgd_nesterov strided", st::sgd_nesterov(hp), true);
  time_step("lion strided", st::lion(hp), true);
  time_step("adamw<bf16> strided", st::adamw<st::Bf16State>(hp), true);
  time_small("adamw 100 x 10x10", st::adamw(hp));
  time_small("moga_row 100 x 10x10", st::moga_row(hp));
}
