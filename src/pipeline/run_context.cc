#include "pipeline/run_context.h"

#include <algorithm>
#include <random>

namespace sluice {

namespace {

uint64_t NewRunId() {
  std::random_device entropy;
  uint64_t id = 0;
  while (id == 0) id = (uint64_t{entropy()} << 32) ^ entropy();
  return id;
}

}  // namespace

RunContext::RunContext(const IngestOptions& options, Metrics& metrics, const Clock& clock)
    : options_(options),
      metrics_(metrics),
      clock_(clock),
      run_id_(NewRunId()),
      // Later copies of a text whose first copy is being embedded (bounded).
      inflight_(std::max<size_t>(256, options.queue_capacity)) {}

void RunContext::RequestStop() {
  stopping_ = true;
  MutexLock lock(mu_);
  if (stop_listener_) stop_listener_();
}

void RunContext::Fail(const Status& status) {
  MutexLock lock(mu_);
  if (fatal_.ok()) fatal_ = status;
  stopping_ = true;
  if (stop_listener_) stop_listener_();
}

Status RunContext::FatalStatus() const {
  MutexLock lock(mu_);
  return fatal_;
}

void RunContext::SetStopListener(std::function<void()> listener) {
  MutexLock lock(mu_);
  stop_listener_ = std::move(listener);
}

void RunContext::Skip(const std::string& reason) {
  Add(metrics_.sources_skipped);
  MutexLock lock(mu_);
  ++skipped_reasons_[reason];
}

std::map<std::string, uint64_t> RunContext::SkippedReasons() const {
  MutexLock lock(mu_);
  return skipped_reasons_;
}

void RunContext::Abandon(const Chunk& chunk) {
  chunks_abandoned_.fetch_add(1, std::memory_order_relaxed);
  tracker_.Resolved(chunk, /*abandoned=*/true);
  for (const Chunk& copy : inflight_.Release(chunk.id)) Abandon(copy);
}

void RunContext::AbandonId(const std::string& chunk_id) {
  chunks_abandoned_.fetch_add(1, std::memory_order_relaxed);
  tracker_.ResolvedId(chunk_id, /*abandoned=*/true);
  for (const Chunk& copy : inflight_.Release(chunk_id)) Abandon(copy);
}

void RunDeadLetters::ChunkFailed(const Chunk& chunk, const Status& why) {
  if (why.code() == StatusCode::kCancelled) {
    run_.Abandon(chunk);
    return;
  }
  file_.ChunkFailed(chunk, why);
  run_.tracker().DeadLettered(chunk);
  for (const Chunk& copy : run_.inflight().Release(chunk.id)) ChunkFailed(copy, why);
}

void RunDeadLetters::SourceFailed(const std::string& source_id, const std::string& path,
                                  const Status& why) {
  file_.SourceFailed(source_id, path, why);
}

BusyTimer::~BusyTimer() {
  const auto elapsed = static_cast<uint64_t>(std::max<int64_t>(0, (clock_.Now() - start_).count()));
  uint64_t blocked = 0;
  if (blocked_total_ != nullptr) {
    blocked = std::min(elapsed, static_cast<uint64_t>(std::max<int64_t>(
                                    0, (*blocked_total_ - blocked_at_start_).count())));
  }
  Add(stage_.busy_ns, elapsed - blocked);
  if (blocked > 0) Add(stage_.blocked_ns, blocked);
}

}  // namespace sluice
