// The embeddings wire format: request bodies, float and base64 responses,
// every validation failure, error bodies.
#include "embed/request_codec.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <limits>
#include <string>
#include <vector>

namespace sluice {
namespace {

std::string Base64Floats(const std::vector<float>& values) {
  static const char* kAlphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  std::string bytes(values.size() * 4, '\0');
  std::memcpy(bytes.data(), values.data(), bytes.size());  // the test host is little-endian
  std::string out;
  size_t i = 0;
  for (; i + 3 <= bytes.size(); i += 3) {
    const uint32_t v =
        (uint8_t(bytes[i]) << 16) | (uint8_t(bytes[i + 1]) << 8) | uint8_t(bytes[i + 2]);
    out += kAlphabet[v >> 18];
    out += kAlphabet[(v >> 12) & 63];
    out += kAlphabet[(v >> 6) & 63];
    out += kAlphabet[v & 63];
  }
  if (bytes.size() - i == 1) {
    const uint32_t v = uint8_t(bytes[i]) << 16;
    out += kAlphabet[v >> 18];
    out += kAlphabet[(v >> 12) & 63];
    out += "==";
  } else if (bytes.size() - i == 2) {
    const uint32_t v = (uint8_t(bytes[i]) << 16) | (uint8_t(bytes[i + 1]) << 8);
    out += kAlphabet[v >> 18];
    out += kAlphabet[(v >> 12) & 63];
    out += kAlphabet[(v >> 6) & 63];
    out += '=';
  }
  return out;
}

std::string Item(int index, const std::string& embedding_json) {
  return R"({"object":"embedding","index":)" + std::to_string(index) + R"(,"embedding":)" +
         embedding_json + "}";
}

std::string Body(const std::vector<std::string>& items, int prompt_tokens = 7) {
  std::string body = R"({"object":"list","data":[)";
  for (size_t i = 0; i < items.size(); ++i) {
    if (i > 0) body += ",";
    body += items[i];
  }
  body += R"(],"model":"m","usage":{"prompt_tokens":)" + std::to_string(prompt_tokens) +
          R"(,"total_tokens":)" + std::to_string(prompt_tokens) + "}}";
  return body;
}

TEST(RequestCodecTest, BuildsRequestBody) {
  std::string body;
  BuildEmbeddingRequestBody("text-embedding-3-small", {"a \"quoted\"", "b\n"}, 256,
                            EncodingFormat::kBase64, body);
  EXPECT_EQ(body, R"({"model":"text-embedding-3-small","input":["a \"quoted\"","b\n"],)"
                  R"("dimensions":256,"encoding_format":"base64"})");
  body.clear();
  BuildEmbeddingRequestBody("m", {"x"}, 0, EncodingFormat::kFloat, body);
  EXPECT_EQ(body, R"({"model":"m","input":["x"],"encoding_format":"float"})");
}

TEST(RequestCodecTest, ParsesFloatBody) {
  std::string body = Body({Item(0, "[0.5,-0.25,1e-3]"), Item(1, "[1,2,3]")}, 12);
  ParsedEmbeddings parsed;
  ASSERT_TRUE(ParseEmbeddingResponse(body, 2, 3, parsed).ok());
  ASSERT_EQ(parsed.vectors.size(), 2u);
  EXPECT_EQ(parsed.vectors[0], (std::vector<float>{0.5f, -0.25f, 1e-3f}));
  EXPECT_EQ(parsed.vectors[1], (std::vector<float>{1, 2, 3}));
  EXPECT_EQ(parsed.prompt_tokens, 12);
}

TEST(RequestCodecTest, ParsesBase64BodyAndMixedForms) {
  const std::vector<float> a = {0.1f, -0.2f, 3.5f, 1e-7f};
  const std::vector<float> b = {-1.0f, 0.0f, 0.25f, 42.0f};
  std::string body = Body({Item(0, "\"" + Base64Floats(a) + "\""), Item(1, "[-1,0,0.25,42]")});
  ParsedEmbeddings parsed;
  Status s = ParseEmbeddingResponse(body, 2, 0, parsed);
  ASSERT_TRUE(s.ok()) << s.ToString();
  EXPECT_EQ(parsed.vectors[0], a);
  EXPECT_EQ(parsed.vectors[1], b);
}

TEST(RequestCodecTest, Base64PaddingForms) {
  // 1 float = 4 bytes -> "xxxxxx==" ; 2 floats = 8 bytes -> one '='; 3 floats = 12 bytes none.
  for (size_t n : {1u, 2u, 3u}) {
    std::vector<float> v(n, 1.5f);
    std::vector<float> out;
    std::string b64 = Base64Floats(v);
    ASSERT_TRUE(DecodeBase64Floats(b64, out).ok()) << b64;
    EXPECT_EQ(out, v);
    // Unpadded is accepted too.
    while (!b64.empty() && b64.back() == '=') b64.pop_back();
    out.clear();
    ASSERT_TRUE(DecodeBase64Floats(b64, out).ok()) << b64;
    EXPECT_EQ(out, v);
  }
  std::vector<float> out;
  EXPECT_EQ(DecodeBase64Floats("AAA*", out).code(), StatusCode::kCorrupt);
  EXPECT_EQ(DecodeBase64Floats("AAAAAAA=", out).code(), StatusCode::kCorrupt);  // 5 bytes
  EXPECT_EQ(DecodeBase64Floats("AAAAA", out).code(), StatusCode::kCorrupt);     // 5 chars
}

