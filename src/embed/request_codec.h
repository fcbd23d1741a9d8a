// The wire format of OpenAI's `POST {base}/embeddings`: building request
// bodies and parsing response and error bodies. No I/O, so the HTTP transport,
// fuzzers and tests share one parser.
//
// Thread safety: pure functions; the parsers keep one simdjson parser per thread.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "sluice/status.h"

namespace sluice {

enum class EncodingFormat { kFloat, kBase64 };

// Appends the JSON body {"model":..,"input":[..],"dimensions":..,"encoding_format":..}
// to `out`. `dimensions` <= 0 omits the field.
void BuildEmbeddingRequestBody(std::string_view model, const std::vector<std::string>& inputs,
                               int dimensions, EncodingFormat format, std::string& out);

struct ParsedEmbeddings {
  std::vector<std::vector<float>> vectors;  // ordered by each item's "index"
  int64_t prompt_tokens = 0;                // usage.prompt_tokens, 0 when absent
};

// Parses a 200 response body. Each item's "embedding" may be an array of
// numbers or a base64 string of little-endian float32 (both accepted, even
// mixed). Promises on OK: exactly `expected_count` vectors, each index in
// [0, expected_count) seen once, all of one length (== expected_dims when
// expected_dims > 0), every value finite. Anything else is Status::Corrupt
// with a message that says what was wrong.
//
// `body` is taken by reference so the parser can pad it in place (simdjson
// needs SIMDJSON_PADDING readable bytes past the end) instead of copying it.
Status ParseEmbeddingResponse(std::string& body, size_t expected_count, int expected_dims,
                              ParsedEmbeddings& out);

// The "error.message" of an OpenAI error body ({"error":{"message":...}}), or
// nullopt when `body` is not one.
std::optional<std::string> ParseErrorMessage(std::string_view body);

// Decodes standard base64 (with or without '=' padding) of little-endian
// float32 values, appending to `out`. Corrupt on a bad character or a length
// that is not a whole number of floats.
Status DecodeBase64Floats(std::string_view b64, std::vector<float>& out);

}  // namespace sluice
