// Must NOT compile: MeanNormalized<int> is not built on a norm policy.
#include <steepest/steepest.hpp>

#ifdef STEEPEST_CONTROL
using Norm = steepest::MeanNormalized<steepest::RowNormalize>;
#else
using Norm = steepest::MeanNormalized<int>;
#endif

int main() { return Norm::scale(2, 2) > 0 ? 0 : 1; }
