#include "common/utf8.h"

#include <gtest/gtest.h>

#include <iterator>
#include <random>
#include <string>

namespace sluice {
namespace {

TEST(Utf8Test, Validation) {
  EXPECT_TRUE(IsValidUtf8("plain ascii"));
  EXPECT_TRUE(IsValidUtf8("caf\xC3\xA9 \xE2\x82\xAC \xF0\x9F\x98\x80"));
  EXPECT_FALSE(IsValidUtf8("\xC3"));              // truncated
  EXPECT_FALSE(IsValidUtf8("\xC0\xAF"));          // overlong
  EXPECT_FALSE(IsValidUtf8("\xED\xA0\x80"));      // surrogate
  EXPECT_FALSE(IsValidUtf8("\xF4\x90\x80\x80"));  // above U+10FFFF
}

TEST(Utf8Test, RepairReplacesInvalidBytes) {
  std::string out;
  uint64_t replaced = AppendRepairedUtf8(
      "a\xFF"
      "b\xC3",
      out);
  EXPECT_EQ(out,
            "a\xEF\xBF\xBD"
            "b\xEF\xBF\xBD");
  EXPECT_EQ(replaced, 2u);
  EXPECT_TRUE(IsValidUtf8(out));
}

TEST(Utf8Test, BoundaryNeverSplitsSequence) {
  std::string s =
      "a\xE2\x82\xAC"
      "b";  // a € b
  EXPECT_EQ(Utf8BoundaryAtOrBefore(s, 2), 1u);
  EXPECT_EQ(Utf8BoundaryAtOrBefore(s, 3), 1u);
  EXPECT_EQ(Utf8BoundaryAtOrBefore(s, 4), 4u);
  EXPECT_EQ(Utf8BoundaryAtOrBefore(s, 99), s.size());
}

TEST(Utf8Test, IncompleteTail) {
  EXPECT_EQ(Utf8IncompleteTail("ab\xE2\x82"), 2u);
  EXPECT_EQ(Utf8IncompleteTail("ab\xE2\x82\xAC"), 0u);
  EXPECT_EQ(Utf8IncompleteTail("ab\xF0"), 1u);
  EXPECT_EQ(Utf8IncompleteTail("abc"), 0u);
}

TEST(Utf8Test, Encode) {
  std::string out;
  AppendUtf8(0x20AC, out);
  EXPECT_EQ(out, "\xE2\x82\xAC");
  out.clear();
  AppendUtf8(0xD800, out);
  EXPECT_EQ(out, "\xEF\xBF\xBD");
}

}  // namespace
}  // namespace sluice

namespace sluice {
namespace {

// IsValidUtf8 uses simdjson's validator; it must agree with the byte-level
// definition (Utf8SequenceLength) that the repair walks. Seeded random
// strings biased toward lead and continuation bytes, and every 1-4 byte
// sequence starting with a lead byte.
bool ValidByWalk(std::string_view s) {
  for (size_t i = 0; i < s.size();) {
    const size_t len = Utf8SequenceLength(s, i);
    if (len == 0) return false;
    i += len;
  }
  return true;
}

TEST(Utf8Test, SimdValidationAgreesWithTheByteLevelDefinition) {
  std::mt19937_64 rng(20261206);
  const unsigned char interesting[] = {0x00, 0x41, 0x7F, 0x80, 0x8F, 0x90, 0x9F, 0xA0, 0xBF, 0xC0,
                                       0xC1, 0xC2, 0xDF, 0xE0, 0xED, 0xEF, 0xF0, 0xF4, 0xF5, 0xFF};
  for (int n = 0; n < 20000; ++n) {
    std::string s;
    const size_t len = rng() % 40;
    for (size_t i = 0; i < len; ++i) {
      s.push_back(static_cast<char>(rng() % 3 == 0 ? rng() % 256
                                                   : interesting[rng() % std::size(interesting)]));
    }
    ASSERT_EQ(IsValidUtf8(s), ValidByWalk(s)) << n;
    std::string repaired;
    const uint64_t replaced = AppendRepairedUtf8(s, repaired);
    EXPECT_TRUE(IsValidUtf8(repaired));
    EXPECT_EQ(replaced == 0, ValidByWalk(s));
    if (replaced == 0) {
      EXPECT_EQ(repaired, s);
    }
  }
  for (int a = 0xC0; a <= 0xFF; ++a) {
    for (int b = 0x70; b <= 0xC0; ++b) {
      for (int c : {0x41, 0x80, 0xBF}) {
        for (int d : {0x41, 0x80, 0xBF}) {
          const std::string s{static_cast<char>(a), static_cast<char>(b), static_cast<char>(c),
                              static_cast<char>(d)};
          for (size_t k = 1; k <= 4; ++k) {
            ASSERT_EQ(IsValidUtf8(s.substr(0, k)), ValidByWalk(s.substr(0, k))) << a << " " << b;
          }
        }
      }
    }
  }
}

}  // namespace
}  // namespace sluice
