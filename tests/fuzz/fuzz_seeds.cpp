// Writes the state-loader fuzzer's seed corpus: real state files of the fuzzer's model, in
// version 2 (st::save) and version 1 (tests/state_v1_writer.hpp), for both of its optimizers.
//   fuzz_seeds DIR
#include <cstdio>
#include <fstream>
#include <string>

#include "../state_v1_writer.hpp"
#include "fuzz_model.hpp"

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: %s DIR\n", argv[0]);
    return 64;
  }
  const std::string dir = argv[1];
  fuzz_model::Model model;
  auto write_both = [&](const char* name, const auto& opt) {
    auto s = model.stepped_state(opt);
    steepest::save(opt, s, dir + "/" + name + ".safetensors");
    std::ofstream(dir + "/" + name + ".v1", std::ios::binary) << optim_test::v1_file(opt.name(), s);
  };
  write_both("muon", fuzz_model::muon());
  write_both("moga_row", fuzz_model::moga());
  return 0;
}
