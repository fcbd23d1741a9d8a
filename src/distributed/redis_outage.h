// How long a worker (and `sluice status --wait`) keeps trying a Redis that
// stopped answering: a restart, a failover or a network blip should be
// ridden out, a Redis that is gone for good should end the process with a
// clear error rather than leave it retrying for ever. The waits between
// tries come from the one RetryPolicy (capped exponential, full jitter) on
// the injected Clock, so a test drives a whole outage with a ManualClock.
//
// Thread safety: one per thread (it counts one caller's consecutive failures).
#pragma once

#include <cstdint>
#include <optional>
#include <random>

#include "sluice/clock.h"
#include "sluice/retry_policy.h"

namespace sluice {

struct RedisOutageOptions {
  // An outage longer than this (from the first failed call) gives up.
  Duration give_up_after = std::chrono::minutes(5);
  Duration initial_backoff = std::chrono::milliseconds(250);
  Duration max_backoff = std::chrono::seconds(5);
};

class RedisOutage {
 public:
  RedisOutage(RedisOutageOptions options, const Clock& clock, uint64_t seed = 0);

  // A call to Redis failed: how long to wait before the next try, or nullopt
  // when the outage has already lasted longer than give_up_after (and the
  // caller should fail with the last error). The wait never runs past the
  // give-up point by more than one backoff.
  std::optional<Duration> Failed();
  // A call succeeded: the outage, if there was one, is over; returns how long
  // it lasted (for a log line), nullopt when there was none.
  std::optional<Duration> Succeeded();

  bool ongoing() const { return failures_ > 0; }
  int failures() const { return failures_; }

 private:
  const RedisOutageOptions options_;
  const Clock& clock_;
  const RetryPolicy policy_;
  std::mt19937_64 rng_;
  int failures_ = 0;
  TimePoint started_{};
};

}  // namespace sluice
