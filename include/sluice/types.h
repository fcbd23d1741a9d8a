// The data that flows between stages: source descriptions, text blocks a
// parser emits, chunks the chunker emits, and embedded chunks the embedder
// emits. Plain values; thread safety is that of std::string.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace sluice {

// What is known about one source document (a file, a JSONL record, a record
// produced by --parser-cmd) before and while it is parsed.
struct SourceInfo {
  // Stable id: the path relative to the ingested root for files
  // ("manuals/pump.md"), "<relpath>#<record id>" for JSONL and --parser-cmd
  // records, the record's own id for records read from stdin. Chunk ids
  // derive from it.
  std::string source_id;
  std::string path;  // filesystem path; empty for stdin
  std::string domain;
  std::string category;
  std::string title;   // from the format's metadata where it has one
  std::string author;  // idem
  // Extra metadata as the text of a JSON object ("{}" when none). Parsers
  // add format metadata; JSONL records carry the user's own.
  std::string metadata_json = "{}";
  uint64_t size_bytes = 0;
  int64_t mtime_ns = 0;
};

enum class BlockKind {
  kParagraph,  // running text
  kHeading,    // a section title; heading_level says its depth (1 = top)
  kCode,       // preformatted; kept whole where it fits a chunk
  kTable,      // one table rendered as text lines; kept whole where it fits
  kListItem,   // a list item or a table row as one line
};

// One structural unit of extracted text, in reading order.
struct TextBlock {
  BlockKind kind = BlockKind::kParagraph;
  std::string text;       // valid UTF-8, no markup
  int heading_level = 0;  // 1..6 for kHeading, 0 otherwise
  int page = 0;           // 1-based page number where the format has pages, else 0
};

// A piece of a source sized for one embedding input.
struct Chunk {
  std::string id;         // hex of a stable 128-bit hash of (source_id, ordinal, text)
  std::string source_id;  // SourceInfo::source_id
  // The input file that produced it: its path relative to its root (a JSONL
  // file's records share it); empty for stdin records. Stores keep it so a
  // file's chunks can be found (and its stale ones deleted) without a list.
  std::string file_id;
  uint32_t ordinal = 0;     // 0-based position within its source
  uint64_t byte_begin = 0;  // offsets into the source's extracted text
  uint64_t byte_end = 0;
  std::string text;
  std::string domain;
  std::string category;
  // JSON object text: the source's metadata plus "heading_path", "page_start",
  // "page_end", "title", "author" where known.
  std::string metadata_json = "{}";
  uint32_t token_estimate = 0;
  // False: the store records no run record for it (StoreOptions::run_id). A
  // byte range's chunks (a distributed range task) are written so: their
  // file is committed by a later whole-file pass, whose own records alone
  // must say which of the file's stored chunks are current.
  // Last: positional initialisers of the fields above stay valid.
  bool record_run = true;
};

struct EmbeddedChunk {
  Chunk chunk;
  std::vector<float> embedding;
  std::string model;
};

}  // namespace sluice
