// Must NOT compile: a run-time geometry handle made from a type that is not a norm policy.
#include <steepest/steepest.hpp>

struct NotANorm {};

#ifdef STEEPEST_CONTROL
using Chosen = steepest::MeanNormalized<steepest::RowNorm<3>>;
#else
using Chosen = NotANorm;
#endif

int main() { return steepest::geometry<Chosen>().is_identity() ? 1 : 0; }
