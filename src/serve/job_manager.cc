#include "serve/job_manager.h"

#include "cli/commands.h"

#include <fmt/format.h>
#include <simdjson.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "common/json_writer.h"
#include "common/private_file.h"
#include "pipeline/progress.h"
#include "sluice/embed.h"
#include "sluice/html_report.h"
#include "sluice/metrics_server.h"

namespace sluice::serve {

namespace fs = std::filesystem;

namespace {

constexpr const char* kStateNames[] = {"queued", "running", "succeeded", "failed", "cancelled"};

std::optional<JobState> ParseState(std::string_view name) {
  for (size_t i = 0; i < std::size(kStateNames); ++i) {
    if (name == kStateNames[i]) return static_cast<JobState>(i);
  }
  return std::nullopt;
}

// The report as one line: it is embedded in responses and in event data lines.
std::string OneLine(std::string json) {
  while (!json.empty() && (json.back() == '\n' || json.back() == ' ')) json.pop_back();
  return json;
}

std::string UtcNow() {
  const std::time_t now = std::time(nullptr);
  std::tm utc{};
  gmtime_r(&now, &utc);
  char buf[32];
  std::strftime(buf, sizeof(buf), "%Y-%m-%dT%H:%M:%SZ", &utc);
  return buf;
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

void WriteProgress(JsonWriter& w, const JobProgress& p) {
  w.BeginObject();
  w.Key("elapsed_s").Double(p.elapsed_s);
  w.Key("sources_done").Uint(p.sources_done);
  w.Key("bytes_read").Uint(p.bytes_read);
  w.Key("chunks_produced").Uint(p.chunks_produced);
  w.Key("chunks_embedded").Uint(p.chunks_embedded);
  w.Key("chunks_stored").Uint(p.chunks_stored);
  w.Key("chunks_dead_lettered").Uint(p.chunks_dead_lettered);
  w.Key("tokens").Uint(p.tokens);
  w.Key("in_flight").Int(p.in_flight);
  w.Key("chunks_per_s").Double(p.chunks_per_s);
  w.Key("eta_s");
  if (p.eta_s) {
    w.Double(*p.eta_s);
  } else {
    w.Null();
  }
  w.Key("cost_usd");
  if (p.cost_usd) {
    w.Double(*p.cost_usd);
  } else {
    w.Null();
  }
  w.EndObject();
}

}  // namespace

const char* JobStateName(JobState state) { return kStateNames[static_cast<int>(state)]; }

bool IsFinished(JobState state) {
  return state == JobState::kSucceeded || state == JobState::kFailed ||
         state == JobState::kCancelled;
}

std::string JobViewJson(const JobView& v, bool with_report) {
  std::string out;
  JsonWriter w(out);
  w.BeginObject();
  w.Key("id").String(v.id).Key("state").String(JobStateName(v.state));
  w.Key("version").Uint(v.version);
  w.Key("created_at").String(v.created_at);
  w.Key("started_at").String(v.started_at);
  w.Key("finished_at").String(v.finished_at);
  w.Key("attempts").Int(v.attempts);
  w.Key("cancel_requested").Bool(v.cancel_requested);
  w.Key("request").Raw(v.request_json);
  if (!v.error.empty()) w.Key("error").String(v.error);
  w.Key("progress");
  WriteProgress(w, v.progress);
  if (with_report) {
    w.Key("report");
    if (v.report_json.empty()) {
      w.Null();
    } else {
      w.Raw(v.report_json);
    }
  }
  w.EndObject();
  return out;
}

struct JobManager::Job {
  std::string id;
  JobRequest request;
  JobState state = JobState::kQueued;
  uint64_t version = 1;
  std::string created_at, started_at, finished_at;
  int attempts = 0;
  bool cancel_requested = false;
  std::string error;
  JobProgress progress;
  std::string report_json;
  std::string target_store;  // the store its options name (empty: unknown), to keep runs apart
  // While running: the run's store (no two runs share one), its pipeline
  // (read by the sampler, stopped by Cancel/Shutdown) and the rate state.
  std::string store_uri;
  std::unique_ptr<Pipeline> pipeline;
  std::optional<uint64_t> bytes_total;
  SteadyClock::time_point run_started{};
  ProgressSnapshot last_snapshot;
};

JobManager::JobManager(JobManagerOptions options, JobOptionsBuilder builder)
    : options_(std::move(options)), builder_(std::move(builder)) {}

Result<std::unique_ptr<JobManager>> JobManager::Open(JobManagerOptions options,
                                                     JobOptionsBuilder builder) {
  if (options.max_jobs < 1) return Status::InvalidArgument("--max-jobs must be at least 1");
  std::error_code ec;
  if (!CreatePrivateDirectories(options.state_dir + "/jobs", ec)) {
    return Status::IOError("cannot create the state folder " + options.state_dir + ": " +
                           ec.message());
  }
  std::unique_ptr<JobManager> manager(new JobManager(std::move(options), std::move(builder)));
  if (Status s = manager->Load(); !s.ok()) return s;
  for (int i = 0; i < manager->options_.max_jobs; ++i) {
    manager->workers_.emplace_back([m = manager.get()] { m->WorkerLoop(); });
  }
  manager->sampler_ = std::thread([m = manager.get()] { m->SamplerLoop(); });
  return manager;
}

JobManager::~JobManager() { Shutdown(); }

std::string JobManager::JobDir(const std::string& id) const {
  return options_.state_dir + "/jobs/" + id;
}

Status JobManager::Load() {
  std::error_code ec;
  std::lock_guard lock(mu_);
  for (const auto& entry : fs::directory_iterator(options_.state_dir + "/jobs", ec)) {
    const std::string id = entry.path().filename().string();
    const std::string file = entry.path().string() + "/job.json";
    // Every folder counts, a damaged one too: a new job never reuses its id.
    const uint64_t number = std::strtoull(id.c_str() + (id.empty() ? 0 : 1), nullptr, 10);
    next_id_ = std::max(next_id_, number + 1);
    if (!fs::exists(file, ec)) continue;  // a submission that never completed
    std::ifstream in(file, std::ios::binary);
    std::stringstream text;
    text << in.rdbuf();
    simdjson::dom::parser parser;
    simdjson::padded_string padded(text.str());
    simdjson::dom::object o;
    std::string_view state_name;
    if (parser.parse(padded).get_object().get(o) != simdjson::SUCCESS ||
        o["state"].get_string().get(state_name) != simdjson::SUCCESS) {
      spdlog::warn("serve: {} is not a job file; skipped", file);
      continue;
    }
    auto job = std::make_unique<Job>();
    job->id = id;
    auto state = ParseState(state_name);
    simdjson::dom::element request;
    if (!state || o["request"].get(request) != simdjson::SUCCESS) {
      spdlog::warn("serve: {} is not a job file; skipped", file);
      continue;
    }
    auto parsed = ParseJobRequestJson(simdjson::minify(request));
    if (!parsed.ok()) {
      spdlog::warn("serve: {}: {}; skipped", file, parsed.status().message());
      continue;
    }
    job->request = std::move(*parsed);
    if (auto options = builder_(job->request, entry.path().string()); options.ok()) {
      job->target_store = options->store_uri;
    }
    job->state = *state == JobState::kRunning ? JobState::kQueued : *state;
    auto text_field = [&](const char* name) {
      std::string_view s;
      return o[name].get_string().get(s) == simdjson::SUCCESS ? std::string(s) : std::string();
    };
    job->created_at = text_field("created_at");
    job->started_at = text_field("started_at");
    job->finished_at = text_field("finished_at");
    job->error = text_field("error");
    if (int64_t attempts; o["attempts"].get_int64().get(attempts) == simdjson::SUCCESS) {
      job->attempts = static_cast<int>(attempts);
    }
    if (simdjson::dom::element report;
        o["report"].get(report) == simdjson::SUCCESS && !report.is_null()) {
      job->report_json = simdjson::minify(report);
    }
    if (*state == JobState::kRunning) {
      spdlog::info("serve: job {} was running when the server stopped; queued again", id);
    }
    jobs_.emplace(id, std::move(job));
  }
  if (ec) return Status::IOError("cannot list " + options_.state_dir + "/jobs: " + ec.message());
  return Status::OK();
}

Status JobManager::Persist(const Job& job) const {
  std::string out;
  JsonWriter w(out);
  w.BeginObject();
  w.Key("id").String(job.id).Key("state").String(JobStateName(job.state));
  w.Key("created_at").String(job.created_at);
  w.Key("started_at").String(job.started_at);
  w.Key("finished_at").String(job.finished_at);
  w.Key("attempts").Int(job.attempts);
  w.Key("error").String(job.error);
  w.Key("request").Raw(JobRequestJson(job.request, /*redact=*/false));
  w.Key("progress");
  WriteProgress(w, job.progress);
  w.Key("report");
  if (job.report_json.empty()) {
    w.Null();
  } else {
    w.Raw(job.report_json);
  }
  w.EndObject();
  out += '\n';
  Status s = WriteFileAtomically(JobDir(job.id) + "/job.json", out);
  if (!s.ok()) spdlog::error("serve: cannot save job {}: {}", job.id, s.message());
  return s;
}

JobView JobManager::ViewOf(const Job& job) const {
  JobView v;
  v.id = job.id;
  v.state = job.state;
  v.version = job.version;
  v.created_at = job.created_at;
  v.started_at = job.started_at;
  v.finished_at = job.finished_at;
  v.attempts = job.attempts;
  v.cancel_requested = job.cancel_requested;
  v.request_json = JobRequestJson(job.request, /*redact=*/true);
  v.error = job.error;
  v.progress = job.progress;
  v.report_json = job.report_json;
  return v;
}

void JobManager::Touch(Job& job) {
  ++job.version;
  changed_.notify_all();
}

Result<JobView> JobManager::Submit(ParsedJobBody body) {
  std::unique_lock lock(mu_);
  if (shutting_down_) return Status::Unavailable("the server is shutting down");
  const std::string id = fmt::format("j{:06}", next_id_++);
  lock.unlock();
  const std::string dir = JobDir(id);
  std::error_code ec;
  if (!CreatePrivateDirectories(dir, ec)) {
    return Status::IOError("cannot create the job folder: " + ec.message());
  }
  auto fail = [&](Status s) {
    fs::remove_all(dir, ec);
    return s;
  };
  if (body.request.inline_jsonl) {
    if (Status s = WriteFileAtomically(InlineJsonlPath(dir), body.jsonl); !s.ok()) {
      return fail(s);
    }
  }
  auto options = builder_(body.request, dir);
  if (!options.ok()) return fail(options.status());
  auto job = std::make_unique<Job>();
  job->id = id;
  job->target_store = options->store_uri;
  job->request = std::move(body.request);
  job->created_at = UtcNow();
  lock.lock();
  if (Status s = Persist(*job); !s.ok()) {
    lock.unlock();
    return fail(s);
  }
  Job& added = *jobs_.emplace(id, std::move(job)).first->second;
  Touch(added);
  return ViewOf(added);
}

std::vector<JobView> JobManager::List() const {
  std::lock_guard lock(mu_);
  std::vector<JobView> views;
  views.reserve(jobs_.size());
  for (const auto& [id, job] : jobs_) views.push_back(ViewOf(*job));
  return views;
}

Result<JobView> JobManager::Get(const std::string& id) const {
  std::lock_guard lock(mu_);
  auto it = jobs_.find(id);
  if (it == jobs_.end()) return Status::NotFound("no job '" + id + "'");
  return ViewOf(*it->second);
}

Result<JobView> JobManager::Cancel(const std::string& id) {
  std::lock_guard lock(mu_);
  auto it = jobs_.find(id);
  if (it == jobs_.end()) return Status::NotFound("no job '" + id + "'");
  Job& job = *it->second;
  if (IsFinished(job.state)) {
    return Status::Busy(fmt::format("job {} is already {}", id, JobStateName(job.state)));
  }
  job.cancel_requested = true;
  if (job.state == JobState::kQueued) {
    job.state = JobState::kCancelled;
    job.finished_at = UtcNow();
    Persist(job);
  } else if (job.pipeline) {
    job.pipeline->RequestStop();
  }
  Touch(job);
  return ViewOf(job);
}

Result<JobView> JobManager::WaitForChange(const std::string& id, uint64_t seen_version,
                                          Duration timeout) const {
  std::unique_lock lock(mu_);
  auto it = jobs_.find(id);
  if (it == jobs_.end()) return Status::NotFound("no job '" + id + "'");
  const Job& job = *it->second;  // jobs are never removed while the manager lives
  changed_.wait_for(lock, timeout, [&] { return shutting_down_ || job.version > seen_version; });
  return ViewOf(job);
}

bool JobManager::shutting_down() const {
  std::lock_guard lock(mu_);
  return shutting_down_;
}

void JobManager::WorkerLoop() {
  std::unique_lock lock(mu_);
  while (true) {
    Job* job = nullptr;
    changed_.wait(lock, [&] {
      if (shutting_down_) return true;
      // The oldest queued job whose store no running job is writing.
      for (auto& [id, candidate] : jobs_) {
        if (candidate->state != JobState::kQueued) continue;
        const std::string& store = candidate->target_store;
        const bool store_busy =
            !store.empty() && std::any_of(jobs_.begin(), jobs_.end(), [&](const auto& other) {
              return other.second->state == JobState::kRunning && other.second->store_uri == store;
            });
        if (!store_busy) {
          job = candidate.get();
          return true;
        }
      }
      return false;
    });
    if (shutting_down_) return;
    RunJob(*job, lock);
  }
}

void JobManager::RunJob(Job& job, std::unique_lock<std::mutex>& lock) {
  auto options = builder_(job.request, JobDir(job.id));
  job.started_at = UtcNow();
  ++job.attempts;
  if (!options.ok()) {
    job.state = JobState::kFailed;
    job.error = options.status().message();
    job.finished_at = UtcNow();
    Persist(job);
    Touch(job);
    return;
  }
  job.state = JobState::kRunning;
  job.error.clear();
  job.store_uri = options->store_uri;
  job.progress = JobProgress{};
  job.last_snapshot = ProgressSnapshot{};
  job.run_started = SteadyClock::now();
  job.pipeline = std::make_unique<Pipeline>(*options);
  Pipeline& pipeline = *job.pipeline;
  Persist(job);
  Touch(job);
  spdlog::info("serve: job {} started (attempt {})", job.id, job.attempts);
  lock.unlock();
  const std::optional<uint64_t> bytes_total = InputBytes(options->inputs);
  lock.lock();
  job.bytes_total = bytes_total;
  lock.unlock();
  IngestReport report = pipeline.Run();
  std::string report_json = OneLine(FormatReportJson(report, pipeline.metrics()));
  const std::string& api_key = options->http.api_key;
  if (!api_key.empty()) report_json = RedactSecret(std::move(report_json), api_key);
  // The client's own report files, as `sluice ingest --report/--html-report` writes them.
  std::string output_error;
  if (!options->report_path.empty()) {
    if (Status s = WriteFileAtomically(options->report_path, report_json); !s.ok()) {
      output_error = "cannot write the report: " + s.message();
    }
  }
  if (!options->html_report_path.empty()) {
    HtmlReportOptions html;
    html.inputs = options->inputs;
    html.generated_at = UtcNow();
    if (Status s = WriteHtmlReport(options->html_report_path, report, pipeline.metrics(), html);
        !s.ok()) {
      output_error = "cannot write the HTML report: " + s.message();
    }
  }
  if (HandsOff(options_.handoff)) {
    lock.lock();
    const bool resumes_later =
        report.status.code() == StatusCode::kCancelled && !job.cancel_requested && shutting_down_;
    lock.unlock();
    if (!resumes_later) {
      HandoffOptions handoff = options_.handoff;
      handoff.job_id = job.id;
      if (!api_key.empty()) handoff.secret_env_values.push_back(api_key);
      // What `sluice ingest` would have exited with (SLUICE_EXIT_STATUS).
      const int exit_status = cli::ExitStatusFor(report, pipeline.metrics(), 0);
      std::string with_handoff;
      HandOffIngest(report, pipeline.metrics(), *options, handoff, exit_status, &with_handoff);
      report_json = OneLine(std::move(with_handoff));
    }
  }
  lock.lock();
  // The final counters, then the pipeline goes (the sampler reads it only
  // under the lock, while it is set).
  {
    const Metrics& m = pipeline.metrics();
    job.progress.elapsed_s = report.elapsed_s;
    job.progress.sources_done = sluice::Get(m.sources_seen);
    job.progress.bytes_read = sluice::Get(m.bytes_read);
    job.progress.chunks_produced = sluice::Get(m.chunks_produced);
    job.progress.chunks_embedded = sluice::Get(m.chunks_embedded);
    job.progress.chunks_stored = sluice::Get(m.chunks_stored);
    job.progress.chunks_dead_lettered = sluice::Get(m.chunks_dead_lettered);
    job.progress.tokens = sluice::Get(m.prompt_tokens);
    job.progress.in_flight = 0;
    job.progress.chunks_per_s =
        report.elapsed_s > 0 ? static_cast<double>(job.progress.chunks_stored) / report.elapsed_s
                             : 0;
    job.progress.eta_s.reset();
    job.progress.cost_usd = report.estimated_cost_usd;
  }
  job.pipeline.reset();
  job.store_uri.clear();
  const bool stopped = report.status.code() == StatusCode::kCancelled;
  if (report.status.ok() && output_error.empty()) {
    job.state = JobState::kSucceeded;
  } else if (stopped && job.cancel_requested) {
    job.state = JobState::kCancelled;
  } else if (stopped && shutting_down_) {
    job.state = JobState::kQueued;  // the next start resumes it
  } else {
    job.state = JobState::kFailed;
    job.error = !report.status.ok() ? report.status.message() : output_error;
    if (!api_key.empty()) job.error = RedactSecret(job.error, api_key);
  }
  job.report_json = std::move(report_json);
  if (IsFinished(job.state)) job.finished_at = UtcNow();
  Persist(job);
  Touch(job);
  spdlog::info("serve: job {} {}", job.id, JobStateName(job.state));
}

std::string JobManager::PrometheusText() const {
  std::lock_guard lock(mu_);
  // Rendered under the lock: a running job's pipeline is reset under it, so
  // every Metrics read here outlives the rendering.
  constexpr JobState kStates[] = {JobState::kQueued, JobState::kRunning, JobState::kSucceeded,
                                  JobState::kFailed, JobState::kCancelled};
  LabelledGauge jobs{"sluice_serve_jobs", "Jobs the server knows, by state.", "state", {}};
  for (JobState state : kStates) jobs.values.emplace_back(JobStateName(state), 0.0);
  std::vector<LabelledRun> runs;
  for (const auto& [id, job] : jobs_) {
    for (auto& [name, count] : jobs.values) {
      if (name == JobStateName(job->state)) count += 1;
    }
    if (job->state == JobState::kRunning && job->pipeline) {
      runs.push_back({id, &job->pipeline->metrics()});
    }
  }
  return sluice::PrometheusText(runs, "sluice_job", {jobs});
}

void JobManager::SamplerLoop() {
  std::unique_lock lock(mu_);
  while (!shutting_down_) {
    changed_.wait_for(lock, options_.sample_period);
    if (shutting_down_) break;
    for (auto& [id, job] : jobs_) {
      if (job->state != JobState::kRunning || !job->pipeline) continue;
      const Metrics& m = job->pipeline->metrics();
      ProgressSnapshot s;
      s.elapsed_s = ToSeconds(SteadyClock::now() - job->run_started);
      s.sources_done = sluice::Get(m.sources_seen);
      s.bytes_done = sluice::Get(m.bytes_read);
      if (job->bytes_total) {
        s.bytes_total = *job->bytes_total;
        s.totals_known = true;
      }
      s.chunks_produced = sluice::Get(m.chunks_produced);
      s.chunks_stored = sluice::Get(m.chunks_stored);
      s.chunks_dead_lettered = sluice::Get(m.chunks_dead_lettered);
      s.tokens = sluice::Get(m.prompt_tokens);
      s.in_flight = m.in_flight.load();
      UpdateRates(job->last_snapshot, s);
      const uint64_t embedded = sluice::Get(m.chunks_embedded);
      if (s.chunks_stored == job->progress.chunks_stored &&
          embedded == job->progress.chunks_embedded &&
          s.chunks_produced == job->progress.chunks_produced &&
          s.sources_done == job->progress.sources_done && s.tokens == job->progress.tokens) {
        continue;  // nothing moved: no event
      }
      job->last_snapshot = s;
      JobProgress& p = job->progress;
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
      Touch(*job);
    }
  }
}

void JobManager::Shutdown() {
  {
    std::lock_guard lock(mu_);
    if (shutting_down_ && workers_.empty()) return;
    shutting_down_ = true;
    for (auto& [id, job] : jobs_) {
      if (job->pipeline) job->pipeline->RequestStop();
    }
    changed_.notify_all();
  }
  for (std::thread& t : workers_) t.join();
  workers_.clear();
  if (sampler_.joinable()) sampler_.join();
}

}  // namespace sluice::serve
