#include "common/hashing.h"

#include <gtest/gtest.h>

#include <string>

namespace sluice {
namespace {

TEST(HashingTest, StableAndDistinct) {
  EXPECT_EQ(Hash128Hex("abc"), Hash128Hex("abc"));
  EXPECT_NE(Hash128Hex("abc"), Hash128Hex("abd"));
  EXPECT_EQ(Hash128Hex("abc").size(), 32u);
  EXPECT_EQ(Hex64(0xabcULL), "0000000000000abc");
  // XXH64 of the empty input with seed 0 is a published constant.
  EXPECT_EQ(Hash64(""), 0xEF46DB3751D8E999ull);
}

// Ids and cache keys already stored depend on these exact strings: XXH3-128
// as high then low 64 bits in lower-case hex (values from snprintf's
// "%016llx%016llx", the encoding before the hand-written one).
TEST(HashingTest, Hash128HexAndTheCacheKeyArePinned) {
  EXPECT_EQ(Hash128Hex(""), "99aa06d3014798d86001c324468d497f");
  EXPECT_EQ(Hash128Hex("abc"), "06b05ab6733a618578af5f94892f3950");
  EXPECT_EQ(Hash128Hex("model:256\nsome text"), "44829bb4be7a3b1a0e8d21f45193fc8e");
  // The streamed key equals the hash of the concatenation.
  EXPECT_EQ(EmbeddingCacheKey("model:256", "some text"), "44829bb4be7a3b1a0e8d21f45193fc8e");
  EXPECT_EQ(EmbeddingCacheKey("", ""), Hash128Hex("\n"));
  const std::string long_text(100'000, 'x');  // past XXH3's internal buffer
  EXPECT_EQ(EmbeddingCacheKey("m:3", long_text), Hash128Hex("m:3\n" + long_text));
  EXPECT_EQ(Hex64(0), "0000000000000000");
  EXPECT_EQ(Hex64(0xFEDCBA9876543210ull), "fedcba9876543210");
}

TEST(HashingTest, SplitMixSequence) {
  uint64_t state = 0;
  // First output of splitmix64 seeded with 0 (reference value).
  EXPECT_EQ(SplitMix64(state), 0xE220A8397B1DCDAFull);
}

}  // namespace
}  // namespace sluice
