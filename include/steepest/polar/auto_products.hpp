// steepest/polar/auto_products.hpp -- the default Newton-Schulz products engine: the planner
// (polar/planner.hpp) over every engine this build has.
//
//   st::muon(hp)                      // NewtonSchulz<> uses AutoProducts: nothing to write
//   target_link_libraries(app steepest::onednn)   // CMake: bf16 products become a candidate too
//
// The candidates, in the planner's order (the first is its accuracy reference and what layers
// under 2^16 entries use, so small layers give the same bits on every machine):
//   EigenProducts      fp32 / fp64 products in the scalar type (always)
//   GramProducts<3>    the Gram form, restarted before step 3 (always; it pays from aspect ~2)
//   OneDnnBf16         bf16 products, when STEEPEST_ONEDNN is defined (steepest::onednn does)
//   OpenBlas<>         fp32 / fp64 with SYRK, when STEEPEST_OPENBLAS is defined (steepest::openblas)
// float layers of 2^16 entries or more are measured once per shape and thread count on their
// first step (double ones always take EigenProducts); the fastest engine within 3e-2 of EigenProducts' output is kept. So on a larger layer the
// bits depend on which engine this machine ran fastest: force one (`polar_planner().force("eigen")`),
// plan by flop counts (`set_mode(PlanMode::Estimate)`) or keep a plan file (STEEPEST_POLAR_PLAN)
// for runs that must repeat bit for bit.
//
// AutoProducts' name is empty, as EigenProducts' is: the engine changes rounding, not the
// polynomial, so it is not part of the geometry's name that checkpoints record.
// The engine list depends on the two macros; the inline namespace carries them into the type's
// mangled name, so translation units built with different lists cannot be mixed up at link time.
#pragma once

#include <string>
#include <tuple>
#include <type_traits>

#include "gram_newton_schulz.hpp"
#include "planner.hpp"
#if defined(STEEPEST_ONEDNN)
#include "onednn.hpp"
#endif
#if defined(STEEPEST_OPENBLAS)
#include "openblas.hpp"
#endif

namespace steepest {
inline namespace STEEPEST_AUTO_PRODUCTS_NAMESPACE {

/// The default products engine of NewtonSchulz (see the file comment).
struct AutoProducts : Planned<EigenProducts, GramProducts<>
#if defined(STEEPEST_ONEDNN)
                              ,
                              OneDnnBf16
#endif
#if defined(STEEPEST_OPENBLAS)
                              ,
                              OpenBlas<>
#endif
                              > {
  /// Empty: the geometry is named for its schedule and steps only, as with EigenProducts.
  static std::string name() { return ""; }

  /// float: the planned engine. double: EigenProducts, unplanned (double is for reference and
  /// accuracy work, which wants the double products; it also keeps the other engines' double
  /// versions out of every object file that steps Muon).
  template <class Schedule, class D, class O>
  static void run(const Eigen::MatrixBase<D>& G, const Eigen::MatrixBase<O>& out, int steps,
                  Workspace<typename D::Scalar>& ws) {
    if constexpr (std::is_same_v<typename D::Scalar, float>)
      Planned::template run<Schedule>(G, out, steps, ws);
    else
      EigenProducts::run<Schedule>(G, out, steps, std::get<0>(ws.engines));
  }
};

}  // namespace STEEPEST_AUTO_PRODUCTS_NAMESPACE
}  // namespace steepest
