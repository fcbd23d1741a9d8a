// The one base64 of the project (src/common/base64.h): RFC 4648's test
// vectors, a round trip of every length, and the errors the decoder reports.
#include "common/base64.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

namespace sluice {
namespace {

std::string Encode(std::string_view text) {
  std::string out;
  AppendBase64(std::span<const uint8_t>(reinterpret_cast<const uint8_t*>(text.data()), text.size()),
               out);
  return out;
}

TEST(Base64Test, Rfc4648Vectors) {
  const std::pair<const char*, const char*> vectors[] = {{"", ""},
                                                         {"f", "Zg=="},
                                                         {"fo", "Zm8="},
                                                         {"foo", "Zm9v"},
                                                         {"foob", "Zm9vYg=="},
                                                         {"fooba", "Zm9vYmE="},
                                                         {"foobar", "Zm9vYmFy"}};
  for (const auto& [plain, encoded] : vectors) {
    EXPECT_EQ(Encode(plain), encoded) << plain;
    const std::string_view b64 = encoded;
    ASSERT_EQ(Base64DecodedSize(b64), std::string_view(plain).size()) << encoded;
    std::vector<uint8_t> bytes(Base64DecodedSize(b64));
    EXPECT_EQ(DecodeBase64(b64, bytes), std::string_view::npos);
    EXPECT_EQ(std::string(bytes.begin(), bytes.end()), plain);
  }
}

TEST(Base64Test, EveryByteAndLengthRoundTripsWithAndWithoutPadding) {
  std::vector<uint8_t> data;
  for (int n = 0; n < 300; ++n) {
    std::string encoded;
    AppendBase64(data, encoded);
    EXPECT_EQ(encoded.size() % 4, 0u);
    for (bool strip : {false, true}) {
      std::string_view b64 = encoded;
      if (strip) {
        while (!b64.empty() && b64.back() == '=') b64.remove_suffix(1);
      }
      ASSERT_EQ(Base64DecodedSize(b64), data.size());
      std::vector<uint8_t> back(data.size());
      ASSERT_EQ(DecodeBase64(b64, back), std::string_view::npos);
      EXPECT_EQ(back, data);
    }
    data.push_back(static_cast<uint8_t>(n * 37 + 11));
  }
}

TEST(Base64Test, BadLengthsAndCharactersAreFound) {
  EXPECT_EQ(Base64DecodedSize("Zm9vY"), SIZE_MAX);  // 4k+1 characters
  EXPECT_EQ(Base64DecodedSize("Zg==="), SIZE_MAX);  // three '='
  std::vector<uint8_t> out(3);
  EXPECT_EQ(DecodeBase64("Zm-v", out), 2u);  // '-' is base64url, not base64
  EXPECT_EQ(DecodeBase64("Zm9v", out), std::string_view::npos);
}

}  // namespace
}  // namespace sluice
