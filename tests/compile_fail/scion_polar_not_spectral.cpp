// Must NOT compile: Scion whose hidden polar method is not a spectral policy.
#include <steepest/steepest.hpp>

#ifdef STEEPEST_CONTROL
using Polar = steepest::SpectralPolarExpress;
#else
using Polar = steepest::ColNormalize;
#endif

int main() { return steepest::scion<Polar>().name().empty() ? 1 : 0; }
