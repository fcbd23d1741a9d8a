// AdaptiveLimiter driven event by event with explicit times.
#include <gtest/gtest.h>

#include "sluice/control.h"

namespace sluice {
namespace {

using std::chrono::milliseconds;
using std::chrono::seconds;

// Drives a limiter like the embed stage against a service whose RTT is
// rtt_of(in_flight): fills up to the limit, then completes everything,
// `rounds` times. Returns the time reached.
template <class RttFn>
TimePoint RunRounds(AdaptiveLimiter& limiter, TimePoint now, int rounds, RttFn rtt_of,
                    size_t cap_in_flight = SIZE_MAX) {
  for (int r = 0; r < rounds; ++r) {
    const size_t n = std::min(limiter.Limit(), cap_in_flight);
    for (size_t i = 0; i < n; ++i) limiter.OnStart(now);
    const Duration rtt = rtt_of(n);
    now += rtt;
    for (size_t i = 0; i < n; ++i) limiter.OnFinish(now, rtt, RequestOutcome::kSuccess);
    now += milliseconds(1);
  }
  return now;
}

// Options for a limiter past slow start at `initial`, holding `hold` windows
// after a refusal.
AdaptiveLimiterOptions PastSlowStart(size_t initial, size_t hold = 3) {
  AdaptiveLimiterOptions o;
  o.initial = initial;
  o.slow_start = false;
  o.over_capacity_hold_windows = hold;
  return o;
}

// `out` requests start at `now` and the first `refused` of them are turned
// away at the door (503) 2 ms later. Returns the time of those answers.
TimePoint StartThenRefuse(AdaptiveLimiter& limiter, TimePoint now, int out, int refused) {
  for (int i = 0; i < out; ++i) limiter.OnStart(now);
  now += milliseconds(2);
  for (int i = 0; i < refused; ++i) {
    limiter.OnFinish(now, milliseconds(2), RequestOutcome::kOverCapacity);
  }
  return now;
}

TEST(AdaptiveLimiterTest, StartsAtInitialClampedToBounds) {
  AdaptiveLimiterOptions o;
  o.initial = 10;
  EXPECT_EQ(AdaptiveLimiter(o).Limit(), 10u);
  o.initial = 1000;
  o.max = 50;
  EXPECT_EQ(AdaptiveLimiter(o).Limit(), 50u);
  o.initial = 0;
  o.min = 3;
  EXPECT_EQ(AdaptiveLimiter(o).Limit(), 3u);
  EXPECT_EQ(MakeAdaptiveLimiter(AdaptiveLimiterOptions{})->Limit(), 4u);
}

TEST(AdaptiveLimiterTest, SlowStartDoublesWhileLatencyIsFlatAndStopsAtMax) {
  AdaptiveLimiterOptions o;
  o.initial = 4;
  o.max = 100;
  AdaptiveLimiter limiter(o);
  TimePoint now{};
  now = RunRounds(limiter, now, 1, [](size_t) { return milliseconds(100); });
  EXPECT_EQ(limiter.Limit(), 8u);
  now = RunRounds(limiter, now, 1, [](size_t) { return milliseconds(100); });
  EXPECT_EQ(limiter.Limit(), 16u);
  RunRounds(limiter, now, 20, [](size_t) { return milliseconds(100); });
  EXPECT_EQ(limiter.Limit(), 100u);
}

TEST(AdaptiveLimiterTest, DoesNotGrowWhenTheLimitIsNotReached) {
  // The pacer or the input keeps only 2 requests in flight: the limit must
  // not climb to the ceiling on evidence it never tested.
  AdaptiveLimiter limiter(AdaptiveLimiterOptions{});
  RunRounds(
      limiter, TimePoint{}, 50, [](size_t) { return milliseconds(100); }, 2);
  EXPECT_EQ(limiter.Limit(), 4u);
}

TEST(AdaptiveLimiterTest, FindsTheCapacityOfAQueueingServer) {
  // RTT = 200 ms up to 32 in flight, then grows in proportion (FIFO queue).
  AdaptiveLimiter limiter(AdaptiveLimiterOptions{});
  auto rtt = [](size_t n) {
    return milliseconds(200 * std::max<int64_t>(32, static_cast<int64_t>(n)) / 32);
  };
  TimePoint now = RunRounds(limiter, TimePoint{}, 200, rtt);
  EXPECT_GE(limiter.Limit(), 32u);
  EXPECT_LE(limiter.Limit(), 44u);
  // ... and stays there (probes included) for another long stretch.
  for (int i = 0; i < 10; ++i) {
    now = RunRounds(limiter, now, 30, rtt);
    EXPECT_GE(limiter.Limit(), 30u) << i;
    EXPECT_LE(limiter.Limit(), 44u) << i;
  }
  EXPECT_GT(limiter.probes(), 0u);
  EXPECT_NEAR(ToSeconds(limiter.base_rtt()), 0.2, 0.01);
}

TEST(AdaptiveLimiterTest, BackpressureCutsOncePerWindow) {
  AdaptiveLimiterOptions o;
  o.initial = 40;
  o.slow_start = false;
  AdaptiveLimiter limiter(o);
  TimePoint now{};
  for (int i = 0; i < 40; ++i) limiter.OnStart(now);
  now += milliseconds(100);
  // Forty 429s from requests sent under the same limit: one cut.
  for (int i = 0; i < 40; ++i) {
    limiter.OnFinish(now, milliseconds(100), RequestOutcome::kBackpressure);
  }
  EXPECT_EQ(limiter.Limit(), 36u);
  EXPECT_DOUBLE_EQ(limiter.limit_value(), 36.0);
  // A request started after the cut that also fails: a second cut.
  limiter.OnStart(now + milliseconds(1));
  limiter.OnFinish(now + milliseconds(50), milliseconds(49), RequestOutcome::kBackpressure);
  EXPECT_DOUBLE_EQ(limiter.limit_value(), 36.0 * 0.9);
  EXPECT_EQ(limiter.in_flight(), 0u);
}

// A server that turns requests away at the door (503) had the others in
// service: slow start doubling from 16 to 32 against 24 slots sees 8 of the
// 32 refused, and the limit goes to the 24 that fit (not x0.9, three times).
TEST(AdaptiveLimiterTest, ARefusedBurstSetsTheLimitToWhatFit) {
  AdaptiveLimiterOptions o;
  o.initial = 32;
  AdaptiveLimiter limiter(o);  // slow start, nothing cut yet
  TimePoint now = StartThenRefuse(limiter, TimePoint{}, 32, 8);
  EXPECT_EQ(limiter.Limit(), 24u);
  EXPECT_FALSE(limiter.in_slow_start());
  // The 24 admitted come back: the limit holds (no doubling past what fit,
  // no +1 probe during the hold).
  now += milliseconds(1000);
  for (int i = 0; i < 24; ++i) limiter.OnFinish(now, milliseconds(1005), RequestOutcome::kSuccess);
  now = RunRounds(limiter, now, 3, [](size_t) { return milliseconds(1000); });
  EXPECT_EQ(limiter.Limit(), 24u);
  // After the hold, one probe higher.
  now = RunRounds(limiter, now, 1, [](size_t) { return milliseconds(1000); });
  EXPECT_EQ(limiter.Limit(), 25u);
}

// A +1 probe refused: back to the level that fit, and the next probe waits
// over_capacity_hold_windows windows, so a probe (one 503) comes every
// hold + 1 windows rather than every other one.
TEST(AdaptiveLimiterTest, ARefusedProbeReturnsToWhatFitAndWaitsBeforeTheNext) {
  AdaptiveLimiter limiter(PastSlowStart(10, /*hold=*/2));
  const auto flat = [](size_t) { return milliseconds(100); };
  TimePoint now = RunRounds(limiter, TimePoint{}, 1, flat);
  ASSERT_EQ(limiter.Limit(), 11u);
  // 11 out, one refused: 10 fit.
  now = StartThenRefuse(limiter, now, 11, 1);
  EXPECT_EQ(limiter.Limit(), 10u);
  now += milliseconds(100);
  for (int i = 0; i < 10; ++i) limiter.OnFinish(now, milliseconds(102), RequestOutcome::kSuccess);
  now = RunRounds(limiter, now, 2, flat);  // the hold
  EXPECT_EQ(limiter.Limit(), 10u);
  RunRounds(limiter, now, 1, flat);
  EXPECT_EQ(limiter.Limit(), 11u);
}

// Refusals of requests sent after a burst began are a new burst: when the
// server's room shrinks (another tenant took slots), the limit follows it
// down to what fits now.
TEST(AdaptiveLimiterTest, RefusalsAfterTheBurstFollowTheRoomDown) {
  AdaptiveLimiter limiter(PastSlowStart(20));
  TimePoint now = StartThenRefuse(limiter, TimePoint{}, 20, 1);
  EXPECT_EQ(limiter.Limit(), 19u);
  // Only 12 fit now: of the 19 still out, 7 are refused later, each sent
  // after the first refusal.
  now += milliseconds(1);
  for (int i = 0; i < 7; ++i) {
    limiter.OnFinish(now, milliseconds(0), RequestOutcome::kOverCapacity);
  }
  EXPECT_EQ(limiter.Limit(), 12u);
  EXPECT_EQ(limiter.in_flight(), 12u);
}

// Everything refused (a restart behind a load balancer): the limit falls to
// the floor, but slow start climbs back to half the level the refusals began
// at once the service answers again, not +1 per window.
TEST(AdaptiveLimiterTest, AfterEverythingWasRefusedSlowStartClimbsBackToHalf) {
  AdaptiveLimiter limiter(PastSlowStart(32, /*hold=*/1));
  const TimePoint now = StartThenRefuse(limiter, TimePoint{}, 32, 32);
  EXPECT_EQ(limiter.Limit(), 1u);
  const auto flat = [](size_t) { return milliseconds(100); };
  // A window closes after max(4, in flight) answers: 4 rounds at 1 (the
  // hold), 4 more to double to 2, then 2, 1 and 1 round to 4, 8 and 16.
  RunRounds(limiter, now, 12, flat);
  EXPECT_EQ(limiter.Limit(), 16u);
}

TEST(AdaptiveLimiterTest, BackpressureNeverGoesBelowTheFloor) {
  AdaptiveLimiterOptions o;
  o.initial = 10;
  o.min = 3;
  AdaptiveLimiter limiter(o);
  TimePoint now{};
  for (int i = 0; i < 100; ++i) {
    limiter.OnStart(now);
    now += milliseconds(10);
    limiter.OnFinish(now, milliseconds(10), RequestOutcome::kBackpressure);
  }
  EXPECT_EQ(limiter.Limit(), 3u);
}

TEST(AdaptiveLimiterTest, PermanentErrorsAndFailuresDoNotMoveTheLimit) {
  AdaptiveLimiterOptions o;
  o.initial = 20;
  AdaptiveLimiter limiter(o);
  TimePoint now{};
  for (int round = 0; round < 20; ++round) {
    for (int i = 0; i < 20; ++i) limiter.OnStart(now);
    now += milliseconds(500);  // slow answers: they must not look like queueing
    for (int i = 0; i < 20; ++i) {
      limiter.OnFinish(now, milliseconds(500),
                       i % 2 ? RequestOutcome::kPermanent : RequestOutcome::kFailure);
    }
  }
  EXPECT_EQ(limiter.Limit(), 20u);
  EXPECT_EQ(limiter.in_flight(), 0u);
}

TEST(AdaptiveLimiterTest, JitterDoesNotCollapseTheLimit) {
  // RTT uniformly 100..300 ms regardless of load (no capacity limit): the
  // limit must keep growing, not mistake the noise for queueing.
  AdaptiveLimiterOptions o;
  o.max = 200;
  AdaptiveLimiter limiter(o);
  TimePoint now{};
  uint64_t state = 12345;
  for (int round = 0; round < 300; ++round) {
    const size_t n = limiter.Limit();
    for (size_t i = 0; i < n; ++i) limiter.OnStart(now);
    Duration longest{0};
    for (size_t i = 0; i < n; ++i) {
      state = state * 6364136223846793005ULL + 1442695040888963407ULL;
      const Duration rtt = milliseconds(100 + static_cast<int64_t>((state >> 33) % 201));
      limiter.OnFinish(now + rtt, rtt, RequestOutcome::kSuccess);
      longest = std::max(longest, rtt);
    }
    now += longest + milliseconds(1);
  }
  EXPECT_GE(limiter.Limit(), 100u);
}

TEST(AdaptiveLimiterTest, ResetBaselineForgetsTheBaseRtt) {
  AdaptiveLimiter limiter(AdaptiveLimiterOptions{});
  RunRounds(limiter, TimePoint{}, 3, [](size_t) { return milliseconds(100); });
  EXPECT_GT(limiter.base_rtt(), Duration(0));
  limiter.ResetBaseline();
  EXPECT_EQ(limiter.base_rtt(), Duration(0));
}

TEST(AdaptiveLimiterTest, BatchSizeChangeRescalesTheBaselineInsteadOfCutting) {
  AdaptiveLimiterOptions o;
  o.max = 40;
  AdaptiveLimiter limiter(o);
  TimePoint now = RunRounds(limiter, TimePoint{}, 20, [](size_t) { return milliseconds(100); });
  ASSERT_EQ(limiter.Limit(), 40u);
  EXPECT_NEAR(ToSeconds(limiter.base_rtt()), 0.1, 1e-9);
  // Batches twice as large take twice as long: told so, the limiter keeps its limit.
  limiter.OnBatchSizeChanged(now, 2.0);
  EXPECT_NEAR(ToSeconds(limiter.base_rtt()), 0.2, 1e-9);
  RunRounds(limiter, now, 20, [](size_t) { return milliseconds(200); });
  EXPECT_EQ(limiter.Limit(), 40u);
  // An unknown ratio forgets the baseline.
  limiter.OnBatchSizeChanged(now, 0);
  EXPECT_EQ(limiter.base_rtt(), Duration(0));
}

TEST(AdaptiveLimiterTest, AServiceThatGotSlowerIsReBaselinedNotStrangled) {
  // No capacity limit; latency doubles for good at some point (not caused
  // by us). The limiter first reads it as queueing and cuts, then the probe
  // adopts the new baseline and the limit climbs back.
  AdaptiveLimiterOptions o;
  o.max = 64;
  AdaptiveLimiter limiter(o);
  TimePoint now = RunRounds(limiter, TimePoint{}, 20, [](size_t) { return milliseconds(100); });
  ASSERT_EQ(limiter.Limit(), 64u);
  now = RunRounds(limiter, now, 5, [](size_t) { return milliseconds(200); });
  EXPECT_LT(limiter.Limit(), 64u);
  RunRounds(limiter, now, 200, [](size_t) { return milliseconds(200); });
  EXPECT_EQ(limiter.Limit(), 64u);
  EXPECT_NEAR(ToSeconds(limiter.base_rtt()), 0.2, 0.01);
  EXPECT_GE(limiter.probes(), 1u);
}

}  // namespace
}  // namespace sluice
