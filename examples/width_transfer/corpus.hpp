// corpus.hpp -- a byte-level text corpus with a held-out split and a fixed batch order.
//
// The default corpus is the English text of Debian's `fortunes` package
// (/usr/share/games/fortunes, quotations and literature, ~2 MB), which scripts/deps.sh installs;
// without it, the license texts every Debian system has (/usr/share/common-licenses). Any files
// can be passed instead.
//
// Split: the text is cut into 4 KiB blocks and every 10th block is held out for validation, so
// both splits sample every source file. The vocabulary is the set of bytes that occur.
#pragma once
#include <algorithm>
#include <array>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

namespace width_transfer {

struct Corpus {
  std::vector<std::uint8_t> train, val;  // token ids (indices into `bytes`)
  std::vector<unsigned char> bytes;      // id -> byte
  std::vector<std::string> files;
  int vocab() const { return int(bytes.size()); }
};

/// Files of the default corpus: the regular files of the first directory that exists.
inline std::vector<std::string> default_corpus_files() {
  namespace fs = std::filesystem;
  for (const char* dir : {"/usr/share/games/fortunes", "/usr/share/common-licenses"}) {
    std::vector<std::string> out;
    std::error_code ec;
    if (!fs::is_directory(dir, ec)) continue;
    for (const auto& e : fs::directory_iterator(dir, ec)) {
      // Skip symlinks (aliases of other files), fortune's .dat index files and .u8 copies.
      if (e.is_symlink() || !e.is_regular_file()) continue;
      const auto ext = e.path().extension().string();
      if (ext == ".dat" || ext == ".u8") continue;
      out.push_back(e.path().string());
    }
    std::sort(out.begin(), out.end());
    if (!out.empty()) return out;
  }
  throw std::runtime_error(
      "no default corpus: install Debian's `fortunes` package (scripts/deps.sh does) or pass --corpus FILE");
}

inline Corpus load_corpus(const std::vector<std::string>& files, std::size_t block = 4096) {
  std::vector<unsigned char> text;
  for (const auto& f : files) {
    std::ifstream in(f, std::ios::binary);
    if (!in) throw std::runtime_error("cannot read corpus file '" + f + "'");
    text.insert(text.end(), std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
  }
  if (text.size() < 20 * block)
    throw std::runtime_error("corpus too small: " + std::to_string(text.size()) + " bytes (need at least " +
                             std::to_string(20 * block) + ")");
  Corpus c;
  c.files = files;
  std::array<int, 256> id{};
  id.fill(-1);
  for (unsigned char ch : text) id[ch] = 0;
  for (int b = 0; b < 256; ++b)
    if (id[std::size_t(b)] == 0) {
      id[std::size_t(b)] = int(c.bytes.size());
      c.bytes.push_back(static_cast<unsigned char>(b));
    }
  for (std::size_t i = 0; i < text.size(); ++i) {
    auto& dst = (i / block) % 10 == 9 ? c.val : c.train;
    dst.push_back(static_cast<std::uint8_t>(id[text[i]]));
  }
  return c;
}

/// Contexts and targets drawn from a split. The same seed gives the same batches, so every run
/// of a sweep sees the same data in the same order.
class BatchSampler {
 public:
  BatchSampler(const std::vector<std::uint8_t>& data, int context, unsigned seed)
      : data_(&data), k_(context), rng_(seed) {}

  void next(int batch, std::vector<std::uint8_t>& ctx, std::vector<std::uint8_t>& tgt) {
    std::uniform_int_distribution<std::size_t> pos(std::size_t(k_), data_->size() - 1);
    fill(batch, ctx, tgt, [&](int) { return pos(rng_); });
  }

  /// The evaluation set: n positions evenly spaced over the split, in batches of `batch`.
  void fixed(int first, int batch, int n, std::vector<std::uint8_t>& ctx, std::vector<std::uint8_t>& tgt) const {
    const double stride = double(data_->size() - std::size_t(k_) - 1) / double(n);
    fill(batch, ctx, tgt, [&](int b) { return std::size_t(k_) + std::size_t(stride * double(first + b)); });
  }

 private:
  template <class Pos>
  void fill(int batch, std::vector<std::uint8_t>& ctx, std::vector<std::uint8_t>& tgt, Pos&& pos) const {
    ctx.resize(std::size_t(batch) * std::size_t(k_));
    tgt.resize(std::size_t(batch));
    for (int b = 0; b < batch; ++b) {
      const std::size_t p = pos(b);
      tgt[std::size_t(b)] = (*data_)[p];
      for (int j = 0; j < k_; ++j) ctx[std::size_t(b * k_ + j)] = (*data_)[p - std::size_t(k_) + std::size_t(j)];
    }
  }

  const std::vector<std::uint8_t>* data_;
  int k_;
  std::mt19937_64 rng_;
};

}  // namespace width_transfer
