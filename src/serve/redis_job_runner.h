// The runner of `sluice serve --redis URL` (job_runner.h): a started job is
// enqueued to a Redis job named PREFIX<job id> (the code path of `sluice
// enqueue`, cli/distributed_commands.h) for `sluice worker`s to take, and
// the job's thread then watches that Redis job's counters until it is
// drained. A cancel removes the tasks no worker has claimed (the workers
// finish and ack those they hold); a shutdown leaves the Redis job alone and
// the next start watches it again rather than enqueueing it twice.
//
// Thread safety: as job_runner.h says. Each run owns its own Redis
// connection, used only on its job's thread (Wait); RequestStop and Sample
// touch only the run's mutex-guarded fields.
#pragma once

#include <chrono>
#include <memory>
#include <string>

#include "distributed/redis_client.h"
#include "serve/job_runner.h"
#include "sluice/handoff.h"

namespace sluice::serve {

struct RedisJobRunnerOptions {
  RedisEndpoint endpoint;  // its password is a secret: shown only Redacted()
  // A job's Redis name is this and its id ("serve-j000001"): servers with
  // different state folders sharing one Redis need different prefixes.
  std::string job_prefix = "serve-";
  // How often a running job's counters are read from Redis.
  std::chrono::milliseconds poll_period{500};
  // Runs after every job that ends (not one a shutdown stops).
  HandoffOptions handoff;
};

class RedisJobRunner : public JobRunner {
 public:
  explicit RedisJobRunner(RedisJobRunnerOptions options) : options_(std::move(options)) {}

  // What `sluice enqueue` refuses (cli::CheckEnqueueable), the per-process
  // outputs a job's workers do not write ("report", "html-report",
  // "trace"), and a job name Redis would refuse.
  Status Check(const JobRequest& request, const IngestOptions& options) const override;
  // Enqueues the job (refusing a Redis job of that name that exists
  // already), or, when `resumed` and the Redis job is there, watches it.
  Result<std::unique_ptr<JobRun>> Start(RunStart start) override;
  std::string ExternalName(const std::string& job_id) const override {
    return options_.job_prefix + job_id;
  }

 private:
  const RedisJobRunnerOptions options_;
};

}  // namespace sluice::serve
