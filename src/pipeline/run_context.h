// What the stages of one run share: the options, the metrics and the clock;
// stop and fail (the first fatal error wins and stops intake everywhere);
// the reasons sources were skipped; and the chunk accounting every stage
// takes part in (SourceTracker follows each file until all its chunks are
// resolved; InflightTexts parks later copies of a text being embedded;
// Abandon counts chunks a stop drops, which the next run redoes).
//
// Thread safety: every method is safe from any thread. Stages hold a
// reference; the Pipeline owns the context for the length of one Run().
#pragma once

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <mutex>
#include <string>

#include "pipeline/dead_letter_file.h"
#include "pipeline/inflight_texts.h"
#include "pipeline/source_tracker.h"
#include "sluice/clock.h"
#include "sluice/dead_letter.h"
#include "sluice/metrics.h"
#include "sluice/pipeline.h"
#include "sluice/thread_annotations.h"

namespace sluice {

class RunContext {
 public:
  RunContext(const IngestOptions& options, Metrics& metrics, const Clock& clock);
  RunContext(const RunContext&) = delete;
  RunContext& operator=(const RunContext&) = delete;

  const IngestOptions& options() const { return options_; }
  Metrics& metrics() { return metrics_; }
  const Clock& clock() const { return clock_; }
  // Unique per run (random, never 0): the store's per-file records of the
  // chunks this run wrote carry it (docs/RESUME.md).
  uint64_t run_id() const { return run_id_; }
  SourceTracker& tracker() { return tracker_; }
  InflightTexts& inflight() { return inflight_; }

  // True once a stop was requested or a stage failed: no new sources, no new requests.
  bool stopping() const { return stopping_.load(std::memory_order_relaxed); }
  // For code that polls the flag itself (parsers, the walker).
  const std::atomic<bool>& stopping_flag() const { return stopping_; }
  // Stops intake (the first SIGINT/SIGTERM); work in flight finishes.
  void RequestStop();
  // Records the first fatal error and stops the run.
  void Fail(const Status& status);
  Status FatalStatus() const;
  // Called (once per stop or failure, under the context's lock) to pass the
  // stop on to a stage that waits on its own clock (the embed stage).
  // Cleared with an empty function before that stage goes away.
  void SetStopListener(std::function<void()> listener);

  // A source left out with a reason (unsupported format, empty, ...).
  void Skip(const std::string& reason);
  std::map<std::string, uint64_t> SkippedReasons() const;

  // A chunk dropped by a stop: counted, its file not fingerprinted; copies
  // parked behind it share its fate.
  void Abandon(const Chunk& chunk);
  // The same for a chunk known only by id (moved into a queue that refused it).
  void AbandonId(const std::string& chunk_id);
  uint64_t chunks_abandoned() const { return chunks_abandoned_.load(); }

 private:
  const IngestOptions& options_;
  Metrics& metrics_;
  const Clock& clock_;
  const uint64_t run_id_;
  std::atomic<bool> stopping_{false};
  mutable Mutex mu_;
  Status fatal_ SLUICE_GUARDED_BY(mu_);  // the first fatal error
  std::function<void()> stop_listener_ SLUICE_GUARDED_BY(mu_);
  std::map<std::string, uint64_t> skipped_reasons_ SLUICE_GUARDED_BY(mu_);
  SourceTracker tracker_;
  InflightTexts inflight_;
  std::atomic<uint64_t> chunks_abandoned_{0};
};

// The dead-letter sink the stages see: chunks cancelled by a stop are
// abandoned (counted, not written: the rerun redoes them); real failures go
// to the file. Either way the chunk's file learns the outcome, and copies of
// the same text parked behind the chunk share its fate.
class RunDeadLetters final : public DeadLetterSink {
 public:
  RunDeadLetters(DeadLetterFile& file, RunContext& run) : file_(file), run_(run) {}
  void ChunkFailed(const Chunk& chunk, const Status& why) override;
  void SourceFailed(const std::string& source_id, const std::string& path,
                    const Status& why) override;

 private:
  DeadLetterFile& file_;
  RunContext& run_;
};

// Adds the calling thread's CPU time so far (user + system) to `stage`:
// called once as each stage thread ends.
void AddThreadCpuTime(StageMetrics& stage);

// The process's CPU time so far (user + system), in seconds.
double ProcessCpuSeconds();

// The cores this process may run on (its CPU affinity), at least 1.
int UsableCores();

// The stage that limited a run (IngestReport::bottleneck_stage). When the
// process used at least 75% of `cores` over the run: the stage with the most
// CPU (on a saturated machine every stage waits for a core, so their busy
// times all swell alike; 75%, not 100%, because a run's start and end, with
// one thread at work, keep a saturated run at ~80% on two cores). Otherwise:
// the one whose threads were busy the largest share of the run (the embed
// stage counts the time it had requests in flight). Sets *cpu_bound
// accordingly. Empty when nothing was measured.
std::string BottleneckStage(const Metrics& m, double elapsed_s, int readers, double process_cpu_s,
                            int cores, bool* cpu_bound);

// Times a stretch of real work into a stage's busy_ns (the stage metric that
// names the bottleneck): construct when work starts, destroy when it ends.
class BusyTimer {
 public:
  // `blocked_total`, when given, is where the stage adds the time its pushes
  // waited on a full queue (BoundedQueue::Push's `waited`); what it grows by
  // during this scope counts as blocked, not busy. Without that, a stage
  // held back by a slower one downstream looked like the bottleneck: offline,
  // the readers were "busy" 6.0 s, 3 s of it waiting to hand chunks on.
  BusyTimer(const Clock& clock, StageMetrics& stage,
            const std::chrono::nanoseconds* blocked_total = nullptr)
      : clock_(clock),
        stage_(stage),
        start_(clock.Now()),
        blocked_total_(blocked_total),
        blocked_at_start_(blocked_total != nullptr ? *blocked_total
                                                   : std::chrono::nanoseconds::zero()) {}
  ~BusyTimer();
  BusyTimer(const BusyTimer&) = delete;
  BusyTimer& operator=(const BusyTimer&) = delete;

 private:
  const Clock& clock_;
  StageMetrics& stage_;
  const TimePoint start_;
  const std::chrono::nanoseconds* blocked_total_;
  const std::chrono::nanoseconds blocked_at_start_;
};

}  // namespace sluice
