// A small streaming JSON writer for reports, dead letters, request bodies and
// aggregate files. simdjson parses; this only writes. Strings are escaped per
// RFC 8259; invalid UTF-8 in a string is written as U+FFFD.
//
// Usage: JsonWriter w(out); w.BeginObject(); w.Key("a"); w.Int(1); w.EndObject();
// Commas are inserted automatically.
// Thread safety: one writer per thread.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace sluice {

// Appends `s` as a quoted, escaped JSON string.
void AppendJsonString(std::string_view s, std::string& out);

class JsonWriter {
 public:
  explicit JsonWriter(std::string& out) : out_(out) {}
  JsonWriter& BeginObject();
  JsonWriter& EndObject();
  JsonWriter& BeginArray();
  JsonWriter& EndArray();
  JsonWriter& Key(std::string_view key);
  JsonWriter& String(std::string_view value);
  JsonWriter& Int(int64_t value);
  JsonWriter& Uint(uint64_t value);
  JsonWriter& Double(double value);  // shortest round-trip form; NaN/inf as null
  JsonWriter& Float(float value);    // shortest round-trip form for float
  JsonWriter& Bool(bool value);
  JsonWriter& Null();
  // Inserts already-serialized JSON (e.g. a metadata object) verbatim.
  // REQUIRES: raw is one valid JSON value.
  JsonWriter& Raw(std::string_view raw);

 private:
  void BeforeValue();
  std::string& out_;
  std::vector<bool> first_;  // per open container: no element written yet
  bool after_key_ = false;
};

}  // namespace sluice
