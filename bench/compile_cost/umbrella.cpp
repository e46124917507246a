// Compile cost: the umbrella header alone (scripts/compile_cost.sh).
#include <steepest/steepest.hpp>

int main() { return 0; }
