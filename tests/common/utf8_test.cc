#include "common/utf8.h"

#include <gtest/gtest.h>

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
  uint64_t replaced = AppendRepairedUtf8("a\xFF" "b\xC3", out);
  EXPECT_EQ(out, "a\xEF\xBF\xBD" "b\xEF\xBF\xBD");
  EXPECT_EQ(replaced, 2u);
  EXPECT_TRUE(IsValidUtf8(out));
}

TEST(Utf8Test, BoundaryNeverSplitsSequence) {
  std::string s = "a\xE2\x82\xAC" "b";  // a € b
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
