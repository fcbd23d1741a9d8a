// The wire format of the mock API's /v1/embeddings: parsing and validating a
// request body, and rendering the OpenAI-shaped answers (the embeddings
// body, error bodies, x-ratelimit-* headers). No I/O and no service model:
// mock_api_server.cc decides when and whether to answer.
//
// Thread safety: pure functions; a simdjson parser belongs to one thread.
#pragma once

#include <simdjson.h>

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "mockapi/rate_limits.h"
#include "sluice/mock_api.h"

namespace sluice::mockapi {

constexpr int kMaxDimensions = 65536;

// What a reply counts as in MockApiStats.
enum class Outcome {
  kOk,
  kBadRequest,
  kUnauthorized,
  kRateLimited,
  kOverCapacity,
  kFault500,
  kFaultReset,
  kFaultMalformed,
  kFaultWrongDims,
  kFaultWrongCount,
  kUncounted,  // /stats, /health, 404, shutdown
};

struct Reply {
  unsigned status = 200;
  std::string body;
  std::vector<std::pair<std::string, std::string>> headers;
  Outcome outcome = Outcome::kUncounted;
  int64_t inputs = 0;
  int64_t tokens = 0;
};

struct ParsedRequest {
  std::string_view model;
  std::vector<std::string_view> inputs;  // point into the thread's parser
  int dimensions = 0;
  bool base64 = false;
  int64_t total_tokens = 0;
};

std::string ErrorBody(std::string_view message, std::string_view type = "invalid_request_error",
                      std::string_view code = {});

Reply ErrorReply(unsigned status, Outcome outcome, std::string_view message,
                 std::string_view type = "invalid_request_error", std::string_view code = {});

// The 200 body for `p`: one mock vector of `vector_dimensions` per input.
std::string EmbeddingsBody(const ParsedRequest& p, int vector_dimensions);

// A limit as the x-ratelimit-limit-* headers write it (an integer when whole).
std::string FormatNumber(double value);

void AddRateLimitHeaders(const RateLimitSnapshot& s, Reply& r);

// Parses and validates a /v1/embeddings body. On failure returns the 400.
// REQUIRES: body.capacity() >= body.size() + SIMDJSON_PADDING.
std::optional<Reply> ParseEmbeddingsRequest(simdjson::dom::parser& parser, const std::string& body,
                                            const MockApiOptions& options, ParsedRequest& out);

}  // namespace sluice::mockapi
