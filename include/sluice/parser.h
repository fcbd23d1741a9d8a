// Parsers turn one input (a file, or stdin) into one or more documents, each
// a SourceInfo followed by its TextBlocks in reading order, pushed into a
// DocumentSink as they are read so memory stays bounded for large inputs.
//
// A ParserRegistry picks the parser for a file by content sniffing first
// (a .txt that is really HTML) and extension second. Adding a format touches
// src/sources/ and one registration call.
//
// Thread safety: a Parser is immutable after registration and Parse() may be
// called from many reader threads at once. A DocumentSink is used by one
// thread at a time.
#pragma once

#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "sluice/status.h"
#include "sluice/types.h"

namespace sluice {

// Receives documents. Begin/Block*/End per document; one input may hold many.
// A non-OK return from any call makes the parser stop and return that status.
class DocumentSink {
 public:
  virtual ~DocumentSink() = default;
  virtual Status BeginDocument(const SourceInfo& info) = 0;
  virtual Status AddBlock(const TextBlock& block) = 0;
  virtual Status EndDocument() = 0;
  // True once the run is stopping (a signal, a fatal error). Parsers check it
  // where they would otherwise wait or work without calling the sink (between
  // read blocks, while a --parser-cmd child is silent) and then return
  // Cancelled: the input is abandoned, not failed. Default: never.
  virtual bool StopRequested() const { return false; }
};

// Counters a parser reports back for the run report.
struct ParseStats {
  uint64_t invalid_utf8_replaced = 0;  // bytes replaced by U+FFFD
  bool latin1_fallback = false;        // decoded as Latin-1 because it was not UTF-8/16
  uint64_t records_skipped = 0;        // e.g. malformed JSONL lines (each also dead-lettered)
};

// Limits that keep hostile inputs (zip bombs, huge XML) bounded.
struct ParseLimits {
  uint64_t max_decompressed_bytes = 512ull << 20;  // per archive member total
  double max_compression_ratio = 200.0;            // decompressed / compressed
  uint64_t max_file_bytes = 0;                     // 0 = no limit (text is streamed)
};

// What the walker found: a file and where it sits under the ingested root.
struct SourceFile {
  std::string path;           // as opened; "-" for stdin
  std::string relative_path;  // to the ingested root, '/' separated; used for ids and routing
  std::string root_name;      // the name of the ingested root folder (default domain source)
  uint64_t size_bytes = 0;
  int64_t mtime_ns = 0;
  // Domain/category decided by routing before parsing (may be overridden by
  // the document's own metadata, e.g. Markdown front matter or JSONL fields).
  std::string domain;
  std::string category;
  // A byte range of a JSONL file (a distributed range task,
  // docs/DISTRIBUTED.md): [range_begin, range_end) of the file, cut just
  // after a '\n', whose first line is line `first_line` of the file (so
  // record errors name the file's own line numbers). range_end 0: the whole
  // file. Only the "jsonl" parser reads ranges; the file is fingerprinted by
  // a later whole-file pass, never by a range.
  uint64_t range_begin = 0;
  uint64_t range_end = 0;
  uint64_t first_line = 1;
  // The whole file, when the reader has already read it (a small file: it
  // is opened once, and the fingerprint is the hash of exactly the bytes
  // parsed). A parser that can reads these bytes instead of opening `path`;
  // one that cannot may ignore them. Valid for the duration of Parse only.
  std::optional<std::string_view> contents;
  bool IsRange() const { return range_end > 0; }
};

// The id IngestOptions::on_source_done names a source by: its relative path
// (or path), and for a byte range "<that>@<range_begin>-<range_end>", so two
// ranges of one file in flight at once are told apart.
inline std::string SourceDoneId(const SourceFile& file) {
  std::string id = file.relative_path.empty() ? file.path : file.relative_path;
  if (file.IsRange()) {
    // Appended piece by piece: `"@" + std::to_string(...)` trips GCC 12's
    // -Wrestrict false positive once inlined into a large caller.
    id += '@';
    id += std::to_string(file.range_begin);
    id += '-';
    id += std::to_string(file.range_end);
  }
  return id;
}

// Receives per-record failures that do not stop the whole input (a malformed
// JSONL line). Implemented by the pipeline's dead-letter writer.
class RecordErrorSink {
 public:
  virtual ~RecordErrorSink() = default;
  virtual void RecordFailed(const std::string& source_id, const Status& why) = 0;
};

class Parser {
 public:
  virtual ~Parser() = default;
  // A short name: "text", "markdown", "jsonl", "html", "pdf", "epub", "docx", "command".
  virtual std::string_view Name() const = 0;
  // Lower-case extensions without dot that this parser claims ("md", "markdown").
  virtual std::vector<std::string> Extensions() const = 0;
  // True when the first bytes of a file are surely this format (magic
  // numbers, "<!DOCTYPE html"). Must be cheap; head holds up to 4 KiB.
  virtual bool Sniff(std::string_view head) const = 0;
  // Parses `file` into `sink`. A non-OK status means the whole input failed
  // (it is dead-lettered with this reason); documents already ended stay.
  virtual Status Parse(const SourceFile& file, const ParseLimits& limits, DocumentSink& sink,
                       RecordErrorSink& errors, ParseStats& stats) const = 0;
};

class ParserRegistry {
 public:
  void Add(std::unique_ptr<Parser> parser);
  // Sniffed format first, then extension; nullptr when nothing claims it.
  // `head` is the first bytes of the file (up to 4 KiB).
  const Parser* Find(std::string_view path, std::string_view head) const;
  const Parser* FindByName(std::string_view name) const;
  std::vector<std::string> Names() const;

 private:
  std::vector<std::unique_ptr<Parser>> parsers_;
};

// Registration hooks, one per folder of parsers.
void RegisterTextParsers(ParserRegistry& registry);  // src/sources: text, markdown, jsonl
void RegisterDocumentParsers(
    ParserRegistry& registry);  // src/sources/formats: html, pdf, epub, docx

}  // namespace sluice
