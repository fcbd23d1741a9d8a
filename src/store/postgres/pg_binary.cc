#include "store/postgres/pg_binary.h"

#include <bit>
#include <cstring>

namespace sluice::pg {

namespace {

uint32_t ReadU32(const unsigned char* p) {
  return (uint32_t{p[0]} << 24) | (uint32_t{p[1]} << 16) | (uint32_t{p[2]} << 8) | uint32_t{p[3]};
}
uint16_t ReadU16(const unsigned char* p) { return static_cast<uint16_t>((p[0] << 8) | p[1]); }

}  // namespace

void AppendInt16(std::string& out, int16_t v) {
  const auto u = static_cast<uint16_t>(v);
  const char b[2] = {static_cast<char>(u >> 8), static_cast<char>(u)};
  out.append(b, 2);
}

void AppendInt32(std::string& out, int32_t v) {
  const auto u = static_cast<uint32_t>(v);
  const char b[4] = {static_cast<char>(u >> 24), static_cast<char>(u >> 16),
                     static_cast<char>(u >> 8), static_cast<char>(u)};
  out.append(b, 4);
}

void AppendInt64(std::string& out, int64_t v) {
  const auto u = static_cast<uint64_t>(v);
  AppendInt32(out, static_cast<int32_t>(u >> 32));
  AppendInt32(out, static_cast<int32_t>(u & 0xffffffffu));
}

void AppendFloat4(std::string& out, float v) {
  AppendInt32(out, static_cast<int32_t>(std::bit_cast<uint32_t>(v)));
}

void AppendVectorBinary(std::string& out, std::span<const float> values) {
  AppendInt16(out, static_cast<int16_t>(values.size()));
  AppendInt16(out, 0);
  const size_t at = out.size();
  out.resize(at + 4 * values.size());
  char* p = out.data() + at;
  for (float f : values) {
    const uint32_t u = std::bit_cast<uint32_t>(f);
    p[0] = static_cast<char>(u >> 24);
    p[1] = static_cast<char>(u >> 16);
    p[2] = static_cast<char>(u >> 8);
    p[3] = static_cast<char>(u);
    p += 4;
  }
}

namespace {

void AppendArrayHeader(std::string& out, uint32_t element_oid, size_t n) {
  AppendInt32(out, 1);  // ndim
  AppendInt32(out, 0);  // has nulls
  AppendInt32(out, static_cast<int32_t>(element_oid));
  AppendInt32(out, static_cast<int32_t>(n));
  AppendInt32(out, 1);  // lower bound
}

}  // namespace

void AppendFloat4ArrayBinary(std::string& out, std::span<const float> values) {
  AppendArrayHeader(out, kFloat4Oid, values.size());
  const size_t at = out.size();
  out.resize(at + 8 * values.size());
  char* p = out.data() + at;
  for (float f : values) {
    const uint32_t u = std::bit_cast<uint32_t>(f);
    p[0] = 0;
    p[1] = 0;
    p[2] = 0;
    p[3] = 4;
    p[4] = static_cast<char>(u >> 24);
    p[5] = static_cast<char>(u >> 16);
    p[6] = static_cast<char>(u >> 8);
    p[7] = static_cast<char>(u);
    p += 8;
  }
}

void AppendJsonbBinary(std::string& out, std::string_view json_text) {
  out.push_back(1);
  out.append(json_text);
}

std::string EncodeVectorBinary(std::span<const float> values) {
  std::string out;
  out.reserve(4 + 4 * values.size());
  AppendVectorBinary(out, values);
  return out;
}

std::string EncodeFloat4ArrayBinary(std::span<const float> values) {
  std::string out;
  out.reserve(20 + 8 * values.size());
  AppendFloat4ArrayBinary(out, values);
  return out;
}

std::string EncodeBytesArrayBinary(std::span<const std::string> elements, uint32_t element_oid) {
  std::string out;
  size_t bytes = 20;
  for (const std::string& e : elements) bytes += 4 + e.size();
  out.reserve(bytes);
  AppendArrayHeader(out, element_oid, elements.size());
  for (const std::string& e : elements) {
    AppendInt32(out, static_cast<int32_t>(e.size()));
    out.append(e);
  }
  return out;
}

std::string EncodeInt4ArrayBinary(std::span<const int32_t> values) {
  std::string out;
  out.reserve(20 + 8 * values.size());
  AppendArrayHeader(out, kInt4Oid, values.size());
  for (int32_t v : values) {
    AppendInt32(out, 4);
    AppendInt32(out, v);
  }
  return out;
}

std::string EncodeInt8ArrayBinary(std::span<const int64_t> values) {
  std::string out;
  out.reserve(20 + 12 * values.size());
  AppendArrayHeader(out, kInt8Oid, values.size());
  for (int64_t v : values) {
    AppendInt32(out, 8);
    AppendInt64(out, v);
  }
  return out;
}

int32_t ReadInt32(const char* p) {
  return static_cast<int32_t>(ReadU32(reinterpret_cast<const unsigned char*>(p)));
}

int64_t ReadInt64(const char* p) {
  const auto* u = reinterpret_cast<const unsigned char*>(p);
  return static_cast<int64_t>((uint64_t{ReadU32(u)} << 32) | ReadU32(u + 4));
}

std::optional<std::vector<float>> DecodeVectorBinary(std::string_view bytes) {
  if (bytes.size() < 4) return std::nullopt;
  const auto* p = reinterpret_cast<const unsigned char*>(bytes.data());
  const size_t dims = ReadU16(p);
  if (bytes.size() != 4 + 4 * dims) return std::nullopt;
  std::vector<float> values(dims);
  for (size_t i = 0; i < dims; ++i) values[i] = std::bit_cast<float>(ReadU32(p + 4 + 4 * i));
  return values;
}

std::optional<std::vector<float>> DecodeFloat4ArrayBinary(std::string_view bytes) {
  const auto* p = reinterpret_cast<const unsigned char*>(bytes.data());
  if (bytes.size() < 12) return std::nullopt;
  const uint32_t ndim = ReadU32(p);
  if (ndim == 0) return std::vector<float>{};  // empty array: ndim 0, no dims
  if (ndim != 1 || ReadU32(p + 4) != 0 || ReadU32(p + 8) != kFloat4Oid || bytes.size() < 20) {
    return std::nullopt;
  }
  const size_t n = ReadU32(p + 12);
  if (bytes.size() != 20 + 8 * n) return std::nullopt;
  std::vector<float> values(n);
  const unsigned char* e = p + 20;
  for (size_t i = 0; i < n; ++i, e += 8) {
    if (ReadU32(e) != 4) return std::nullopt;
    values[i] = std::bit_cast<float>(ReadU32(e + 4));
  }
  return values;
}

void CopyWriter::AppendHeader(std::string& out) {
  static constexpr char kSignature[] = "PGCOPY\n\377\r\n";  // 11 bytes with the NUL
  out.append(kSignature, 11);
  AppendInt32(out, 0);  // flags
  AppendInt32(out, 0);  // header extension length
}

void CopyWriter::AppendTrailer(std::string& out) { AppendInt16(out, -1); }

void CopyWriter::Text(std::string_view s) {
  AppendInt32(out_, static_cast<int32_t>(s.size()));
  out_.append(s);
}

void CopyWriter::Int4(int32_t v) {
  AppendInt32(out_, 4);
  AppendInt32(out_, v);
}

void CopyWriter::Int8(int64_t v) {
  AppendInt32(out_, 8);
  AppendInt64(out_, v);
}

void CopyWriter::Jsonb(std::string_view json_text) {
  AppendInt32(out_, static_cast<int32_t>(json_text.size() + 1));
  AppendJsonbBinary(out_, json_text);
}

void CopyWriter::Vector(std::span<const float> values) {
  AppendInt32(out_, static_cast<int32_t>(4 + 4 * values.size()));
  AppendVectorBinary(out_, values);
}

void CopyWriter::Float4Array(std::span<const float> values) {
  AppendInt32(out_, static_cast<int32_t>(20 + 8 * values.size()));
  AppendFloat4ArrayBinary(out_, values);
}

}  // namespace sluice::pg
