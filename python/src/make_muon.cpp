// steepest._core: Muon, NorMuon, AdaMuon and PolarGrad by name, in CPU memory
#include "kinds.hpp"

namespace steepest_python {

template std::unique_ptr<Core> make_muon<st::Host>(const std::string&, const st::Hyper&, const st::Hyper&, const MakeArgs&);

}  // namespace steepest_python
