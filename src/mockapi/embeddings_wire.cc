// The mock API's /v1/embeddings wire format (embeddings_wire.h).
#include "mockapi/embeddings_wire.h"

#include <algorithm>
#include <bit>
#include <charconv>
#include <cmath>
#include <cstring>

#include <fmt/format.h>

#include "common/base64.h"
#include "common/hashing.h"
#include "common/json_writer.h"

namespace sluice::mockapi {

std::string ErrorBody(std::string_view message, std::string_view type, std::string_view code) {
  std::string out;
  JsonWriter w(out);
  w.BeginObject().Key("error").BeginObject();
  w.Key("message").String(message);
  w.Key("type").String(type);
  w.Key("param").Null();
  w.Key("code");
  if (code.empty()) {
    w.Null();
  } else {
    w.String(code);
  }
  w.EndObject().EndObject();
  return out;
}

Reply ErrorReply(unsigned status, Outcome outcome, std::string_view message, std::string_view type,
                 std::string_view code) {
  Reply r;
  r.status = status;
  r.outcome = outcome;
  r.body = ErrorBody(message, type, code);
  return r;
}

namespace {

void AppendVector(const std::vector<float>& vec, bool base64, std::string& out) {
  if (base64) {
    std::vector<uint8_t> bytes(vec.size() * 4);
    for (size_t i = 0; i < vec.size(); ++i) {
      uint32_t bits = std::bit_cast<uint32_t>(vec[i]);
      // Little-endian float32 whatever the host order.
      bytes[4 * i] = static_cast<uint8_t>(bits);
      bytes[4 * i + 1] = static_cast<uint8_t>(bits >> 8);
      bytes[4 * i + 2] = static_cast<uint8_t>(bits >> 16);
      bytes[4 * i + 3] = static_cast<uint8_t>(bits >> 24);
    }
    out.push_back('"');
    AppendBase64(bytes, out);
    out.push_back('"');
    return;
  }
  out.push_back('[');
  char buf[32];
  for (size_t i = 0; i < vec.size(); ++i) {
    if (i > 0) out.push_back(',');
    // Shortest form that parses back to the same float32.
    auto r = std::to_chars(buf, buf + sizeof buf, vec[i]);
    out.append(buf, r.ptr);
  }
  out.push_back(']');
}

}  // namespace

std::string FormatNumber(double value) {
  if (value == std::floor(value) && std::fabs(value) < 9e15) {
    return fmt::format("{}", static_cast<int64_t>(value));
  }
  return fmt::format("{}", value);
}

std::string EmbeddingsBody(const ParsedRequest& p, int vector_dimensions) {
  std::string out;
  const size_t per_vector = p.base64 ? (static_cast<size_t>(vector_dimensions) * 4 / 3 + 8)
                                     : static_cast<size_t>(vector_dimensions) * 12;
  out.reserve(64 + p.inputs.size() * (per_vector + 48));
  out.append(R"({"object":"list","data":[)");
  char buf[24];
  for (size_t i = 0; i < p.inputs.size(); ++i) {
    if (i > 0) out.push_back(',');
    out.append(R"({"object":"embedding","index":)");
    auto r = std::to_chars(buf, buf + sizeof buf, i);
    out.append(buf, r.ptr);
    out.append(R"(,"embedding":)");
    AppendVector(MockEmbedding(p.inputs[i], vector_dimensions), p.base64, out);
    out.push_back('}');
  }
  out.append(R"(],"model":)");
  AppendJsonString(p.model, out);
  out.append(fmt::format(R"(,"usage":{{"prompt_tokens":{},"total_tokens":{}}}}})", p.total_tokens,
                         p.total_tokens));
  return out;
}

void AddRateLimitHeaders(const RateLimitSnapshot& s, Reply& r) {
  if (s.requests_limited) {
    r.headers.emplace_back("x-ratelimit-limit-requests", FormatNumber(s.limit_requests));
    r.headers.emplace_back("x-ratelimit-remaining-requests",
                           fmt::format("{}", std::max<int64_t>(0, s.remaining_requests)));
    r.headers.emplace_back("x-ratelimit-reset-requests", FormatRateLimitDuration(s.reset_requests));
  }
  if (s.tokens_limited) {
    r.headers.emplace_back("x-ratelimit-limit-tokens", FormatNumber(s.limit_tokens));
    r.headers.emplace_back("x-ratelimit-remaining-tokens",
                           fmt::format("{}", std::max<int64_t>(0, s.remaining_tokens)));
    r.headers.emplace_back("x-ratelimit-reset-tokens", FormatRateLimitDuration(s.reset_tokens));
  }
}

std::optional<Reply> ParseEmbeddingsRequest(simdjson::dom::parser& parser, const std::string& body,
                                            const MockApiOptions& options, ParsedRequest& out) {
  auto bad = [](std::string_view message) {
    return ErrorReply(400, Outcome::kBadRequest, message);
  };
  simdjson::dom::element doc;
  if (auto error = parser.parse(body.data(), body.size(), false).get(doc)) {
    return bad(fmt::format(
        "We could not parse the JSON body of your request ({}). The OpenAI API expects a JSON "
        "payload.",
        simdjson::error_message(error)));
  }
  simdjson::dom::object root;
  if (doc.get_object().get(root)) return bad("The request body must be a JSON object.");

  simdjson::dom::element model;
  if (root["model"].get(model) || !model.is_string()) {
    return bad("You must provide a model parameter (a string).");
  }
  out.model = model.get_string().value_unsafe();

  simdjson::dom::element input;
  if (root["input"].get(input)) return bad("'input' is a required property.");
  auto add_input = [&](simdjson::dom::element e, size_t index,
                       bool in_array) -> std::optional<Reply> {
    if (e.is_string()) {
      std::string_view text = e.get_string().value_unsafe();
      if (text.empty()) {
        return bad(in_array
                       ? fmt::format("'$.input[{}]' is invalid: an input must not be empty.", index)
                       : std::string("'$.input' is invalid: the input must not be empty."));
      }
      out.inputs.push_back(text);
      return std::nullopt;
    }
    if (e.is_int64() || e.is_uint64() || e.is_array()) {
      return bad("Token-id inputs are not supported by the mock API; send strings.");
    }
    return bad(fmt::format("'$.input[{}]' is invalid: expected a string.", index));
  };
  if (input.is_array()) {
    simdjson::dom::array items = input.get_array().value_unsafe();
    if (items.size() == 0) return bad("'$.input' is invalid: the input array must not be empty.");
    size_t index = 0;
    for (simdjson::dom::element e : items) {
      if (auto r = add_input(e, index++, true)) return r;
    }
  } else {
    if (auto r = add_input(input, 0, false)) return r;
  }
  if (out.inputs.size() > static_cast<size_t>(options.max_inputs)) {
    return bad(fmt::format("'$.input' has {} items; the maximum is {} inputs per request.",
                           out.inputs.size(), options.max_inputs));
  }
  for (size_t i = 0; i < out.inputs.size(); ++i) {
    const int64_t tokens = MockTokenCount(out.inputs[i]);
    if (tokens > options.max_tokens_per_input) {
      return bad(fmt::format(
          "This model's maximum context length is {} tokens, however input[{}] has {} tokens. "
          "Please reduce the length of the input.",
          options.max_tokens_per_input, i, tokens));
    }
    out.total_tokens += tokens;
  }
  if (out.total_tokens > options.max_tokens_per_request) {
    return bad(fmt::format(
        "Requested {} tokens, max {} tokens per request. Please reduce the number or length of "
        "the inputs.",
        out.total_tokens, options.max_tokens_per_request));
  }

  out.dimensions = options.dimensions;
  simdjson::dom::element dims;
  if (!root["dimensions"].get(dims) && !dims.is_null()) {
    int64_t value = 0;
    if (dims.get_int64().get(value) || value < 1 || value > kMaxDimensions) {
      return bad(fmt::format("'$.dimensions' is invalid: expected an integer in [1, {}].",
                             kMaxDimensions));
    }
    out.dimensions = static_cast<int>(value);
  }
  const int64_t values = static_cast<int64_t>(out.inputs.size()) * out.dimensions;
  if (values > options.max_response_values) {
    return bad(fmt::format(
        "This request asks for {} inputs x {} dimensions = {} values; the mock answers at most {} "
        "values per request (--max-response-values). Send fewer inputs or dimensions.",
        out.inputs.size(), out.dimensions, values, options.max_response_values));
  }
  simdjson::dom::element format;
  if (!root["encoding_format"].get(format) && !format.is_null()) {
    std::string_view f;
    if (format.get_string().get(f) || (f != "float" && f != "base64")) {
      return bad("'$.encoding_format' is invalid: expected 'float' or 'base64'.");
    }
    out.base64 = f == "base64";
  }
  return std::nullopt;
}

}  // namespace sluice::mockapi
