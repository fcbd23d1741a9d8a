// The one retry policy: every loop in sluice that retries (the embed stage's
// requests, the store stage's writes and fingerprint commits, the PostgreSQL
// store's replays after a lost connection) waits what this says, on the
// run's Clock, so a test with a ManualClock drives any of them.
//
// Thread safety: const methods only; the caller supplies the random engine.
#pragma once

#include <optional>
#include <random>

#include "sluice/clock.h"
#include "sluice/status.h"

namespace sluice {

struct RetryPolicyOptions {
  int max_attempts = 8;  // Default: 8 (first try included)
  Duration initial_backoff = std::chrono::milliseconds(250);
  Duration max_backoff = std::chrono::seconds(30);
  double multiplier = 2.0;
};

// Capped exponential backoff with full jitter: attempt n (1-based, the failed
// one) waits uniform[0, min(max, initial * multiplier^(n-1))), or exactly
// Retry-After when the service gave one (capped at 5 minutes).
// Pure: the caller supplies the random engine, so tests are deterministic.
class RetryPolicy {
 public:
  explicit RetryPolicy(RetryPolicyOptions options) : options_(options) {}
  // True when a request that failed with `status` on attempt `attempt` may be tried again.
  bool ShouldRetry(const Status& status, int attempt) const;
  Duration Backoff(int attempt, const std::optional<Duration>& retry_after,
                   std::mt19937_64& rng) const;
  const RetryPolicyOptions& options() const { return options_; }

 private:
  RetryPolicyOptions options_;
};

}  // namespace sluice
