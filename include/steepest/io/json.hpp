// steepest/io/json.hpp -- the small, strict JSON reader and writer a checkpoint header needs.
//
// A checkpoint's header is JSON (the safetensors layout, optim/state_io.hpp), and a file may be
// crafted, so the reader is strict and bounded: RFC 8259 syntax only, duplicate keys refused,
// control characters in strings refused, and numbers kept as their text so that offsets up to
// 2^64 - 1 convert exactly (Value::to_u64, through io/integer.hpp) instead of passing through a
// double. Everything it refuses throws json::parse_error with the byte offset.
//
// What a document may cost is bounded by json::Limits, checked as the parser goes, so a refused
// document has allocated at most that much: nesting depth, the number of values (each a Value
// of sizeof(Value) bytes, arrays and objects growing by doubling) and the bytes of decoded
// strings (never more than the text's own length). The reader of a checkpoint sets max_values
// from the layout it expects, so a header of a million tiny elements is refused after a few
// thousand, not after building a million-node tree (about 58 bytes per header byte).
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <stdexcept>
#include <string>
#include <string_view>
#include <unordered_set>
#include <utility>
#include <vector>

#include "integer.hpp"

namespace steepest::json {

class parse_error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

/// One parsed JSON value. Objects keep their members in file order.
struct Value {
  enum class Type { Null, Bool, Number, String, Array, Object };
  Type type = Type::Null;
  bool boolean = false;
  std::string text;  ///< a String's decoded UTF-8, or a Number's literal as written
  std::vector<Value> items;
  std::vector<std::pair<std::string, Value>> members;
  std::size_t offset = 0;  ///< byte offset of the value's first character in the parsed text

  bool is(Type t) const { return type == t; }
  /// The member called `key`, or nullptr (also when this is not an object).
  const Value* find(std::string_view key) const {
    for (const auto& [k, v] : members)
      if (k == key) return &v;
    return nullptr;
  }
  /// A Number that is a non-negative integer below 2^64, exactly; false otherwise.
  /// (A sign, fraction or exponent is not a count.)
  bool to_u64(std::uint64_t& out) const { return type == Type::Number && io::parse_decimal(text, UINT64_MAX, out); }
};

/// What one document may cost (see the file comment); parse() refuses more.
struct Limits {
  int max_depth = 16;                     ///< arrays and objects nested at most this deep
  std::size_t max_values = SIZE_MAX;      ///< values of every kind, containers included
  std::size_t max_string_bytes = SIZE_MAX;  ///< decoded bytes of all strings and member names
};

namespace detail {
class Parser {
 public:
  Parser(std::string_view s, const Limits& limits) : s_(s), limits_(limits) {}

  Value document() {
    Value v = value(0);
    skip_ws();
    if (pos_ != s_.size()) fail("unexpected text after the JSON value");
    return v;
  }

 private:
  std::string_view s_;
  std::size_t pos_ = 0;
  Limits limits_;
  std::size_t values_ = 0, string_bytes_ = 0;

  [[noreturn]] void fail(const std::string& why) const {
    throw parse_error("JSON: " + why + " at byte " + std::to_string(pos_));
  }
  void skip_ws() {
    while (pos_ < s_.size() && (s_[pos_] == ' ' || s_[pos_] == '\t' || s_[pos_] == '\n' || s_[pos_] == '\r')) ++pos_;
  }
  char peek() {
    skip_ws();
    if (pos_ >= s_.size()) fail("unexpected end");
    return s_[pos_];
  }
  void expect(char c) {
    if (peek() != c) fail(std::string("expected '") + c + "'");
    ++pos_;
  }
  bool literal(std::string_view word) {
    if (s_.substr(pos_, word.size()) != word) return false;
    pos_ += word.size();
    return true;
  }

