// How a started `sluice serve` job is carried out: the seam between the job
// manager (queue, state, files, API) and what does the work. Two runners:
// the in-process Pipeline (pipeline_job_runner.h, the default) and the
// distributed workers through Redis (redis_job_runner.h, `serve --redis`).
// The server picks one at start; the manager never asks which.
//
// Thread safety: a JobRunner's methods may be called from several job
// threads at once. A JobRun's Wait() runs on its job's thread; RequestStop()
// and Sample() come from other threads (the API's, the sampler's) while it
// waits, with the manager's lock held: they must be quick and must not block
// on I/O.
#pragma once

#include <memory>
#include <optional>
#include <string>

#include "serve/job_progress.h"
#include "serve/job_request.h"
#include "sluice/metrics.h"
#include "sluice/pipeline.h"
#include "sluice/status.h"

namespace sluice::serve {

enum class StopReason {
  kCancel,    // a client's DELETE: the job ends cancelled
  kShutdown,  // the server stops: the job resumes at the next start
};

// How a run ended.
enum class RunEnd { kSucceeded, kFailed, kCancelled, kStopped /* by shutdown: resumes */ };

struct RunOutcome {
  RunEnd end = RunEnd::kFailed;
  std::string error;        // kFailed: why (no secret in it)
  std::string report_json;  // one line; with the hand-off's outcome when one ran
  JobProgress progress;     // the final counters
};

// One run of one job.
class JobRun {
 public:
  virtual ~JobRun() = default;
  // Carries the job out until it ends or is stopped, then runs the
  // completion hand-off (not for kStopped: the job resumes). Called once.
  virtual RunOutcome Wait() = 0;
  // Asks Wait() to return soon; the first reason given wins.
  virtual void RequestStop(StopReason reason) = 0;
  // The counters when they moved since the last call, else nullopt.
  virtual std::optional<JobProgress> Sample() = 0;
  // The run's metrics for GET /metrics, or null when it has none in this
  // process (a Redis job's workers have their own). Valid until Wait returns.
  virtual const Metrics* metrics() const = 0;
};

struct RunStart {
  std::string job_id;
  std::string job_dir;
  JobRequest request;     // as the client sent it
  IngestOptions options;  // built for this start (JobOptionsBuilder)
  // An earlier server started this job and stopped while it ran: a run in
  // process reruns it (skipping what the store committed), a Redis job is
  // watched again, not enqueued again.
  bool resumed = false;
};

class JobRunner {
 public:
  virtual ~JobRunner() = default;
  // At submission, after the options are built: what this runner cannot
  // carry out (InvalidArgument, answered 400).
  virtual Status Check(const JobRequest& request, const IngestOptions& options) const = 0;
  // Starts a run (on the job's thread, without the manager's lock). An error
  // fails the job with its message.
  virtual Result<std::unique_ptr<JobRun>> Start(RunStart start) = 0;
  // The name under which the job is known outside the server (the Redis
  // job's name), or empty.
  virtual std::string ExternalName(const std::string& job_id) const = 0;
};

}  // namespace sluice::serve
