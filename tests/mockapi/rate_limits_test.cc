#include "mockapi/rate_limits.h"

#include <gtest/gtest.h>

namespace sluice {
namespace {

using std::chrono::milliseconds;
using std::chrono::seconds;

TEST(FormatRateLimitDurationTest, GoDurationForms) {
  EXPECT_EQ(FormatRateLimitDuration(Duration(0)), "0s");
  EXPECT_EQ(FormatRateLimitDuration(Duration(-5)), "0s");
  EXPECT_EQ(FormatRateLimitDuration(Duration(1)), "1ms");  // rounded up, never early
  EXPECT_EQ(FormatRateLimitDuration(milliseconds(12)), "12ms");
  EXPECT_EQ(FormatRateLimitDuration(milliseconds(999)), "999ms");
  EXPECT_EQ(FormatRateLimitDuration(seconds(1)), "1s");
  EXPECT_EQ(FormatRateLimitDuration(milliseconds(1500)), "1.5s");
  EXPECT_EQ(FormatRateLimitDuration(milliseconds(1250)), "1.25s");
  EXPECT_EQ(FormatRateLimitDuration(seconds(360)), "6m0s");
  EXPECT_EQ(FormatRateLimitDuration(milliseconds(123500)), "2m3.5s");
  EXPECT_EQ(FormatRateLimitDuration(seconds(3723)), "1h2m3s");
  EXPECT_EQ(FormatRateLimitDuration(seconds(3600)), "1h0m0s");
}

TEST(TokenBucketTest, StartsFullAndRefillsContinuously) {
  const TimePoint t0{};
  TokenBucket bucket;
  EXPECT_FALSE(bucket.limited());
  bucket.SetLimit(60, t0);  // one per second
  EXPECT_DOUBLE_EQ(bucket.Available(t0), 60);
  bucket.Take(60, t0);
  EXPECT_DOUBLE_EQ(bucket.Available(t0), 0);
  EXPECT_EQ(bucket.TimeUntil(1, t0), seconds(1));
  EXPECT_NEAR(bucket.Available(t0 + milliseconds(2500)), 2.5, 1e-9);
  EXPECT_NEAR(ToSeconds(bucket.TimeUntilFull(t0 + milliseconds(2500))), 57.5, 1e-9);
  // Never above capacity.
  EXPECT_DOUBLE_EQ(bucket.Available(t0 + seconds(600)), 60);
}

TEST(TokenBucketTest, SetLimitKeepsTheFraction) {
  const TimePoint t0{};
  TokenBucket bucket;
  bucket.SetLimit(100, t0);
  bucket.Take(75, t0);  // a quarter left
  bucket.SetLimit(400, t0);
  EXPECT_DOUBLE_EQ(bucket.Available(t0), 100);
  bucket.SetLimit(0, t0);
  EXPECT_FALSE(bucket.limited());
  bucket.SetLimit(10, t0);  // from unlimited: full
  EXPECT_DOUBLE_EQ(bucket.Available(t0), 10);
}

TEST(RateLimiterTest, RequestsThenTokensBind) {
  const TimePoint t0{};
  RateLimiter limiter;
  limiter.SetLimits(/*rpm=*/2, /*tpm=*/600, t0);
  for (int i = 0; i < 2; ++i) {
    RateLimitDecision d = limiter.Check(100, t0);
    ASSERT_EQ(d.verdict, RateLimitVerdict::kAdmitted);
    limiter.Charge(100, t0);
  }
  RateLimitSnapshot s = limiter.Snapshot(t0);
  EXPECT_EQ(s.remaining_requests, 0);
  EXPECT_EQ(s.remaining_tokens, 400);
  EXPECT_EQ(s.reset_requests, seconds(60));
  EXPECT_EQ(s.reset_tokens, seconds(20));
  RateLimitDecision d = limiter.Check(100, t0);
  EXPECT_EQ(d.verdict, RateLimitVerdict::kRequestsExhausted);
  EXPECT_EQ(d.retry_after, seconds(30));  // one request refills in 30 s

  limiter.SetLimits(/*rpm=*/0, /*tpm=*/600, t0);
  d = limiter.Check(500, t0);  // 400 left, 100 tokens refill in 10 s
  EXPECT_EQ(d.verdict, RateLimitVerdict::kTokensExhausted);
  EXPECT_EQ(d.retry_after, seconds(10));
  EXPECT_EQ(limiter.Check(500, t0 + seconds(10)).verdict, RateLimitVerdict::kAdmitted);
  EXPECT_EQ(limiter.Check(601, t0).verdict, RateLimitVerdict::kTooLarge);
}

TEST(RateLimiterTest, ASmallBurstHoldsOnlyThatManySecondsOfTheLimit) {
  const TimePoint t0{};
  RateLimiter limiter;
  limiter.SetLimits(600, 6000, t0, /*burst_seconds=*/1);  // 10 requests, 100 tokens at once
  for (int i = 0; i < 10; ++i) {
    ASSERT_EQ(limiter.Check(5, t0).verdict, RateLimitVerdict::kAdmitted) << i;
    limiter.Charge(5, t0);
  }
  const RateLimitDecision refused = limiter.Check(5, t0);
  EXPECT_EQ(refused.verdict, RateLimitVerdict::kRequestsExhausted);
  EXPECT_EQ(refused.retry_after, milliseconds(100));
  EXPECT_EQ(refused.snapshot.limit_requests, 600);  // the headers still say the minute's limit
  EXPECT_EQ(refused.snapshot.reset_requests, seconds(1));
  // More tokens than the bucket holds can never be admitted.
  EXPECT_EQ(limiter.Check(101, t0 + seconds(60)).verdict, RateLimitVerdict::kTooLarge);
}

TEST(RateLimiterTest, UnlimitedAdmitsEverything) {
  RateLimiter limiter;
  limiter.SetLimits(0, 0, TimePoint{});
  EXPECT_FALSE(limiter.any_limit());
  EXPECT_EQ(limiter.Check(1'000'000, TimePoint{}).verdict, RateLimitVerdict::kAdmitted);
  RateLimitSnapshot s = limiter.Snapshot(TimePoint{});
  EXPECT_FALSE(s.requests_limited);
  EXPECT_FALSE(s.tokens_limited);
}

}  // namespace
}  // namespace sluice
