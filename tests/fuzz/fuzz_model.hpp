// tests/fuzz/fuzz_model.hpp -- the model and optimizers the state-loader fuzzer loads into, and
// its seed generator saves from (so the seeds are real files for exactly these states).
#pragma once

#include <steepest/steepest.hpp>

#include <cmath>
#include <string>
#include <vector>

namespace fuzz_model {

inline steepest::Hyper hp() {
  steepest::Hyper h;
  h.lr = 0.01;
  h.weight_decay = 0.1;
  return h;
}
inline auto muon() { return steepest::muon(hp()); }
inline auto moga() { return steepest::moga_row(hp()); }

/// Hidden 6x5, embedding 5x4, a vector of 3: small, so each input costs microseconds.
struct Model {
  std::vector<float> h = std::vector<float>(30, 0.1f), e = std::vector<float>(20, -0.2f), v = std::vector<float>(3, 0.3f);
  steepest::ParamSet<float> params;
  Model() {
    params.add("h", steepest::Role::Hidden, h.data(), 6, 5);
    params.add("e", steepest::Role::Embedding, e.data(), 5, 4);
    params.add_vector("v", v.data(), 3);
  }
  /// A state after two steps (non-zero moments), on a copy of the weights.
  template <class Opt>
  auto stepped_state(const Opt& opt) {
    std::vector<float> h0 = h, e0 = e, v0 = v;
    auto s = opt.init(params);
    for (int t = 1; t <= 2; ++t) {
      std::vector<float> gh(30), ge(20), gv(3);
      for (std::size_t i = 0; i < gh.size(); ++i) gh[i] = float(std::sin(0.3 * double(i) + t));
      for (std::size_t i = 0; i < ge.size(); ++i) ge[i] = float(std::cos(0.7 * double(i) + t));
      for (std::size_t i = 0; i < gv.size(); ++i) gv[i] = 0.5f * float(i + t);
      steepest::Gradients<float> g;
      g.add(gh.data(), 6, 5);
      g.add(ge.data(), 5, 4);
      g.add_vector(gv.data(), 3);
      opt.step(params, g, s);
    }
    h = h0, e = e0, v = v0;  // the fuzzer only needs the state
    return s;
  }
  /// One step of `s` with the largest gradient entries a step accepts (2^40 - 2^16, signs
  /// alternating), on a copy of the weights: true when the weights and the state stay finite.
  template <class Opt, class State>
  bool edge_step_is_finite(const Opt& opt, State& s) {
    std::vector<float> h0 = h, e0 = e, v0 = v;
    const float g = std::ldexp(1.0f, 40) - std::ldexp(1.0f, 16);
    std::vector<float> gh(30), ge(20), gv(3);
    for (auto* G : {&gh, &ge, &gv})
      for (std::size_t i = 0; i < G->size(); ++i) (*G)[i] = i % 2 ? -g : g;
    steepest::Gradients<float> grads;
    grads.add(gh.data(), 6, 5);
    grads.add(ge.data(), 5, 4);
    grads.add_vector(gv.data(), 3);
    opt.step(params, grads, s);
    bool finite = true;
    for (const auto* w : {&h, &e, &v})
      for (float x : *w) finite = finite && std::isfinite(x);
    s.for_each_layer([&](const steepest::LayerRecord&, const std::string&, auto&& visit) {
      visit([&](const std::string&, auto& b, steepest::Domain) {
        for (long i = 0; i < b.size(); ++i) finite = finite && std::isfinite(b.data()[i]);
      });
    });
    h = h0, e = e0, v = v0;
    return finite;
  }
};

}  // namespace fuzz_model
