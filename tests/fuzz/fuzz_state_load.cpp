// libFuzzer target for st::load: any bytes as a state file, into a routed Muon state (momentum
// and Adam buffers) and a MOGA-row state. Built by -DSTEEPEST_BUILD_FUZZ=ON with clang
// (scripts/fuzz.sh). STEEPEST_STATE_IO_FUZZING lets mutated files past the CRC-32 / FNV-1a
// comparison (a checksum-tolerant build), so the mutator reaches every check behind it.
// Invariants checked on every input (abort() = a finding):
//   - load throws only state_file_error, and then leaves the state bit for bit as it was;
//   - an accepted file leaves a step in [0, 2^53] and every value inside its buffer's domain;
//   - the accepted state then takes one step, with the largest gradient entries a step accepts
//     (2^40 - 2^16, signs alternating), and the parameters and the state stay finite.
// The seeds (fuzz_seeds.cpp) include files without the crc32 field, which the format allows.
#define STEEPEST_STATE_IO_FUZZING 1
#include <steepest/steepest.hpp>

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <unistd.h>
#include <vector>

#include "fuzz_model.hpp"

namespace st = steepest;

namespace {

template <class State>
std::vector<float> values(State& s) {
  std::vector<float> all;
  s.for_each_layer([&](const st::LayerRecord&, const std::string&, auto&& visit) {
    visit([&](const std::string&, auto& b, st::Domain) { all.insert(all.end(), b.data(), b.data() + b.size()); });
  });
  return all;
}

template <class State>
void check_domains(State& s) {
  if (s.step < 0 || s.step > st::kMaxStateStep) std::abort();
  s.for_each_layer([&](const st::LayerRecord&, const std::string&, auto&& visit) {
    visit([&](const std::string&, auto& b, st::Domain d) {
      for (long i = 0; i < b.size(); ++i) {
        const float x = b.data()[i];
        if (d != st::Domain::Any && !std::isfinite(x)) std::abort();
        if (d == st::Domain::NonNegative && x < 0) std::abort();
      }
    });
  });
}

template <class Opt>
void try_load(const Opt& opt, fuzz_model::Model& model, const std::string& path) {
  auto state = model.stepped_state(opt);
  const auto before = values(state);
  const long long step = state.step;
  try {
    st::load(opt, state, path);
  } catch (const st::state_file_error&) {
    if (values(state) != before || state.step != step) std::abort();  // a refusal changed the state
    return;
  }
  check_domains(state);
  if (!model.edge_step_is_finite(opt, state)) std::abort();  // an accepted state broke the next step
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  static fuzz_model::Model model;
  static const std::string path = "/tmp/steepest_fuzz_" + std::to_string(::getpid()) + ".bin";
  if (std::FILE* f = std::fopen(path.c_str(), "wb")) {
    if (size) std::fwrite(data, 1, size, f);
    std::fclose(f);
  } else {
    return 0;
  }
  try_load(fuzz_model::muon(), model, path);
  try_load(fuzz_model::moga(), model, path);
  return 0;
}
