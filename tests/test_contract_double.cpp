// The norm-policy contract (tests/norm_contract.hpp) for every policy in double.
// A new geometry joins the suite by adding one line to POLICY_CASES.
#include "norm_contract.hpp"

TEST_CASE_TEMPLATE_DEFINE("norm policy contract (double)", C, norm_contract_double) {
  check_norm_contract<C>();
}
TEST_CASE_TEMPLATE_INVOKE(norm_contract_double, POLICY_CASES(double));
