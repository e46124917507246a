// mlp_lm.hpp -- a character-level MLP language model with a hand-written backward pass.
//
// Predicts the next byte from the previous k bytes:
//     x      = one-hot of the k context bytes, concatenated           (k*V inputs, k ones)
//     a_0    = relu(E x + b_0)                E: w x (k V)   (embedding: a sum of k columns)
//     a_l    = relu(W_l a_{l-1} + b_l)        W_l: w x w     l = 1..depth
//     logits = H a_depth + c                  H: V x w       (output head)
//     loss   = mean over the batch of -log softmax(logits)[target]
// Every matrix is stored row-major as out x in (y = W x), the layout steepest::ParamSet maps.
// The width w is the only dimension that changes in the width-transfer experiment; k and V are
// fixed by the data.
//
// Gradients are exact (tests/test_width_transfer_model.cpp checks them against central finite
// differences in double precision).
#pragma once
#include <steepest/steepest.hpp>

#include <cmath>
#include <cstdint>
#include <random>
#include <string>
#include <vector>

namespace width_transfer {

using steepest::Index;

template <class S>
using RowMat = Eigen::Matrix<S, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
template <class S>
using MatMap = Eigen::Map<RowMat<S>>;
template <class S>
using CMatMap = Eigen::Map<const RowMat<S>>;

struct ModelShape {
  int vocab = 0;    // V
  int context = 0;  // k
  int width = 0;    // w
  int depth = 2;    // number of w x w hidden layers
};

/// One parameter tensor (or its gradient): a named out x in matrix with a role.
template <class S>
struct Tensor {
  std::string name;
  steepest::Role role;
  Index rows, cols;
  std::vector<S> data;
  MatMap<S> mat() { return {data.data(), rows, cols}; }
  CMatMap<S> mat() const { return {data.data(), rows, cols}; }
};

template <class S>
class MlpLM {
 public:
  explicit MlpLM(ModelShape s) : shape_(s) {
    const Index w = s.width, V = s.vocab, n_in = Index(s.context) * V;
    add("embedding", steepest::Role::Embedding, w, n_in);
    add("embedding.bias", steepest::Role::Vector, w, 1);
    for (int l = 1; l <= s.depth; ++l) {
      add("hidden" + std::to_string(l), steepest::Role::Hidden, w, w);
      add("hidden" + std::to_string(l) + ".bias", steepest::Role::Vector, w, 1);
    }
    add("head", steepest::Role::Output, V, w);
    add("head.bias", steepest::Role::Vector, V, 1);
    grads_ = params_;
  }

  const ModelShape& shape() const { return shape_; }
  std::vector<Tensor<S>>& params() { return params_; }
  const std::vector<Tensor<S>>& params() const { return params_; }
  const std::vector<Tensor<S>>& grads() const { return grads_; }
  Tensor<S>& head() { return params_[params_.size() - 2]; }

  /// Standard-parametrization init: every matrix N(0, 1/fan_in), biases 0.
  void init_standard(unsigned seed) {
    std::mt19937 rng(seed);
    std::normal_distribution<double> nd;
    for (auto& t : params_) {
      const double sd = t.role == steepest::Role::Vector ? 0.0 : 1.0 / std::sqrt(double(t.cols));
      for (auto& v : t.data) v = static_cast<S>(sd * nd(rng));
    }
  }

  /// Registers parameters and gradients with the optimizer's containers (same order).
  void bind(steepest::ParamSet<S>& ps, steepest::Gradients<S>& gs) {
    for (std::size_t i = 0; i < params_.size(); ++i) {
      auto& p = params_[i];
      ps.add(p.name, p.role, p.data.data(), p.rows, p.cols);
      gs.add(grads_[i].data.data(), p.rows, p.cols);
    }
  }

