#include "common/json_canonical.h"

#include <simdjson.h>

#include <algorithm>
#include <utility>
#include <vector>

#include "common/json_writer.h"

namespace sluice {

namespace {

void Emit(simdjson::dom::element value, JsonWriter& w) {
  using simdjson::dom::element_type;
  switch (value.type()) {
    case element_type::OBJECT: {
      std::vector<std::pair<std::string_view, simdjson::dom::element>> fields;
      for (auto field : simdjson::dom::object(value)) fields.emplace_back(field.key, field.value);
      // Stable: among repeated keys the last one ends up last, and wins.
      std::stable_sort(fields.begin(), fields.end(),
                       [](const auto& a, const auto& b) { return a.first < b.first; });
      w.BeginObject();
      for (size_t i = 0; i < fields.size(); ++i) {
        if (i + 1 < fields.size() && fields[i + 1].first == fields[i].first) continue;
        w.Key(fields[i].first);
        Emit(fields[i].second, w);
      }
      w.EndObject();
      return;
    }
    case element_type::ARRAY:
      w.BeginArray();
      for (auto item : simdjson::dom::array(value)) Emit(item, w);
      w.EndArray();
      return;
    case element_type::STRING:
      w.String(std::string_view(value));
      return;
    case element_type::INT64:
      w.Int(int64_t(value));
      return;
    case element_type::UINT64:
      w.Uint(uint64_t(value));
      return;
    case element_type::DOUBLE:
      w.Double(double(value));
      return;
    case element_type::BOOL:
      w.Bool(bool(value));
      return;
    case element_type::NULL_VALUE:
      w.Null();
      return;
  }
}

}  // namespace

Result<std::string> CanonicalJson(std::string_view json) {
  thread_local simdjson::dom::parser parser;
  simdjson::dom::element root;
  if (auto error = parser.parse(simdjson::padded_string(json)).get(root)) {
    return Status::InvalidArgument(std::string("not valid JSON: ") +
                                   simdjson::error_message(error));
  }
  std::string out;
  out.reserve(json.size());
  JsonWriter w(out);
  Emit(root, w);
  return out;
}

}  // namespace sluice
