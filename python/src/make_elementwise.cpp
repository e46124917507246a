// steepest._core: the elementwise and row / column optimizers by name (AdamW, Lion, MOGA, ...), in CPU memory
#include "kinds.hpp"

namespace steepest_python {

template std::unique_ptr<Core> make_elementwise<st::Host>(const std::string&, const st::Hyper&, const st::Hyper&, const MakeArgs&);

}  // namespace steepest_python
