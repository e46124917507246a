// tests/golden_steps.hpp -- five steps of each named optimizer on a small model, as bytes: the
// weights, then every saved state buffer in save order (raw little-endian scalars). Files of
// these bytes (tests/golden/, by tests/golden_writer.cpp) pin the named optimizers' results
// across refactors (tests/test_golden.cpp).
#pragma once

#include <steepest/steepest.hpp>

#include <cmath>
#include <cstring>
#include <functional>
#include <string>
#include <utility>
#include <vector>

namespace golden {

namespace st = steepest;

/// Hidden 9x7 (a strided half of a 9x14 tensor: the transform-by-transform path), hidden 6x8,
/// embedding 5x4, output 3x6, a vector of 6.
struct Model {
  std::vector<float> fused_h, h2, e, o, v;
  st::ParamSet<float> params;
  Model() : fused_h(9 * 14), h2(6 * 8), e(20), o(18), v(6) {
    for (auto* p : {&fused_h, &h2, &e, &o, &v})
      for (std::size_t i = 0; i < p->size(); ++i) (*p)[i] = float(0.1 * std::sin(0.3 * double(i) + double(p->size())));
    params.add_blocks("h", st::Role::Hidden, fused_h.data(), 9, 14, st::Blocks::cols(2));
    params.add("h2", st::Role::Hidden, h2.data(), 6, 8);
    params.add("e", st::Role::Embedding, e.data(), 5, 4);
    params.add("o", st::Role::Output, o.data(), 3, 6);
    params.add_vector("v", v.data(), 6);
  }
};

template <class Opt>
std::string run(const Opt& opt) {
  Model net;
  auto state = opt.init(net.params);
  for (int t = 0; t < 5; ++t) {
    std::vector<std::vector<float>> g;
    for (const auto* p : {&net.fused_h, &net.h2, &net.e, &net.o, &net.v}) {
      std::vector<float> x(p->size());
      for (std::size_t i = 0; i < x.size(); ++i) x[i] = float(std::sin(0.37 * double(i * i) + 1.3 * t + double(x.size())));
      g.push_back(std::move(x));
    }
    st::Gradients<float> grads;
    grads.add(g[0].data(), 9, 14);
    grads.add(g[1].data(), 6, 8);
    grads.add(g[2].data(), 5, 4);
    grads.add(g[3].data(), 3, 6);
    grads.add_vector(g[4].data(), 6);
    opt.step(net.params, grads, state);
  }
  std::string out;
  const auto put = [&](const void* p, std::size_t n) { out.append(static_cast<const char*>(p), n); };
  for (const auto* p : {&net.fused_h, &net.h2, &net.e, &net.o, &net.v}) put(p->data(), sizeof(float) * p->size());
  state.for_each_layer([&](const st::LayerRecord&, const std::string&, auto&& visit) {
    visit([&](const std::string&, auto& b, st::Domain) { put(b.data(), sizeof(*b.data()) * std::size_t(b.size())); });
  });
  return out;
}

/// f(name, bytes, exact) for each named optimizer. exact: elementwise and row / column rules,
/// whose arithmetic is fixed; the spectral ones go through Eigen's GEMM, whose blocking (and so
/// its sums' order) follows the machine's cache sizes.
inline void for_each(const std::function<void(const std::string&, const std::string&, bool)>& f) {
  st::Hyper hp;
  hp.lr = 0.02;
  hp.beta1 = 0.9;
  hp.beta2 = 0.95;
  hp.weight_decay = 0.1;
  f("sgd", run(st::sgd(hp)), true);
  f("sgd_nesterov", run(st::sgd_nesterov(hp)), true);
  f("adamw", run(st::adamw(hp)), true);
  f("adamw_bf16", run(st::adamw<st::Bf16State>(hp)), true);
  f("adamw_rescaled", run(st::adamw_rescaled(hp)), true);
  f("sign_descent", run(st::sign_descent(hp)), true);
  f("lion", run(st::lion(hp)), true);
  f("moga_row", run(st::moga_row(hp)), true);
  f("moga_row_adam_first", run(st::moga_row<st::MogaOrder::AdamThenNormalize>(hp)), true);
  f("moga_col", run(st::moga_col(hp)), true);
  f("moga_row_momentum", run(st::moga_row_momentum(hp)), true);
  f("moga_row_momentum_bf16", run(st::moga_row_momentum<st::Bf16State>(hp)), true);
  f("muon", run(st::muon(hp, hp)), false);
  f("muon_scion", run(st::muon_scion(hp)), false);
  f("scion", run(st::scion(hp)), false);
  f("scion_unconstrained", run(st::scion_unconstrained(hp)), false);
}

}  // namespace golden
