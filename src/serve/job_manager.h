// The jobs of `sluice serve`: a queue, at most `max_jobs` runs at once, each
// through the same Pipeline as `sluice ingest`, and every job's spec and
// state on disk so that a restarted server picks up where it stopped.
//
// On disk, under the state folder: jobs/<id>/job.json (the request with its
// secrets, the state, the last progress and the report; written atomically,
// mode 0600 in a 0700 folder), jobs/<id>/input.jsonl for inline records, and
// jobs/<id>/out for the job's default outputs. Opening a state folder queues
// again every job it left queued or running; their rerun skips what the
// store's fingerprints say was committed (docs/RESUME.md).
//
// States: queued -> running -> succeeded | failed | cancelled. A job the
// server stops while it runs (Shutdown) goes back to queued, not cancelled:
// only a client's Cancel cancels. Two jobs writing the same store never run
// at once (the second waits in the queue rather than failing on the store's
// lock).
//
// Threading: `max_jobs` worker threads (each runs one Pipeline at a time; the
// pipeline's own threads below it), one sampler thread that reads each
// running pipeline's counters every `sample_period` into its job's progress
// and wakes the watchers (WaitForChange). One mutex guards every job; file
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

#include "serve/job_request.h"
#include "sluice/clock.h"
#include "sluice/handoff.h"
#include "sluice/pipeline.h"
#include "sluice/status.h"

namespace sluice::serve {

enum class JobState { kQueued, kRunning, kSucceeded, kFailed, kCancelled };

const char* JobStateName(JobState state);
bool IsFinished(JobState state);

// A running job's counters (its current run's; a resumed job's earlier runs
// are in its attempts).
struct JobProgress {
  double elapsed_s = 0;
  uint64_t sources_done = 0;
  uint64_t bytes_read = 0;
  uint64_t chunks_produced = 0;
  uint64_t chunks_embedded = 0;  // vectors back from the embedder (or the cache)
  // Committed to the store: moves in steps of the store's transaction size
  // (SQLite: 200 rows unless the job sets "store-batch").
  uint64_t chunks_stored = 0;
  uint64_t chunks_dead_lettered = 0;
  uint64_t tokens = 0;
  int64_t in_flight = 0;
  double chunks_per_s = 0;
  std::optional<double> eta_s;     // while it can be estimated
  std::optional<double> cost_usd;  // when the model's price is known
};

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
};

// The JSON of a view; `with_report` false leaves the report out (progress events).
std::string JobViewJson(const JobView& view, bool with_report = true);

struct JobManagerOptions {
  std::string state_dir;
  int max_jobs = 1;
  Duration sample_period = std::chrono::milliseconds(250);
  // Run after every job that ends (not one the shutdown stops: it resumes),
  // on that job's worker thread; its outcome goes into the job's report.
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
  // ones queued again) and starts the workers.
  static Result<std::unique_ptr<JobManager>> Open(JobManagerOptions options,
                                                  JobOptionsBuilder builder);
  ~JobManager();  // Shutdown()
  JobManager(const JobManager&) = delete;
  JobManager& operator=(const JobManager&) = delete;

  // Checks the job (the builder's InvalidArgument or PermissionDenied),
  // writes it to disk and queues it.
  Result<JobView> Submit(ParsedJobBody body);
  std::vector<JobView> List() const;
  // NotFound for an unknown id.
  Result<JobView> Get(const std::string& id) const;
  // A queued job is cancelled at once; a running one is asked to stop
  // (Pipeline::RequestStop: in-flight work committed, the rest abandoned for
  // a rerun) and is cancelled when its run returns. Busy for a finished job.
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
  // in its report.
  std::string PrometheusText() const;

  // Starts nothing more, asks running jobs to stop, waits for them and
  // writes their state (queued, for the next start). Idempotent.
  void Shutdown();
  bool shutting_down() const;

 private:
  struct Job;
  JobManager(JobManagerOptions options, JobOptionsBuilder builder);
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

  mutable std::mutex mu_;
  mutable std::condition_variable changed_;           // any job changed, or shutdown
  std::map<std::string, std::unique_ptr<Job>> jobs_;  // GUARDED_BY(mu_); ids sort by age
  uint64_t next_id_ = 1;                              // GUARDED_BY(mu_)
  bool shutting_down_ = false;                        // GUARDED_BY(mu_)
  std::vector<std::thread> workers_;
  std::thread sampler_;
};

}  // namespace sluice::serve
