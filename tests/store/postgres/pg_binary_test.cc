// Golden-byte tests of the PostgreSQL binary encoders (no server needed).
#include "store/postgres/pg_binary.h"

#include <gtest/gtest.h>

#include <bit>
#include <cmath>
#include <limits>

namespace sluice::pg {
namespace {

std::string Bytes(std::initializer_list<int> b) {
  std::string s;
  for (int x : b) s.push_back(static_cast<char>(x));
  return s;
}

TEST(PgBinaryTest, VectorIsInt16DimsInt16UnusedBigEndianFloats) {
  const float v[] = {1.0f, -2.5f};
  EXPECT_EQ(EncodeVectorBinary(v),
            Bytes({0x00, 0x02, 0x00, 0x00, 0x3f, 0x80, 0x00, 0x00, 0xc0, 0x20, 0x00, 0x00}));
}

TEST(PgBinaryTest, Float4ArrayIsOneDimensionalArrayOfFloat4) {
  const float v[] = {1.0f};
  EXPECT_EQ(EncodeFloat4ArrayBinary(v), Bytes({0, 0, 0,    1,     // ndim
                                               0, 0, 0,    0,     // has nulls
                                               0, 0, 0x02, 0xbc,  // element oid 700
                                               0, 0, 0,    1,     // length
                                               0, 0, 0,    1,     // lower bound
                                               0, 0, 0,    4,    0x3f, 0x80, 0, 0}));
}

TEST(PgBinaryTest, RoundTripsBitForBit) {
  const float v[] = {0.0f,
                     -0.0f,
                     std::numeric_limits<float>::denorm_min(),
                     std::numeric_limits<float>::max(),
                     -std::numeric_limits<float>::min(),
                     std::bit_cast<float>(0x7fc12345u),  // NaN with a payload
                     0.1f};
  for (auto decoded : {DecodeVectorBinary(EncodeVectorBinary(v)),
                       DecodeFloat4ArrayBinary(EncodeFloat4ArrayBinary(v))}) {
    ASSERT_TRUE(decoded.has_value());
    ASSERT_EQ(decoded->size(), std::size(v));
    for (size_t i = 0; i < std::size(v); ++i) {
      EXPECT_EQ(std::bit_cast<uint32_t>((*decoded)[i]), std::bit_cast<uint32_t>(v[i])) << i;
    }
  }
}

TEST(PgBinaryTest, DecodersRejectMalformedInput) {
  EXPECT_FALSE(DecodeVectorBinary(Bytes({0, 2, 0, 0, 0x3f, 0x80, 0, 0})).has_value());  // short
  EXPECT_FALSE(DecodeVectorBinary("").has_value());
  std::string arr = EncodeFloat4ArrayBinary(std::vector<float>{1, 2});
  arr[11] = 0x01;  // element oid 701 (float8)
  EXPECT_FALSE(DecodeFloat4ArrayBinary(arr).has_value());
  EXPECT_FALSE(DecodeFloat4ArrayBinary(arr.substr(0, 10)).has_value());
}

TEST(PgBinaryTest, CopyStreamHasSignatureTuplesAndTrailer) {
  std::string out;
  CopyWriter::AppendHeader(out);
  ASSERT_EQ(out.size(), 19u);
  EXPECT_EQ(out.substr(0, 11), std::string("PGCOPY\n\xff\r\n\0", 11));
  CopyWriter w(out);
  w.BeginTuple(3);
  w.Text("ab");
  w.Null();
  w.Jsonb("{}");
  CopyWriter::AppendTrailer(out);
  EXPECT_EQ(out.substr(19), Bytes({0,    3, 0, 0, 0, 2, 'a', 'b', 0xff, 0xff, 0xff,
                                   0xff, 0, 0, 0, 3, 1, '{', '}', 0xff, 0xff}));
}

TEST(PgBinaryTest, IntegersAreBigEndian) {
  std::string out;
  AppendInt64(out, -2);
  AppendInt32(out, 0x01020304);
  EXPECT_EQ(out, Bytes({0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xfe, 1, 2, 3, 4}));
}

}  // namespace
}  // namespace sluice::pg
