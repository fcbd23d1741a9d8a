#include "pipeline/run_context.h"

#include <sched.h>
#include <sys/resource.h>

#include <algorithm>
#include <random>
#include <thread>

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

namespace {
uint64_t RusageNanos(int who) {
  rusage usage{};
  if (::getrusage(who, &usage) != 0) return 0;
  const auto micros = [](const timeval& t) {
    return static_cast<uint64_t>(t.tv_sec) * 1'000'000 + static_cast<uint64_t>(t.tv_usec);
  };
  return (micros(usage.ru_utime) + micros(usage.ru_stime)) * 1000;
}
}  // namespace

void AddThreadCpuTime(StageMetrics& stage) { Add(stage.cpu_ns, RusageNanos(RUSAGE_THREAD)); }

double ProcessCpuSeconds() { return static_cast<double>(RusageNanos(RUSAGE_SELF)) / 1e9; }

int UsableCores() {
  cpu_set_t set;
  CPU_ZERO(&set);
  if (::sched_getaffinity(0, sizeof(set), &set) == 0) return std::max(1, CPU_COUNT(&set));
  return std::max(1, static_cast<int>(std::thread::hardware_concurrency()));
}

std::string BottleneckStage(const Metrics& m, double elapsed_s, int readers, double process_cpu_s,
                            int cores, bool* cpu_bound) {
  *cpu_bound = false;
  if (elapsed_s <= 0) return "";
  std::string busiest;
  if (cores > 0 && process_cpu_s >= 0.75 * static_cast<double>(cores) * elapsed_s) {
    uint64_t most = 0;
    for (const NamedStageMetrics& s : StagesOf(m)) {
      if (Get(s.stage.cpu_ns) > most) {
        most = Get(s.stage.cpu_ns);
        busiest = s.name;
      }
    }
    if (!busiest.empty()) {
      *cpu_bound = true;
      return busiest;
    }
  }
  double most = 0;
  for (const NamedStageMetrics& s : StagesOf(m)) {
    const int threads = &s.stage == &m.reader ? std::max(1, readers) : 1;
    const double share =
        static_cast<double>(Get(s.stage.busy_ns)) / 1e9 / elapsed_s / static_cast<double>(threads);
    if (share > most) {
      most = share;
      busiest = s.name;
    }
  }
  return busiest;
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
