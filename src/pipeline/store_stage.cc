#include "pipeline/store_stage.h"

#include <algorithm>
#include <chrono>
#include <random>
#include <span>

#include <spdlog/spdlog.h>

namespace sluice {

StoreStage::StoreStage(StoreStageOptions options, RunContext& run, Store& store,
                       DeadLetterSink& dead)
    : options_(options),
      run_(run),
      store_(store),
      dead_(dead),
      retry_(options.retry),
      rng_(options.seed != 0 ? options.seed : std::random_device{}()) {}

std::unordered_set<std::string> StoreStage::CompletedFiles() const {
  MutexLock lock(completed_mu_);
  return completed_files_;
}

void StoreStage::AbandonBatch() {
  for (const EmbeddedChunk& e : batch_) run_.Abandon(e.chunk);
  batch_.clear();
}

bool StoreStage::CommitCompleted() {
  if (!options_.resume) return true;
  // Byte ranges whose every chunk is now stored or dead-lettered: nothing to
  // commit (their file's whole-file pass commits it), only to report, so a
  // worker acks the range task now and never before.
  const std::vector<SourceTracker::CompletedRange> ranges = run_.tracker().TakeCompletedRanges();
  if (const auto& on_done = run_.options().on_source_done) {
    for (const SourceTracker::CompletedRange& r : ranges) {
      on_done(r.done_id, SourceOutcome::kCommitted, Status::OK(), r.chunks_stored);
    }
  }
  std::vector<SourceManifest> done = run_.tracker().TakeCompleted();
  if (done.empty()) return true;
  for (int attempt = 1;; ++attempt) {
    Result<uint64_t> r = store_.CommitSources(done);
    if (r.ok()) {
      chunks_deleted_stale_.fetch_add(*r, std::memory_order_relaxed);
      uint64_t fingerprints_written = 0;
      {
        MutexLock lock(completed_mu_);
        for (const SourceManifest& m : done) {
          if (m.facts_only) continue;
          ++fingerprints_written;
          completed_files_.insert(m.fingerprint.file_id);
          completed_files_.insert(m.fingerprint.path);
        }
      }
      sources_completed_.fetch_add(fingerprints_written, std::memory_order_relaxed);
      // Outside the lock: the callback may take its time (a worker acks the task).
      if (const auto& on_done = run_.options().on_source_done) {
        for (const SourceManifest& m : done) {
          // A touched file's facts: the reader already reported it unchanged.
          if (!m.facts_only) {
            on_done(m.fingerprint.file_id, SourceOutcome::kCommitted, Status::OK(),
                    m.chunks_stored);
          }
        }
      }
      return true;
    }
    if (r.status().IsRetryable() && attempt < retry_.options().max_attempts) {
      spdlog::warn("committing fingerprints failed (attempt {}), retrying: {}", attempt,
                   r.status().ToString());
      run_.clock().SleepFor(retry_.Backoff(attempt, std::nullopt, rng_));
      continue;
    }
    // The chunks are stored; without fingerprints the rerun redoes these
    // files (from the cache), so nothing is lost.
    run_.Fail(r.status().WithContext("commit fingerprints in " + store_.Describe()));
    return false;
  }
}

void StoreStage::WriteBatch(BoundedQueue<EmbeddedChunk>* aggregate_out) {
  if (batch_.empty()) return;
  if (failed_) {
    AbandonBatch();
    return;
  }
  Metrics& metrics = run_.metrics();
  std::chrono::nanoseconds push_waited{0};
  BusyTimer busy(run_.clock(), metrics.store, &push_waited);
  for (int attempt = 1;; ++attempt) {
    const TimePoint start = run_.clock().Now();
    WriteResult r = store_.Write(batch_);
    metrics.store_latency.Record(run_.clock().Now() - start);
    Add(metrics.store_batches);
    if (r.status.ok()) {
      std::vector<bool> rejected(batch_.size(), false);
      for (const auto& row : r.rejected) {
        if (row.index < batch_.size() && !rejected[row.index]) {
          rejected[row.index] = true;
          Add(metrics.store.dead_lettered);
          dead_.ChunkFailed(batch_[row.index].chunk, row.why);
        }
      }
      const uint64_t stored =
          batch_.size() - static_cast<uint64_t>(std::count(rejected.begin(), rejected.end(), true));
      Add(metrics.chunks_stored, stored);
      Add(metrics.store.items_out, stored);
      // The stored rows, moved to the front in order (the refused ones are
      // dead-lettered above).
      size_t kept = 0;
      for (size_t i = 0; i < batch_.size(); ++i) {
        if (rejected[i]) continue;
        if (kept != i) batch_[kept] = std::move(batch_[i]);
        ++kept;
      }
      const std::span<const EmbeddedChunk> stored_rows(batch_.data(), kept);
      // Their outcomes, each under one lock for the whole write: per row, the
      // store thread and the readers (ChunkProduced) took turns on the
      // tracker's lock (~0.1 s of waits a run, docs/PERFORMANCE.md).
      run_.tracker().StoredAll(stored_rows);
      // The copies parked behind a stored row take its vector.
      for (auto& [owner, copy] : run_.inflight().ReleaseAll(stored_rows)) {
        carry_.push_back(
            EmbeddedChunk{std::move(copy), batch_[owner].embedding, batch_[owner].model});
      }
      // One hand-off to the aggregator: the aggregate queue holds a whole
      // batch beside its capacity (RunQueues), so this rarely waits.
      if (aggregate_out != nullptr) {
        aggregate_out->PushAll(std::span(batch_.data(), kept), &push_waited);
      }
      batch_.clear();
      if (!CommitCompleted()) failed_ = true;
      return;
    }
    Add(metrics.store.errors);
    if (r.status.IsRetryable() && attempt < retry_.options().max_attempts) {
      Add(metrics.store_retries);
      spdlog::warn("store write failed (attempt {}), retrying: {}", attempt, r.status.ToString());
      run_.clock().SleepFor(retry_.Backoff(attempt, std::nullopt, rng_));
      continue;
    }
    // Not retryable (or retries exhausted): every later batch would fail the
    // same way, so stop the run.
    AbandonBatch();
    failed_ = true;
    run_.Fail(r.status.WithContext("store " + store_.Describe()));
    return;
  }
}

void StoreStage::Flush(BoundedQueue<EmbeddedChunk>* aggregate_out) {
  WriteBatch(aggregate_out);
  while (!carry_.empty()) {  // the copies take their owner's vector
    batch_.swap(carry_);
    carry_.clear();
    WriteBatch(aggregate_out);
  }
}

size_t StoreStage::RowsPerWrite(const Store& store) {
  return std::max<size_t>(1, store.RowsPerTransaction()) *
         static_cast<size_t>(std::max(1, store.ParallelWrites()));
}

void StoreStage::Run(BoundedQueue<EmbeddedChunk>& in, BoundedQueue<EmbeddedChunk>* aggregate_out) {
  // As many rows per call as the store writes at once (Store::ParallelWrites
  // transactions of RowsPerTransaction rows).
  const size_t batch_rows = RowsPerWrite(store_);
  batch_.reserve(batch_rows);
  StageMetrics& metrics = run_.metrics().store;
  TimePoint batch_started{};  // when the batch's first row arrived (run clock)
  while (true) {
    std::optional<EmbeddedChunk> item;
    if (batch_.empty()) {
      item = in.Pop();
    } else {
      const Duration age = run_.clock().Now() - batch_started;
      const Duration wait = age >= options_.max_batch_age
                                ? Duration::zero()
                                : std::min(options_.linger, options_.max_batch_age - age);
      item = wait > Duration::zero() ? in.PopFor(wait) : in.TryPop();
    }
    if (item) {
      const TimePoint now = run_.clock().Now();
      if (batch_.empty()) batch_started = now;
      Add(metrics.items_in);
      batch_.push_back(std::move(*item));
      if (batch_.size() >= batch_rows || now - batch_started >= options_.max_batch_age) {
        Flush(aggregate_out);
      }
      continue;
    }
    if (in.Ended()) break;
    // The queue went quiet (or the batch is old): commit what we have so
    // progress is visible.
    Flush(aggregate_out);
    if (!failed_ && !CommitCompleted()) failed_ = true;
  }
  Flush(aggregate_out);
  if (!failed_) CommitCompleted();
  if (Status s = store_.Flush(); !s.ok()) run_.Fail(s.WithContext("store flush"));
  if (aggregate_out != nullptr) aggregate_out->Close();
}

}  // namespace sluice
