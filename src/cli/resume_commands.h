// The resume-related subcommands (docs/RESUME.md):
//   sluice verify --store URI [inputs...]
//   sluice aggregate --store URI --out DIR
//   sluice dead-letter list  [--dead-letter FILE]
//   sluice dead-letter retry [--dead-letter FILE] [--reason PATTERN] [ingest flags]
// Each returns the process exit status.
//
// Thread safety: called from main() only.
#pragma once

#include <string>
#include <vector>

#include "sluice/pipeline.h"

namespace sluice::cli {

struct VerifyArgs {
  std::string store_uri = "sqlite:sluice.db";
  std::string table = "chunks";
  std::vector<std::string> inputs;  // optional: also check these files' fingerprints
};

struct AggregateArgs {
  std::string store_uri = "sqlite:sluice.db";
  std::string table = "chunks";
  AggregatorOptions aggregate;  // out_dir, include_embeddings
};

struct DeadLetterArgs {
  std::string dead_letter_path = "out/.dead-letter.jsonl";  // list only; retry uses the ingest flag
  std::string reason_pattern;  // retry: ECMAScript regex over reason and message; empty: all
};

// One line of a dead-letter file (format: include/sluice/dead_letter.h).
struct DeadLetterEntry {
  std::string line;  // as read, without the newline
  std::string kind;  // "chunk" or "source"
  std::string reason, message, source_id, path;
  Chunk chunk;  // kind == "chunk"
};

// The entries of a dead-letter file; an absent file has none. Corrupt for a
// line that is not a JSON object or a chunk entry without its chunk.
Result<std::vector<DeadLetterEntry>> ReadDeadLetterFile(const std::string& path);

// Exit 0 when the store (and the inputs, if given) check out; 1 with the
// problems listed one per line.
int RunVerifyCommand(const VerifyArgs& args);
// `sluice aggregate`: rebuilds --out from the store (src/pipeline/rebuild_aggregates.h).
// Exit 0 when the files were written, 1 on an error.
int RunAggregateCommand(const AggregateArgs& args);
// Counts by reason and kind, with an example message.
int RunDeadLetterListCommand(const DeadLetterArgs& args);
// Re-embeds the selected chunk entries and re-reads the selected source
// entries, then rewrites the file (atomically) without the entries now
// stored; those that failed again stay, with their new reason. Exit 0 when
// everything selected was stored, 3 when some still fail, 1 on a fatal
// error, 130/143 on a signal.
int RunDeadLetterRetryCommand(const DeadLetterArgs& args, IngestOptions options);

}  // namespace sluice::cli
