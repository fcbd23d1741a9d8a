// Reads JSON Lines records ({"id","text","domain","category","title",
// "author","metadata"}) into documents; shared by the "jsonl" parser and the
// --parser-cmd parser.
//
// Record contract: id is required, a string or a number (numbers keep their
// JSON spelling). A record's source_id is "<relative path>#<id>" (the input
// file's path relative to its root, as for a file's own source id), so equal
// ids in different files never collide in the store, the fingerprints or the
// aggregate; records read from stdin ("-") have no file and keep the bare id.
// Ids must be unique within one input: a record whose id an earlier record of
// the same input already used is refused (dead-lettered as
// Corrupt("line N: duplicate id ... (first on line M)"), counted in
// records_skipped), so a repeated id can never make two records overwrite
// each other's chunks. text is a required string, cut into paragraphs on
// blank lines. domain/category/title/author are optional strings (domain and
// category default to the file's route). metadata is an optional object kept
// as its JSON text. Unknown keys are ignored. A record that breaks the
// contract is reported to the RecordErrorSink as Corrupt("line N: ...")
// under its source_id (or "<relative path>:N" when it has none) and counted
// in records_skipped. Invalid UTF-8 bytes are replaced by U+FFFD (counted in
// invalid_utf8_replaced) as the text parser does, not a reason to refuse.
//
// Memory: a line is parsed in place (LineSplitter pads it for simdjson); the
// text reaches the sink in pieces of at most kMaxPieceBytes. Remembering the
// ids seen costs 16 bytes per record of the input (a 64-bit hash of the id and
// its line number; two distinct ids sharing a hash, about 1 in 10^8 for a
// file of a million records, would make the second one refused as a
// duplicate).
//
// Thread safety: one reader per thread.
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <unordered_map>

#include "sluice/parser.h"

namespace sluice::sources_internal {

inline constexpr size_t kMaxJsonlLineBytes = 64 << 20;
// Zero bytes a line handed to HandleLine must be followed by in memory
// (LineSplitter's tail_padding): simdjson reads up to this far past the end.
inline constexpr size_t kJsonlLinePadding = 64;

class JsonlRecordReader {
 public:
  JsonlRecordReader(const SourceFile& file, DocumentSink& sink, RecordErrorSink& errors,
                    ParseStats& stats);
  ~JsonlRecordReader();
  JsonlRecordReader(const JsonlRecordReader&) = delete;
  JsonlRecordReader& operator=(const JsonlRecordReader&) = delete;

  // Handles one line (without '\n'). Blank lines are skipped. Returns non-OK
  // only when the sink fails (which stops the input). For a line of more
  // than 4 MiB, `release_line` (when given) is called once the line has been
  // parsed and before its record is emitted: the line's bytes are not read
  // after it, so its owner may free them (LineSplitter::ReleaseLine).
  // REQUIRES: unless too_long, line.data() is followed by kJsonlLinePadding
  // readable bytes.
  Status HandleLine(std::string_view line, uint64_t line_number, bool too_long,
                    const std::function<void()>& release_line = {});

  uint64_t records() const { return records_; }

 private:
  void Skip(const std::string& ref, uint64_t line_number, const std::string& why);
  std::string LineRef(uint64_t line_number) const;
  // Parses one non-blank, valid UTF-8, padded line; calls `release` (when
  // set) after the parse, before the record is emitted.
  Status HandleRecord(std::string_view line, uint64_t line_number,
                      const std::function<void()>& release);
  // Emits one record's document; `text` is its unescaped "text".
  Status EmitRecord(const SourceInfo& info, std::string_view text);

  const SourceFile& file_;
  DocumentSink& sink_;
  RecordErrorSink& errors_;
  ParseStats& stats_;
  // simdjson stays out of this header: its layout depends on compile
  // definitions only the library target sees.
  struct Json;
  std::unique_ptr<Json> json_;
  std::string id_prefix_;  // "<relative path>#", or "" for stdin
  // Hash64 of each record id seen in this input -> the line it was on.
  std::unordered_map<uint64_t, uint64_t> first_line_of_id_;
  std::string repaired_;  // a line with invalid UTF-8, repaired (and padded)
  uint64_t records_ = 0;
};

}  // namespace sluice::sources_internal
