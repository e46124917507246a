// steepest._core: Muon, NorMuon, AdaMuon and PolarGrad by name, on a GPU
#include "cuda_where.cuh"

namespace steepest_python {

template std::unique_ptr<Core> make_muon<st::cuda::Device>(const std::string&, const st::Hyper&,
                                                                   const st::Hyper&, const MakeArgs&);

}  // namespace steepest_python
