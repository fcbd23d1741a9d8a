#include "sources/jsonl_ranges.h"

#include <simdjson.h>

#include <algorithm>
#include <cstring>

#include "common/hashing.h"
#include "common/utf8.h"
#include "sources/jsonl_records.h"
#include "sources/text_input.h"

namespace sluice {

using sources_internal::kJsonlLinePadding;
using sources_internal::kMaxJsonlLineBytes;
using sources_internal::LineSplitter;
using sources_internal::Trim;

struct JsonlRangePlanner::Impl {
  explicit Impl(uint64_t bytes, JsonlRangePlanner& owner)
      : range_bytes(std::max<uint64_t>(1, bytes)),
        lines(
            kMaxJsonlLineBytes, LineSplitter::Overflow::kDiscard,
            [&owner](std::string_view line, uint64_t n, bool too_long) {
              // A line too long for the reader is refused by it whole: no id.
              if (!too_long) owner.OnLine(line, n);
              return Status::OK();
            },
            kJsonlLinePadding) {}

  const uint64_t range_bytes;
  LineSplitter lines;
  simdjson::dom::parser parser;
  std::string repaired;
  uint64_t offset = 0;      // bytes fed so far
  uint64_t newlines = 0;    // '\n' among them
  uint64_t begin = 0;       // the open range's first byte
  uint64_t begin_line = 1;  // and its line number
  std::vector<JsonlRange> ranges;
  std::vector<uint64_t> id_hashes;
  std::vector<std::pair<uint64_t, std::string>> examples;
};

JsonlRangePlanner::JsonlRangePlanner(uint64_t range_bytes)
    : impl_(std::make_unique<Impl>(range_bytes, *this)) {}

JsonlRangePlanner::~JsonlRangePlanner() = default;

void JsonlRangePlanner::Feed(std::string_view bytes) {
  Impl& m = *impl_;
  (void)m.lines.Feed(bytes);  // its callback never fails
  const char* const base = bytes.data();
  size_t pos = 0;
  while (pos < bytes.size()) {
    const void* hit = std::memchr(base + pos, '\n', bytes.size() - pos);
    if (hit == nullptr) break;
    const size_t at = static_cast<size_t>(static_cast<const char*>(hit) - base);
    ++m.newlines;
    const uint64_t after = m.offset + at + 1;  // the byte after this '\n'
    if (after - m.begin >= m.range_bytes) {
      m.ranges.push_back(JsonlRange{m.begin, after, m.begin_line});
      m.begin = after;
      m.begin_line = m.newlines + 1;
    }
    pos = at + 1;
  }
  m.offset += bytes.size();
}

void JsonlRangePlanner::OnLine(std::string_view line, uint64_t line_number) {
  Impl& m = *impl_;
  // As JsonlRecordReader::HandleLine and HandleRecord read a record's id.
  if (line_number == 1 && line.starts_with("\xEF\xBB\xBF")) line.remove_prefix(3);
  if (Trim(line).empty()) return;
  if (!simdjson::validate_utf8(line.data(), line.size())) {
    m.repaired.clear();
    AppendRepairedUtf8(line, m.repaired);
    const size_t size = m.repaired.size();
    m.repaired.append(kJsonlLinePadding, '\0');
    line = std::string_view(m.repaired.data(), size);
  }
  simdjson::dom::element root;
  if (m.parser
          .parse(reinterpret_cast<const uint8_t*>(line.data()), line.size(),
                 /*realloc_if_needed=*/false)
          .get(root)) {
    return;  // refused by the reader: claims no id
  }
  simdjson::dom::element id_el;
  if (root.is_object() && !root["id"].get(id_el)) {
    std::string id;
    if (id_el.is_string()) {
      id = std::string(id_el.get_string().value_unsafe());
    } else if (id_el.is_number()) {
      id = simdjson::minify(id_el);
    }
    if (!id.empty()) {
      const uint64_t h = Hash64(id);
      m.id_hashes.push_back(h);
      // A few ids kept to name a repeated one; the hashes decide.
      if (m.examples.size() < 1024) m.examples.emplace_back(h, std::move(id));
    }
  }
  if (line.size() > (4u << 20)) m.parser = simdjson::dom::parser();  // as the reader does
}

JsonlRangePlan JsonlRangePlanner::Finish() {
  Impl& m = *impl_;
  (void)m.lines.Finish();
  JsonlRangePlan plan;
  if (m.offset > m.begin) m.ranges.push_back(JsonlRange{m.begin, m.offset, m.begin_line});
  plan.ranges = std::move(m.ranges);
  std::sort(m.id_hashes.begin(), m.id_hashes.end());
  const auto repeat = std::adjacent_find(m.id_hashes.begin(), m.id_hashes.end());
  if (repeat != m.id_hashes.end()) {
    plan.repeated_id = true;
    for (const auto& [hash, id] : m.examples) {
      if (hash == *repeat) {
        plan.repeated_example = id;
        break;
      }
    }
  }
  return plan;
}

Result<JsonlRangePlan> PlanJsonlRangesOfFile(const std::string& path, uint64_t range_bytes) {
  Result<sources_internal::InputFile> in = sources_internal::InputFile::Open(path);
  if (!in.ok()) return in.status();
  JsonlRangePlanner planner(range_bytes);
  std::string block;
  for (;;) {
    block.clear();
    Result<size_t> got = in->Read(block, sources_internal::kReadBlockBytes);
    if (!got.ok()) return got.status();
    if (*got == 0) break;
    planner.Feed(block);
  }
  return planner.Finish();
}

}  // namespace sluice
