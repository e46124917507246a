// Skipping a test whose requirement this machine lacks. doctest has no run-time skip, so such a
// test case is registered as a CTest test of its own (SKIP_RETURN_CODE 77, selected by name) and
// ends the program with 77 here: CTest then reports it skipped, never passed.
#pragma once

#include <cstdio>
#include <cstdlib>
#include <string>

namespace test_skip {
[[noreturn]] inline void skip_program(const std::string& why) {
  std::printf("skipped: %s\n", why.c_str());
  std::fflush(stdout);
  std::exit(77);
}
}  // namespace test_skip
