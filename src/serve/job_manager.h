// The jobs of `sluice serve`: a queue, at most `max_jobs` runs at once, each
// carried out by the server's JobRunner (job_runner.h: the same Pipeline as
// `sluice ingest` in this process, or, with `serve --redis`, the distributed
// workers), and every job's spec and state on disk so that a restarted server
// picks up where it stopped.
//
// On disk, under the state folder: jobs/<id>/job.json (the request with its
// secrets, the state, the last progress and the report; written atomically,
// mode 0600 in a 0700 folder), jobs/<id>/input.jsonl for inline records, and
// jobs/<id>/out for the job's default outputs. Opening a state folder queues
// again every job it left queued or running; their rerun skips what the
// store's fingerprints say was committed (docs/RESUME.md); a Redis job is
// watched again, not enqueued again.
//
// States: queued -> running -> succeeded | failed | cancelled. A job the
// server stops while it runs (Shutdown) goes back to queued, not cancelled:
// only a client's Cancel cancels. Two jobs writing the same store never run
// at once (the second waits in the queue rather than failing on the store's
// lock).
//
// Threading: `max_jobs` worker threads (each waits on one JobRun at a time:
// a Pipeline, its own threads below it, or a Redis job it polls), one sampler
// thread that reads each running job's counters (JobRun::Sample) every
// `sample_period` into its job's progress and wakes the watchers
// (WaitForChange). One mutex guards every job; file
// writes happen under it (a job file is small).
//
// Thread safety: every public method is thread-safe.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "serve/job_progress.h"
#include "serve/job_request.h"
#include "serve/job_runner.h"
#include "sluice/clock.h"
#include "sluice/handoff.h"
#include "sluice/pipeline.h"
#include "sluice/status.h"

namespace sluice::serve {

enum class JobState { kQueued, kRunning, kSucceeded, kFailed, kCancelled };

const char* JobStateName(JobState state);
bool IsFinished(JobState state);

// One consistent copy of a job, for a response.
struct JobView {
  std::string id;
  JobState state = JobState::kQueued;
  uint64_t version = 0;                             // grows with every change (progress included)
  std::string created_at, started_at, finished_at;  // UTC, ISO 8601; empty: not yet
  int attempts = 0;                                 // runs started (a restart adds one)
  bool cancel_requested = false;
  std::string request_json;  // redacted (JobRequestJson)
  std::string error;         // why it failed
  JobProgress progress;
  std::string report_json;  // the run's JSON report once finished; empty before
  std::string redis_job;    // with `serve --redis`: the Redis job's name; else empty
};

// The JSON of a view; `with_report` false leaves the report out (progress events).
std::string JobViewJson(const JobView& view, bool with_report = true);

struct JobManagerOptions {
  std::string state_dir;
  int max_jobs = 1;
  Duration sample_period = std::chrono::milliseconds(250);
  // Run after every job that ends (not one the shutdown stops: it resumes),
  // on that job's worker thread; its outcome goes into the job's report.
  // The default runner's (Open without a runner); another runner has its own.
  HandoffOptions handoff;
};

// Builds a job's run options (BuildIngestOptions with the server's defaults
// and path policy); called at submission (to refuse a bad job at once) and
// again at every start.
using JobOptionsBuilder =
    std::function<Result<IngestOptions>(const JobRequest& request, const std::string& job_dir)>;

class JobManager {
 public:
  // Creates the state folder if needed, loads its jobs (queued and running
  // ones queued again) and starts the workers. `runner` carries the jobs
  // out; null: a PipelineJobRunner with options.handoff (in process).
  static Result<std::unique_ptr<JobManager>> Open(JobManagerOptions options,
                                                  JobOptionsBuilder builder,
                                                  std::unique_ptr<JobRunner> runner = nullptr);
  ~JobManager();  // Shutdown()
  JobManager(const JobManager&) = delete;
  JobManager& operator=(const JobManager&) = delete;

  // Checks the job (the builder's InvalidArgument or PermissionDenied, then
  // the runner's Check), writes it to disk and queues it.
  Result<JobView> Submit(ParsedJobBody body);
  std::vector<JobView> List() const;
  // NotFound for an unknown id.
  Result<JobView> Get(const std::string& id) const;
  // A queued job is cancelled at once; a running one is asked to stop
  // (JobRun::RequestStop; in process: in-flight work committed, the rest
  // abandoned for a rerun; a Redis job: its unclaimed tasks removed) and is
  // cancelled when its run returns. Busy for a finished job.
  Result<JobView> Cancel(const std::string& id);
  // The job once its version is above `seen_version`, or as it is after
  // `timeout`, or at once while shutting down (see shutting_down()).
  Result<JobView> WaitForChange(const std::string& id, uint64_t seen_version,
                                Duration timeout) const;

  // The server's metrics in the Prometheus text format (GET /metrics):
  // `sluice_serve_jobs{state}` for every state, and each running job's run
  // metrics (those of `sluice ingest --metrics-listen`) labelled
  // `sluice_job="<id>"` (not `job`: Prometheus sets that label to the scrape
  // job's name). A finished job's series leave with its run: its counts are
  // in its report. A Redis job has no run series here (its workers run the
  // pipelines).
  std::string PrometheusText() const;

  // Starts nothing more, asks running jobs to stop, waits for them and
  // writes their state (queued, for the next start). Idempotent.
  void Shutdown();
  bool shutting_down() const;

 private:
  struct Job;
  JobManager(JobManagerOptions options, JobOptionsBuilder builder,
             std::unique_ptr<JobRunner> runner);
  Status Load();
  std::string JobDir(const std::string& id) const;
  Status Persist(const Job& job) const;  // REQUIRES: mu_ held
  JobView ViewOf(const Job& job) const;  // REQUIRES: mu_ held
  void Touch(Job& job);                  // REQUIRES: mu_ held; version++ and wake watchers
  void WorkerLoop();
  void RunJob(Job& job, std::unique_lock<std::mutex>& lock);
  void SamplerLoop();

  const JobManagerOptions options_;
  const JobOptionsBuilder builder_;
  const std::unique_ptr<JobRunner> runner_;

  mutable std::mutex mu_;
  mutable std::condition_variable changed_;           // any job changed, or shutdown
  std::map<std::string, std::unique_ptr<Job>> jobs_;  // GUARDED_BY(mu_); ids sort by age
  uint64_t next_id_ = 1;                              // GUARDED_BY(mu_)
  bool shutting_down_ = false;                        // GUARDED_BY(mu_)
  std::vector<std::thread> workers_;
  std::thread sampler_;
};

}  // namespace sluice::serve
