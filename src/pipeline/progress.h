// Progress while a run goes: one line with sources done/total, chunks stored,
// chunks/s, tokens/s, ETA, cost so far and projected, requests in flight vs
// the limit and 429s (issue 12). On a terminal the line is redrawn in place;
// otherwise (CI, cron, systemd, nohup) it is logged every N seconds, so no
// run is silent until its end.
//
// The formatting is a pure function of a snapshot (unit-tested); the
// reporter thread only samples the counters and times the lines.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <thread>

#include "sluice/clock.h"
#include "sluice/thread_annotations.h"

namespace sluice {

// US dollars per million input tokens of the models whose price is public
// (OpenAI's embedding models); nullopt for any other model: a cost is never
// guessed.
std::optional<double> BuiltInPricePerMillionTokens(std::string_view model);

struct ProgressSnapshot {
  double elapsed_s = 0;
  uint64_t sources_done = 0;
  uint64_t bytes_done = 0;     // read, or skipped as unchanged
  uint64_t sources_total = 0;  // valid when totals_known
  uint64_t bytes_total = 0;    // valid when totals_known
  bool totals_known = false;   // the size scan has finished (never for stdin)
  uint64_t chunks_produced = 0;
  uint64_t chunks_stored = 0;
  uint64_t chunks_dead_lettered = 0;
  uint64_t tokens = 0;      // prompt tokens the service counted
  double chunks_per_s = 0;  // recent rate (UpdateRates)
  double tokens_per_s = 0;  // recent rate (UpdateRates)
  int64_t in_flight = 0;
  int64_t concurrency_limit = 0;  // 0: no HTTP embedder
  uint64_t rate_limited = 0;      // 429s so far
  std::optional<double> price_per_mtok;
};

// Fills `now`'s chunks/s (stored + dead-lettered) and tokens/s from the
// counts since `previous`, smoothed (weight 0.3 for the newest interval; the
// first interval with work, from a zero snapshot at the start, counts whole).
void UpdateRates(const ProgressSnapshot& previous, ProgressSnapshot& now);

// "3m20s", "1h05m", "45s".
std::string FormatDuration(double seconds);

// The chunks the run will have produced: those so far, scaled by the bytes
// still to read (exact once everything is read); nullopt while the totals
// are unknown or nothing has been read.
std::optional<double> EstimatedTotalChunks(const ProgressSnapshot& s);
// Seconds left: the chunks not yet stored or dead-lettered at the recent
// rate; nullopt while that cannot be estimated.
std::optional<double> EtaSeconds(const ProgressSnapshot& s);

// The line (without "[sluice]" or a newline).
std::string FormatProgressLine(const ProgressSnapshot& s);

// Samples `sample` (the counters; the reporter adds the rates, UpdateRates)
// and hands each snapshot on: a printer gets its line every 500 ms on a
// terminal (to redraw it in place), every `interval` otherwise; an observer
// gets the snapshot every `interval` and once more, with `final` set, when
// Stop() ends the loop. Stop() ends it at once (it waits on a condition
// variable, not a sleep).
class ProgressReporter {
 public:
  using Sampler = std::function<ProgressSnapshot()>;
  using Printer = std::function<void(const std::string& line, bool terminal)>;
  using Observer = std::function<void(const ProgressSnapshot& snapshot, bool final)>;
  ProgressReporter(Sampler sample, Printer print, bool terminal, Duration interval);
  ProgressReporter(Sampler sample, Observer observe, Duration interval);
  // Runs until Stop() (on its own thread).
  void Run();
  void Stop();

 private:
  Sampler sample_;
  Printer print_;     // set for a printer
  Observer observe_;  // set for an observer
  bool terminal_ = false;
  Duration interval_;
  Mutex mu_;
  std::condition_variable cv_;
  bool stop_ SLUICE_GUARDED_BY(mu_) = false;
};

// How a run reports progress: the printed line, an observer, or both.
struct RunProgressOptions {
  bool print_lines = true;  // the line on stderr (or through the logger)
  Duration interval = std::chrono::seconds(10);
  bool through_logger = false;  // off a terminal, lines go to the logger (--log-format json)
  ProgressReporter::Observer observer;  // empty: none
  Duration observer_interval = std::chrono::seconds(1);
};

// A run's progress: a size scan of the inputs on a thread of its own (so the
// ETA does not wait for the walk), the line printer's thread (stderr, a live
// line on a terminal) and the observer's thread (IngestOptions::on_progress),
// each only when asked for. `sample` gets the scan's totals filled in once
// known. Stop() (or the destructor) joins them all; the observer's final
// call happens before Stop() returns.
class SourceEnumerator;
class RunProgress {
 public:
  RunProgress(const SourceEnumerator& enumerator, const std::atomic<bool>& stopping,
              ProgressReporter::Sampler sample, RunProgressOptions options);
  ~RunProgress();
  RunProgress(const RunProgress&) = delete;
  RunProgress& operator=(const RunProgress&) = delete;
  void Stop();

 private:
  ProgressSnapshot SampleWithTotals() const;

  ProgressReporter::Sampler sample_;
  std::atomic<bool> totals_known_{false};
  std::atomic<uint64_t> total_files_{0}, total_bytes_{0};
  std::unique_ptr<ProgressReporter> printer_, observer_;
  std::thread scan_, print_, observe_;
};

}  // namespace sluice
