// Writes tests/golden/<optimizer>.bin: golden::for_each's bytes from the tree this is built
// against (tests/test_golden.cpp says which tree wrote the files in the repository, and how they
// compare with the one before it). Built on request: cmake --build build --target golden_writer.
//   golden_writer DIR
#include <cstdio>
#include <fstream>

#include "golden_steps.hpp"

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: %s DIR\n", argv[0]);
    return 64;
  }
  golden::for_each([&](const std::string& name, const std::string& bytes, bool) {
    std::ofstream(std::string(argv[1]) + "/" + name + ".bin", std::ios::binary) << bytes;
  });
  return 0;
}
