#include "serve/redis_job_runner.h"

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include <condition_variable>

#include "cli/distributed_commands.h"
#include "distributed/task_stream.h"
#include "serve/redis_job_view.h"
#include "sluice/embed.h"
#include "sluice/thread_annotations.h"

namespace sluice::serve {

namespace {

// The report with the hand-off's outcome in its "handoff" object, as a
// `sluice ingest` report carries it.
std::string WithHandoff(const std::string& report_json, const HandoffOutcome& outcome) {
  if (report_json.empty() || report_json.back() != '}') return report_json;
  return report_json.substr(0, report_json.size() - 1) +
         ",\"handoff\":" + HandoffResultJson(outcome) + "}";
}

class RedisJobRun : public JobRun {
 public:
  RedisJobRun(RunStart start, const RedisJobRunnerOptions& options, std::string redis_job,
              std::string store_uri, std::unique_ptr<TaskStream> stream)
      : start_(std::move(start)),
        options_(options),
        redis_job_(std::move(redis_job)),
        store_uri_(std::move(store_uri)),
        stream_(std::move(stream)) {}

  RunOutcome Wait() override;
  void RequestStop(StopReason reason) override {
    MutexLock lock(mu_);
    if (!stop_reason_) stop_reason_ = reason;
    stop_requested_.notify_all();
  }
  std::optional<JobProgress> Sample() override {
    MutexLock lock(mu_);
    if (!progress_moved_) return std::nullopt;
    progress_moved_ = false;
    return progress_;
  }
  const Metrics* metrics() const override { return nullptr; }

 private:
  // The run's end from the last status read: its report, then the hand-off.
  RunOutcome Finish(RunOutcome outcome, const JobStatus& status);
  // The progress for Sample, marked moved only when a count changed (an
  // event per change, not per poll).
  void Publish(const JobStatus& status) {
    JobProgress progress = ProgressOfRedisJob(status);
    MutexLock lock(mu_);
    const bool moved = !published_ || progress.chunks_stored != progress_.chunks_stored ||
                       progress.tasks->total != progress_.tasks->total ||
                       progress.tasks->pending != progress_.tasks->pending ||
                       progress.tasks->in_flight != progress_.tasks->in_flight ||
                       progress.tasks->done != progress_.tasks->done ||
                       progress.tasks->dead != progress_.tasks->dead;
    if (!moved) return;
    progress_ = std::move(progress);
    progress_moved_ = true;
    published_ = true;
  }

  const RunStart start_;
  const RedisJobRunnerOptions& options_;
  const std::string redis_job_;
  const std::string store_uri_;
  const std::unique_ptr<TaskStream> stream_;  // Wait's thread only

