#include "pipeline/control_wiring.h"

#include <algorithm>
#include <condition_variable>
#include <mutex>
#include <thread>

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include "distributed/shared_controllers.h"
#include "sluice/control.h"

namespace sluice {

namespace {

// The shared budget (--budget-redis) for an HTTP run, named by --budget-name
// or after the endpoint and model; null without one (or for a URL the CLI
// should have refused: that run paces alone, with a warning).
std::unique_ptr<SharedBudget> OpenSharedBudget(const IngestOptions& options) {
  const SharedBudgetOptions& shared = options.shared_budget;
  if (shared.redis_url.empty() || options.embedder == EmbedderKind::kHash ||
      options.http.endpoint.empty()) {
    return nullptr;
  }
  SharedBudgetOptions o = shared;
  if (o.name.empty()) o.name = DefaultBudgetName(options.http.endpoint, options.http.model);
  auto budget = SharedBudget::Open(o);
  if (!budget.ok()) {
    spdlog::warn("no shared rate budget: {}", budget.status().message());
    return nullptr;
  }
  return std::move(*budget);
}

}  // namespace

std::unique_ptr<ConcurrencyLimiter> MakeLimiter(const IngestOptions& options) {
  std::unique_ptr<ConcurrencyLimiter> local =
      options.concurrency > 0 ? MakeFixedLimiter(static_cast<size_t>(options.concurrency))
                              : MakeAdaptiveLimiter(AdaptiveLimiterOptions{});
  if (options.shared_budget.max_in_flight <= 0) return local;
  std::unique_ptr<SharedBudget> budget = OpenSharedBudget(options);
  if (!budget) return local;
  return std::make_unique<SharedConcurrencyLimiter>(std::move(local), std::move(budget),
                                                    options.shared_budget.max_in_flight);
}

std::unique_ptr<RatePacer> MakePacer(const IngestOptions& options) {
  RatePacerOptions pacer;
  pacer.rpm = options.rpm;
  pacer.tpm = options.tpm;
  pacer.probe_first = true;
  std::unique_ptr<RatePacer> local = MakeRatePacer(pacer);
  std::unique_ptr<SharedBudget> budget = OpenSharedBudget(options);
  if (!budget) return local;
  return std::make_unique<SharedRatePacer>(std::move(local), std::move(budget), options.rpm,
                                           options.tpm);
}

// The recorder is single-threaded by contract; the embed stage reports
// requests from its thread and a sampler thread reads the limit/in-flight
// gauges, so one mutex (taken once per request, never per chunk) serialises them.
struct TraceHook::Impl {
  const IngestOptions& options;
  Metrics& metrics;
  std::mutex mu;
  TraceRecorder recorder;             // GUARDED_BY(mu)
  std::function<void()> queue_probe;  // GUARDED_BY(mu)
  std::condition_variable wake;
  bool stop = false;  // GUARDED_BY(mu)
  std::thread sampler;

  Impl(const IngestOptions& o, Metrics& m) : options(o), metrics(m), recorder(SteadyClock::now()) {}
};

TraceHook::TraceHook(const IngestOptions& options, EmbedStage& stage, Metrics& metrics)
    : impl_(std::make_unique<Impl>(options, metrics)) {
  Impl* impl = impl_.get();
  stage.SetObserver([impl](const RequestEvent& event) {
    std::lock_guard lock(impl->mu);
    impl->recorder.OnRequest(event);
  });
  impl->sampler = std::thread([impl] {
    std::unique_lock lock(impl->mu);
    while (!impl->stop) {
      impl->recorder.Sample(
          SteadyClock::now(),
          static_cast<size_t>(std::max<int64_t>(0, impl->metrics.concurrency_limit.load())),
          static_cast<size_t>(std::max<int64_t>(0, impl->metrics.in_flight.load())));
      if (impl->queue_probe) impl->queue_probe();
      const Metrics& m = impl->metrics;
      const StageMetrics* stages[kTraceQueues] = {&m.reader, &m.cache, &m.embedder, &m.store,
                                                  &m.aggregator};
      QueueDepths depths{};
      for (size_t i = 0; i < kTraceQueues; ++i) {
        depths[i] = static_cast<double>(std::max<int64_t>(0, stages[i]->queue_depth.load()));
      }
      impl->recorder.SampleQueues(SteadyClock::now(), depths);
      impl->wake.wait_for(lock, std::chrono::milliseconds(250));
    }
  });
}

TraceHook::~TraceHook() {
  if (impl_ && impl_->sampler.joinable()) {
    {
      std::lock_guard lock(impl_->mu);
      impl_->stop = true;
    }
    impl_->wake.notify_all();
    impl_->sampler.join();
  }
}

TraceHook::TraceHook(TraceHook&&) noexcept = default;

void TraceHook::SetQueueProbe(std::function<void()> probe) {
  std::lock_guard lock(impl_->mu);
  impl_->queue_probe = std::move(probe);
}

void TraceHook::Finish(IngestReport& report) {
  Impl& impl = *impl_;
  {
    std::lock_guard lock(impl.mu);
    impl.stop = true;
  }
  impl.wake.notify_all();
  if (impl.sampler.joinable()) impl.sampler.join();

  const TraceSummary s = impl.recorder.Summary();
  report.trace_summary = fmt::format(
      "limit mean {:.1f} (min {:.0f}, max {:.0f}), peak {:.0f} requests/s, steady {:.0f} chunks/s, "
      "p50 {:.0f} ms, {} 429s, {} retries over {}s",
      s.mean_limit, s.min_limit, s.max_limit, s.peak_requests_per_s, s.steady_chunks_per_s,
      s.p50_latency_ms, s.http_429, s.retries, s.seconds);
  report.trace_summary_json = TraceSummaryJson(s);
  report.trace_rows = impl.recorder.Rows();
  impl.queue_probe = nullptr;  // the queues it reads may go away after Finish

  const std::string& path = impl.options.trace_path;
  if (path.empty()) return;
  // The CLI refuses any other extension before the run starts.
  const std::optional<TraceFormat> format = TraceFormatForPath(path);
  if (!format) {
    spdlog::warn("--trace {}: not written: the extension must be .csv, .json or .html", path);
    return;
  }
  if (*format == TraceFormat::kHtml) return;  // the caller writes the run report there
  Status written =
      *format == TraceFormat::kJson ? impl.recorder.WriteJson(path) : impl.recorder.WriteCsv(path);
  if (!written.ok()) spdlog::warn("cannot write --trace {}: {}", path, written.message());
}

}  // namespace sluice