  Value value(int depth) {
    if (depth > limits_.max_depth) fail("nested deeper than " + std::to_string(limits_.max_depth));
    if (++values_ > limits_.max_values) fail("more than " + std::to_string(limits_.max_values) + " values");
    Value v;
    const char c = peek();
    v.offset = pos_;
    if (c == '{') {
      v.type = Value::Type::Object;
      ++pos_;
      if (peek() == '}') {
        ++pos_;
        return v;
      }
      std::unordered_set<std::string> seen;  // a linear search per key is quadratic on a crafted header
      for (;;) {
        if (peek() != '"') fail("expected a member name");
        std::string key = string();
        if (!seen.insert(key).second) fail("duplicate key \"" + key + "\"");
        expect(':');
        v.members.emplace_back(std::move(key), value(depth + 1));
        const char d = peek();
        ++pos_;
        if (d == '}') return v;
        if (d != ',') fail("expected ',' or '}'");
      }
    }
    if (c == '[') {
      v.type = Value::Type::Array;
      ++pos_;
      if (peek() == ']') {
        ++pos_;
        return v;
      }
      for (;;) {
        v.items.push_back(value(depth + 1));
        const char d = peek();
        ++pos_;
        if (d == ']') return v;
        if (d != ',') fail("expected ',' or ']'");
      }
    }
    if (c == '"') {
      v.type = Value::Type::String;
      v.text = string();
      return v;
    }
    if (literal("true")) {
      v.type = Value::Type::Bool;
      v.boolean = true;
      return v;
    }
    if (literal("false")) {
      v.type = Value::Type::Bool;
      return v;
    }
    if (literal("null")) return v;
    v.type = Value::Type::Number;
    v.text = number();
    return v;
  }

  // number = [ "-" ] int [ frac ] [ exp ], int without leading zeros (RFC 8259, section 6).
  std::string number() {
    const std::size_t start = pos_;
    auto digits = [&] {
      const std::size_t d0 = pos_;
      while (pos_ < s_.size() && s_[pos_] >= '0' && s_[pos_] <= '9') ++pos_;
      return pos_ - d0;
    };
    if (pos_ < s_.size() && s_[pos_] == '-') ++pos_;
    const std::size_t int_start = pos_;
    const std::size_t n = digits();
    if (n == 0) fail("invalid value");
    if (n > 1 && s_[int_start] == '0') fail("leading zero in a number");
    if (pos_ < s_.size() && s_[pos_] == '.') {
      ++pos_;
      if (digits() == 0) fail("digits expected after '.'");
    }
    if (pos_ < s_.size() && (s_[pos_] == 'e' || s_[pos_] == 'E')) {
      ++pos_;
      if (pos_ < s_.size() && (s_[pos_] == '+' || s_[pos_] == '-')) ++pos_;
      if (digits() == 0) fail("digits expected in an exponent");
    }
    return std::string(s_.substr(start, pos_ - start));
  }

