// steepest/io/safetensors.hpp -- the safetensors container, as optimizer checkpoints use it.
//
//   u64 N (little-endian) | N bytes of JSON header, space-padded so 8 + N is a multiple of 8 |
//   the tensors' raw little-endian bytes, back to back.
// The header maps each tensor name to {"dtype": "F32"|"F64"|"BF16", "shape": [rows, cols],
// "data_offsets": [begin, end]} (offsets into the tensor bytes) and "__metadata__" to an object of
// strings. This file is the framing: assembling and padding the header, the length prefix, the
// tensors' entries and the rule that they tile the bytes exactly, and a CRC-32 of the whole file
// kept as the metadata string "crc32" (its own 8 hex digits counted as '0'). What the tensor names
// and the metadata mean is the checkpoint schema's (optim/state_io.hpp).
//
// Failures are reported through the caller's `fail(why)`, which must throw: the schema prefixes
// the file's name and its own context.
#pragma once

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <string>
#include <type_traits>
#include <vector>

#include <Eigen/Core>

#include "../core/config.hpp"
#include "crc32.hpp"
#include "integer.hpp"
#include "json.hpp"

namespace steepest {
namespace io {
namespace safetensors {

/// The largest header read (safetensors' own limit).
inline constexpr std::uint64_t kMaxHeaderBytes = 100'000'000;

inline bool little_endian() {
  const std::uint16_t one = 1;
  unsigned char b;
  std::memcpy(&b, &one, 1);
  return b == 1;
}

/// The dtype name of an element type.
template <class E>
const char* dtype_name() {
  static_assert(std::is_same_v<E, float> || std::is_same_v<E, double> || std::is_same_v<E, Eigen::bfloat16>,
                "steepest::save/load: state buffers must hold float, double or Eigen::bfloat16");
  if constexpr (std::is_same_v<E, Eigen::bfloat16>) return "BF16";
  else return std::is_same_v<E, float> ? "F32" : "F64";
}

/// One tensor of a file: name, dtype, shape and byte count, in the order the bytes follow.
struct Entry {
  /// The tensor's key.
  std::string name;
  /// Its safetensors dtype ("F32", "BF16", ...).
  const char* dtype;
  std::uint64_t rows;  ///< Shape and size in bytes.
  std::uint64_t cols;  ///< Shape and size in bytes.
  std::uint64_t bytes;  ///< Shape and size in bytes.
};

/// A header to write: its text (padded) and where the 8 digits of its "crc32" field start.
struct Header {
  /// The JSON header.
  std::string text;
  /// Where the CRC's digits start in text.
  std::size_t crc_at;
};

/// The header of a file holding `tensors` back to back in this order, with `metadata` (the
/// members of "__metadata__" as JSON text, `"key":"value",...`, without braces) followed by a
/// "crc32" member of 8 '0' digits for write_crc to patch.
inline Header make_header(const std::string& metadata, const std::vector<Entry>& tensors) {
  Header h;
  h.text = "{\"__metadata__\":{" + metadata + (metadata.empty() ? "" : ",") + "\"crc32\":\"";
  h.crc_at = h.text.size();
  h.text += "00000000\"}";
  std::uint64_t offset = 0;
  for (const Entry& t : tensors) {
    h.text += "," + json::quote(t.name) + ":{\"dtype\":\"" + t.dtype + "\",\"shape\":[" + std::to_string(t.rows) + "," +
              std::to_string(t.cols) + "],\"data_offsets\":[" + std::to_string(offset) + "," +
              std::to_string(offset + t.bytes) + "]}";
    offset += t.bytes;
  }
  h.text += "}";
  h.text.append((8 - (8 + h.text.size()) % 8) % 8, ' ');  // tensors start 8-byte aligned
  return h;
}

/// Writes a file to `out` (io::DurableWriter or io::MemoryWriter): the length prefix and the
/// header at construction, then the tensor bytes in header order (write), then the CRC (finish).
template <class Sink>
class Writer {
 public:
  /// Writes `header` to `out`; the tensors' bytes follow through write().
  Writer(Sink& out, Header header) : out_(out), header_(std::move(header)) {
    const std::uint64_t n = header_.text.size();
    unsigned char len[8];
    for (int i = 0; i < 8; ++i) len[i] = static_cast<unsigned char>(n >> (8 * i));
    write(len, 8);
    write(header_.text.data(), header_.text.size());
  }
  /// Appends n bytes of tensor data.
  void write(const void* data, std::size_t n) {
    out_.write(data, n);
    crc_.update(data, n);
  }
  /// Patches the header's crc32 digits with the CRC of everything written.
  void finish() {
    char hex[9];
    std::snprintf(hex, sizeof hex, "%08x", static_cast<unsigned>(crc_.value()));
    out_.write_at(8 + header_.crc_at, hex, 8);
  }

