// The mock API's request and token rate limits (RPM/TPM), modelled on
// OpenAI's: each limit is a token bucket whose capacity is one minute's worth
// and which refills continuously. A request is admitted only when both
// buckets hold enough; otherwise the caller answers 429 with the wait this
// class computes. Pure controller: time is an argument, there is no I/O, so
// tests drive it with exact time points.
//
// Thread safety: not thread-safe; MockApiServer guards it with its mutex.
#pragma once

#include <cstdint>
#include <string>

#include "sluice/clock.h"

namespace sluice {

// One continuously refilling bucket. A limit of 0 means unlimited.
class TokenBucket {
 public:
  // Sets the per-minute limit and the capacity, `burst_seconds` of it
  // (OpenAI: a minute's worth). A bucket that was unlimited starts full; one
  // that was limited keeps the same fraction of its capacity (so lowering the
  // limit never hands out more than the new capacity).
  void SetLimit(double per_minute, TimePoint now, double burst_seconds = 60);
  bool limited() const { return per_minute_ > 0; }
  double per_minute() const { return per_minute_; }
  double capacity() const { return capacity_; }
  // What the bucket holds at `now` (after refill). REQUIRES: limited().
  double Available(TimePoint now);
  // How long until `amount` is available; 0 when it is already.
  // REQUIRES: limited() and amount <= capacity().
  Duration TimeUntil(double amount, TimePoint now);
  // How long until the bucket is full again.
  Duration TimeUntilFull(TimePoint now);
  // REQUIRES: Available(now) >= amount.
  void Take(double amount, TimePoint now);

 private:
  void Refill(TimePoint now);
  double per_minute_ = 0;
  double capacity_ = 0;
  double level_ = 0;
  TimePoint last_{};
};

// What the x-ratelimit-* headers report, taken after the decision.
struct RateLimitSnapshot {
  bool requests_limited = false;
  bool tokens_limited = false;
  double limit_requests = 0;
  double limit_tokens = 0;
  int64_t remaining_requests = 0;  // floor of what the bucket holds
  int64_t remaining_tokens = 0;
  Duration reset_requests{0};  // until the bucket is full again
  Duration reset_tokens{0};
};

enum class RateLimitVerdict {
  kAdmitted,
  kRequestsExhausted,  // retry after `retry_after`
  kTokensExhausted,    // retry after `retry_after`
  kTooLarge,           // needs more tokens than the bucket holds: can never succeed
};

struct RateLimitDecision {
  RateLimitVerdict verdict = RateLimitVerdict::kAdmitted;
  Duration retry_after{0};
  double available_tokens = 0;  // before the request, for the 429 message
  RateLimitSnapshot snapshot;
};

class RateLimiter {
 public:
  // Each bucket holds `burst_seconds` of its limit (OpenAI: 60).
  void SetLimits(double rpm, double tpm, TimePoint now, double burst_seconds = 60);
  // Checks whether one request of `tokens` tokens fits, without charging it.
  RateLimitDecision Check(int64_t tokens, TimePoint now);
  // Charges one request of `tokens`. REQUIRES: Check(tokens, now) admitted it.
  void Charge(int64_t tokens, TimePoint now);
  // The header values at `now`.
  RateLimitSnapshot Snapshot(TimePoint now);
  bool any_limit() const { return requests_.limited() || tokens_.limited(); }

 private:
  TokenBucket requests_;
  TokenBucket tokens_;
};

// Formats a duration the way OpenAI's x-ratelimit-reset-* headers do (Go's
// time.Duration form), rounded up to the millisecond: "0s", "12ms", "1s",
// "1.5s", "6m0s", "1h2m3.25s".
std::string FormatRateLimitDuration(Duration d);

}  // namespace sluice
