// steepest._core: the elementwise and row / column optimizers by name (AdamW, Lion, MOGA, ...)
#include "core.hpp"

namespace steepest_python {

std::unique_ptr<Core> make_elementwise(const std::string& kind, const st::Hyper& hp, const st::Hyper& ah, const MakeArgs& a) {
  (void)ah;
  if (kind == "sgd") return make_core(st::sgd(hp), a);
  if (kind == "sgd_nesterov") return make_core(st::sgd_nesterov(hp), a);
  if (kind == "adamw") return make_core(st::adamw(hp), a);
  if (kind == "adamw_rescaled") return make_core(st::adamw_rescaled(hp), a);
  if (kind == "sign_descent") return make_core(st::sign_descent(hp), a);
  if (kind == "lion") return make_core(st::lion(hp), a);
  if (kind == "moga_row") return make_core(st::moga_row(hp), a);
  if (kind == "moga_col") return make_core(st::moga_col(hp), a);
  if (kind == "moga_row_momentum") return make_core(st::moga_row_momentum(hp), a);
  if (kind == "cautious_adamw") return make_core(st::cautious_adamw(hp), a);
  return nullptr;
}

}  // namespace steepest_python
