#include "serve/redis_job_view.h"

#include <fmt/format.h>

#include "common/json_writer.h"
#include "distributed/job_rates.h"
#include "sluice/store.h"

namespace sluice::serve {

namespace {

const char* EndName(RunEnd end) {
  switch (end) {
    case RunEnd::kSucceeded:
      return "succeeded";
    case RunEnd::kFailed:
      return "failed";
    case RunEnd::kCancelled:
      return "cancelled";
    case RunEnd::kStopped:
      return "stopped";
  }
  return "unknown";
}

}  // namespace

JobProgress ProgressOfRedisJob(const JobStatus& s) {
  const JobRates rates = RatesOf(s);
  JobProgress p;
  p.elapsed_s = rates.elapsed_s;
  p.sources_done = s.done + s.dead;
  p.chunks_stored = s.chunks_stored;
  p.in_flight = static_cast<int64_t>(s.in_flight);
  p.chunks_per_s = rates.known ? rates.chunks_per_s : 0;
  if (s.Drained()) {
    p.eta_s = 0;
  } else if (rates.known) {
    p.eta_s = rates.eta_s;
  }
  p.tasks = TaskCounts{s.total, s.pending, s.in_flight, s.done, s.dead, s.cancelled};
  return p;
}

std::optional<RunOutcome> OutcomeOfDrainedRedisJob(const JobStatus& s,
                                                   const std::string& redis_job) {
  if (!s.Drained()) return std::nullopt;
  RunOutcome outcome;
  outcome.progress = ProgressOfRedisJob(s);
  if (s.dead == 0) {
    outcome.end = RunEnd::kSucceeded;
    return outcome;
  }
  outcome.end = RunEnd::kFailed;
  outcome.error = fmt::format(
      "{} of {} tasks are dead (sources the workers gave up on): see sluice dead-letter list "
      "--redis URL --job {}",
      s.dead, s.total, redis_job);
  return outcome;
}

std::string RedisJobReportJson(const JobStatus& s, const std::string& redis_job,
                               const std::string& redis_redacted, const std::string& store_uri,
                               RunEnd end) {
  const JobRates rates = RatesOf(s);
  std::string out;
  JsonWriter w(out);
  w.BeginObject();
  w.Key("redis_job").String(redis_job).Key("redis").String(redis_redacted);
  w.Key("store").String(RedactUri(store_uri)).Key("outcome").String(EndName(end));
  w.Key("tasks").BeginObject();
  w.Key("total").Uint(s.total).Key("pending").Uint(s.pending).Key("in_flight").Uint(s.in_flight);
  w.Key("done").Uint(s.done).Key("dead").Uint(s.dead).Key("cancelled").Uint(s.cancelled);
  w.EndObject();
  w.Key("chunks_stored").Uint(s.chunks_stored);
  w.Key("elapsed_s").Double(rates.elapsed_s);
  w.Key("chunks_per_s").Double(rates.known ? rates.chunks_per_s : 0);
  w.Key("drained").Bool(s.Drained());
  w.EndObject();
  return out;
}

}  // namespace sluice::serve
