// steepest._core: MuonEq, Muon+, Scion and its Muon-chain variants by name, in CPU memory
#include "kinds.hpp"

namespace steepest_python {

template std::unique_ptr<Core> make_scion<st::Host>(const std::string&, const st::Hyper&, const st::Hyper&, const MakeArgs&);

}  // namespace steepest_python
