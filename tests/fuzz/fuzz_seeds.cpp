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
    // The same file without its crc32 field (blanked: the header keeps its length), as another
    // tool may write it: the loader then takes the path that checks no CRC.
    std::string bytes = steepest::save_bytes(opt, s);
    const auto at = bytes.find(",\"crc32\":\"");
    if (at != std::string::npos) bytes.replace(at, 19, std::string(19, ' '));
    std::ofstream(dir + "/" + name + ".nocrc.safetensors", std::ios::binary) << bytes;
  };
  write_both("muon", fuzz_model::muon());
  write_both("moga_row", fuzz_model::moga());
  return 0;
}
