// Tracks each input file from parse to "complete": a file is complete when
// its parse succeeded and every chunk it produced was stored or
// dead-lettered. Only then may its fingerprint be committed (docs/RESUME.md),
// so a crash or a stop before that leaves no fingerprint and the next run
// redoes the file. A file with a chunk abandoned at stop never completes.
//
// Memory: one entry per file being processed plus one per chunk in flight;
// both are bounded by the pipeline's queues and reader count.
//
// Thread safety: thread-safe (one mutex; called once per chunk, which is
// cheap next to embedding it).
#pragma once

#include <cstdint>
#include <mutex>
#include <string>
#include <unordered_map>
#include <vector>

#include "sluice/store.h"

namespace sluice {

class SourceTracker {
 public:
  using Token = uint64_t;

  // A reader starts parsing a file.
  Token Begin(SourceFingerprint fingerprint, bool delete_stale);
  // Before the chunk is pushed downstream (so its outcome can never come first).
  void ChunkProduced(Token token, const std::string& chunk_id);
  // The parse ended; `ok` false (failed or cancelled) means no fingerprint.
  void ParseFinished(Token token, bool ok);
  // A file whose content is unchanged but whose mtime moved: commit its facts only.
  void Touch(SourceFingerprint fingerprint);
  // A chunk's outcome. `abandoned`: dropped by a stop, to be redone by a rerun.
  // Ids not produced by a tracked file (stdin records) are ignored.
  void Resolved(const std::string& chunk_id, bool abandoned);
  // The manifests of files that completed since the last call.
  std::vector<SourceManifest> TakeCompleted();
  size_t FilesInFlight() const;

 private:
  struct File {
    SourceManifest manifest;
    uint64_t outstanding = 0;
    bool parse_done = false;
    bool failed = false;
  };
  void MaybeCompleteLocked(Token token);

  mutable std::mutex mu_;
  Token next_ = 1;                                      // GUARDED_BY(mu_)
  std::unordered_map<Token, File> files_;               // GUARDED_BY(mu_)
  std::unordered_multimap<std::string, Token> chunks_;  // GUARDED_BY(mu_)
  std::vector<SourceManifest> completed_;               // GUARDED_BY(mu_)
};

}  // namespace sluice
