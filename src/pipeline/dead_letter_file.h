// A DeadLetterSink that appends JSON Lines to a file (format in
// include/sluice/dead_letter.h), opened lazily on the first item so a clean
// run leaves no file behind, and counts items by reason for the report.
//
// Thread safety: thread-safe (one mutex per item; dead letters are rare).
#pragma once

#include <cstdio>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_set>

#include "sluice/dead_letter.h"
#include "sluice/metrics.h"
#include "sluice/thread_annotations.h"

namespace sluice {

class DeadLetterFile final : public DeadLetterSink {
 public:
  // Checks now that the file can be created (the directory exists or can be
  // made, and is writable) so a bad path fails before any work is done.
  static Result<std::unique_ptr<DeadLetterFile>> Open(const std::string& path, Metrics& metrics);
  ~DeadLetterFile() override;

  void ChunkFailed(const Chunk& chunk, const Status& why) override;
  void SourceFailed(const std::string& source_id, const std::string& path,
                    const Status& why) override;

  // Flushes to disk; returns the first write error, if any.
  Status Close();
  // Rewrites the file (temp file + rename) without the entries written
  // before this run that name a file this run completed (`completed`: file
  // ids and paths): its chunks are now stored, or failed again and have a
  // new entry below. Returns how many were removed. REQUIRES: Close() done.
  Result<uint64_t> DropEarlierEntriesOf(const std::unordered_set<std::string>& completed);
  std::map<std::string, uint64_t> ReasonCounts() const;
  uint64_t Count() const;
  const std::string& path() const { return path_; }

 private:
  DeadLetterFile(std::string path, Metrics& metrics, uint64_t earlier_bytes)
      : path_(std::move(path)), metrics_(metrics), earlier_bytes_(earlier_bytes) {}
  void AppendLine(const std::string& line, const Status& why);

  const std::string path_;
  Metrics& metrics_;
  const uint64_t earlier_bytes_;  // the file's size at Open: earlier runs' entries
  mutable Mutex mu_;
  std::FILE* file_ SLUICE_GUARDED_BY(mu_) = nullptr;
  Status write_error_ SLUICE_GUARDED_BY(mu_);
  std::map<std::string, uint64_t> reasons_;
  uint64_t count_ = 0;
};

// Serialises a chunk as a JSON object (used in dead letters and for replay).
void AppendChunkJson(const Chunk& chunk, std::string& out);

}  // namespace sluice
