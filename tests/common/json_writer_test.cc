#include "common/json_writer.h"

#include <gtest/gtest.h>

namespace sluice {
namespace {

TEST(JsonWriterTest, NestedWithCommas) {
  std::string out;
  JsonWriter w(out);
  w.BeginObject().Key("a").Int(1).Key("b").BeginArray().String("x").Bool(true).Null().EndArray();
  w.Key("c").Raw("{\"k\":2}").Key("d").Double(0.5).EndObject();
  EXPECT_EQ(out, R"({"a":1,"b":["x",true,null],"c":{"k":2},"d":0.5})");
}

TEST(JsonWriterTest, EscapesControlQuotesAndInvalidUtf8) {
  std::string out;
  AppendJsonString("q\"\\\n\x01\xFF", out);
  EXPECT_EQ(out, "\"q\\\"\\\\\\n\\u0001\xEF\xBF\xBD\"");
}

TEST(JsonWriterTest, FloatRoundTripsShortest) {
  std::string out;
  JsonWriter w(out);
  w.BeginArray().Float(0.1f).Double(1e300).Double(0.0 / 0.0 * 0).EndArray();
  EXPECT_EQ(out, "[0.1,1e+300,null]");
}

}  // namespace
}  // namespace sluice
