// Chooses and connects the embed stage's controllers from IngestOptions: the
// concurrency limiter (fixed --concurrency N, or adaptive with 0), the rate
// pacer (--rpm/--tpm and the service's rate-limit headers), both wrapped to
// obey the shared rate budget with --budget-redis, and the controller
// trace (--trace FILE, summarised in the report, its rows handed to the
// report for the HTML run report).
//
// Thread safety: TraceHook samples from its own thread; Finish() joins it.
// SetQueueProbe may be called from any thread while it samples.
#pragma once

#include <functional>
#include <memory>
#include <string>

#include "sluice/embed.h"
#include "sluice/embed_stage.h"
#include "sluice/metrics.h"
#include "sluice/pipeline.h"

namespace sluice {

std::unique_ptr<ConcurrencyLimiter> MakeLimiter(const IngestOptions& options);
std::unique_ptr<RatePacer> MakePacer(const IngestOptions& options);

class TraceHook {
 public:
  TraceHook(const IngestOptions& options, EmbedStage& stage, Metrics& metrics);
  ~TraceHook();
  TraceHook(TraceHook&&) noexcept;
  TraceHook& operator=(TraceHook&&) = delete;
  TraceHook(const TraceHook&) = delete;
  TraceHook& operator=(const TraceHook&) = delete;
  // Called by the sampler before each sample, to refresh the stages'
  // StageMetrics::queue_depth gauges the trace records (a pipeline whose
  // stages keep those gauges themselves needs none). Must stay callable until
  // Finish() or destruction.
  void SetQueueProbe(std::function<void()> probe);
  // Stops sampling, writes --trace (.csv or .json; a .html trace is the HTML
  // run report, written by the caller once the report is complete: see
  // WriteHtmlReport), and puts the summary and the rows into `report`.
  void Finish(IngestReport& report);

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

inline TraceHook MakeTraceHook(const IngestOptions& options, EmbedStage& stage, Metrics& metrics) {
  return TraceHook(options, stage, metrics);
}

}  // namespace sluice
