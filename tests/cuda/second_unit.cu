// A second translation unit of the CUDA tests that includes the CUDA headers too: the library
// is header-only, so a kernel or function its headers define outside a template or `inline`
// would be defined in both units, and this test program would not link.
#include <steepest/steepest.hpp>
#include <steepest/cuda/cuda.cuh>

#include <string>

std::string second_unit_optimizer_name() {
  const steepest::Hyper hp;
  return steepest::muon(hp, hp).name();
}
