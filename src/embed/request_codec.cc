#include "embed/request_codec.h"

#include <simdjson.h>

#include <array>
#include <bit>
#include <cmath>
#include <cstring>

#include "common/base64.h"
#include "common/json_writer.h"

namespace sluice {
namespace {

simdjson::ondemand::parser& ThreadParser() {
  thread_local simdjson::ondemand::parser parser;
  return parser;
}

Status JsonError(const char* what, simdjson::error_code err) {
  return Status::Corrupt(std::string(what) + ": " + simdjson::error_message(err));
}

// Reads one item's "embedding" (array of numbers or base64 string) into `vec`.
Status ReadEmbedding(simdjson::ondemand::value value, std::vector<float>& vec) {
  simdjson::ondemand::json_type type;
  if (auto err = value.type().get(type)) return JsonError("bad \"embedding\"", err);
  if (type == simdjson::ondemand::json_type::string) {
    std::string_view b64;
    if (auto err = value.get_string().get(b64)) return JsonError("bad base64 \"embedding\"", err);
    return DecodeBase64Floats(b64, vec);
  }
  if (type != simdjson::ondemand::json_type::array) {
    return Status::Corrupt("\"embedding\" is neither an array nor a base64 string");
  }
  simdjson::ondemand::array arr;
  if (auto err = value.get_array().get(arr)) return JsonError("bad \"embedding\" array", err);
  for (auto element : arr) {
    double d;
    if (auto err = element.get_double().get(d)) {
      return JsonError("non-numeric value in \"embedding\"", err);
    }
    vec.push_back(static_cast<float>(d));
  }
  return Status::OK();
}

}  // namespace

void BuildEmbeddingRequestBody(std::string_view model, const std::vector<std::string>& inputs,
                               int dimensions, EncodingFormat format, std::string& out) {
  JsonWriter w(out);
  w.BeginObject();
  w.Key("model").String(model);
  w.Key("input").BeginArray();
  for (const std::string& input : inputs) w.String(input);
  w.EndArray();
  if (dimensions > 0) w.Key("dimensions").Int(dimensions);
  w.Key("encoding_format").String(format == EncodingFormat::kBase64 ? "base64" : "float");
  w.EndObject();
}

Status DecodeBase64Floats(std::string_view b64, std::vector<float>& out) {
  const size_t bytes = Base64DecodedSize(b64);
  if (bytes == SIZE_MAX) {
    return Status::Corrupt("base64 \"embedding\" has an invalid length " +
                           std::to_string(b64.size()));
  }
  if (bytes % 4 != 0) {
    return Status::Corrupt("base64 \"embedding\" decodes to " + std::to_string(bytes) +
                           " bytes, not a whole number of float32 values");
  }
  // Straight into the vector's floats: no temporary byte buffer.
  const size_t first = out.size();
  out.resize(first + bytes / 4);
  const size_t bad =
      DecodeBase64(b64, std::span<uint8_t>(reinterpret_cast<uint8_t*>(out.data() + first), bytes));
  if (bad != std::string_view::npos) {
    out.resize(first);
    return Status::Corrupt("invalid character in base64 \"embedding\" at offset " +
                           std::to_string(bad));
  }
  // The bytes are little-endian float32; swap on a big-endian host.
  if constexpr (std::endian::native == std::endian::big) {
    for (size_t i = first; i < out.size(); ++i) {
      uint32_t u;
      std::memcpy(&u, &out[i], 4);
      u = __builtin_bswap32(u);
      std::memcpy(&out[i], &u, 4);
    }
  }
  return Status::OK();
}

Status ParseEmbeddingResponse(std::string& body, size_t expected_count, int expected_dims,
                              ParsedEmbeddings& out) {
  out.vectors.clear();
  out.vectors.resize(expected_count);
  out.prompt_tokens = 0;
  const size_t length = body.size();
  body.reserve(length + simdjson::SIMDJSON_PADDING);
  simdjson::padded_string_view padded(body.data(), length, body.capacity());

  simdjson::ondemand::document doc;
  if (auto err = ThreadParser().iterate(padded).get(doc)) {
    return JsonError("response body is not JSON", err);
  }
  simdjson::ondemand::object root;
  if (auto err = doc.get_object().get(root)) return JsonError("response is not a JSON object", err);

  std::vector<bool> seen(expected_count, false);
  size_t items = 0;
  bool saw_data = false;
  int dims = expected_dims > 0 ? expected_dims : -1;
  for (auto field_result : root) {
    simdjson::ondemand::field field;
    if (auto err = std::move(field_result).get(field))
      return JsonError("malformed response object", err);
    std::string_view key;
    if (auto err = field.unescaped_key().get(key)) return JsonError("malformed key", err);
    if (key == "usage") {
      simdjson::ondemand::object usage;
      if (auto err = field.value().get_object().get(usage)) {
        return JsonError("\"usage\" is not an object", err);
      }
      for (auto usage_field : usage) {
        std::string_view ukey;
        if (auto err = usage_field.unescaped_key().get(ukey)) {
          return JsonError("malformed \"usage\"", err);
        }
        if (ukey == "prompt_tokens") {
          if (auto err = usage_field.value().get_int64().get(out.prompt_tokens)) {
            return JsonError("bad usage.prompt_tokens", err);
          }
        }
      }
      continue;
    }
    if (key != "data") continue;
    saw_data = true;
    simdjson::ondemand::array data;
    if (auto err = field.value().get_array().get(data)) {
      return JsonError("\"data\" is not an array", err);
    }
    for (auto element : data) {
      simdjson::ondemand::object item;
      if (auto err = element.get_object().get(item)) {
        return JsonError("item of \"data\" is not an object", err);
      }
      int64_t index = -1;
      bool saw_embedding = false;
      std::vector<float> vec;
      for (auto item_field_result : item) {
        simdjson::ondemand::field item_field;
        if (auto err = std::move(item_field_result).get(item_field))
          return JsonError("malformed item", err);
        std::string_view ikey;
        if (auto err = item_field.unescaped_key().get(ikey)) return JsonError("malformed key", err);
        if (ikey == "index") {
          if (auto err = item_field.value().get_int64().get(index)) {
            return JsonError("bad \"index\"", err);
          }
        } else if (ikey == "embedding") {
          saw_embedding = true;
          Status s = ReadEmbedding(item_field.value(), vec);
          if (!s.ok()) return s.WithContext("item " + std::to_string(items));
        }
      }
      const std::string where = "item " + std::to_string(items);
      if (!saw_embedding) return Status::Corrupt(where + " has no \"embedding\"");
      if (index < 0 || static_cast<uint64_t>(index) >= expected_count) {
        return Status::Corrupt(where + " has index " + std::to_string(index) + " outside [0, " +
                               std::to_string(expected_count) + ")");
      }
      if (seen[index]) {
        return Status::Corrupt("index " + std::to_string(index) + " appears twice");
      }
      seen[index] = true;
      if (vec.empty()) return Status::Corrupt(where + " has an empty embedding");
      if (dims < 0) dims = static_cast<int>(vec.size());
      if (vec.size() != static_cast<size_t>(dims)) {
        return Status::Corrupt("embedding at index " + std::to_string(index) + " has " +
                               std::to_string(vec.size()) + " dimensions, expected " +
                               std::to_string(dims));
      }
      for (size_t i = 0; i < vec.size(); ++i) {
        if (!std::isfinite(vec[i])) {
          return Status::Corrupt("embedding at index " + std::to_string(index) +
                                 " has a non-finite value at component " + std::to_string(i));
        }
      }
      out.vectors[index] = std::move(vec);
      ++items;
    }
  }
  const char* trailing = nullptr;
  if (doc.current_location().get(trailing) == simdjson::SUCCESS) {
    return Status::Corrupt("trailing content after the response object");
  }
  if (!saw_data) return Status::Corrupt("response has no \"data\" array");
  if (items != expected_count) {
    return Status::Corrupt("response has " + std::to_string(items) + " embeddings for " +
                           std::to_string(expected_count) + " inputs");
  }
  return Status::OK();
}

std::optional<std::string> ParseErrorMessage(std::string_view body) {
  constexpr size_t kMaxMessage = 1000;
  simdjson::padded_string padded(body);
  simdjson::ondemand::document doc;
  if (ThreadParser().iterate(padded).get(doc)) return std::nullopt;
  simdjson::ondemand::value error;
  if (doc["error"].get(error)) return std::nullopt;
  std::string_view message;
  simdjson::ondemand::json_type type;
  if (error.type().get(type)) return std::nullopt;
  if (type == simdjson::ondemand::json_type::string) {
    if (error.get_string().get(message)) return std::nullopt;
  } else if (type == simdjson::ondemand::json_type::object) {
    if (error["message"].get_string().get(message)) return std::nullopt;
  } else {
    return std::nullopt;
  }
  return std::string(message.substr(0, kMaxMessage));
}

}  // namespace sluice
