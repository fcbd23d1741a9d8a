#include "mockapi/rate_limits.h"

#include <algorithm>
#include <cmath>

#include <fmt/format.h>

namespace sluice {

void TokenBucket::Refill(TimePoint now) {
  if (now > last_) {
    level_ = std::min(capacity_, level_ + ToSeconds(now - last_) * per_minute_ / 60.0);
    last_ = now;
  }
}

void TokenBucket::SetLimit(double per_minute, TimePoint now, double burst_seconds) {
  if (per_minute <= 0) {
    per_minute_ = 0;
    capacity_ = 0;
    level_ = 0;
    return;
  }
  const double capacity = per_minute * burst_seconds / 60.0;
  if (!limited()) {
    level_ = capacity;
  } else {
    Refill(now);
    level_ = level_ / capacity_ * capacity;
  }
  per_minute_ = per_minute;
  capacity_ = capacity;
  last_ = now;
}

double TokenBucket::Available(TimePoint now) {
  Refill(now);
  return level_;
}

Duration TokenBucket::TimeUntil(double amount, TimePoint now) {
  Refill(now);
  if (level_ >= amount) return Duration(0);
  return FromSeconds((amount - level_) * 60.0 / per_minute_);
}

Duration TokenBucket::TimeUntilFull(TimePoint now) { return TimeUntil(capacity_, now); }

void TokenBucket::Take(double amount, TimePoint now) {
  Refill(now);
  level_ -= amount;
}

void RateLimiter::SetLimits(double rpm, double tpm, TimePoint now, double burst_seconds) {
  requests_.SetLimit(rpm, now, burst_seconds);
  tokens_.SetLimit(tpm, now, burst_seconds);
}

RateLimitDecision RateLimiter::Check(int64_t tokens, TimePoint now) {
  RateLimitDecision d;
  Duration request_wait{0};
  Duration token_wait{0};
  if (requests_.limited()) request_wait = requests_.TimeUntil(1.0, now);
  if (tokens_.limited()) {
    d.available_tokens = tokens_.Available(now);
    if (static_cast<double>(tokens) > tokens_.capacity()) {
      d.verdict = RateLimitVerdict::kTooLarge;
      d.snapshot = Snapshot(now);
      return d;
    }
    token_wait = tokens_.TimeUntil(static_cast<double>(tokens), now);
  }
  if (request_wait > Duration(0) || token_wait > Duration(0)) {
    // Name the limit that binds longest: that is the wait the client needs.
    d.verdict = request_wait >= token_wait ? RateLimitVerdict::kRequestsExhausted
                                           : RateLimitVerdict::kTokensExhausted;
    d.retry_after = std::max(request_wait, token_wait);
  }
  d.snapshot = Snapshot(now);
  return d;
}

void RateLimiter::Charge(int64_t tokens, TimePoint now) {
  if (requests_.limited()) requests_.Take(1.0, now);
  if (tokens_.limited()) tokens_.Take(static_cast<double>(tokens), now);
}

RateLimitSnapshot RateLimiter::Snapshot(TimePoint now) {
  RateLimitSnapshot s;
  if (requests_.limited()) {
    s.requests_limited = true;
    s.limit_requests = requests_.per_minute();
    s.remaining_requests = static_cast<int64_t>(std::floor(requests_.Available(now)));
    s.reset_requests = requests_.TimeUntilFull(now);
  }
  if (tokens_.limited()) {
    s.tokens_limited = true;
    s.limit_tokens = tokens_.per_minute();
    s.remaining_tokens = static_cast<int64_t>(std::floor(tokens_.Available(now)));
    s.reset_tokens = tokens_.TimeUntilFull(now);
  }
  return s;
}

std::string FormatRateLimitDuration(Duration d) {
  if (d <= Duration(0)) return "0s";
  // Round up to the millisecond: a client that waits this long is never early.
  const int64_t ms = (d.count() + 999999) / 1000000;
  if (ms < 1000) return fmt::format("{}ms", ms);
  const int64_t hours = ms / 3600000;
  const int64_t minutes = ms / 60000 % 60;
  const int64_t sec_ms = ms % 60000;
  std::string out;
  if (hours > 0) out += fmt::format("{}h", hours);
  if (hours > 0 || minutes > 0) out += fmt::format("{}m", minutes);
  out += fmt::format("{}", sec_ms / 1000);
  if (int64_t frac = sec_ms % 1000; frac != 0) {
    std::string digits = fmt::format("{:03d}", frac);
    while (digits.back() == '0') digits.pop_back();
    out += "." + digits;
  }
  out += "s";
  return out;
}

}  // namespace sluice
