// The read stage: N reader threads take files from the file queue, skip the
// ones whose fingerprint says they are unchanged, parse the rest and chunk
// them onto the chunk queue. Each file a reader starts is followed by the
// run's SourceTracker until all its chunks are resolved (docs/RESUME.md).
//
// Thread safety: Run() starts and joins its own threads; the counters may be
// read from any thread while it runs.
#pragma once

#include <atomic>
#include <functional>
#include <string>
#include <unordered_map>
#include <unordered_set>

#include "pipeline/run_context.h"
#include "sluice/parser.h"
#include "sluice/queue.h"
#include "sluice/routing.h"
#include "sluice/store.h"
#include "sluice/thread_annotations.h"
#include "sluice/types.h"

namespace sluice {

struct ReadStageOptions {
  int threads = 1;  // REQUIRES: >= 1
  // Resume (the store keeps fingerprints): files are fingerprinted and
  // unchanged ones skipped. False: every file is read, nothing tracked.
  bool resume = false;
  bool skip_unchanged = true;  // false: re-read even unchanged files
  bool delete_stale = true;    // a changed file's old chunks go when its new ones commit
  // False (a source feed): a relative path seen twice is tracked both times,
  // since a long-lived feed may legitimately hand out the same file again.
  bool track_once_per_path = true;
};

class ReadStage {
 public:
  // `fingerprints`: what the store recorded, by file id (read-only while the
  // stage runs). `forced_parser`: --parser-cmd (nullptr: by extension and
  // content). `on_unchanged`: called with the file id of each file skipped as
  // unchanged (the aggregate replay), from a reader thread.
  ReadStage(ReadStageOptions options, RunContext& run, DeadLetterSink& dead,
            const ParserRegistry& registry, const Parser* forced_parser, const Router& router,
            const std::unordered_map<std::string, SourceFingerprint>& fingerprints,
            std::function<void(const std::string& file_id)> on_unchanged);

  // Reads until `files` ends (or the run stops), then closes `chunks`.
  void Run(BoundedQueue<SourceFile>& files, BoundedQueue<Chunk>& chunks);

  // The file ids this stage saw (for --cleanup full). Call after Run().
  bool Saw(const std::string& file_id) const;
  uint64_t sources_unchanged() const { return sources_unchanged_.load(); }
  uint64_t sources_touched() const { return sources_touched_.load(); }
  // Bytes of files skipped without being opened (progress counts them done).
  uint64_t bytes_unchanged() const { return bytes_unchanged_.load(); }

 private:
  void ReadFiles(BoundedQueue<SourceFile>& files, BoundedQueue<Chunk>& chunks);
  // Hashes the file (its `contents` when the reader has them); true when the
  // hash matches `known` (then its new facts are recorded and nothing else
  // is done). `failed`: not to be parsed.
  bool HashUnchanged(const SourceFile& file, const std::string& file_id,
                     const SourceFingerprint* known, std::string& hash, bool& failed);
  // IngestOptions::on_source_done, for the outcomes a reader decides.
  void Done(const std::string& file_id, SourceOutcome outcome, const Status& why = Status::OK());

  const ReadStageOptions options_;
  RunContext& run_;
  DeadLetterSink& dead_;
  const ParserRegistry& registry_;
  const Parser* const forced_parser_;
  const Router& router_;
  const std::unordered_map<std::string, SourceFingerprint>& fingerprints_;
  const std::function<void(const std::string&)> on_unchanged_;
  mutable Mutex seen_mu_;
  std::unordered_set<std::string> seen_files_ SLUICE_GUARDED_BY(seen_mu_);
  std::atomic<uint64_t> sources_unchanged_{0}, sources_touched_{0}, bytes_unchanged_{0};
};

}  // namespace sluice
