// The aggregate stage: feeds every stored chunk to the Aggregator (one JSON
// file per domain and category) and finishes the files at the end. After a
// run that died before its aggregate files were complete, files the read
// stage skips as unchanged are replayed from the store into the same queue
// (ReplayFile), so the files show every chunk the store holds.
//
// Thread safety: Run() is called on one thread; ReplayFile() from any thread
// (the readers) while Run() drains the queue.
#pragma once

#include <atomic>
#include <string>

#include "pipeline/run_context.h"
#include "pipeline/shared_read_store.h"
#include "sluice/aggregator.h"
#include "sluice/queue.h"

namespace sluice {

class AggregateStage {
 public:
  // `in`: the queue Run() drains and ReplayFile() feeds. `replay`: the last
  // run left the files incomplete, so unchanged files are replayed.
  AggregateStage(RunContext& run, Aggregator& aggregator, BoundedQueue<EmbeddedChunk>& in,
                 SharedReadStore& read_store, bool replay);

  // Until the queue ends; then finishes the files. A failure stops the run
  // but the queue is still drained, so the store stage never blocks.
  void Run();
  // Pushes the stored chunks of `file_id` onto the queue (when replaying).
  void ReplayFile(const std::string& file_id);
  // True when the files may not show every stored chunk (the marker stays).
  bool failed() const { return failed_.load(); }

 private:
  RunContext& run_;
  Aggregator& aggregator_;
  BoundedQueue<EmbeddedChunk>& in_;
  SharedReadStore& read_store_;
  const bool replay_;
  std::atomic<bool> failed_{false};
};

}  // namespace sluice
