// A Redis job (distributed/task_stream.h) as a `sluice serve` job shows it:
// its JobStatus mapped into the job's progress, its outcome once drained,
// and its final report. Pure functions, so a test needs no Redis.
//
// Thread safety: pure functions.
#pragma once

#include <optional>
#include <string>

#include "distributed/task_stream.h"
#include "serve/job_progress.h"
#include "serve/job_runner.h"

namespace sluice::serve {

// The task counters, the chunks stored, the rate and the ETA (nullopt until
// a task is done; 0 once drained). sources_done counts settled tasks (done
// and dead); in_flight counts tasks the workers hold.
JobProgress ProgressOfRedisJob(const JobStatus& status);

// How a drained job ends: kSucceeded with no dead task, else kFailed with an
// error naming how many tasks are dead and the command that lists them.
// nullopt while tasks are left.
std::optional<RunOutcome> OutcomeOfDrainedRedisJob(const JobStatus& status,
                                                   const std::string& redis_job);

// The report of a finished Redis job: one line of JSON with "redis_job",
// "redis" (the endpoint, password redacted), "store" (no password),
// "outcome", the "tasks" counters, "chunks_stored", "elapsed_s",
// "chunks_per_s" and "drained".
std::string RedisJobReportJson(const JobStatus& status, const std::string& redis_job,
                               const std::string& redis_redacted, const std::string& store_uri,
                               RunEnd end);

}  // namespace sluice::serve