  Mutex mu_;
  std::condition_variable stop_requested_;
  std::optional<StopReason> stop_reason_ SLUICE_GUARDED_BY(mu_);
  JobProgress progress_ SLUICE_GUARDED_BY(mu_);
  bool progress_moved_ SLUICE_GUARDED_BY(mu_) = false;
  bool published_ SLUICE_GUARDED_BY(mu_) = false;  // progress_ holds a status read
};

RunOutcome RedisJobRun::Wait() {
  JobStatus last;  // the last status read (all zero until one is)
  bool warned = false;
  while (true) {
    std::optional<StopReason> reason;
    {
      MutexLock lock(mu_);
      reason = stop_reason_;
    }
    if (reason == StopReason::kShutdown) {
      RunOutcome outcome;
      outcome.end = RunEnd::kStopped;  // the Redis job goes on; the next start watches it
      outcome.progress = ProgressOfRedisJob(last);
      return outcome;
    }
    if (reason == StopReason::kCancel) {
      if (auto removed = stream_->RemoveUnclaimed(); removed.ok()) {
        spdlog::info("serve: job {} cancelled: {} unclaimed tasks removed from Redis job {}",
                     start_.job_id, *removed, redis_job_);
      } else {
        spdlog::warn(
            "serve: job {} cancelled, but its unclaimed tasks could not be removed "
            "from Redis job {}: {}",
            start_.job_id, redis_job_, removed.status().message());
      }
      if (auto status = stream_->Summary(); status.ok()) last = *status;
      RunOutcome outcome;
      outcome.end = RunEnd::kCancelled;
      return Finish(std::move(outcome), last);
    }
    auto status = stream_->Summary();
    if (status.ok()) {
      last = *status;
      warned = false;
      Publish(last);
      if (auto drained = OutcomeOfDrainedRedisJob(last, redis_job_)) {
        return Finish(std::move(*drained), last);
      }
    } else if (status.status().code() == StatusCode::kNotFound) {
      RunOutcome outcome;
      outcome.end = RunEnd::kFailed;
      outcome.error = "the Redis job " + redis_job_ + " is gone from " +
                      options_.endpoint.Redacted() + " (its keys were deleted)";
      return Finish(std::move(outcome), last);
    } else if (!warned) {
      // Waiting out a Redis restart is part of watching the job.
      spdlog::warn("serve: job {}: {} (retrying)", start_.job_id, status.status().message());
      warned = true;
    }
    MutexLock lock(mu_);
    lock.WaitFor(stop_requested_, options_.poll_period, [&] {
      mu_.AssertHeld();
      return stop_reason_.has_value();
    });
  }
}

RunOutcome RedisJobRun::Finish(RunOutcome outcome, const JobStatus& status) {
  outcome.progress = ProgressOfRedisJob(status);
  outcome.report_json =
      RedisJobReportJson(status, redis_job_, options_.endpoint.Redacted(), store_uri_, outcome.end);
  if (!HandsOff(options_.handoff)) return outcome;
  HandoffOptions handoff = options_.handoff;
  handoff.job_id = start_.job_id;
  HandoffRun run;
  run.report_json = RedactHandoffSecrets(outcome.report_json, handoff);
  run.job_id = start_.job_id;
  // What `sluice status --wait` exits with: 0 drained clean, 3 with dead
  // tasks; a cancelled job as a run stopped by SIGINT.
  run.exit_status = outcome.end == RunEnd::kSucceeded ? 0
                    : outcome.end == RunEnd::kFailed  ? 3
                                                      : 130;
  run.status = outcome.end == RunEnd::kSucceeded   ? "ok"
               : outcome.end == RunEnd::kCancelled ? StatusCodeName(StatusCode::kCancelled)
                                                   : StatusCodeName(StatusCode::kRejected);
  run.sources_ok = status.done;
  run.sources_failed = status.dead;
  run.chunks_stored = status.chunks_stored;
  HandoffOutcome handed = RunHandoff(handoff, run, [&](const CommandOutcome& command) {
    return RedactHandoffSecrets(WithHandoff(outcome.report_json, HandoffOutcome{command, {}}),
                                handoff);
  });
  outcome.report_json = RedactHandoffSecrets(WithHandoff(outcome.report_json, handed), handoff);
  return outcome;
}

}  // namespace

Status RedisJobRunner::Check(const JobRequest& request, const IngestOptions& options) const {
  for (const JobSetting& setting : request.settings) {
    for (const char* per_process : {"report", "html-report", "trace"}) {
      if (setting.key == per_process) {
        return Status::InvalidArgument(
            "option '" + setting.key +
            "' is not available when sluice serve hands jobs to Redis workers (each worker "
            "reports on its own; the job's report is its Redis status)");
      }
    }
  }
  if (Status s = ValidateJobName(ExternalName("j000000")); !s.ok()) return s;
  return cli::CheckEnqueueable(options, options_.endpoint);
}

Result<std::unique_ptr<JobRun>> RedisJobRunner::Start(RunStart start) {
  const std::string name = ExternalName(start.job_id);
  auto stream = TaskStream::Open(options_.endpoint, TaskStreamOptions{name});
  if (!stream.ok()) return stream.status();
  if (start.resumed) {
    if (auto record = (*stream)->LoadJob(); record.ok()) {
      spdlog::info("serve: job {}: watching Redis job {} at {} again (not enqueued again)",
                   start.job_id, name, options_.endpoint.Redacted());
      return std::unique_ptr<JobRun>(
          new RedisJobRun(std::move(start), options_, name, record->store_uri, std::move(*stream)));
    } else if (record.status().code() != StatusCode::kNotFound) {
      return record.status();
    }
    // Stopped before its enqueue was recorded: enqueued now.
  }
  std::vector<std::string> config_args;
  for (const JobSetting& s : start.request.settings) {
    for (const std::string& v : s.values) config_args.push_back(cli::ConfigSettingArg(s.key, v));
  }
  auto options_json = cli::RecordedJobOptions(config_args, start.request.routes);
  if (!options_json.ok()) return options_json.status();
  auto enqueued = cli::EnqueueIngestJob(options_.endpoint, name, *options_json, start.options,
                                        /*must_be_new=*/true);
  if (!enqueued.ok()) return enqueued.status();
  spdlog::info(
      "serve: job {}: {} tasks enqueued to Redis job {} at {} ({} files unchanged in the "
      "store); workers: sluice worker --redis URL --job {}",
      start.job_id, enqueued->enqueued, name, options_.endpoint.Redacted(), enqueued->unchanged,
      name);
  const std::string store_uri = enqueued->store_uri;
  return std::unique_ptr<JobRun>(
      new RedisJobRun(std::move(start), options_, name, store_uri, std::move(*stream)));
}

}  // namespace sluice::serve
