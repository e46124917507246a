// steepest._core: Muon, NorMuon, AdaMuon and PolarGrad by name
#include "core.hpp"

namespace steepest_python {

std::unique_ptr<Core> make_muon(const std::string& kind, const st::Hyper& hp, const st::Hyper& ah, const MakeArgs& a) {
  if (kind == "muon") return make_core(st::muon(hp, ah, hp.shape_factor), a);
  if (kind == "normuon") return make_core(st::normuon(hp, ah), a);
  if (kind == "adamuon") return make_core(st::adamuon(hp, ah), a);
  if (kind == "polargrad") return make_core(st::polargrad(hp, ah), a);
  return nullptr;
}

}  // namespace steepest_python
