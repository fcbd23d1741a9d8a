// The simplest concurrency limiter and rate pacer: a fixed limit, and a pacer
// that only honours Retry-After. The adaptive ones live in src/embed/control/.
#include <algorithm>

#include "sluice/embed.h"

namespace sluice {
namespace {

class FixedLimiter final : public ConcurrencyLimiter {
 public:
  explicit FixedLimiter(size_t limit) : limit_(std::max<size_t>(1, limit)) {}
  size_t Limit() const override { return limit_; }
  void OnStart(TimePoint) override {}
  void OnFinish(TimePoint, Duration, RequestOutcome) override {}

 private:
  const size_t limit_;
};

// One cooldown shared by every request: after a Retry-After, nothing starts
// until it has passed, so a rate-limited service is not hammered by the
// other in-flight batches' retries.
class CooldownOnlyPacer final : public RatePacer {
 public:
  Duration DelayFor(TimePoint now, uint32_t) const override {
    return now < cooldown_until_ ? cooldown_until_ - now : Duration(0);
  }
  void OnStart(TimePoint, uint32_t) override {}
  void OnResponse(TimePoint now, const RateLimitInfo& rate, int http_status, uint64_t input_bytes,
                  int64_t prompt_tokens) override {
    if (rate.retry_after && *rate.retry_after > Duration(0)) {
      cooldown_until_ = std::max(cooldown_until_, now + *rate.retry_after);
    }
    if (http_status == 200 && input_bytes > 0 && prompt_tokens > 0) {
      const double sample = static_cast<double>(input_bytes) / static_cast<double>(prompt_tokens);
      // Clamp a bogus usage figure so one odd response cannot wreck batching.
      const double bounded = std::clamp(sample, kMinBytesPerToken, kMaxBytesPerToken);
      bytes_per_token_ = kAlpha * bounded + (1 - kAlpha) * bytes_per_token_;
    }
  }
  double BytesPerToken() const override { return bytes_per_token_; }

 private:
  static constexpr double kAlpha = 0.2;
  static constexpr double kMinBytesPerToken = 0.5;
  static constexpr double kMaxBytesPerToken = 32.0;
  TimePoint cooldown_until_{};
  double bytes_per_token_ = 4.0;
};

}  // namespace

std::unique_ptr<ConcurrencyLimiter> MakeFixedLimiter(size_t limit) {
  return std::make_unique<FixedLimiter>(limit);
}

std::unique_ptr<RatePacer> MakeCooldownOnlyPacer() { return std::make_unique<CooldownOnlyPacer>(); }

}  // namespace sluice
