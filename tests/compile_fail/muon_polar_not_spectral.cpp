// Must NOT compile: Muon whose polar method is not a spectral policy.
#include <steepest/steepest.hpp>

#ifdef STEEPEST_CONTROL
using Polar = steepest::SpectralExact;
#else
using Polar = steepest::RowNormalize;
#endif

int main() { return steepest::muon<Polar>().name().empty() ? 1 : 0; }
