// The cache stage's filter of texts sent on in this run (pipeline/seen_texts.h):
// no false negatives, and few false positives at its default size.
#include "pipeline/seen_texts.h"

#include <gtest/gtest.h>

#include <cstdint>
#include <vector>

namespace sluice {
namespace {

// Deterministic, well-spread values standing in for XXH3-128 of texts.
std::vector<Hash128Value> Values(uint64_t seed, size_t n) {
  std::vector<Hash128Value> out(n);
  uint64_t state = seed;
  for (Hash128Value& v : out) {
    v.high = SplitMix64(state);
    v.low = SplitMix64(state);
  }
  return out;
}

TEST(SeenTextsTest, AnAddedTextIsAlwaysFoundAndAFreshFilterHoldsNone) {
  SeenTexts seen;
  const auto added = Values(1, 10000);
  for (const auto& v : added) EXPECT_FALSE(seen.MayContain(v));
  for (const auto& v : added) seen.Add(v);
  for (const auto& v : added) EXPECT_TRUE(seen.MayContain(v));
  // Hash128 of real texts, not only synthetic values.
  SeenTexts texts;
  texts.Add(Hash128("a disclaimer repeated in every manual"));
  EXPECT_TRUE(texts.MayContain(Hash128("a disclaimer repeated in every manual")));
  EXPECT_FALSE(texts.MayContain(Hash128("a disclaimer repeated in every manual.")));
}

TEST(SeenTextsTest, FalsePositivesStayRareAtAMillionTexts) {
  SeenTexts seen;  // the default 4 MiB
  for (const auto& v : Values(2, 1'000'000)) seen.Add(v);
  size_t false_positives = 0;
  const auto others = Values(3, 1'000'000);
  for (const auto& v : others) false_positives += seen.MayContain(v) ? 1 : 0;
  // ~0.03% expected for 4 bits per text in 512-bit blocks; each one costs a
  // store lookup, as without the filter.
  RecordProperty("false_positives_per_million", static_cast<int>(false_positives));
  EXPECT_LT(false_positives, 2000u);
}

TEST(SeenTextsTest, ATinyFilterStillHasNoFalseNegatives) {
  SeenTexts seen(64);  // one block: almost everything is a positive
  const auto added = Values(4, 5000);
  for (const auto& v : added) seen.Add(v);
  for (const auto& v : added) EXPECT_TRUE(seen.MayContain(v));
}

}  // namespace
}  // namespace sluice
