#include "serve/pipeline_job_runner.h"

#include <spdlog/spdlog.h>

#include <atomic>
#include <filesystem>

#include "cli/commands.h"
#include "common/private_file.h"
#include "common/utc_time.h"
#include "pipeline/progress.h"
#include "sluice/clock.h"
#include "sluice/embed.h"
#include "sluice/html_report.h"
#include "sluice/thread_annotations.h"

namespace sluice::serve {

namespace fs = std::filesystem;

namespace {

// The report as one line: it is embedded in responses and in event data lines.
std::string OneLine(std::string json) {
  while (!json.empty() && (json.back() == '\n' || json.back() == ' ')) json.pop_back();
  return json;
}

// Bytes under the job's inputs, for the ETA; nullopt when they cannot be
// counted cheaply (more than kMaxScan entries, or an unreadable input).
std::optional<uint64_t> InputBytes(const std::vector<std::string>& inputs) {
  constexpr size_t kMaxScan = 100000;
  uint64_t bytes = 0;
  size_t seen = 0;
  for (const std::string& input : inputs) {
    std::error_code ec;
    if (fs::is_regular_file(input, ec)) {
      bytes += fs::file_size(input, ec);
      if (ec) return std::nullopt;
      continue;
    }
    fs::recursive_directory_iterator it(input, fs::directory_options::skip_permission_denied, ec);
    if (ec) return std::nullopt;
    for (; it != fs::recursive_directory_iterator(); it.increment(ec)) {
      if (ec || ++seen > kMaxScan) return std::nullopt;
      if (it->is_regular_file(ec)) bytes += it->file_size(ec);
    }
  }
  return bytes;
}

class PipelineJobRun : public JobRun {
 public:
  PipelineJobRun(RunStart start, const HandoffOptions& handoff)
      : start_(std::move(start)),
        handoff_(handoff),
        pipeline_(start_.options),
        started_(SteadyClock::now()) {}

  RunOutcome Wait() override;
  void RequestStop(StopReason reason) override {
    MutexLock lock(mu_);
    if (!stop_reason_) stop_reason_ = reason;
    pipeline_.RequestStop();
  }
  std::optional<JobProgress> Sample() override;
  const Metrics* metrics() const override { return &pipeline_.metrics(); }

 private:
  std::optional<StopReason> stop_reason() {
    MutexLock lock(mu_);
    return stop_reason_;
  }

