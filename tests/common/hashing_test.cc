#include "common/hashing.h"

#include <gtest/gtest.h>

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

TEST(HashingTest, SplitMixSequence) {
  uint64_t state = 0;
  // First output of splitmix64 seeded with 0 (reference value).
  EXPECT_EQ(SplitMix64(state), 0xE220A8397B1DCDAFull);
}

}  // namespace
}  // namespace sluice
