// steepest/steepest.hpp -- umbrella header: include this to get everything in the library.
#pragma once

#include "core/config.hpp"
#include "backend/backend.hpp"
#include "norms/traits.hpp"
#include "norms/row_col.hpp"
#include "norms/spectral.hpp"
#include "norms/mean_normalized.hpp"
#include "norms/operator_norm.hpp"
#include "polar/coefficients.hpp"
#include "polar/newton_schulz.hpp"
#include "polar/exact.hpp"