  const RunStart start_;
  const HandoffOptions& handoff_;
  Pipeline pipeline_;
  const SteadyClock::time_point started_;
  Mutex mu_;
  std::optional<StopReason> stop_reason_ SLUICE_GUARDED_BY(mu_);
  std::optional<uint64_t> bytes_total_ SLUICE_GUARDED_BY(mu_);  // for the ETA, once counted
  ProgressSnapshot last_snapshot_ SLUICE_GUARDED_BY(mu_);
  JobProgress last_progress_ SLUICE_GUARDED_BY(mu_);
};

std::optional<JobProgress> PipelineJobRun::Sample() {
  MutexLock lock(mu_);
  const Metrics& m = pipeline_.metrics();
  ProgressSnapshot s;
  s.elapsed_s = ToSeconds(SteadyClock::now() - started_);
  s.sources_done = sluice::Get(m.sources_seen);
  s.bytes_done = sluice::Get(m.bytes_read);
  if (bytes_total_) {
    s.bytes_total = *bytes_total_;
    s.totals_known = true;
  }
  s.chunks_produced = sluice::Get(m.chunks_produced);
  s.chunks_stored = sluice::Get(m.chunks_stored);
  s.chunks_dead_lettered = sluice::Get(m.chunks_dead_lettered);
  s.tokens = sluice::Get(m.prompt_tokens);
  s.in_flight = m.in_flight.load();
  UpdateRates(last_snapshot_, s);
  const uint64_t embedded = sluice::Get(m.chunks_embedded);
  JobProgress& p = last_progress_;
  if (s.chunks_stored == p.chunks_stored && embedded == p.chunks_embedded &&
      s.chunks_produced == p.chunks_produced && s.sources_done == p.sources_done &&
      s.tokens == p.tokens) {
    return std::nullopt;  // nothing moved: no event
  }
  last_snapshot_ = s;
  p.elapsed_s = s.elapsed_s;
  p.sources_done = s.sources_done;
  p.bytes_read = s.bytes_done;
  p.chunks_produced = s.chunks_produced;
  p.chunks_embedded = embedded;
  p.chunks_stored = s.chunks_stored;
  p.chunks_dead_lettered = s.chunks_dead_lettered;
  p.tokens = s.tokens;
  p.in_flight = s.in_flight;
  p.chunks_per_s = s.chunks_per_s;
  p.eta_s = EtaSeconds(s);
  const double price = m.price_per_mtok_usd.load();
  if (price >= 0) p.cost_usd = static_cast<double>(s.tokens) * price / 1e6;
  return p;
}

RunOutcome PipelineJobRun::Wait() {
  const IngestOptions& options = start_.options;
  const std::optional<uint64_t> bytes_total = InputBytes(options.inputs);
  {
    MutexLock lock(mu_);
    bytes_total_ = bytes_total;
  }
  IngestReport report = pipeline_.Run();
  const Metrics& m = pipeline_.metrics();
  std::string report_json = OneLine(FormatReportJson(report, m));
  const std::string& api_key = options.http.api_key;
  if (!api_key.empty()) report_json = RedactSecret(std::move(report_json), api_key);
  // The client's own report files, as `sluice ingest --report/--html-report` writes them.
  std::string output_error;
  if (!options.report_path.empty()) {
    if (Status s = WriteFileAtomically(options.report_path, report_json); !s.ok()) {
      output_error = "cannot write the report: " + s.message();
    }
  }
  if (!options.html_report_path.empty()) {
    HtmlReportOptions html;
    html.inputs = options.inputs;
    html.generated_at = UtcNowIso8601();
    if (Status s = WriteHtmlReport(options.html_report_path, report, m, html); !s.ok()) {
      output_error = "cannot write the HTML report: " + s.message();
    }
  }
  const std::optional<StopReason> reason = stop_reason();
  const bool stopped = report.status.code() == StatusCode::kCancelled;
  RunOutcome outcome;
  if (report.status.ok() && output_error.empty()) {
    outcome.end = RunEnd::kSucceeded;
  } else if (stopped && reason == StopReason::kCancel) {
    outcome.end = RunEnd::kCancelled;
  } else if (stopped && reason == StopReason::kShutdown) {
    outcome.end = RunEnd::kStopped;  // the next start resumes it
  } else {
    outcome.end = RunEnd::kFailed;
    outcome.error = !report.status.ok() ? report.status.message() : output_error;
    if (!api_key.empty()) outcome.error = RedactSecret(outcome.error, api_key);
  }
  if (HandsOff(handoff_) && outcome.end != RunEnd::kStopped) {
    HandoffOptions handoff = handoff_;
    handoff.job_id = start_.job_id;
    if (!api_key.empty()) handoff.secret_env_values.push_back(api_key);
    // What `sluice ingest` would have exited with (SLUICE_EXIT_STATUS).
    const int exit_status = cli::ExitStatusFor(report, m, 0);
    std::string with_handoff;
    HandOffIngest(report, m, options, handoff, exit_status, &with_handoff);
    report_json = OneLine(std::move(with_handoff));
  }
  outcome.report_json = std::move(report_json);
  JobProgress& p = outcome.progress;
  p.elapsed_s = report.elapsed_s;
  p.sources_done = sluice::Get(m.sources_seen);
  p.bytes_read = sluice::Get(m.bytes_read);
  p.chunks_produced = sluice::Get(m.chunks_produced);
  p.chunks_embedded = sluice::Get(m.chunks_embedded);
  p.chunks_stored = sluice::Get(m.chunks_stored);
  p.chunks_dead_lettered = sluice::Get(m.chunks_dead_lettered);
  p.tokens = sluice::Get(m.prompt_tokens);
  p.chunks_per_s =
      report.elapsed_s > 0 ? static_cast<double>(p.chunks_stored) / report.elapsed_s : 0;
  p.cost_usd = report.estimated_cost_usd;
  return outcome;
}

}  // namespace

Result<std::unique_ptr<JobRun>> PipelineJobRunner::Start(RunStart start) {
  return std::unique_ptr<JobRun>(new PipelineJobRun(std::move(start), handoff_));
}

}  // namespace sluice::serve
