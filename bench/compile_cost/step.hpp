// Compile cost: a 4-layer model stepped once by the optimizer `make()` returns; included by the
// per-optimizer programs of scripts/compile_cost.sh.
#include <steepest/steepest.hpp>

#include <vector>

namespace st = steepest;

template <class Make>
int step_once(Make make) {
  std::vector<float> emb(64 * 32), hid(32 * 32), head(10 * 32), bias(32);
  st::ParamSet<float> params;
  params.add("emb", st::Role::Embedding, emb.data(), 64, 32);
  params.add("hidden", st::Role::Hidden, hid.data(), 32, 32);
  params.add("head", st::Role::Output, head.data(), 10, 32);
  params.add_vector("bias", bias.data(), 32);
  std::vector<float> g0(emb.size(), 0.1f), g1(hid.size(), 0.1f), g2(head.size(), 0.1f), g3(bias.size(), 0.1f);
  st::Gradients<float> grads;
  grads.add(g0.data(), 64, 32);
  grads.add(g1.data(), 32, 32);
  grads.add(g2.data(), 10, 32);
  grads.add_vector(g3.data(), 32);
  auto opt = make();
  auto state = opt.init(params);
  return opt.step(params, grads, state) ? 0 : 1;
}
