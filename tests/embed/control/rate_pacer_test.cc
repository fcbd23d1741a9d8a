// HeaderRatePacer with explicit times and headers.
#include <gtest/gtest.h>

#include <cmath>

#include "sluice/control.h"

namespace sluice {
namespace {

using std::chrono::milliseconds;
using std::chrono::seconds;

const TimePoint kT0 = TimePoint{} + std::chrono::hours(1);

TEST(RatePacerTest, NoLimitsKnownMeansNoDelay) {
  HeaderRatePacer pacer(RatePacerOptions{});
  for (int i = 0; i < 1000; ++i) {
    EXPECT_EQ(pacer.DelayFor(kT0, 100000), Duration(0));
    pacer.OnStart(kT0, 100000);
  }
  EXPECT_EQ(pacer.effective_rpm(), 0);
  EXPECT_EQ(MakeRatePacer(RatePacerOptions{})->DelayFor(kT0, 1), Duration(0));
}

TEST(RatePacerTest, ProbeFirstSendsTheFirstRequestAloneAndPacesTheRestByItsAnswer) {
  RatePacerOptions o;
  o.probe_first = true;
  HeaderRatePacer pacer(o);
  EXPECT_TRUE(pacer.half_open());
  EXPECT_EQ(pacer.DelayFor(kT0, 1900), Duration(0));
  pacer.OnStart(kT0, 1900);
  // The others wait for its answer.
  EXPECT_EQ(pacer.DelayFor(kT0, 1900), o.half_open_poll);
  // It announces 120k TPM with 100 tokens left: the next request waits for
  // the bucket instead of being refused.
  RateLimitInfo h;
  h.limit_tokens = 120000;
  h.remaining_tokens = 100;
  const TimePoint answered = kT0 + milliseconds(20);
  pacer.OnResponseTo(kT0, answered, h, 200, 7600, 1900);
  EXPECT_FALSE(pacer.half_open());
  EXPECT_EQ(pacer.effective_tpm(), 120000);
  const Duration wait = pacer.DelayFor(answered, 1900);
  EXPECT_GT(wait, milliseconds(800));  // ~1800 tokens at 1960/s
  EXPECT_LT(wait, milliseconds(1000));
}

TEST(RatePacerTest, ProbeFirstStaysOffWhenTheUserGaveALimit) {
  RatePacerOptions o;
  o.probe_first = true;
  o.tpm = 120000;
  HeaderRatePacer pacer(o);
  EXPECT_FALSE(pacer.half_open());
  pacer.OnStart(kT0, 100);
  EXPECT_EQ(pacer.DelayFor(kT0, 100), Duration(0));
}

TEST(RatePacerTest, ProbeFirstReopensWhenTheFirstRequestFailsWithoutAnAnswer) {
  RatePacerOptions o;
  o.probe_first = true;
  HeaderRatePacer pacer(o);
  pacer.OnStart(kT0, 10);
  pacer.OnResponse(kT0 + seconds(30), RateLimitInfo{}, 0, 40, 0);  // a transport error
  EXPECT_FALSE(pacer.half_open());
  EXPECT_EQ(pacer.DelayFor(kT0 + seconds(30), 10), Duration(0));
}

TEST(RatePacerTest, BudgetReportsTheLimitsAndWhatTheBucketsHold) {
  EXPECT_EQ(HeaderRatePacer(RatePacerOptions{}).Budget(kT0).requests_per_minute, 0);
  RatePacerOptions o;
  o.rpm = 600;
  o.tpm = 60000;
  HeaderRatePacer pacer(o);
  const RateBudget before = pacer.Budget(kT0);
  EXPECT_EQ(before.requests_per_minute, 600);
  EXPECT_EQ(before.tokens_per_minute, 60000);
  EXPECT_DOUBLE_EQ(before.requests_remaining, pacer.request_budget(kT0));
  EXPECT_DOUBLE_EQ(before.tokens_remaining, pacer.token_budget(kT0));
  EXPECT_GT(before.requests_remaining, 0);
  pacer.OnStart(kT0, 500);
  const RateBudget after = pacer.Budget(kT0);
  EXPECT_DOUBLE_EQ(after.requests_remaining, before.requests_remaining - 1);
  EXPECT_DOUBLE_EQ(after.tokens_remaining, before.tokens_remaining - 500);
}

TEST(RatePacerTest, PacesRequestsAtTheUsersRpm) {
  RatePacerOptions o;
  o.rpm = 600;  // 10/s, paced at 9.8/s, burst of 1 s
  HeaderRatePacer pacer(o);
  int started = 0;
  TimePoint now = kT0;
  const TimePoint end = kT0 + seconds(60);
  while (now < end) {
    const Duration d = pacer.DelayFor(now, 0);
    if (d > Duration(0)) {
      now += d;
      continue;
    }
    pacer.OnStart(now, 0);
    ++started;
  }
  // 9.8/s for 60 s plus the initial burst of 9.8.
  EXPECT_NEAR(started, 9.8 * 60 + 9.8, 2);
}

TEST(RatePacerTest, TokenCostBeyondTheBucketWaitsForItsWholeCost) {
  RatePacerOptions o;
  o.tpm = 60000;  // 1000/s at safety 1.0
  o.safety = 1.0;
  HeaderRatePacer pacer(o);
  EXPECT_EQ(pacer.DelayFor(kT0, 800), Duration(0));
  pacer.OnStart(kT0, 800);
  // 200 left: a 500-token request waits 0.3 s.
  EXPECT_NEAR(ToSeconds(pacer.DelayFor(kT0, 500)), 0.3, 1e-6);
  // A 5000-token request (more than the 1 s bucket holds) lets the bucket
  // fill up to its cost and waits for it: 4.8 s. It then starts with the
  // budget in hand, leaving no debt (the service's bucket, drained by an
  // announced burst, would refuse a request started in debt).
  EXPECT_NEAR(ToSeconds(pacer.DelayFor(kT0, 5000)), 4.8, 1e-6);
  const TimePoint full = kT0 + milliseconds(4800);
  // Answers meanwhile (which refill the bucket) do not lose the progress.
  pacer.OnResponse(kT0 + seconds(2), RateLimitInfo{}, 200, 3200, 800);
  EXPECT_NEAR(ToSeconds(pacer.DelayFor(kT0 + seconds(2), 5000)), 2.8, 1e-6);
  EXPECT_EQ(pacer.DelayFor(full, 5000), Duration(0));
  pacer.OnStart(full, 5000);
  EXPECT_NEAR(ToSeconds(pacer.DelayFor(full, 1)), 0.001, 1e-6);
  // Once it started, the bucket holds one second again.
  EXPECT_NEAR(pacer.token_budget(full + seconds(30)), 1000.0, 1e-6);
  // More than a minute's limit is capped at the minute (the service refuses
  // it as too large; the pacer must not wait for ever): 60000 - 30 s of refill.
  EXPECT_NEAR(ToSeconds(pacer.DelayFor(full + seconds(30), 100000)), 30.0, 1e-6);
}

TEST(RatePacerTest, TokensPerRequestCapIsASecondOfTheTokenLimit) {
  HeaderRatePacer pacer(RatePacerOptions{});
  EXPECT_EQ(pacer.TokensPerRequestCap(), 0);  // nothing known
  RateLimitInfo h;
  h.limit_requests = 600;
  h.limit_tokens = 1000000;
  pacer.OnResponse(kT0, h, 200, 40, 10);
  EXPECT_NEAR(pacer.TokensPerRequestCap(), 1000000.0 / 60, 1e-6);
  // A low request limit: two requests' share, so it does not bind first.
  h.limit_requests = 10;
  pacer.OnResponse(kT0, h, 200, 40, 10);
  EXPECT_NEAR(pacer.TokensPerRequestCap(), 200000.0, 1e-6);
}

TEST(RatePacerTest, HeaderLimitsAreLearnedAndCappedByTheUsers) {
  HeaderRatePacer pacer(RatePacerOptions{});
  RateLimitInfo h;
  h.limit_requests = 3000;
  h.limit_tokens = 1000000;
  pacer.OnStart(kT0, 10);
  pacer.OnResponse(kT0, h, 200, 40, 10);
  EXPECT_EQ(pacer.effective_rpm(), 3000);
  EXPECT_EQ(pacer.effective_tpm(), 1000000);
  // The limit halves mid-run: the pacer follows.
  h.limit_requests = 1500;
  pacer.OnResponse(kT0 + seconds(1), h, 200, 40, 10);
  EXPECT_EQ(pacer.effective_rpm(), 1500);

  RatePacerOptions user;
  user.rpm = 1000;
  HeaderRatePacer capped(user);
  h.limit_requests = 3000;
  capped.OnResponse(kT0, h, 200, 40, 10);
  EXPECT_EQ(capped.effective_rpm(), 1000);  // the user's --rpm is a promise
}

TEST(RatePacerTest, RemainingHeadersLowerTheBudgetByWhatIsStillInFlight) {
  RatePacerOptions o;
  o.rpm = 600;
  o.safety = 1.0;
  HeaderRatePacer pacer(o);
  // Five requests out; the first answer says only 3 requests remain: the
  // four still in flight may not have been counted yet, so 3 - 4 = -1.
  for (int i = 0; i < 5; ++i) pacer.OnStart(kT0, 0);
  RateLimitInfo h;
  h.remaining_requests = 3;
  pacer.OnResponse(kT0, h, 200, 0, 0);
  EXPECT_EQ(pacer.pending_requests(), 4u);
  // Level -1: 2 requests' worth of refill (0.2 s at 10/s) before the next.
  EXPECT_NEAR(ToSeconds(pacer.DelayFor(kT0, 0)), 0.2, 1e-6);
  // A remaining count above the local level never raises it.
  h.remaining_requests = 500;
  pacer.OnResponse(kT0, h, 200, 0, 0);
  EXPECT_NEAR(ToSeconds(pacer.DelayFor(kT0, 0)), 0.2, 1e-6);
}

TEST(RatePacerTest, RetryAfterIsOneSharedCooldown) {
  HeaderRatePacer pacer(RatePacerOptions{});
  for (int i = 0; i < 3; ++i) pacer.OnStart(kT0, 100);
  RateLimitInfo h;
  h.retry_after = seconds(2);
  pacer.OnResponse(kT0, h, 429, 400, 0);
  // Every request, whatever its cost, waits for the same moment.
  EXPECT_EQ(pacer.DelayFor(kT0, 1), seconds(2));
  EXPECT_EQ(pacer.DelayFor(kT0 + seconds(1), 100000), seconds(1));
  // A shorter Retry-After on a later 429 does not shorten it; a longer one extends it.
  h.retry_after = milliseconds(500);
  pacer.OnResponse(kT0 + milliseconds(100), h, 429, 400, 0);
  EXPECT_EQ(pacer.cooldown_until(), kT0 + seconds(2));
  h.retry_after = seconds(3);
  pacer.OnResponse(kT0 + milliseconds(200), h, 429, 400, 0);
  EXPECT_EQ(pacer.cooldown_until(), kT0 + milliseconds(3200));
}

TEST(RatePacerTest, Http429WithoutRetryAfterUsesTheDefaultCooldown) {
  RatePacerOptions o;
  o.default_cooldown = milliseconds(1500);
  HeaderRatePacer pacer(o);
  pacer.OnStart(kT0, 1);
  pacer.OnResponse(kT0, RateLimitInfo{}, 429, 4, 0);
  EXPECT_EQ(pacer.DelayFor(kT0, 1), milliseconds(1500));
}

TEST(RatePacerTest, Http503CoolsDownOnlyWithRetryAfter) {
  HeaderRatePacer pacer(RatePacerOptions{});
  pacer.OnResponse(kT0, RateLimitInfo{}, 503, 4, 0);
  EXPECT_EQ(pacer.DelayFor(kT0, 1), Duration(0));
  RateLimitInfo h;
  h.retry_after = seconds(7);
  pacer.OnResponse(kT0, h, 503, 4, 0);
  EXPECT_EQ(pacer.DelayFor(kT0, 1), seconds(7));
  EXPECT_FALSE(pacer.half_open());  // only a 429 makes it half-open
}

TEST(RatePacerTest, RequestTooLargeIsNotACooldown) {
  // 429 without Retry-After for a request larger than the whole minute's
  // tokens: splitting is the cure, not waiting.
  HeaderRatePacer pacer(RatePacerOptions{});
  RateLimitInfo h;
  h.limit_tokens = 10000;
  h.remaining_tokens = 10000;
  pacer.OnStart(kT0, 12500);
  pacer.OnResponse(kT0, h, 429, 50000, 0);  // ~12,500 tokens at 4 bytes/token
  EXPECT_EQ(pacer.cooldown_until(), TimePoint{});
  EXPECT_FALSE(pacer.half_open());
  EXPECT_EQ(pacer.DelayFor(kT0, 100), Duration(0));
  // The same 429 for a request that fits the minute is a real rate limit.
  pacer.OnStart(kT0, 100);
  pacer.OnResponse(kT0, h, 429, 400, 0);
  EXPECT_EQ(pacer.DelayFor(kT0, 100), seconds(1));
}

TEST(RatePacerTest, HalfOpenProbeAnsweredTooLargeReopens) {
  HeaderRatePacer pacer(RatePacerOptions{});
  RateLimitInfo h;
  h.retry_after = milliseconds(100);
  pacer.OnStart(kT0, 10);
  pacer.OnStart(kT0, 10);
  pacer.OnResponse(kT0, h, 429, 40, 0);
  const TimePoint after = kT0 + milliseconds(100);
  pacer.OnStart(after, 50000);  // the probe happens to be a huge batch
  RateLimitInfo too_large;
  too_large.limit_tokens = 10000;
  pacer.OnResponse(after + milliseconds(10), too_large, 429, 200000, 0);
  EXPECT_FALSE(pacer.half_open());
  EXPECT_EQ(pacer.DelayFor(after + milliseconds(10), 10), Duration(0));
}

TEST(RatePacerTest, HalfOpenNeverWaitsForAnAnswerThatCannotCome) {
  // The probe is answered by a 503 with Retry-After (not a 429, not a
  // success): once nothing is in flight, the pacer reopens.
  HeaderRatePacer pacer(RatePacerOptions{});
  RateLimitInfo h;
  h.retry_after = milliseconds(100);
  pacer.OnStart(kT0, 10);
  pacer.OnResponse(kT0, h, 429, 40, 0);
  const TimePoint after = kT0 + milliseconds(100);
  pacer.OnStart(after, 10);
  pacer.OnResponse(after + milliseconds(10), h, 503, 40, 0);
  EXPECT_FALSE(pacer.half_open());
  EXPECT_EQ(pacer.DelayFor(after + milliseconds(110), 10), Duration(0));
}

TEST(RatePacerTest, RetryAfterIsCappedAtMaxCooldown) {
  RatePacerOptions o;
  o.max_cooldown = seconds(10);
  HeaderRatePacer pacer(o);
  RateLimitInfo h;
  h.retry_after = std::chrono::hours(1);
  pacer.OnResponse(kT0, h, 429, 4, 0);
  EXPECT_EQ(pacer.DelayFor(kT0, 1), seconds(10));
}

TEST(RatePacerTest, AfterA429OneRequestGoesFirst) {
  RatePacerOptions o;
  o.half_open_poll = milliseconds(50);
  HeaderRatePacer pacer(o);
  for (int i = 0; i < 10; ++i) pacer.OnStart(kT0, 1);
  RateLimitInfo h;
  h.retry_after = seconds(1);
  pacer.OnResponse(kT0, h, 429, 4, 0);
  EXPECT_TRUE(pacer.half_open());
  const TimePoint after = kT0 + seconds(1);
  EXPECT_EQ(pacer.DelayFor(after, 1), Duration(0));
  pacer.OnStart(after, 1);  // the probe
  EXPECT_EQ(pacer.DelayFor(after, 1), milliseconds(50));
  // Once the probe is out, the first answer other than 429 reopens.
  pacer.OnResponse(after + milliseconds(100), RateLimitInfo{}, 200, 4, 1);
  EXPECT_FALSE(pacer.half_open());
  EXPECT_EQ(pacer.DelayFor(after + milliseconds(100), 1), Duration(0));
}

TEST(RatePacerTest, ProbeAnsweredWith429StartsAnotherCooldown) {
  HeaderRatePacer pacer(RatePacerOptions{});
  RateLimitInfo h;
  h.retry_after = seconds(1);
  pacer.OnStart(kT0, 1);
  pacer.OnResponse(kT0, h, 429, 4, 0);
  pacer.OnStart(kT0 + seconds(1), 1);
  pacer.OnResponse(kT0 + seconds(1), h, 429, 4, 0);
  EXPECT_TRUE(pacer.half_open());
  EXPECT_EQ(pacer.DelayFor(kT0 + seconds(1), 1), seconds(1));
  EXPECT_EQ(pacer.DelayFor(kT0 + seconds(2), 1), Duration(0));  // next probe
}

TEST(RatePacerTest, A429EmptiesTheBucketsSoTheRestartIsPaced) {
  RatePacerOptions o;
  o.rpm = 600;
  o.safety = 1.0;
  HeaderRatePacer pacer(o);
  RateLimitInfo h;
  h.retry_after = milliseconds(100);
  pacer.OnStart(kT0, 1);
  pacer.OnResponse(kT0, h, 429, 4, 0);
  // After the 100 ms cooldown the bucket holds one request, not ten.
  const TimePoint t = kT0 + milliseconds(100);
  EXPECT_EQ(pacer.DelayFor(t, 1), Duration(0));
  pacer.OnStart(t, 1);
  EXPECT_GT(pacer.DelayFor(t, 1), milliseconds(50));
}

TEST(RatePacerTest, LearnsBytesPerTokenWithoutGoingAbsurd) {
  HeaderRatePacer pacer(RatePacerOptions{});
  EXPECT_DOUBLE_EQ(pacer.BytesPerToken(), 4.0);
  // Tiny samples barely move it, even an absurd one (1 token for 100 bytes).
  pacer.OnResponse(kT0, RateLimitInfo{}, 200, 100, 1);
  EXPECT_NEAR(pacer.BytesPerToken(), 4.0, 0.05);
  // Non-2xx answers teach nothing.
  pacer.OnResponse(kT0, RateLimitInfo{}, 400, 100000, 1000);
  EXPECT_NEAR(pacer.BytesPerToken(), 4.0, 0.05);
  // Large samples of 3 bytes/token converge.
  for (int i = 0; i < 50; ++i) pacer.OnResponse(kT0, RateLimitInfo{}, 200, 30000, 10000);
  EXPECT_NEAR(pacer.BytesPerToken(), 3.0, 0.01);
  // A large absurd sample is clamped, not believed.
  for (int i = 0; i < 100; ++i) pacer.OnResponse(kT0, RateLimitInfo{}, 200, 1000000, 1000);
  EXPECT_LE(pacer.BytesPerToken(), 16.0);
  // Missing usage (prompt_tokens 0) teaches nothing.
  const double before = pacer.BytesPerToken();
  pacer.OnResponse(kT0, RateLimitInfo{}, 200, 100000, 0);
  EXPECT_EQ(pacer.BytesPerToken(), before);
}

TEST(RatePacerTest, InfersARequestLimitFrom429sWhenNothingElseTellsIt) {
  HeaderRatePacer pacer(RatePacerOptions{});
  TimePoint now = kT0;
  for (int i = 0; i < 20; ++i) {  // 10 successes per second for 2 s
    pacer.OnResponse(now, RateLimitInfo{}, 200, 40, 10);
    now += milliseconds(100);
  }
  EXPECT_FALSE(pacer.rpm_inferred());
  RateLimitInfo h;
  h.retry_after = milliseconds(100);
  pacer.OnResponse(now, h, 429, 40, 0);
  EXPECT_TRUE(pacer.rpm_inferred());
  const double inferred = pacer.effective_rpm();
  EXPECT_GE(inferred, 550);
  EXPECT_LE(inferred, 700);
  // 429s with no success in between (an outage): no further cut.
  pacer.OnResponse(now + milliseconds(200), h, 429, 40, 0);
  EXPECT_EQ(pacer.effective_rpm(), inferred);
  // A success (grows 2%/s, here for 0.1 s) then a 429: cut by at least 0.9,
  // and to the measured success rate (21 in 2.4 s = 525/min) when lower.
  pacer.OnResponse(now + milliseconds(300), RateLimitInfo{}, 200, 40, 10);
  const double grown = pacer.effective_rpm();
  EXPECT_GT(grown, inferred);
  pacer.OnResponse(now + milliseconds(400), h, 429, 40, 0);
  EXPECT_LE(pacer.effective_rpm(), grown * 0.9 + 1e-9);
  EXPECT_NEAR(pacer.effective_rpm(), 525, 1e-6);
  // A header limit replaces the inference.
  RateLimitInfo real;
  real.limit_requests = 3000;
  pacer.OnResponse(now + seconds(1), real, 200, 40, 10);
  EXPECT_FALSE(pacer.rpm_inferred());
  EXPECT_EQ(pacer.effective_rpm(), 3000);
}

TEST(RatePacerTest, InferredLimitIsCutOncePerCooldown) {
  // A storm begins: the first 429 infers the limit; requests already in
  // service when it began still succeed, and their successes used to make
  // every later 429 of the storm another x0.9 cut (simulated: 4 of 10 seeds
  // of storm_recovery below 0.95 of the ceiling after the storm).
  HeaderRatePacer pacer(RatePacerOptions{});
  TimePoint now = kT0;
  for (int i = 0; i < 20; ++i) {
    pacer.OnResponse(now, RateLimitInfo{}, 200, 40, 10);
    now += milliseconds(100);
  }
  RateLimitInfo h;
  h.retry_after = seconds(1);
  pacer.OnResponse(now, h, 429, 40, 0);
  ASSERT_TRUE(pacer.rpm_inferred());
  const double inferred = pacer.effective_rpm();
  // Within its cooldown: a success (sent before the storm), then a 429.
  pacer.OnResponse(now + milliseconds(50), RateLimitInfo{}, 200, 40, 10);
  const double grown = pacer.effective_rpm();
  EXPECT_GE(grown, inferred);
  pacer.OnResponse(now + milliseconds(60), h, 429, 40, 0);
  EXPECT_EQ(pacer.effective_rpm(), grown);
  // After the cooldown, a success then a 429 is a rate too high: cut.
  pacer.OnResponse(now + milliseconds(1200), RateLimitInfo{}, 200, 40, 10);
  const double before_cut = pacer.effective_rpm();
  pacer.OnResponse(now + milliseconds(1300), h, 429, 40, 0);
  EXPECT_LE(pacer.effective_rpm(), before_cut * 0.9 + 1e-9);
}

TEST(RatePacerTest, NoInferenceWhenTheUserGaveTheLimitOrItIsDisabled) {
  RatePacerOptions o;
  o.rpm = 1200;
  HeaderRatePacer user(o);
  for (int i = 0; i < 5; ++i) user.OnResponse(kT0, RateLimitInfo{}, 200, 40, 10);
  user.OnResponse(kT0, RateLimitInfo{}, 429, 40, 0);
  EXPECT_FALSE(user.rpm_inferred());
  EXPECT_EQ(user.effective_rpm(), 1200);

  RatePacerOptions off;
  off.infer_limit_from_429 = false;
  HeaderRatePacer disabled(off);
  for (int i = 0; i < 5; ++i) disabled.OnResponse(kT0, RateLimitInfo{}, 200, 40, 10);
  disabled.OnResponse(kT0, RateLimitInfo{}, 429, 40, 0);
  EXPECT_EQ(disabled.effective_rpm(), 0);
}

// --- The service's announced budget (x-ratelimit-remaining-* above the local bucket)

// A service announcing 100 RPM whose one-minute bucket is full.
RateLimitInfo Announced(int64_t remaining_requests, int64_t remaining_tokens) {
  RateLimitInfo h;
  h.limit_requests = 100;
  h.remaining_requests = remaining_requests;
  h.limit_tokens = 100000;
  h.remaining_tokens = remaining_tokens;
  return h;
}

TEST(RatePacerTest, AnnouncedBudgetIsSpentAtOnceThenPacedAtTheRate) {
  HeaderRatePacer pacer(RatePacerOptions{});  // safety 0.98, margin 5% of the limit
  pacer.OnStart(kT0, 10);
  const TimePoint t = kT0 + milliseconds(200);
  pacer.OnResponseTo(kT0, t, Announced(99, 99990), 200, 40, 10);
  // 99 left after the answered request was charged, nothing started since,
  // less 5 held back: 94 at once.
  EXPECT_DOUBLE_EQ(pacer.request_budget(t), 94.0);
  EXPECT_DOUBLE_EQ(pacer.token_budget(t), 99990.0 - 5000);
  int started = 0;
  while (pacer.DelayFor(t, 10) == Duration(0) && started < 1000) {
    pacer.OnStart(t, 10);
    ++started;
  }
  EXPECT_EQ(started, 94);
  // Then the rate: 0.98 * 100 / 60 per second, one request every ~0.61 s.
  EXPECT_NEAR(ToSeconds(pacer.DelayFor(t, 10)), 60.0 / 98.0, 1e-3);
  // Above its capacity a bucket is never refilled locally: waiting long
  // fills it to one second's worth, not back to the announced level.
  EXPECT_NEAR(pacer.request_budget(t + seconds(30)), 98.0 / 60.0, 1e-9);
}

TEST(RatePacerTest, AnnouncedBudgetIsNotRefilledLocally) {
  HeaderRatePacer pacer(RatePacerOptions{});
  pacer.OnStart(kT0, 10);
  pacer.OnResponseTo(kT0, kT0, Announced(99, 99990), 200, 40, 10);
  EXPECT_DOUBLE_EQ(pacer.request_budget(kT0 + seconds(10)), 94.0);
}

// The margin held at 5% whatever is learned: for tests of the counts.
RatePacerOptions FixedMargin() {
  RatePacerOptions o;
  o.steady_margin = o.burst_margin;
  return o;
}

TEST(RatePacerTest, RemainingIsCorrectedByExactlyTheRequestsStartedAfterTheAnsweredOne) {
  HeaderRatePacer pacer(FixedMargin());
  const TimePoint a = kT0, b = kT0 + milliseconds(10), c = kT0 + milliseconds(20);
  pacer.OnStart(a, 1000);
  pacer.OnStart(b, 1000);
  pacer.OnStart(c, 1000);
  // B is answered first; the service counted A and B when it counted B.
  pacer.OnResponseTo(b, kT0 + milliseconds(200), Announced(98, 98000), 200, 4000, 1000);
  // C may be missing from the count: 98000 - 1000, less 5000 held back.
  EXPECT_DOUBLE_EQ(pacer.token_budget(kT0 + milliseconds(200)), 92000.0);
  // A's answer comes late with an older, higher count (only A counted). B and
  // C started after A, so they are subtracted although B is no longer in
  // flight: the stale count does not raise the budget (subtracting what is
  // in flight, only C, would have given 93000).
  pacer.OnResponseTo(a, kT0 + milliseconds(300), Announced(99, 99000), 200, 4000, 1000);
  EXPECT_DOUBLE_EQ(pacer.token_budget(kT0 + milliseconds(300)), 92000.0);
  EXPECT_DOUBLE_EQ(pacer.request_budget(kT0 + milliseconds(300)), 99.0 - 2 - 5);
  // Someone else spent the key's budget: a lower count lowers the budget,
  // with no margin (it is what the service can still take at most).
  const TimePoint d = kT0 + milliseconds(400);
  pacer.OnStart(d, 1000);
  pacer.OnResponseTo(d, kT0 + milliseconds(500), Announced(40, 50000), 200, 4000, 1000);
  EXPECT_DOUBLE_EQ(pacer.token_budget(kT0 + milliseconds(500)), 50000.0);
  EXPECT_DOUBLE_EQ(pacer.request_budget(kT0 + milliseconds(500)), 40.0);
  // Requests started at the same instant as the answered one may or may not
  // have been counted before it: all but the answered one are subtracted.
  const TimePoint e = kT0 + milliseconds(600);
  for (int i = 0; i < 3; ++i) pacer.OnStart(e, 1000);
  pacer.OnResponseTo(e, kT0 + milliseconds(700), Announced(50, 60000), 200, 4000, 1000);
  EXPECT_DOUBLE_EQ(pacer.token_budget(kT0 + milliseconds(700)), 60000.0 - 2000 - 5000);
  EXPECT_DOUBLE_EQ(pacer.request_budget(kT0 + milliseconds(700)), 50.0 - 2 - 5);
}

TEST(RatePacerTest, AnExactCountUndoesADebtDownToTheMargin) {
  HeaderRatePacer pacer(FixedMargin());
  // Ten requests started at one instant; the first answer cannot tell which
  // of the nine others the service counted before it: all are subtracted.
  for (int i = 0; i < 10; ++i) pacer.OnStart(kT0, 10000);
  pacer.OnResponseTo(kT0, kT0 + milliseconds(200), Announced(90, 0), 200, 40000, 10000);
  EXPECT_DOUBLE_EQ(pacer.token_budget(kT0 + milliseconds(200)), -90000.0);
  // A later request alone: its answer is exact. 6000 tokens left: the
  // budget is what the service has beyond the 5% margin (5000), not the
  // debt the over-subtraction left.
  const TimePoint t = kT0 + milliseconds(300);
  pacer.OnStart(t, 10000);
  pacer.OnResponseTo(t, t + milliseconds(200), Announced(80, 6000), 200, 40000, 10000);
  EXPECT_DOUBLE_EQ(pacer.token_budget(t + milliseconds(200)), 1000.0);
  // Three more at one instant, one answered: 21000 - the two unanswered
  // (20000) = 1000 known, less the margin.
  const TimePoint u = t + milliseconds(300);
  for (int i = 0; i < 3; ++i) pacer.OnStart(u, 10000);
  pacer.OnResponseTo(u, u + milliseconds(200), Announced(80, 21000), 200, 40000, 10000);
  EXPECT_DOUBLE_EQ(pacer.token_budget(u + milliseconds(200)), -4000.0);
}

TEST(RatePacerTest, RequestsStartedAtOneInstantAreCorrectedAsAGroup) {
  HeaderRatePacer pacer(RatePacerOptions{});
  pacer.OnStart(kT0 - seconds(1), 10);  // learn the limits: 1633 tokens a second
  pacer.OnResponseTo(kT0 - seconds(1), kT0 - seconds(1), Announced(99, 1000), 200, 40, 10);
  // Three requests of 100 tokens at one instant; the service counted them in
  // an unknown order, leaving 900, 800 and 700 after each.
  for (int i = 0; i < 3; ++i) pacer.OnStart(kT0, 100);
  const TimePoint t = kT0 + milliseconds(200);
  // The first answer (900) may have been counted before the two others: 700.
  pacer.OnResponseTo(kT0, t, Announced(99, 900), 200, 400, 100);
  EXPECT_DOUBLE_EQ(pacer.token_budget(t), 700.0);
  // The lower counts include every member answered before them: only the
  // unanswered are subtracted, none twice (900 - 200, 800 - 100, 700 - 0).
  // Subtracting every other member from each answer would end at 500.
  pacer.OnResponseTo(kT0, t, Announced(99, 800), 200, 400, 100);
  pacer.OnResponseTo(kT0, t, Announced(99, 700), 200, 400, 100);
  EXPECT_DOUBLE_EQ(pacer.token_budget(t), 700.0);
  // Whatever started after the instant is in none of their counts.
  pacer.OnStart(t, 50);
  pacer.OnResponseTo(kT0, t, Announced(99, 650), 200, 400, 100);  // a later, lower count
  EXPECT_DOUBLE_EQ(pacer.token_budget(t), 600.0);
}

TEST(RatePacerTest, MarginShrinksAsBytesPerTokenIsLearned) {
  // 5% of the limit is held back while nothing is learned; each full-weight
  // answer (1000 prompt tokens: weight 0.2) leaves the initial guess 0.8 of
  // its weight, and the margin 3.5% + 1.5% x that weight.
  HeaderRatePacer pacer(RatePacerOptions{});
  TimePoint t = kT0;
  double weight = 1.0;
  for (int i = 0; i < 20; ++i) {
    pacer.OnStart(t, 1000);
    pacer.OnResponseTo(t, t, Announced(99, 99000), 200, 4000, 1000);
    // The count was applied before this answer's sample was learned.
    EXPECT_NEAR(pacer.token_budget(t), 99000.0 - (3500 + 1500 * weight), 1e-6) << i;
    weight *= 0.8;
    t += seconds(1);
  }
  // 20 answers: 3.5% + 1.5% x 0.8^20 (0.017%) held back.
  pacer.OnStart(t, 1000);
  pacer.OnResponseTo(t, t, Announced(99, 99000), 200, 4000, 1000);
  EXPECT_NEAR(pacer.token_budget(t), 99000.0 - 3500 - 1500 * std::pow(0.8, 20), 1e-6);
}

TEST(RatePacerTest, A429PutsTheFullMarginBack) {
  HeaderRatePacer pacer(RatePacerOptions{});
  TimePoint t = kT0;
  for (int i = 0; i < 30; ++i) {
    pacer.OnStart(t, 1000);
    pacer.OnResponseTo(t, t, Announced(99, 99000), 200, 4000, 1000);
    t += seconds(1);
  }
  // Someone else spent the budget: a 429 (Retry-After 100 ms).
  pacer.OnStart(t, 1000);
  RateLimitInfo refused = Announced(0, 0);
  refused.retry_after = milliseconds(100);
  pacer.OnResponseTo(t, t, refused, 429, 4000, 0);
  // The probe after the cooldown reopens; the next answer raises the budget
  // with the full 5% margin again (no usage learned since the 429).
  t += seconds(1);
  pacer.OnStart(t, 1000);
  pacer.OnResponseTo(t, t, Announced(90, 90000), 200, 4000, 0);
  ASSERT_FALSE(pacer.half_open());
  t += seconds(1);
  pacer.OnStart(t, 1000);
  pacer.OnResponseTo(t, t, Announced(90, 90000), 200, 4000, 0);
  EXPECT_NEAR(pacer.token_budget(t), 90000.0 - 5000, 1e-6);
}

TEST(RatePacerTest, NoAnnouncedBudgetWhenItCannotBeTrusted) {
  const double token_capacity = 100000 * 0.98 / 60;  // one second of the paced rate
  {
    // Answered through OnResponse: the start is unknown, so a late answer to
    // an early request could overstate the budget. Only lowering applies.
    HeaderRatePacer pacer(RatePacerOptions{});
    pacer.OnStart(kT0, 10);
    pacer.OnResponse(kT0, Announced(99, 99990), 200, 40, 10);
    EXPECT_LE(pacer.token_budget(kT0), token_capacity + 1e-9);
  }
  {
    // A limit the user gave is a promise: the key's budget is not ours.
    RatePacerOptions o;
    o.tpm = 100000;
    HeaderRatePacer pacer(o);
    pacer.OnStart(kT0, 10);
    pacer.OnResponseTo(kT0, kT0, Announced(99, 99990), 200, 40, 10);
    EXPECT_LE(pacer.token_budget(kT0), token_capacity + 1e-9);
    EXPECT_GT(pacer.request_budget(kT0), 90.0);  // the request limit is the service's
  }
  {
    RatePacerOptions o;
    o.use_announced_budget = false;
    HeaderRatePacer pacer(o);
    pacer.OnStart(kT0, 10);
    pacer.OnResponseTo(kT0, kT0, Announced(99, 99990), 200, 40, 10);
    EXPECT_LE(pacer.token_budget(kT0), token_capacity + 1e-9);
  }
  {
    // After a 429, answers to requests sent before it do not reopen the
    // budget: the restart is paced until the probe is answered.
    HeaderRatePacer pacer(FixedMargin());
    for (int i = 0; i < 3; ++i) pacer.OnStart(kT0, 10);
    RateLimitInfo refused = Announced(0, 0);
    refused.retry_after = milliseconds(100);
    pacer.OnResponseTo(kT0, kT0 + milliseconds(50), refused, 429, 40, 0);
    pacer.OnResponseTo(kT0, kT0 + milliseconds(60), Announced(99, 99990), 200, 40, 10);
    EXPECT_LE(pacer.token_budget(kT0 + milliseconds(60)), 0.0);
    const TimePoint probe = kT0 + seconds(3);  // 0 - 3 requests left: ~2.45 s of refill
    ASSERT_EQ(pacer.DelayFor(probe, 10), Duration(0));
    pacer.OnStart(probe, 10);
    EXPECT_GT(pacer.DelayFor(probe, 10), Duration(0));
    // The probe's answer reopens, but the count it carries was taken with
    // the pacer half-open: it lowers, it does not raise.
    pacer.OnResponseTo(probe, probe + milliseconds(100), Announced(90, 90000), 200, 40, 10);
    EXPECT_FALSE(pacer.half_open());
    EXPECT_LE(pacer.token_budget(probe + milliseconds(100)), token_capacity + 1e-9);
    // The next answer may use the budget again.
    const TimePoint next = probe + milliseconds(200);
    pacer.OnStart(next, 10);
    pacer.OnResponseTo(next, next, Announced(90, 90000), 200, 40, 10);
    EXPECT_DOUBLE_EQ(pacer.token_budget(next), 90000.0 - 5000);
  }
  {
    // The start is older than the log reaches: fall back to lowering only.
    RatePacerOptions o;
    o.start_log_max = 2;
    HeaderRatePacer pacer(o);
    for (int i = 0; i < 3; ++i) pacer.OnStart(kT0 + milliseconds(i), 10);
    pacer.OnResponseTo(kT0, kT0 + seconds(1), Announced(99, 99990), 200, 40, 10);
    EXPECT_LE(pacer.token_budget(kT0 + seconds(1)), token_capacity + 1e-9);
  }
}

}  // namespace
}  // namespace sluice
