// Turns the ingest inputs (files, folders, "-" for JSONL on stdin) into a
// stream of SourceFiles on the file queue, in a stable order. Every root is
// checked when opening, so a missing input fails before any work starts.
//
// Thread safety: Run() is called on one thread (the walker thread).
#pragma once

#include <atomic>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "sluice/pipeline.h"
#include "sluice/queue.h"
#include "sluice/sources.h"

namespace sluice {

inline constexpr const char* kStdinPath = "-";

class SourceEnumerator {
 public:
  static Result<std::unique_ptr<SourceEnumerator>> Open(const IngestOptions& options);
  // Pushes every file onto `out` (blocking when full) until done or
  // `stopping`. Unreadable entries go to `on_error`; the walk goes on.
  Status Run(BoundedQueue<SourceFile>& out, const std::atomic<bool>& stopping,
             const WalkErrorFn& on_error);
  // Walks the same files (same include/exclude) only to count them and sum
  // their sizes, for progress and ETA. False when the total cannot be known
  // (stdin is an input) or the scan was stopped; errors are skipped (Run
  // reports them).
  bool Scan(const std::atomic<bool>& stopping, uint64_t& files, uint64_t& bytes) const;

 private:
  struct Input {
    bool is_stdin = false;
    std::string root;
  };
  std::vector<Input> inputs_;
  WalkOptions walk_options_;
};

}  // namespace sluice