  unsigned hex4() {
    if (s_.size() - pos_ < 4) fail("truncated \\u escape");
    unsigned v = 0;
    for (int i = 0; i < 4; ++i) {
      const char c = s_[pos_++];
      v <<= 4;
      if (c >= '0' && c <= '9') v |= unsigned(c - '0');
      else if (c >= 'a' && c <= 'f') v |= unsigned(c - 'a' + 10);
      else if (c >= 'A' && c <= 'F') v |= unsigned(c - 'A' + 10);
      else fail("bad \\u escape");
    }
    return v;
  }
  static void put_utf8(std::string& out, unsigned cp) {
    if (cp < 0x80) {
      out += char(cp);
    } else if (cp < 0x800) {
      out += char(0xC0 | (cp >> 6));
      out += char(0x80 | (cp & 0x3F));
    } else if (cp < 0x10000) {
      out += char(0xE0 | (cp >> 12));
      out += char(0x80 | ((cp >> 6) & 0x3F));
      out += char(0x80 | (cp & 0x3F));
    } else {
      out += char(0xF0 | (cp >> 18));
      out += char(0x80 | ((cp >> 12) & 0x3F));
      out += char(0x80 | ((cp >> 6) & 0x3F));
      out += char(0x80 | (cp & 0x3F));
    }
  }
  std::string string() {
    ++pos_;  // the opening quote
    std::string out;
    // Decoded text is never longer than its source: reserving the source's length up to the
    // closing quote keeps a long string at its size (growing by doubling could reach 3x).
    std::size_t end = pos_;
    while (end < s_.size() && s_[end] != '"') end += s_[end] == '\\' ? 2 : 1;
    const std::size_t allowed = limits_.max_string_bytes - std::min(string_bytes_, limits_.max_string_bytes);
    out.reserve(std::min(std::min(end, s_.size()) - pos_, allowed));
    for (;;) {
      // Each pass appends at most 4 bytes, so the bound is exceeded by at most that much.
      if (string_bytes_ + out.size() > limits_.max_string_bytes)
        fail("more than " + std::to_string(limits_.max_string_bytes) + " bytes of strings");
      if (pos_ >= s_.size()) fail("unterminated string");
      const char c = s_[pos_++];
      if (c == '"') {
        string_bytes_ += out.size();
        return out;
      }
      if (static_cast<unsigned char>(c) < 0x20) fail("control character in a string");
      if (c != '\\') {
        out += c;
        continue;
      }
      if (pos_ >= s_.size()) fail("unterminated string");
      switch (s_[pos_++]) {
        case '"': out += '"'; break;
        case '\\': out += '\\'; break;
        case '/': out += '/'; break;
        case 'b': out += '\b'; break;
        case 'f': out += '\f'; break;
        case 'n': out += '\n'; break;
        case 'r': out += '\r'; break;
        case 't': out += '\t'; break;
        case 'u': {
          unsigned cp = hex4();
          if (cp >= 0xD800 && cp < 0xDC00) {  // a UTF-16 surrogate pair
            if (!literal("\\u")) fail("unpaired surrogate");
            const unsigned lo = hex4();
            if (lo < 0xDC00 || lo >= 0xE000) fail("unpaired surrogate");
            cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
          } else if (cp >= 0xDC00 && cp < 0xE000) {
            fail("unpaired surrogate");
          }
          put_utf8(out, cp);
          break;
        }
        default: fail("bad escape");
      }
    }
  }
};
}  // namespace detail

/// Parses `text` as one JSON value (surrounding whitespace allowed), or throws parse_error,
/// also when the document exceeds `limits`.
inline Value parse(std::string_view text, const Limits& limits = {}) { return detail::Parser(text, limits).document(); }

/// `s` as a JSON string literal (quotes, backslashes and control characters escaped).
inline std::string quote(std::string_view s) {
  std::string out = "\"";
  for (char c : s) {
    switch (c) {
      case '"': out += "\\\""; break;
      case '\\': out += "\\\\"; break;
      case '\n': out += "\\n"; break;
      case '\r': out += "\\r"; break;
      case '\t': out += "\\t"; break;
      default:
        if (static_cast<unsigned char>(c) < 0x20) {
          char buf[8];
          std::snprintf(buf, sizeof buf, "\\u%04x", unsigned(static_cast<unsigned char>(c)));
          out += buf;
        } else {
          out += c;
        }
    }
  }
  return out + "\"";
}

/// A double as the shortest decimal text that reads back as the same double; JSON has no
/// NaN or infinity, so those are written as the strings "nan", "inf" and "-inf".
inline std::string number(double v) {
  if (std::isnan(v)) return "\"nan\"";
  if (std::isinf(v)) return v > 0 ? "\"inf\"" : "\"-inf\"";
  char buf[32];
  for (int prec = 1; prec <= 17; ++prec) {
    std::snprintf(buf, sizeof buf, "%.*g", prec, v);
    if (std::strtod(buf, nullptr) == v) break;
  }
  return buf;
}

}  // namespace steepest::json
