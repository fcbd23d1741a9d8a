// Encoders and decoders for PostgreSQL's binary wire formats, as used by
// binary COPY and by binary query parameters/results:
//   - pgvector's `vector`: int16 dims, int16 unused (0), dims x float4, all
//     big-endian (vector_recv/vector_send);
//   - a one-dimensional `real[]` (array_recv/array_send): int32 ndim = 1,
//     int32 has_nulls = 0, int32 element oid = 700, int32 length, int32 lower
//     bound = 1, then per element int32 length = 4 and the float4;
//   - `jsonb`: a version byte (1) then the JSON text;
//   - one-dimensional arrays of text, bytea, int4 or int8 (the same array
//     header, each element as int32 length then its bytes): how lists of ids
//     and file facts travel as one parameter (`unnest($1::text[])`);
//   - the binary COPY stream: signature, flags, header extension, tuples of
//     int16 field count and (int32 length | -1 for NULL, bytes), trailer -1.
// Floats are copied bit-for-bit (no rounding, NaN payloads kept).
//
// Thread safety: pure functions; a CopyWriter belongs to one thread.
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace sluice::pg {

inline constexpr uint32_t kFloat4Oid = 700;
inline constexpr uint32_t kTextOid = 25;
inline constexpr uint32_t kByteaOid = 17;
inline constexpr uint32_t kInt4Oid = 23;
inline constexpr uint32_t kInt8Oid = 20;

void AppendInt16(std::string& out, int16_t v);
void AppendInt32(std::string& out, int32_t v);
void AppendInt64(std::string& out, int64_t v);
void AppendFloat4(std::string& out, float v);

// REQUIRES: values.size() <= 16000 (pgvector's limit).
void AppendVectorBinary(std::string& out, std::span<const float> values);
void AppendFloat4ArrayBinary(std::string& out, std::span<const float> values);
void AppendJsonbBinary(std::string& out, std::string_view json_text);

std::string EncodeVectorBinary(std::span<const float> values);
std::string EncodeFloat4ArrayBinary(std::span<const float> values);

// One-dimensional arrays without NULLs. `element_oid` is kTextOid or
// kByteaOid (elements are sent as they are).
std::string EncodeBytesArrayBinary(std::span<const std::string> elements,
                                   uint32_t element_oid = kTextOid);
std::string EncodeInt4ArrayBinary(std::span<const int32_t> values);
std::string EncodeInt8ArrayBinary(std::span<const int64_t> values);

// Big-endian integers of binary results. REQUIRES: 4 or 8 readable bytes.
int32_t ReadInt32(const char* p);
int64_t ReadInt64(const char* p);

// Decoders return nullopt for malformed input (wrong length, ndim != 1,
// nulls, element type other than float4).
std::optional<std::vector<float>> DecodeVectorBinary(std::string_view bytes);
std::optional<std::vector<float>> DecodeFloat4ArrayBinary(std::string_view bytes);

// Builds a binary COPY stream tuple by tuple.
class CopyWriter {
 public:
  // Appends the 19-byte header to `out`.
  static void AppendHeader(std::string& out);
  // Appends the trailer (int16 -1).
  static void AppendTrailer(std::string& out);

  explicit CopyWriter(std::string& out) : out_(out) {}
  CopyWriter(const CopyWriter&) = delete;
  CopyWriter& operator=(const CopyWriter&) = delete;

  void BeginTuple(int16_t fields) { AppendInt16(out_, fields); }
  void Null() { AppendInt32(out_, -1); }
  void Text(std::string_view s);
  void Int4(int32_t v);
  void Int8(int64_t v);
  void Jsonb(std::string_view json_text);
  void Vector(std::span<const float> values);
  void Float4Array(std::span<const float> values);

 private:
  std::string& out_;
};

}  // namespace sluice::pg