 private:
  Sink& out_;
  Header header_;
  Crc32 crc_;
};

/// A header as read: its text, its parsed JSON (an object) and its "__metadata__" object.
struct ReadHeader {
  /// The header's JSON text.
  std::string text;
  /// It, parsed.
  json::Value root;
  /// Its __metadata__ object (null when absent).
  const json::Value* metadata = nullptr;
};

/// Reads the header of a file of `size` bytes whose first 8 bytes (the length) are `first`,
/// parsing it within `limits` (io/json.hpp). Refuses a length that does not fit the file or
/// exceeds kMaxHeaderBytes, invalid JSON, and a header without an object "__metadata__".
template <class Source, class Fail>
ReadHeader read_header(Source& f, const unsigned char (&first)[8], const json::Limits& limits, Fail&& fail) {
  std::uint64_t n = 0;
  for (int i = 0; i < 8; ++i) n |= std::uint64_t(first[i]) << (8 * i);
  if (n < 2 || n > kMaxHeaderBytes || n > f.size() - 8)
    fail("not a steepest state file (header length " + std::to_string(n) + " in a file of " +
         std::to_string(f.size()) + " bytes)");
  ReadHeader h;
  h.text.assign(n, '\0');
  f.read(h.text.data(), n);
  try {
    h.root = json::parse(h.text, limits);
  } catch (const json::parse_error& e) {
    fail(std::string("not a steepest state file (header: ") + e.what() + ")");
  }
  if (!h.root.is(json::Value::Type::Object)) fail("not a steepest state file (header is not a JSON object)");
  h.metadata = h.root.find("__metadata__");
  if (!h.metadata || !h.metadata->is(json::Value::Type::Object)) fail("not a steepest state file (no __metadata__)");
  return h;
}

/// The offset into the bytes after the header of the tensor whose header entry is `e`, when it has
/// `want`'s dtype, shape and byte count; refuses any difference, naming the tensor.
template <class Fail>
std::uint64_t entry_offset(const json::Value& e, const Entry& want, Fail&& fail) {
  using json::Value;
  const std::string where = "tensor '" + want.name + "'";
  if (!e.is(Value::Type::Object)) fail(where + " is not an object");
  const auto member = [&](const char* key, Value::Type type) -> const Value& {
    const Value* v = e.find(key);
    if (!v || !v->is(type)) fail(where + " has no valid \"" + key + "\"");
    return *v;
  };
  if (member("dtype", Value::Type::String).text != want.dtype) fail(where + " is not " + want.dtype);
  const Value& shape = member("shape", Value::Type::Array);
  std::uint64_t r = 0, c = 0;
  if (shape.items.size() != 2 || !shape.items[0].to_u64(r) || !shape.items[1].to_u64(c) || r != want.rows ||
      c != want.cols)
    fail(where + ": shape differs from the state's " + shape_string(Index(want.rows), Index(want.cols)));
  const Value& off = member("data_offsets", Value::Type::Array);
  std::uint64_t b = 0, end = 0;
  if (off.items.size() != 2 || !off.items[0].to_u64(b) || !off.items[1].to_u64(end) || end < b || end - b != want.bytes)
    fail(where + ": data_offsets do not describe its " + std::to_string(want.bytes) + " bytes");
  return b;
}

/// The order of tensors (offsets and byte counts) in the file, checking that together they tile
/// the `payload` bytes after the header exactly (no overlap, no gap: safetensors' rule, which
/// fixes the file's size; `file_size` and `header_bytes` for the message).
template <class Fail>
std::vector<std::size_t> tiling_order(const std::vector<std::uint64_t>& offsets, const std::vector<std::uint64_t>& bytes,
                                      std::uint64_t file_size, std::uint64_t header_bytes, Fail&& fail) {
  std::vector<std::size_t> order(offsets.size());
  for (std::size_t i = 0; i < order.size(); ++i) order[i] = i;
  std::sort(order.begin(), order.end(), [&](std::size_t a, std::size_t b) { return offsets[a] < offsets[b]; });
  std::uint64_t at = 0;
  for (std::size_t i : order) {
    if (offsets[i] != at) fail("tensors overlap or leave gaps (at byte " + std::to_string(at) + ")");
    at += bytes[i];
  }
  if (at != file_size - 8 - header_bytes)
    fail("size " + std::to_string(file_size) + " bytes, its header describes " + std::to_string(8 + header_bytes + at));
  return order;
}

/// Feeds `crc` the first 8 bytes and the header as its CRC covers them (a "crc32" field's digits
/// counted as '0'); returns whether the header has the field and, in `stored`, its value. The
/// digits are found where the parser met the value (any spacing around it) and must be written
/// there as they read: 8 hex digits between quotes, no escapes.
template <class Fail>
bool header_crc(const ReadHeader& h, const unsigned char (&first)[8], Crc32& crc, std::uint64_t& stored, Fail&& fail) {
  crc.update(first, 8);
  const json::Value* field = h.metadata->find("crc32");
  if (!field) {
    crc.update(h.text.data(), h.text.size());
    return false;
  }
  const std::size_t at = field->offset;
  if (!field->is(json::Value::Type::String) || field->text.size() != 8 ||
      h.text.compare(at, 10, "\"" + field->text + "\"") != 0 || !parse_hex(field->text, 0xffffffffu, stored))
    fail("malformed crc32 field (8 hex digits expected; a tool that rewrites the file must drop the field or recompute it)");
  crc.update(h.text.data(), at + 1);
  crc.update("00000000", 8);
  crc.update(h.text.data() + at + 9, h.text.size() - (at + 9));
  return true;
}

}  // namespace safetensors
}  // namespace io
}  // namespace steepest
