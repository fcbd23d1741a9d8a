#include <algorithm>
#include <cmath>

#include "sluice/retry_policy.h"

namespace sluice {

namespace {
constexpr Duration kMaxRetryAfter = std::chrono::minutes(5);
}  // namespace

bool RetryPolicy::ShouldRetry(const Status& status, int attempt) const {
  if (attempt >= options_.max_attempts) return false;
  // kCorrupt: a malformed body is usually a proxy or server hiccup; the same
  // request often succeeds when sent again. kRejected / kPermissionDenied never do.
  return status.IsRetryable() || status.code() == StatusCode::kCorrupt;
}

Duration RetryPolicy::Backoff(int attempt, const std::optional<Duration>& retry_after,
                              std::mt19937_64& rng) const {
  if (retry_after) return std::clamp(*retry_after, Duration(0), kMaxRetryAfter);
  const double initial = static_cast<double>(options_.initial_backoff.count());
  const double cap = static_cast<double>(options_.max_backoff.count());
  const double exponent = std::max(0, attempt - 1);
  const double ceiling = std::min(cap, initial * std::pow(options_.multiplier, exponent));
  const int64_t ceiling_ns = static_cast<int64_t>(ceiling);
  if (ceiling_ns <= 0) return Duration(0);
  // Full jitter: uniform in [0, ceiling).
  std::uniform_int_distribution<int64_t> jitter(0, ceiling_ns - 1);
  return Duration(jitter(rng));
}

}  // namespace sluice
