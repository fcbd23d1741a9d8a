#include "common/json_canonical.h"

#include <gtest/gtest.h>

namespace sluice {
namespace {

TEST(JsonCanonicalTest, SortsKeysRecursivelyAndDropsWhitespace) {
  EXPECT_EQ(*CanonicalJson(R"({"title": "T", "b": {"z": 1, "a": [3, {"y": null, "x": true}]}})"),
            R"({"b":{"a":[3,{"x":true,"y":null}],"z":1},"title":"T"})");
  EXPECT_EQ(*CanonicalJson("{}"), "{}");
  EXPECT_EQ(*CanonicalJson(" [ ] "), "[]");
}

TEST(JsonCanonicalTest, RepeatedKeyKeepsTheLastValueAsJsonbDoes) {
  EXPECT_EQ(*CanonicalJson(R"({"a":1,"b":2,"a":3})"), R"({"a":3,"b":2})");
}

TEST(JsonCanonicalTest, NumbersAndStringsReadBackTheSame) {
  EXPECT_EQ(*CanonicalJson(R"({"i":-7,"u":18446744073709551615,"d":1.50,"e":1e2,"s":"é\n\"q\""})"),
            R"({"d":1.5,"e":100,"i":-7,"s":"é\n\"q\"","u":18446744073709551615})");
}

// What PostgreSQL's jsonb prints for a canonical value (keys by length, then
// bytes; ", " and ": ") canonicalises back to the same text.
TEST(JsonCanonicalTest, JsonbOutputOfCanonicalTextIsAFixedPoint) {
  const std::string canonical = *CanonicalJson(
      R"({"heading_path":"Pumps > Seals","page_end":3,"page_start":2,"title":"Manual","n":0.25})");
  const std::string jsonb_printed =
      R"({"n": 0.25, "title": "Manual", "page_end": 3, "page_start": 2, "heading_path": "Pumps > Seals"})";
  EXPECT_EQ(*CanonicalJson(jsonb_printed), canonical);
}

TEST(JsonCanonicalTest, InvalidJsonIsAnError) {
  EXPECT_EQ(CanonicalJson("{\"a\":").status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(CanonicalJson("").status().code(), StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace sluice
