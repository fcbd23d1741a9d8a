// The aggregator consolidates stored chunks into one JSON file per
// (domain, category) under an output folder, for consumers that want files
// rather than a database. Schema: docs/AGGREGATE_FORMAT.md.
//
// Thread safety: one thread (the aggregator stage) at a time.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "sluice/clock.h"
#include "sluice/status.h"
#include "sluice/types.h"

namespace sluice {

struct AggregatorOptions {
  std::string out_dir = "out";  // Default: "out". Created when missing.
  size_t flush_every = 100;     // Default: 100. Chunks between flushes of a group.
  // A group's file due for a rewrite (flush_every, then 2x, 4x, ...) is not
  // rewritten before its previous write is this old; its first write and
  // Finish are never held back. Each rewrite streams the whole group, so in a
  // run of seconds the doubling rewrites add ~1.5x the final file in writes
  // and fsyncs that stall the stage (docs/AGGREGATE_FORMAT.md); past the
  // first minutes the doubling alone spaces them further apart than this.
  // Default: 10 s. 0: the chunk cadence alone.
  Duration min_flush_interval = std::chrono::seconds(10);
  const Clock* clock = nullptr;     // for min_flush_interval; nullptr: SystemClock
  bool include_embeddings = false;  // Default: false. Write vectors into the JSON too.
};

// What Aggregator::Retain does with the chunks of one source_id.
enum class SourceRetention {
  kKeep,         // every chunk of the source stays
  kDrop,         // every chunk of the source goes
  kCheckChunks,  // RetentionPolicy::chunks decides chunk by chunk
};

// The caller's answers for Aggregator::Retain (e.g. the pipeline's: "the walk
// saw this file", "the store still holds this chunk").
struct RetentionPolicy {
  // Asked for each distinct source_id of a group file (possibly more than
  // once per source). An error stops Retain and is returned as is.
  std::function<Result<SourceRetention>(std::string_view source_id)> source;
  // Asked for the chunks of kCheckChunks sources, in batches of at most
  // kRetainBatch ids of one group (domain, category). On entry keep.size() ==
  // ids.size() and every entry is false; set keep[i] to keep ids[i].
  std::function<Status(std::string_view domain, std::string_view category,
                       std::span<const std::string> ids, std::vector<bool>& keep)>
      chunks;
};

inline constexpr size_t kRetainBatch = 512;

struct RetainStats {
  uint64_t chunks_dropped = 0;
  uint64_t files_rewritten = 0;  // lost some chunks, kept others
  uint64_t files_removed = 0;    // lost every chunk: deleted
  uint64_t files_skipped = 0;    // *.json in a group folder that is no aggregate document
};

class Aggregator {
 public:
  virtual ~Aggregator() = default;
  virtual Status Add(const EmbeddedChunk& chunk) = 0;
  // Writes every group's file (atomically: temp file + rename).
  virtual Status Finish() = 0;
  virtual size_t FilesWritten() const = 0;
  // Removes from EVERY group file under out_dir (not only the groups this
  // run touched) the chunks `policy` does not keep. A file that loses some
  // chunks is rewritten exactly as a run adding only the kept chunks would
  // write it (same atomic temp + fsync + rename); a file that loses all of
  // them is deleted, and its domain folder with it when that is left empty;
  // a file that loses none is not touched. Memory stays independent of the
  // number of chunks (the rewrite goes through the spool and index).
  // REQUIRES: Finish() returned OK (InvalidArgument otherwise), and no other
  // aggregator writes to out_dir meanwhile.
  // Errors: the policy's, IOError, Corrupt for a group file that cannot be
  // parsed past its first line. Files handled before an error stay handled;
  // each file is always whole, and rerunning Retain completes the rest.
  virtual Result<RetainStats> Retain(const RetentionPolicy& policy) = 0;
};

// Fails clearly when out_dir cannot be created or written.
Result<std::unique_ptr<Aggregator>> OpenAggregator(const AggregatorOptions& options);

// A file-name-safe form of a domain or category name: no separators, no "..",
// no control characters, bounded length; distinct names that sanitise alike
// get distinct results (a short hash suffix).
std::string SafeFileComponent(std::string_view name);

}  // namespace sluice
