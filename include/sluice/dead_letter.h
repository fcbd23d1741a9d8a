// Dead letters: every chunk or source that could not be processed, with its
// reason, so nothing is lost silently and a later run can re-drive it.
//
// File format: JSON Lines, one object per item:
//   {"kind":"chunk","reason":"rate_limited","message":"...","source_id":"...",
//    "chunk":{...Chunk fields...},"time":"2026-11-28T16:00:00Z"}
//   {"kind":"source","reason":"corrupt","message":"...","source_id":"...","path":"..."}
//
// Thread safety: implementations are thread-safe.
#pragma once

#include <string>

#include "sluice/status.h"
#include "sluice/types.h"

namespace sluice {

class DeadLetterSink {
 public:
  virtual ~DeadLetterSink() = default;
  // REQUIRES: !why.ok(). Counts the chunk as dead-lettered.
  virtual void ChunkFailed(const Chunk& chunk, const Status& why) = 0;
  // A whole input failed (unreadable, corrupt, unsupported) before or while chunking.
  virtual void SourceFailed(const std::string& source_id, const std::string& path,
                            const Status& why) = 0;
};

}  // namespace sluice
