// steepest._core: MuonEq, Muon+, Scion and its Muon-chain variants by name
#include "core.hpp"

namespace steepest_python {

std::unique_ptr<Core> make_scion(const std::string& kind, const st::Hyper& hp, const st::Hyper& ah, const MakeArgs& a) {
  if (kind == "muon_eq") return make_core(st::muon_eq(hp, ah, hp.shape_factor), a);
  if (kind == "muon_plus") return make_core(st::muon_plus(hp, ah, hp.shape_factor), a);
  if (kind == "muon_scion") return make_core(st::muon_scion(hp, hp.shape_factor), a);
  if (kind == "scion") return make_core(st::scion(hp), a);
  if (kind == "scion_unconstrained") return make_core(st::scion_unconstrained(hp), a);
  return nullptr;
}

}  // namespace steepest_python
