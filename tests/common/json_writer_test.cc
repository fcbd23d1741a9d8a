#include "common/json_writer.h"

#include <gtest/gtest.h>

#include <random>

#include "common/utf8.h"

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

// The byte-at-a-time escaper AppendJsonString replaced with run copies: the
// fast path must give the same bytes for any input.
std::string ReferenceEscape(std::string_view s) {
  std::string out = "\"";
  for (size_t i = 0; i < s.size();) {
    const unsigned char c = static_cast<unsigned char>(s[i]);
    if (c >= 0x80) {
      const size_t len = Utf8SequenceLength(s, i);
      out.append(len == 0 ? std::string_view("\xEF\xBF\xBD") : s.substr(i, len));
      i += len == 0 ? 1 : len;
      continue;
    }
    switch (c) {
      case '"':
        out += "\\\"";
        break;
      case '\\':
        out += "\\\\";
        break;
      case '\n':
        out += "\\n";
        break;
      case '\r':
        out += "\\r";
        break;
      case '\t':
        out += "\\t";
        break;
      case '\b':
        out += "\\b";
        break;
      case '\f':
        out += "\\f";
        break;
      default:
        if (c < 0x20) {
          static const char* kHex = "0123456789abcdef";
          out += "\\u00";
          out += kHex[c >> 4];
          out += kHex[c & 0xF];
        } else {
          out += static_cast<char>(c);
        }
    }
    ++i;
  }
  return out + "\"";
}

TEST(JsonWriterTest, RunCopiesMatchTheByteAtATimeEscaperOnRandomText) {
  std::mt19937 rng(7);
  // Mostly plain ASCII with the occasional special byte, UTF-8 sequence
  // (valid or cut short) at every alignment against the 8- and 16-byte
  // steps.
  const std::string pieces[] = {"a",
                                "Zq",
                                " ",
                                "\"",
                                "\\",
                                "\n",
                                std::string(1, '\0'),
                                "\x1f",
                                "\x7f",
                                "\xC3\xA9",
                                "\xE2\x82\xAC",
                                "\xF0\x9F\x98\x80",
                                "\xC3",
                                "\xE2\x82",
                                "\xFF",
                                "\x80",
                                "plain ascii words ",
                                // Longer than two of the 16-byte steps.
                                "a line of plain text longer than thirty-two bytes"};
  std::uniform_int_distribution<size_t> pick(0, std::size(pieces) - 1);
  std::uniform_int_distribution<int> length(0, 60);
  for (int round = 0; round < 5000; ++round) {
    std::string text;
    for (int n = length(rng); n > 0; --n) text += pieces[pick(rng)];
    std::string out = "prefix";
    AppendJsonString(text, out);
    ASSERT_EQ(out, "prefix" + ReferenceEscape(text)) << "round " << round;
  }
}

TEST(JsonWriterTest, FloatRoundTripsShortest) {
  std::string out;
  JsonWriter w(out);
  w.BeginArray().Float(0.1f).Double(1e300).Double(0.0 / 0.0 * 0).EndArray();
  EXPECT_EQ(out, "[0.1,1e+300,null]");
}

}  // namespace
}  // namespace sluice
