// steepest._core: the elementwise and row / column optimizers by name (AdamW, Lion, MOGA, ...), on a GPU
#include "cuda_where.cuh"

namespace steepest_python {

template std::unique_ptr<Core> make_elementwise<st::cuda::Device>(const std::string&, const st::Hyper&,
                                                                   const st::Hyper&, const MakeArgs&);

}  // namespace steepest_python
