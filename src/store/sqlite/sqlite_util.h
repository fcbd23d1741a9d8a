// Small SQLite helpers shared by the files of the SQLite store: a statement
// finalised on scope exit, identifier quoting, text columns and the
// embedding BLOB format (float32 little-endian).
//
// Thread safety: pure functions; a ScopedStmt belongs to one thread.
#pragma once

#include <sqlite3.h>

#include <bit>
#include <cstdint>
#include <cstring>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace sluice::sqlite {

// A statement finalised on scope exit, for one-off queries.
class ScopedStmt {
 public:
  ScopedStmt() = default;
  ~ScopedStmt() { sqlite3_finalize(stmt_); }
  ScopedStmt(const ScopedStmt&) = delete;
  ScopedStmt& operator=(const ScopedStmt&) = delete;
  sqlite3_stmt** out() { return &stmt_; }
  sqlite3_stmt* get() const { return stmt_; }

 private:
  sqlite3_stmt* stmt_ = nullptr;
};

// A file's (?1) stored chunks (table alias `c`) are two disjoint sets, each
// found through an index (whose entries end in the rowid): the rows stored
// with its file id, and the legacy rows under its source id. Kept apart
// rather than OR-ed: an OR makes SQLite collect every matching rowid to
// de-duplicate them.
inline constexpr const char* kFileBranches[2] = {
    "c.file_id = ?1", "c.source_id = ?1 AND (c.file_id IS NULL OR c.file_id = '')"};

inline std::string Quote(std::string_view identifier) {
  // Names are validated to [A-Za-z0-9_], so quoting is for keywords only.
  // (Appended piecewise: GCC 12 -O2 warns on "\"" + std::string, PR105329.)
  std::string out;
  out.reserve(identifier.size() + 2);
  out.push_back('"');
  out.append(identifier);
  out.push_back('"');
  return out;
}

inline std::string ColumnText(sqlite3_stmt* stmt, int col) {
  const unsigned char* text = sqlite3_column_text(stmt, col);
  if (text == nullptr) return {};
  return std::string(reinterpret_cast<const char*>(text),
                     static_cast<size_t>(sqlite3_column_bytes(stmt, col)));
}

// Bytes of a float vector as float32 little-endian, the BLOB format.
// On little-endian hosts (all supported ones) this is the vector's memory.
inline const void* EmbeddingBytes(std::span<const float> v, std::vector<uint8_t>& scratch) {
  if constexpr (std::endian::native == std::endian::little) {
    return v.data();
  } else {
    scratch.resize(v.size() * 4);
    for (size_t i = 0; i < v.size(); ++i) {
      const uint32_t bits = std::bit_cast<uint32_t>(v[i]);
      for (int b = 0; b < 4; ++b) scratch[i * 4 + b] = static_cast<uint8_t>(bits >> (8 * b));
    }
    return scratch.data();
  }
}

inline float FloatAt(const uint8_t* bytes, size_t i) {
  uint32_t bits;
  if constexpr (std::endian::native == std::endian::little) {
    std::memcpy(&bits, bytes + i * 4, 4);
  } else {
    bits = uint32_t{bytes[i * 4]} | uint32_t{bytes[i * 4 + 1]} << 8 |
           uint32_t{bytes[i * 4 + 2]} << 16 | uint32_t{bytes[i * 4 + 3]} << 24;
  }
  return std::bit_cast<float>(bits);
}

// The key tables' (version 5) 64-bit key for a text key (EmbeddingCacheKey:
// 32 hex digits): its first 16 digits as a signed integer, so it is stored
// in 8 bytes. Two texts may share it; a lookup compares the whole text key on
// the chunk row. Digits that are not hex count as 0 (a text key is always
// hex; this only keeps a malformed one from failing).
inline int64_t TextKeyPrefix(std::string_view text_key) {
  uint64_t v = 0;
  for (size_t i = 0; i < 16; ++i) {
    const char ch = i < text_key.size() ? text_key[i] : '0';
    uint64_t digit = 0;
    if (ch >= '0' && ch <= '9') digit = static_cast<uint64_t>(ch - '0');
    if (ch >= 'a' && ch <= 'f') digit = static_cast<uint64_t>(ch - 'a' + 10);
    if (ch >= 'A' && ch <= 'F') digit = static_cast<uint64_t>(ch - 'A' + 10);
    v = v << 4 | digit;
  }
  return std::bit_cast<int64_t>(v);
}

}  // namespace sluice::sqlite
