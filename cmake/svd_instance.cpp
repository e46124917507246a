// Eigen's SVD of MatrixXd, compiled once for the project's own targets: the explicit
// instantiation definition that STEEPEST_EXTERN_SVD (polar/exact.hpp, "Build time") refers
// every other translation unit to.
#define STEEPEST_SVD_INSTANCE
#include <steepest/polar/exact.hpp>