TEST(RequestCodecTest, OrdersByIndex) {
  std::string body = Body({Item(2, "[3,3]"), Item(0, "[1,1]"), Item(1, "[2,2]")});
  ParsedEmbeddings parsed;
  ASSERT_TRUE(ParseEmbeddingResponse(body, 3, 2, parsed).ok());
  EXPECT_EQ(parsed.vectors[0][0], 1);
  EXPECT_EQ(parsed.vectors[1][0], 2);
  EXPECT_EQ(parsed.vectors[2][0], 3);
}

TEST(RequestCodecTest, IndexBeforeOrAfterEmbeddingField) {
  std::string body = R"({"data":[{"embedding":[9,9],"index":1},{"index":0,"embedding":[8,8]}]})";
  ParsedEmbeddings parsed;
  ASSERT_TRUE(ParseEmbeddingResponse(body, 2, 2, parsed).ok());
  EXPECT_EQ(parsed.vectors[0][0], 8);
  EXPECT_EQ(parsed.vectors[1][0], 9);
  EXPECT_EQ(parsed.prompt_tokens, 0);  // no usage
}

TEST(RequestCodecTest, RejectsWrongCount) {
  std::string body = Body({Item(0, "[1,2]")});
  ParsedEmbeddings parsed;
  Status s = ParseEmbeddingResponse(body, 2, 2, parsed);
  EXPECT_EQ(s.code(), StatusCode::kCorrupt);
  EXPECT_NE(s.message().find("1 embeddings for 2 inputs"), std::string::npos) << s.message();

  std::string extra = Body({Item(0, "[1,2]"), Item(1, "[1,2]")});
  s = ParseEmbeddingResponse(extra, 1, 2, parsed);
  EXPECT_EQ(s.code(), StatusCode::kCorrupt);
  EXPECT_NE(s.message().find("outside [0, 1)"), std::string::npos) << s.message();

  std::string duplicate = Body({Item(0, "[1,2]"), Item(0, "[1,2]")});
  s = ParseEmbeddingResponse(duplicate, 2, 2, parsed);
  EXPECT_EQ(s.code(), StatusCode::kCorrupt);
  EXPECT_NE(s.message().find("appears twice"), std::string::npos) << s.message();
}

TEST(RequestCodecTest, RejectsWrongDimensions) {
  std::string body = Body({Item(0, "[1,2,3]")});
  ParsedEmbeddings parsed;
  Status s = ParseEmbeddingResponse(body, 1, 4, parsed);
  EXPECT_EQ(s.code(), StatusCode::kCorrupt);
  EXPECT_NE(s.message().find("has 3 dimensions, expected 4"), std::string::npos) << s.message();

  // Unknown expectation: all items must agree with the first.
  std::string mixed = Body({Item(0, "[1,2,3]"), Item(1, "[1,2]")});
  s = ParseEmbeddingResponse(mixed, 2, 0, parsed);
  EXPECT_EQ(s.code(), StatusCode::kCorrupt);
  EXPECT_NE(s.message().find("has 2 dimensions, expected 3"), std::string::npos) << s.message();
}

TEST(RequestCodecTest, RejectsNonFiniteValues) {
  ParsedEmbeddings parsed;
  std::string nan_b64 =
      Body({Item(0, "\"" + Base64Floats({1.0f, std::numeric_limits<float>::quiet_NaN()}) + "\"")});
  Status s = ParseEmbeddingResponse(nan_b64, 1, 2, parsed);
  EXPECT_EQ(s.code(), StatusCode::kCorrupt);
  EXPECT_NE(s.message().find("non-finite value at component 1"), std::string::npos) << s.message();

  // 1e39 overflows float32.
  std::string overflow = Body({Item(0, "[1e39, 1]")});
  s = ParseEmbeddingResponse(overflow, 1, 2, parsed);
  EXPECT_EQ(s.code(), StatusCode::kCorrupt) << s.ToString();

  std::string text_value = Body({Item(0, "[\"NaN\", 1]")});
  s = ParseEmbeddingResponse(text_value, 1, 2, parsed);
  EXPECT_EQ(s.code(), StatusCode::kCorrupt) << s.ToString();
}

TEST(RequestCodecTest, RejectsMalformedJson) {
  ParsedEmbeddings parsed;
  for (std::string body : {std::string("not json"), std::string(R"({"data":[{"index":0,"embe)"),
                           std::string(R"({"data":[{"index":0,"embedding":[1,2]}]} trailing)"),
                           std::string(R"({"data":{"index":0}})"), std::string("[]"),
                           std::string(R"({"object":"list"})"), std::string(""),
                           std::string(R"({"data":[{"index":0,"embedding":{}}]})"),
                           std::string(R"({"data":[{"index":0}]})")}) {
    const std::string copy = body;
    Status s = ParseEmbeddingResponse(body, 1, 0, parsed);
    EXPECT_EQ(s.code(), StatusCode::kCorrupt) << copy << " -> " << s.ToString();
    EXPECT_FALSE(s.message().empty());
  }
}

TEST(RequestCodecTest, ParsesErrorBodies) {
  EXPECT_EQ(ParseErrorMessage(
                R"({"error":{"message":"Too many inputs","type":"invalid_request_error"}})"),
            "Too many inputs");
  EXPECT_EQ(ParseErrorMessage(R"({"error":"plain"})"), "plain");
  EXPECT_EQ(ParseErrorMessage("<html>502</html>"), std::nullopt);
  EXPECT_EQ(ParseErrorMessage(R"({"data":[]})"), std::nullopt);
}

}  // namespace
}  // namespace sluice
