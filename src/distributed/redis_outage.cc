#include "distributed/redis_outage.h"

#include <climits>

namespace sluice {

RedisOutage::RedisOutage(RedisOutageOptions options, const Clock& clock, uint64_t seed)
    : options_(options),
      clock_(clock),
      policy_(RetryPolicyOptions{INT_MAX, options.initial_backoff, options.max_backoff, 2.0}),
      rng_(seed) {}

std::optional<Duration> RedisOutage::Failed() {
  const TimePoint now = clock_.Now();
  if (failures_ == 0) started_ = now;
  if (now - started_ > options_.give_up_after) return std::nullopt;
  // Full jitter can draw a wait of zero; a floor of a tenth of the first wait
  // keeps a worker from hammering a Redis that is coming back.
  const Duration floor = options_.initial_backoff / 10;
  return std::max(floor, policy_.Backoff(++failures_, std::nullopt, rng_));
}

std::optional<Duration> RedisOutage::Succeeded() {
  if (failures_ == 0) return std::nullopt;
  failures_ = 0;
  return clock_.Now() - started_;
}

}  // namespace sluice
