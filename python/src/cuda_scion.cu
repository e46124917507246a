// steepest._core: MuonEq, Muon+, Scion and its Muon-chain variants by name, on a GPU
#include "cuda_where.cuh"

namespace steepest_python {

template std::unique_ptr<Core> make_scion<st::cuda::Device>(const std::string&, const st::Hyper&,
                                                                   const st::Hyper&, const MakeArgs&);

}  // namespace steepest_python
