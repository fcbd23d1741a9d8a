// The JSON aggregator's import of a group file an earlier run wrote: line
// by line in the layout this aggregator writes, or whole for any other valid
// layout (json_aggregator.h).
#include "aggregate/json_aggregator.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <functional>
#include <limits>
#include <unordered_set>
#include <utility>

#include <fmt/format.h>
#include <simdjson.h>
#include <sqlite3.h>

#include "aggregate/aggregate_util.h"
#include "common/json_writer.h"
#include "common/private_file.h"

namespace sluice {

namespace fs = std::filesystem;
using namespace aggregate;  // the folder's shared helpers (aggregate_util.h)

Status JsonAggregator::ImportExisting(Group& g) {
  // The earlier run's chunks go to this run's spool like any other, marked
  // imported. A file this aggregator wrote is read one line at a time; any
  // other layout is read whole.
  auto streamed = ImportLines(g);
  if (!streamed.ok()) return streamed.status();
  if (*streamed) return Status::OK();
  Status s = ClearGroup(g);
  if (!s.ok()) return s;
  s = ImportWhole(g);
  // The parser grew to the whole file; give that memory back.
  parser_ = std::make_unique<simdjson::dom::parser>();
  return s;
}

Result<bool> JsonAggregator::ImportLines(Group& g) {
  std::FILE* f = std::fopen(g.file_path.c_str(), "rb");
  if (f == nullptr) return false;  // ImportWhole reports why
  char* buf = nullptr;
  size_t cap = 0;
  const auto finish = [&](Result<bool> r) {
    std::free(buf);
    std::fclose(f);
    return r;
  };
  const auto next_line = [&](std::string_view& line) {
    const ssize_t n = ::getline(&buf, &cap, f);
    if (n < 0) return false;
    line = std::string_view(buf, static_cast<size_t>(n));
    if (!line.empty() && line.back() == '\n') line.remove_suffix(1);
    return true;
  };

  // Line 1: {"domain":...,"chunks":[   then one chunk per line, then ]}
  std::string_view line;
  constexpr std::string_view kHeadStart = "{\"domain\":", kHeadEnd = ",\"chunks\":[";
  if (!next_line(line) || line.substr(0, kHeadStart.size()) != kHeadStart ||
      line.size() < kHeadEnd.size() || line.substr(line.size() - kHeadEnd.size()) != kHeadEnd) {
    return finish(false);
  }
  {
    std::string head(line);
    head += "]}";
    simdjson::dom::element doc;
    if (parser_->parse(head).get(doc) || !doc.is_object()) return finish(false);
  }
  bool closed = false;
  while (next_line(line)) {
    if (closed) {
      if (!line.empty()) return finish(false);  // bytes after the document
      continue;
    }
    if (line == "]}") {
      closed = true;
      continue;
    }
    if (!line.empty() && line.back() == ',') line.remove_suffix(1);
    simdjson::dom::element c;
    if (parser_->parse(line.data(), line.size(), true).get(c)) return finish(false);
    Status s = ImportChunk(g, c);
    if (s.code() == StatusCode::kCorrupt) return finish(false);
    if (!s.ok()) return finish(s);
  }
  return finish(closed);
}

Status JsonAggregator::ImportWhole(Group& g) {
  simdjson::dom::element doc;
  if (auto err = parser_->load(g.file_path).get(doc); err) {
    return CorruptExisting(g, simdjson::error_message(err));
  }
  simdjson::dom::array chunks;
  if (doc["chunks"].get_array().get(chunks)) return CorruptExisting(g, "no \"chunks\" array");
  for (simdjson::dom::element c : chunks) {
    Status s = ImportChunk(g, c);
    if (!s.ok()) return s;
  }
  return Status::OK();
}

Status JsonAggregator::CorruptExisting(const Group& g, std::string_view why) const {
  return Status::Corrupt(fmt::format(
      "existing aggregate '{}' cannot be merged ({}); move it away or use another output "
      "directory",
      g.file_path, why));
}

Status JsonAggregator::ImportChunk(Group& g, simdjson::dom::element c) {
  std::string_view id, source_id;
  uint64_t ordinal = 0;
  if (c["id"].get_string().get(id) || c["source_id"].get_string().get(source_id) ||
      c["ordinal"].get_uint64().get(ordinal)) {
    return CorruptExisting(g, "a chunk lacks id, source_id or ordinal");
  }
  const std::string line = simdjson::minify(c);
  g.has_imports = true;
  Status s = AddLine(g, id, source_id, static_cast<uint32_t>(ordinal), line, /*imported=*/true);
  if (!s.ok()) return s;
  if (g.buffer.size() >= limits_.group_buffer_bytes) return Spill(g);
  return Status::OK();
}

}  // namespace sluice