  /// Mean cross-entropy (nats) of a batch. ctx: B x k byte ids (row-major), tgt: B ids.
  /// With backward = true the gradients of that loss are written to grads().
  double forward_backward(const std::vector<std::uint8_t>& ctx, const std::vector<std::uint8_t>& tgt,
                          bool backward) {
    const Index B = Index(tgt.size()), w = shape_.width, V = shape_.vocab, k = shape_.context;
    const int L = shape_.depth;
    acts_.resize(std::size_t(L) + 1);
    // Embedding: the product with a k-hot vector is a sum of k columns of E. Gathering the
    // columns of a row-major E is strided, so gather rows of E^T (one copy per call).
    const auto& E = params_[0];
    ET_ = E.mat().transpose();
    auto& a0 = acts_[0];
    a0.resize(B, w);
    for (Index b = 0; b < B; ++b) {
      auto row = a0.row(b);
      row = CMatMap<S>(params_[1].data.data(), 1, w);
      for (Index j = 0; j < k; ++j) row += ET_.row(j * V + ctx[std::size_t(b * k + j)]);
    }
    a0 = a0.cwiseMax(S(0));
    for (int l = 1; l <= L; ++l) {
      const auto& W = params_[std::size_t(2 * l)];
      const auto& bias = params_[std::size_t(2 * l + 1)];
      auto& a = acts_[std::size_t(l)];
      a.noalias() = acts_[std::size_t(l - 1)] * W.mat().transpose();
      a.rowwise() += CMatMap<S>(bias.data.data(), 1, w).row(0);
      a = a.cwiseMax(S(0));
    }
    const auto& H = head();
    const auto& c = params_.back();
    logits_.noalias() = acts_[std::size_t(L)] * H.mat().transpose();
    logits_.rowwise() += CMatMap<S>(c.data.data(), 1, V).row(0);
    // Softmax cross-entropy, max-shifted; probabilities are kept in logits_ for the backward.
    double loss = 0;
    for (Index b = 0; b < B; ++b) {
      auto z = logits_.row(b);
      const S mx = z.maxCoeff();
      z.array() = (z.array() - mx).exp();
      const S sum = z.sum();
      z /= sum;
      loss -= std::log(std::max(double(z(tgt[std::size_t(b)])), 1e-300));
    }
    loss /= double(B);
    if (!backward) return loss;

    // dlogits = (p - onehot) / B
    for (Index b = 0; b < B; ++b) logits_(b, tgt[std::size_t(b)]) -= S(1);
    logits_ /= S(B);
    grads_.back().mat() = logits_.colwise().sum().transpose();
    grads_[grads_.size() - 2].mat().noalias() = logits_.transpose() * acts_[std::size_t(L)];
    delta_.noalias() = logits_ * H.mat();  // dL/da_L
    for (int l = L; l >= 0; --l) {
      // through the ReLU: a = relu(z) so dz = da where a > 0
      delta_ = (acts_[std::size_t(l)].array() > S(0)).select(delta_, S(0));
      grads_[std::size_t(2 * l + 1)].mat() = delta_.colwise().sum().transpose();
      if (l == 0) break;
      grads_[std::size_t(2 * l)].mat().noalias() = delta_.transpose() * acts_[std::size_t(l - 1)];
      tmp_.noalias() = delta_ * params_[std::size_t(2 * l)].mat();
      delta_.swap(tmp_);
    }
    // dE[:, j V + x_bj] += dz_0[b, :]: scatter into E^T's rows, then transpose once.
    ET_.setZero();
    for (Index b = 0; b < B; ++b)
      for (Index j = 0; j < k; ++j) ET_.row(j * V + ctx[std::size_t(b * k + j)]) += delta_.row(b);
    grads_[0].mat() = ET_.transpose();
    return loss;
  }

 private:
  void add(std::string name, steepest::Role role, Index m, Index n) {
    params_.push_back(Tensor<S>{std::move(name), role, m, n, std::vector<S>(std::size_t(m * n), S(0))});
  }

  ModelShape shape_;
  std::vector<Tensor<S>> params_, grads_;
  std::vector<RowMat<S>> acts_;
  RowMat<S> ET_, logits_, delta_, tmp_;
};

}  // namespace width_transfer
