// Reads JSON Lines records ({"id","text","domain","category","title",
// "author","metadata"}) into documents; shared by the "jsonl" parser and the
// --parser-cmd parser.
//
// Record contract: id is required, a string or a number (numbers keep their
// JSON spelling); it becomes the document's source_id as is, so ids must be
// unique across one run (two records with one id overwrite each other's
// chunks). text is a required string, cut into paragraphs on blank lines.
// domain/category/title/author are optional strings (domain and category
// default to the file's route). metadata is an optional object kept as its
// JSON text. Unknown keys are ignored. A record that breaks the contract is
// reported to the RecordErrorSink as Corrupt("line N: ...") under its id (or
// "<relative path>:N" when it has none) and counted in records_skipped.
//
// Thread safety: one reader per thread.
#pragma once

#include <memory>
#include <string>
#include <string_view>

#include "sluice/parser.h"

namespace sluice::sources_internal {

inline constexpr size_t kMaxJsonlLineBytes = 64 << 20;

class JsonlRecordReader {
 public:
  JsonlRecordReader(const SourceFile& file, DocumentSink& sink, RecordErrorSink& errors,
                    ParseStats& stats);
  ~JsonlRecordReader();
  JsonlRecordReader(const JsonlRecordReader&) = delete;
  JsonlRecordReader& operator=(const JsonlRecordReader&) = delete;

  // Handles one line (without '\n'). Blank lines are skipped. Returns non-OK
  // only when the sink fails (which stops the input).
  Status HandleLine(std::string_view line, uint64_t line_number, bool too_long);

  uint64_t records() const { return records_; }

 private:
  void Skip(const std::string& ref, uint64_t line_number, const std::string& why);
  std::string LineRef(uint64_t line_number) const;

  const SourceFile& file_;
  DocumentSink& sink_;
  RecordErrorSink& errors_;
  ParseStats& stats_;
  // simdjson stays out of this header: its layout depends on compile
  // definitions only the library target sees.
  struct Json;
  std::unique_ptr<Json> json_;
  uint64_t records_ = 0;
};

}  // namespace sluice::sources_internal
