#include "serve/job_manager.h"

#include <fmt/format.h>
#include <simdjson.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "common/json_writer.h"
#include "common/private_file.h"
#include "common/utc_time.h"
#include "serve/pipeline_job_runner.h"
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
  if (p.tasks) {
    const TaskCounts& t = *p.tasks;
    w.Key("tasks").BeginObject();
    w.Key("total").Uint(t.total).Key("pending").Uint(t.pending);
    w.Key("in_flight").Uint(t.in_flight).Key("done").Uint(t.done);
    w.Key("dead").Uint(t.dead).Key("cancelled").Uint(t.cancelled);
    w.EndObject();
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
  if (!v.redis_job.empty()) w.Key("redis_job").String(v.redis_job);
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
  // While running: the run's store (no two runs share one) and the run
  // (sampled by the sampler, stopped by Cancel/Shutdown; null while it starts).
  std::string store_uri;
  std::unique_ptr<JobRun> run;
};

JobManager::JobManager(JobManagerOptions options, JobOptionsBuilder builder,
                       std::unique_ptr<JobRunner> runner)
    : options_(std::move(options)),
      builder_(std::move(builder)),
      runner_(runner ? std::move(runner) : std::make_unique<PipelineJobRunner>(options_.handoff)) {}

Result<std::unique_ptr<JobManager>> JobManager::Open(JobManagerOptions options,
                                                     JobOptionsBuilder builder,
                                                     std::unique_ptr<JobRunner> runner) {
  if (options.max_jobs < 1) return Status::InvalidArgument("--max-jobs must be at least 1");
  std::error_code ec;
  if (!CreatePrivateDirectories(options.state_dir + "/jobs", ec)) {
    return Status::IOError("cannot create the state folder " + options.state_dir + ": " +
                           ec.message());
  }
  std::unique_ptr<JobManager> manager(
      new JobManager(std::move(options), std::move(builder), std::move(runner)));
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
  v.redis_job = runner_->ExternalName(job.id);
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
  if (Status s = runner_->Check(body.request, *options); !s.ok()) return fail(s);
  auto job = std::make_unique<Job>();
  job->id = id;
  job->target_store = options->store_uri;
  job->request = std::move(body.request);
  job->created_at = UtcNowIso8601();
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
    job.finished_at = UtcNowIso8601();
    Persist(job);
  } else if (job.run) {
    job.run->RequestStop(StopReason::kCancel);
  }  // else: it is starting; RunJob stops it once started
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
  job.started_at = UtcNowIso8601();
  // A queued job started before was stopped by a shutdown while it ran.
  const bool resumed = job.attempts > 0;
  ++job.attempts;
  auto fail = [&](const std::string& error) {
    job.state = JobState::kFailed;
    job.error = error;
    job.finished_at = UtcNowIso8601();
    job.store_uri.clear();
    Persist(job);
    Touch(job);
    spdlog::info("serve: job {} failed to start: {}", job.id, error);
  };
  if (!options.ok()) return fail(options.status().message());
  job.state = JobState::kRunning;
  job.error.clear();
  job.store_uri = options->store_uri;
  job.progress = JobProgress{};
  Persist(job);
  Touch(job);
  spdlog::info("serve: job {} started (attempt {})", job.id, job.attempts);
  RunStart start{job.id, JobDir(job.id), job.request, std::move(*options), resumed};
  lock.unlock();
  // Starting may take a while (a Redis job's enqueue walks its inputs).
  auto started = runner_->Start(std::move(start));
  lock.lock();
  if (!started.ok()) return fail(started.status().message());
  job.run = std::move(*started);
  if (job.cancel_requested) {
    job.run->RequestStop(StopReason::kCancel);
  } else if (shutting_down_) {
    job.run->RequestStop(StopReason::kShutdown);
  }
  JobRun& run = *job.run;
  lock.unlock();
  RunOutcome outcome = run.Wait();
  lock.lock();
  // The run goes under the lock: the sampler and PrometheusText read it
  // only under the lock, while it is set.
  job.run.reset();
  job.store_uri.clear();
  job.progress = std::move(outcome.progress);
  switch (outcome.end) {
    case RunEnd::kSucceeded:
      job.state = JobState::kSucceeded;
      break;
    case RunEnd::kCancelled:
      job.state = JobState::kCancelled;
      break;
    case RunEnd::kStopped:
      job.state = JobState::kQueued;  // the next start resumes it
      break;
    case RunEnd::kFailed:
      job.state = JobState::kFailed;
      job.error = std::move(outcome.error);
      break;
  }
  job.report_json = std::move(outcome.report_json);
  if (IsFinished(job.state)) job.finished_at = UtcNowIso8601();
  Persist(job);
  Touch(job);
  spdlog::info("serve: job {} {}", job.id, JobStateName(job.state));
}

std::string JobManager::PrometheusText() const {
  std::lock_guard lock(mu_);
  // Rendered under the lock: a running job's run (and its Metrics) is reset
  // under it, so every Metrics read here outlives the rendering.
  constexpr JobState kStates[] = {JobState::kQueued, JobState::kRunning, JobState::kSucceeded,
                                  JobState::kFailed, JobState::kCancelled};
  LabelledGauge jobs{"sluice_serve_jobs", "Jobs the server knows, by state.", "state", {}};
  for (JobState state : kStates) jobs.values.emplace_back(JobStateName(state), 0.0);
  std::vector<LabelledRun> runs;
  for (const auto& [id, job] : jobs_) {
    for (auto& [name, count] : jobs.values) {
      if (name == JobStateName(job->state)) count += 1;
    }
    if (job->state == JobState::kRunning && job->run && job->run->metrics() != nullptr) {
      runs.push_back({id, job->run->metrics()});
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
      if (job->state != JobState::kRunning || !job->run) continue;
      std::optional<JobProgress> progress = job->run->Sample();
      if (!progress) continue;  // nothing moved: no event
      job->progress = std::move(*progress);
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
      if (job->run) job->run->RequestStop(StopReason::kShutdown);
    }
    changed_.notify_all();
  }
  for (std::thread& t : workers_) t.join();
  workers_.clear();
  if (sampler_.joinable()) sampler_.join();
}

}  // namespace sluice::serve
