// Where a large JSONL file may be cut into byte ranges that separate workers
// read (`sluice enqueue --split-bytes`, docs/DISTRIBUTED.md), and whether it
// may be cut at all.
//
// A JSONL record is one line and depends on no other line, so a range that
// starts just after a '\n' and ends just after one (or at the end of the
// file) holds whole records, and reading the ranges one by one gives each
// record exactly what reading the file whole gives it, provided two things
// carried from line to line are carried over: the line number (error
// messages name it: each range knows the number of its first line) and the
// ids already seen (a repeated id is refused, and its first use kept, only
// when both are in one reader). The planner therefore also looks at every
// record's "id" and reports a file that repeats one: such a file must stay
// one task, so that the reader refuses the repeat exactly as `sluice ingest`
// does, instead of two ranges each storing a record under the same source id.
//
// The id test mirrors JsonlRecordReader (BOM on line 1, blank lines, invalid
// UTF-8 repaired, a string id or a number's JSON spelling) but looks at
// nothing else: a line the reader would refuse for another reason still
// claims its id here, so the test can only err towards "repeated" (a file not
// split), never miss a repeat. Ids are remembered as 64-bit hashes (8 bytes
// per record); two ids sharing a hash likewise only keep a file whole.
//
// Thread safety: one planner per thread; it does no I/O except in
// PlanJsonlRangesOfFile.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "sluice/status.h"

namespace sluice {

struct JsonlRange {
  uint64_t begin = 0;  // byte offset of its first line
  uint64_t end = 0;    // one past its last byte: just after a '\n', or the file's size
  uint64_t first_line = 1;
  bool operator==(const JsonlRange&) const = default;
};

struct JsonlRangePlan {
  // In order, covering [0, file size) exactly once; one range when the file
  // is not larger than the range size or has no place to cut.
  std::vector<JsonlRange> ranges;
  bool repeated_id = false;      // some id is on two lines: keep the file whole
  std::string repeated_example;  // one such id, for the log
};

class JsonlRangePlanner {
 public:
  // `range_bytes`: a range ends at the first '\n' at or after range_bytes
  // bytes from its start (so every range but the last has at least that
  // many bytes, and a line longer than that makes its range longer).
  // REQUIRES: range_bytes >= 1.
  explicit JsonlRangePlanner(uint64_t range_bytes);
  ~JsonlRangePlanner();
  JsonlRangePlanner(const JsonlRangePlanner&) = delete;
  JsonlRangePlanner& operator=(const JsonlRangePlanner&) = delete;

  // The file's next bytes.
  void Feed(std::string_view bytes);
  // After the last Feed.
  JsonlRangePlan Finish();

 private:
  void OnLine(std::string_view line, uint64_t line_number);
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// Reads `path` through a planner. Reading it is the cost of splitting: about
// as fast as the disk, once, at the enqueue.
Result<JsonlRangePlan> PlanJsonlRangesOfFile(const std::string& path, uint64_t range_bytes);

}  // namespace sluice
