// Compile cost: Muon with AdamW on a 4-layer model, one step (scripts/compile_cost.sh).
#include "step.hpp"

int main() { return step_once([] { return st::muon(st::Hyper{}, st::Hyper{}); }); }
