// steepest._core: the named optimizers by name, one function per family, for parameters in
// memory space Space. Each family is instantiated in a translation unit of its own, for CPU
// memory (make_*.cpp) and, in a build with CUDA, for a GPU's (cuda_*.cu), so a parallel build
// compiles them at once.
#pragma once

#include "core.hpp"

namespace steepest_python {

/// A Core stepping `opt` over the parameters of `a`.
template <class Space, class Opt>
std::unique_ptr<Core> make_core(Opt opt, const MakeArgs& a) {
  return std::make_unique<CoreOf<Opt, Space>>(std::move(opt), a);
}

/// The elementwise and row / column optimizers by name (AdamW, Lion, MOGA, ...)
template <class Space>
std::unique_ptr<Core> make_elementwise(const std::string& kind, const st::Hyper& hp, const st::Hyper& ah, const MakeArgs& a) {
  (void)ah;
  if (kind == "sgd") return make_core<Space>(st::sgd(hp), a);
  if (kind == "sgd_nesterov") return make_core<Space>(st::sgd_nesterov(hp), a);
  if (kind == "adamw") return make_core<Space>(st::adamw(hp), a);
  if (kind == "adamw_rescaled") return make_core<Space>(st::adamw_rescaled(hp), a);
  if (kind == "sign_descent") return make_core<Space>(st::sign_descent(hp), a);
  if (kind == "lion") return make_core<Space>(st::lion(hp), a);
  if (kind == "moga_row") return make_core<Space>(st::moga_row(hp), a);
  if (kind == "moga_col") return make_core<Space>(st::moga_col(hp), a);
  if (kind == "moga_row_momentum") return make_core<Space>(st::moga_row_momentum(hp), a);
  if (kind == "cautious_adamw") return make_core<Space>(st::cautious_adamw(hp), a);
  return nullptr;
}

/// Muon, NorMuon, AdaMuon and PolarGrad by name.
template <class Space>
std::unique_ptr<Core> make_muon(const std::string& kind, const st::Hyper& hp, const st::Hyper& ah, const MakeArgs& a) {
  if (kind == "muon") return make_core<Space>(st::muon(hp, ah, hp.shape_factor), a);
  if (kind == "normuon") return make_core<Space>(st::normuon(hp, ah), a);
  if (kind == "adamuon") return make_core<Space>(st::adamuon(hp, ah), a);
  if (kind == "polargrad") return make_core<Space>(st::polargrad(hp, ah), a);
  return nullptr;
}

/// MuonEq, Muon+, Scion and its Muon-chain variants by name
template <class Space>
std::unique_ptr<Core> make_scion(const std::string& kind, const st::Hyper& hp, const st::Hyper& ah, const MakeArgs& a) {
  if (kind == "muon_eq") return make_core<Space>(st::muon_eq(hp, ah, hp.shape_factor), a);
  if (kind == "muon_plus") return make_core<Space>(st::muon_plus(hp, ah, hp.shape_factor), a);
  if (kind == "muon_scion") return make_core<Space>(st::muon_scion(hp, hp.shape_factor), a);
  if (kind == "scion") return make_core<Space>(st::scion(hp), a);
  if (kind == "scion_unconstrained") return make_core<Space>(st::scion_unconstrained(hp), a);
  return nullptr;
}

}  // namespace steepest_python
