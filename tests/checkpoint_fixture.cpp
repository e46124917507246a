// A fixed AdamW state for the cross-tool checkpoint test (tests/python/check_checkpoint.py):
//   checkpoint_fixture save PATH   writes the state after two steps
//   checkpoint_fixture load PATH   loads PATH and compares it with that state bit for bit:
//                                  exit 0 "match", 1 "mismatch", 2 refused (the message)
//   checkpoint_fixture save-bf16 PATH   the same steps with the moments kept in bf16 (Bf16State)
// The gradients are optim_test::grad_at's formula, which the Python side evaluates too.
#include <steepest/steepest.hpp>

#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "optim_helpers.hpp"

namespace st = steepest;

int main(int argc, char** argv) {
  const bool bf16 = argc == 3 && std::strcmp(argv[1], "save-bf16") == 0;
  if (argc != 3 || (std::strcmp(argv[1], "save") != 0 && std::strcmp(argv[1], "load") != 0 && !bf16)) {
    std::fprintf(stderr, "usage: %s save|load|save-bf16 PATH\n", argv[0]);
    return 64;
  }
  std::vector<float> w(12, 0.5f), b(3, -0.25f);
  st::ParamSet<float> params;
  params.add("blocks.0.w", st::Role::Hidden, w.data(), 3, 4);
  params.add_vector("blocks.0.b", b.data(), 3);
  const auto hp = optim_test::hyper(0.01, 0.9, 0.99, 0.1);
  const auto two_steps = [&](const auto& opt, auto& state) {
    for (int t = 1; t <= 2; ++t) {
      const auto dw = optim_test::grad_at(w.size(), t, 0.0), db = optim_test::grad_at(b.size(), t, 1.0);
      const std::vector<float> gw(dw.begin(), dw.end()), gb(db.begin(), db.end());
      st::Gradients<float> g;
      g.add(gw.data(), 3, 4);
      g.add_vector(gb.data(), 3);
      opt.step(params, g, state);
    }
  };
  if (bf16) {
    auto opt16 = st::adamw<st::Bf16State>(hp);
    auto state16 = opt16.init(params);
    two_steps(opt16, state16);
    st::save(opt16, state16, argv[2]);
    return 0;
  }
  auto opt = st::adamw(hp);
  auto state = opt.init(params);
  two_steps(opt, state);
  if (std::strcmp(argv[1], "save") == 0) {
    st::save(opt, state, argv[2]);
    return 0;
  }
  auto loaded = opt.init(params);
  try {
    st::load(opt, loaded, argv[2]);
  } catch (const st::state_file_error& e) {
    std::printf("refused: %s\n", e.what());
    return 2;
  }
  const auto& [a1, s1] = state.layers[0];
  const auto& [a2, s2] = loaded.layers[0];
  const auto& [c1, t1] = state.layers[1];
  const auto& [c2, t2] = loaded.layers[1];
  (void)s1, (void)s2, (void)t1, (void)t2;
  const bool same = loaded.step == state.step && a1.m == a2.m && a1.v == a2.v && c1.m == c2.m && c1.v == c2.v;
  std::printf("%s step=%lld\n", same ? "match" : "mismatch", loaded.step);
  return same ? 0 : 1;
}
