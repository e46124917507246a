// Compile cost: MOGA-row on a 4-layer model, one step (scripts/compile_cost.sh).
#include "step.hpp"

int main() { return step_once([] { return st::moga_row(st::Hyper{}); }); }
