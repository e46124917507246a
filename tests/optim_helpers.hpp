// tests/optim_helpers.hpp -- inputs shared by the optimizer test files: hyper-parameters in one
// call and a deterministic gradient sequence.
#pragma once

#include <steepest/steepest.hpp>

#include <cmath>
#include <vector>

namespace optim_test {

inline steepest::Hyper hyper(double lr, double b1, double b2, double wd) {
  steepest::Hyper hp;
  hp.lr = lr;
  hp.beta1 = b1;
  hp.beta2 = b2;
  hp.weight_decay = wd;
  return hp;
}

/// Gradient entries for step t: full rank, different at every step and for every salt.
inline std::vector<double> grad_at(std::size_t size, int t, double salt) {
  std::vector<double> g(size);
  for (std::size_t i = 0; i < size; ++i) g[i] = std::sin(0.37 * double(i * i) + 1.3 * t + salt) + 0.1 * t;
  return g;
}

}  // namespace optim_test
