// The store stage: takes embedded chunks off the vector queue, writes them in
// batches of what the store prefers (Store::RowsPerTransaction x
// ParallelWrites), retries a failing write with the run's retry policy, and
// after each write commits the fingerprints of the files whose every chunk is
// now resolved (SourceTracker), deleting their stale chunks. Stored chunks
// (and the copies of their texts parked in InflightTexts) go on to the
// aggregate queue.
//
// A store that fails a whole batch (disk full, I/O error, lost server)
// says nothing about its chunks: they are abandoned for the next run, never
// dead-lettered, and the run stops. Only rows the store refuses one by one
// (WriteResult::rejected) are the input's fault.
//
// Thread safety: Run() is called on one thread; the counters and
// CompletedFiles() may be read from any thread.
#pragma once

#include <atomic>
#include <cstdint>
#include <mutex>
#include <string>
#include <unordered_set>

#include "pipeline/run_context.h"
#include "sluice/embed_stage.h"
#include "sluice/queue.h"
#include "sluice/store.h"
#include "sluice/thread_annotations.h"

namespace sluice {

struct StoreStageOptions {
  // Commit fingerprints of completed files (the store keeps them).
  bool resume = false;
  // Writes and fingerprint commits that fail with a retryable error are tried
  // again after a backoff (capped exponential, full jitter) on the run's clock.
  RetryPolicyOptions retry{/*max_attempts=*/10, /*initial_backoff=*/std::chrono::milliseconds(200),
                           /*max_backoff=*/std::chrono::seconds(10), /*multiplier=*/2.0};
  uint64_t seed = 0;  // jitter seed; 0: from std::random_device
  // How long a partial batch waits for more rows before it is written anyway
  // (so progress shows while the embed stage is slow).
  Duration linger = std::chrono::milliseconds(200);
  // The oldest row of a batch is written at most this long (on the run's
  // clock) after it arrived, even while rows keep coming too slowly to fill
  // the batch: with SQLite's 4,000-row transactions a steady 200 chunks/s
  // would otherwise hold 20 s of paid embeddings uncommitted (lost to a
  // crash, invisible to progress and search).
  Duration max_batch_age = std::chrono::seconds(1);
};

class StoreStage {
 public:
  StoreStage(StoreStageOptions options, RunContext& run, Store& store, DeadLetterSink& dead);

  // Rows per Store::Write call: what the store writes at once
  // (RowsPerTransaction x ParallelWrites).
  static size_t RowsPerWrite(const Store& store);

  // Until `in` ends; stored chunks go to `aggregate_out` (may be null). Then
  // flushes the store and closes `aggregate_out`.
  void Run(BoundedQueue<EmbeddedChunk>& in, BoundedQueue<EmbeddedChunk>* aggregate_out);

  uint64_t sources_completed() const { return sources_completed_.load(); }
  uint64_t chunks_deleted_stale() const { return chunks_deleted_stale_.load(); }
  // Ids and paths of the files fingerprinted by this run: their entries in
  // the dead-letter file from earlier runs are obsolete.
  std::unordered_set<std::string> CompletedFiles() const;

 private:
  // Writes `batch_`, retrying on the run clock; a failure for good abandons
  // the batch and stops the run.
  void WriteBatch(BoundedQueue<EmbeddedChunk>* aggregate_out);
  // Writes the batch and then the copies parked behind its texts.
  void Flush(BoundedQueue<EmbeddedChunk>* aggregate_out);
  // Commits the fingerprints of files completed since the last call.
  bool CommitCompleted();
  void AbandonBatch();

  const StoreStageOptions options_;
  RunContext& run_;
  Store& store_;
  DeadLetterSink& dead_;
  const RetryPolicy retry_;
  std::mt19937_64 rng_;
  std::vector<EmbeddedChunk> batch_;
  std::vector<EmbeddedChunk> carry_;  // parked copies of texts just stored
  bool failed_ = false;               // the store failed for good: abandon the rest
  std::atomic<uint64_t> sources_completed_{0}, chunks_deleted_stale_{0};
  mutable Mutex completed_mu_;
  std::unordered_set<std::string> completed_files_ SLUICE_GUARDED_BY(completed_mu_);
};

}  // namespace sluice
