// tests/muon_engine_check.hpp -- one Muon step sequence run twice, with the default (Eigen, fp32)
// Newton-Schulz and with another engine's geometry, on the same weights and gradients: what the
// oneDNN and OpenBLAS test files compare.
#pragma once

#include <steepest/steepest.hpp>

#include <cmath>
#include <random>
#include <string>
#include <vector>

namespace muon_engine_check {

struct Result {
  std::string geometry;  ///< the name the engine's optimizer gives the hidden layer's geometry
  double moved = 0;      ///< ||W_eigen - W_0||_F after the steps
  double diff = 0;       ///< ||W_engine - W_eigen||_F
  bool bias_equal = false;  ///< the bias (AdamW's route) came out bit for bit the same
};

/// Three Muon steps (lr 0.02) on a 48 x 80 hidden matrix and an 80-entry bias, from the same
/// N(0, 1) gradients, once with st::muon(hp) and once with st::muon<Spectral>(hp).
template <class Spectral>
Result compare_with_eigen_muon() {
  namespace st = steepest;
  const int m = 48, n = 80;
  std::mt19937 rng(11);
  std::normal_distribution<float> nd;
  std::vector<float> w0(m * n), g(m * n), gb(n);
  for (auto& x : g) x = nd(rng);
  for (auto& x : gb) x = nd(rng);
  for (auto& x : w0) x = 0.02f * nd(rng);
  std::vector<float> we = w0, wo = w0, bias_e(n, 0.f), bias_o(n, 0.f);
  auto build = [&](std::vector<float>& w, std::vector<float>& b) {
    st::ParamSet<float> p;
    p.add("w", st::Role::Hidden, w.data(), m, n);
    p.add("b", st::Role::Vector, b.data(), n, 1);
    return p;
  };
  st::ParamSet<float> pe = build(we, bias_e), po = build(wo, bias_o);
  st::Gradients<float> grads;
  grads.add(g.data(), m, n);
  grads.add(gb.data(), n, 1);
  st::Hyper hp;
  hp.lr = 0.02;
  auto oe = st::muon(hp);
  auto oo = st::muon<Spectral>(hp);
  Result r;
  r.geometry = oo.template optimizer<0>().geometry_of(po[0]).name();
  auto se = oe.init(pe);
  auto so = oo.init(po);
  for (int t = 0; t < 3; ++t) {
    if (!oe.step(pe, grads, se) || !oo.step(po, grads, so)) return r;  // moved stays 0: the caller's check fails
  }
  for (std::size_t i = 0; i < we.size(); ++i) {
    r.diff += double(wo[i] - we[i]) * (wo[i] - we[i]);
    r.moved += double(we[i] - w0[i]) * (we[i] - w0[i]);
  }
  r.diff = std::sqrt(r.diff);
  r.moved = std::sqrt(r.moved);
  r.bias_equal = bias_e == bias_o;
  return r;
}

}  // namespace muon_engine_check
