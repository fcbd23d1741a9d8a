// BatchSizer fed with latencies from a known linear model.
#include <gtest/gtest.h>

#include "sluice/control.h"

namespace sluice {
namespace {

using std::chrono::microseconds;
using std::chrono::milliseconds;

// Feeds `steps` rounds of observations at the suggested size with latency
// fixed + per_input * inputs.
size_t Drive(BatchSizer& sizer, Duration fixed, Duration per_input, int observations) {
  for (int i = 0; i < observations; ++i) {
    const size_t n = sizer.SuggestedInputs();
    sizer.Observe(n, fixed + per_input * static_cast<int64_t>(n));
  }
  return sizer.SuggestedInputs();
}

TEST(BatchSizerTest, StartsAtInitialWithinBounds) {
  BatchSizerOptions o;
  o.initial_inputs = 5000;
  EXPECT_EQ(BatchSizer(o).SuggestedInputs(), 2048u);
  o.initial_inputs = 0;
  EXPECT_EQ(BatchSizer(o).SuggestedInputs(), 1u);
}

TEST(BatchSizerTest, GrowsToTheMaximumWhenLatencyIsAllFixed) {
  BatchSizer sizer(BatchSizerOptions{});
  EXPECT_EQ(Drive(sizer, milliseconds(200), Duration(0), 200), 2048u);
}

TEST(BatchSizerTest, GrowsAtMostTwofoldPerStep) {
  BatchSizerOptions o;
  o.observations_per_step = 8;
  BatchSizer sizer(o);
  EXPECT_EQ(Drive(sizer, milliseconds(200), Duration(0), 7), 64u);
  EXPECT_EQ(Drive(sizer, milliseconds(200), Duration(0), 1), 128u);
  EXPECT_EQ(Drive(sizer, milliseconds(200), Duration(0), 8), 256u);
}

TEST(BatchSizerTest, StopsWhereTheFixedPartNoLongerDominates) {
  // 150 ms + 0.5 ms/input (regime a): fixed part 20% of latency at
  // 150 * 0.8 / (0.2 * 0.5) = 1200 inputs; the sizer settles within its
  // x1.5 dead band of that.
  BatchSizer sizer(BatchSizerOptions{});
  const size_t n = Drive(sizer, milliseconds(150), microseconds(500), 400);
  EXPECT_GE(n, 800u);
  EXPECT_LE(n, 1800u);
  EXPECT_NEAR(ToSeconds(milliseconds(150)) / (0.150 + 0.0005 * static_cast<double>(n)), 0.2, 0.08);
  const BatchSizer::Fit fit = sizer.CurrentFit();
  ASSERT_TRUE(fit.valid);
  EXPECT_NEAR(fit.fixed_s, 0.150, 1e-6);
  EXPECT_NEAR(fit.per_input_s, 0.0005, 1e-9);
}

TEST(BatchSizerTest, ShrinksWhenThePerInputPartDominates) {
  // 2 ms fixed, 1 ms per input: the target is 2 * 0.8 / 0.2 = 8 inputs
  // (settles within x1.5 of it).
  BatchSizerOptions o;
  o.initial_inputs = 256;
  BatchSizer sizer(o);
  // First vary the size so the fit is possible.
  for (size_t n : {256, 128, 256, 128}) sizer.Observe(n, milliseconds(2) + milliseconds(1) * n);
  const size_t n = Drive(sizer, milliseconds(2), milliseconds(1), 400);
  EXPECT_GE(n, 6u);
  EXPECT_LE(n, 12u);
  EXPECT_NEAR(sizer.LatencyRatio(8, 16), (2.0 + 16) / (2.0 + 8), 1e-6);
}

TEST(BatchSizerTest, KeepsBatchesLargeAgainstAnInstantService) {
  // Issue 15 item 4: an instant service, where the RTT is only CPU time per
  // input (20 us/input, no resolvable fixed part). The bare rule
  // (fixed * 0.8 / (0.2 * per_input)) gives 0 and the sizer fell to 1 input
  // per request; it now keeps unresolved_floor_inputs (64).
  BatchSizerOptions o;
  o.initial_inputs = 256;
  BatchSizer sizer(o);
  for (size_t n : {256, 128, 256, 128}) sizer.Observe(n, microseconds(20) * n);
  const size_t n = Drive(sizer, Duration(0), microseconds(20), 1000);
  EXPECT_GE(n, 64u);
  const BatchSizer::Fit fit = sizer.CurrentFit();
  ASSERT_TRUE(fit.valid);
  EXPECT_LT(fit.fixed_s, 0.001);
  // A noisy intercept (here negative, clamped to 0) must not shrink it either.
  BatchSizer noisy(BatchSizerOptions{});
  for (int i = 0; i < 1000; ++i) {
    const size_t size = noisy.SuggestedInputs();
    const size_t other = i % 2 == 0 ? size : size * 2;
    noisy.Observe(other, microseconds(30) * other - microseconds(200));
  }
  EXPECT_GE(noisy.SuggestedInputs(), 64u);
}

TEST(BatchSizerTest, AResolvedFixedPartStillShrinksBelowTheFloor) {
  // The floor applies only when the fit cannot resolve a fixed part: 2 ms
  // fixed + 1 ms per input still settles near 8 inputs.
  BatchSizerOptions o;
  o.initial_inputs = 256;
  BatchSizer sizer(o);
  for (size_t n : {256, 128, 256, 128}) sizer.Observe(n, milliseconds(2) + milliseconds(1) * n);
  EXPECT_LE(Drive(sizer, milliseconds(2), milliseconds(1), 400), 12u);
}

TEST(BatchSizerTest, RespectsMaxInputsAndTheTokenCap) {
  BatchSizerOptions o;
  o.max_inputs = 100;
  o.max_tokens_per_request = 300000;
  BatchSizer sizer(o);
  Drive(sizer, milliseconds(200), Duration(0), 100);
  EXPECT_EQ(sizer.SuggestedInputs(), 100u);
  EXPECT_EQ(sizer.InputsFor(200), 100u);
  EXPECT_EQ(sizer.InputsFor(8191), 36u);   // 300000 / 8191
  EXPECT_EQ(sizer.InputsFor(400000), 1u);  // one input even if it alone is over
  EXPECT_EQ(sizer.InputsFor(0), 100u);     // unknown cost: the count limit only
}

TEST(BatchSizerTest, IgnoresEmptyObservations) {
  BatchSizer sizer(BatchSizerOptions{});
  for (int i = 0; i < 100; ++i) sizer.Observe(0, milliseconds(1));
  EXPECT_EQ(sizer.SuggestedInputs(), 64u);
  EXPECT_FALSE(sizer.CurrentFit().valid);
  EXPECT_EQ(sizer.LatencyRatio(64, 128), 0);  // unknown without a fit
}

TEST(BatchSizerTest, FitUsesTheFastestRequestOfEachSize) {
  // Half the requests queued behind others (RTT doubled): the fit must
  // still find the service time, not the average.
  BatchSizerOptions o;
  o.observations_per_step = 1000;  // keep the size fixed while feeding
  BatchSizer sizer(o);
  for (int i = 0; i < 8; ++i) {
    for (size_t n : {100, 400}) {
      const Duration service = milliseconds(100) + microseconds(500) * static_cast<int64_t>(n);
      sizer.Observe(n, i % 2 ? service * 2 : service);
    }
  }
  const BatchSizer::Fit fit = sizer.CurrentFit();
  ASSERT_TRUE(fit.valid);
  EXPECT_NEAR(fit.fixed_s, 0.100, 1e-6);
  EXPECT_NEAR(fit.per_input_s, 0.0005, 1e-9);
}

// Regime (b) of BENCHMARKS.md: a flat latency gives no per-input cost, so
// the fit alone grows batches to the service's limit; the in-flight budget
// caps them at budget / limit so the limit's slots can all be filled.
TEST(BatchSizerTest, InFlightBudgetCapsBatchesAtTheBudgetOverTheLimit) {
  BatchSizerOptions o;
  o.in_flight_budget = 4096;
  BatchSizer sizer(o);
  EXPECT_EQ(sizer.InFlightCap(), 2048u);  // no limit observed yet: no cap
  sizer.ObserveConcurrencyLimit(32);
  EXPECT_EQ(sizer.InFlightCap(), 128u);
  EXPECT_EQ(sizer.SuggestedInputs(), 64u);  // the fit's 64 is below the cap
  Drive(sizer, milliseconds(200), Duration(0), 200);
  EXPECT_EQ(sizer.FitSuggestion(), 2048u);   // what the fit alone would send
  EXPECT_EQ(sizer.SuggestedInputs(), 128u);  // 4096 / 32
  EXPECT_EQ(sizer.InputsFor(8191), 36u);     // the token cap still applies below it
  EXPECT_EQ(sizer.InputsFor(0), 128u);
}

TEST(BatchSizerTest, InFlightCapFollowsThePeakLimitNotABriefProbe) {
  BatchSizerOptions o;
  o.in_flight_budget = 4096;
  o.window = 16;
  BatchSizer sizer(o);
  sizer.ObserveConcurrencyLimit(32);
  ASSERT_EQ(sizer.InFlightCap(), 128u);
  // The limiter probes its baseline at a limit of 2 for a few requests: the
  // peak over the window is still 32, so no 2048-input burst goes out.
  for (int i = 0; i < 5; ++i) sizer.ObserveConcurrencyLimit(2);
  EXPECT_EQ(sizer.InFlightCap(), 128u);
  // Growth is followed at once: slow start doubling to 64 halves the cap.
  sizer.ObserveConcurrencyLimit(64);
  EXPECT_EQ(sizer.InFlightCap(), 64u);
  // A lasting decrease is followed once the peak has left the window
  // (16 observations).
  for (int i = 0; i < 15; ++i) sizer.ObserveConcurrencyLimit(8);
  EXPECT_EQ(sizer.InFlightCap(), 64u);
  sizer.ObserveConcurrencyLimit(8);
  EXPECT_EQ(sizer.InFlightCap(), 512u);
}

TEST(BatchSizerTest, InFlightCapIgnoresSmallMovesOfTheLimit) {
  BatchSizerOptions o;
  o.in_flight_budget = 4096;
  o.window = 4;
  BatchSizer sizer(o);
  sizer.ObserveConcurrencyLimit(32);
  ASSERT_EQ(sizer.InFlightCap(), 128u);
  // 4096 / 36 = 113: within x1.25 of 128, not worth disturbing the limiter.
  sizer.ObserveConcurrencyLimit(36);
  EXPECT_EQ(sizer.InFlightCap(), 128u);
  // 4096 / 48 = 85: beyond x1.25.
  sizer.ObserveConcurrencyLimit(48);
  EXPECT_EQ(sizer.InFlightCap(), 85u);
}

TEST(BatchSizerTest, InFlightCapStaysWithinMinAndMaxInputs) {
  BatchSizerOptions o;
  o.min_inputs = 16;
  o.max_inputs = 1000;
  o.in_flight_budget = 100;
  o.window = 4;
  BatchSizer sizer(o);
  sizer.ObserveConcurrencyLimit(256);  // 100 / 256 = 0: never below the minimum
  EXPECT_EQ(sizer.InFlightCap(), 16u);
  EXPECT_EQ(sizer.SuggestedInputs(), 16u);
  for (int i = 0; i < 4; ++i) sizer.ObserveConcurrencyLimit(0);  // read as 1
  EXPECT_EQ(sizer.InFlightCap(), 100u);

  o.in_flight_budget = 1000000;
  BatchSizer large(o);
  large.ObserveConcurrencyLimit(1);
  EXPECT_EQ(large.InFlightCap(), 1000u);  // never above the service's limit
}

TEST(BatchSizerTest, NoBudgetMeansNoCap) {
  BatchSizer sizer(BatchSizerOptions{});
  sizer.ObserveConcurrencyLimit(256);
  EXPECT_EQ(sizer.InFlightCap(), 2048u);
  EXPECT_EQ(Drive(sizer, milliseconds(200), Duration(0), 200), 2048u);
}

}  // namespace
}  // namespace sluice
