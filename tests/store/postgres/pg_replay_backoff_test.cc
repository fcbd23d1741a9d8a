// The PostgreSQL store's replay waits (after a lost connection or a transient
// error) are the one RetryPolicy on the store's Clock: with a ManualClock a
// minute of replays runs at once, every wait is within the policy's cap, and
// the deadline ends them.
#include <gtest/gtest.h>

#include "sluice/clock.h"
#include "store/postgres/pg_conn.h"

namespace sluice::pg {
namespace {

TEST(ReplayBackoffTest, WaitsOnTheStoreClockUntilTheDeadline) {
  ManualClock clock;
  const TimePoint start = clock.Now();
  ReplayBackoff backoff(clock, /*timeout_s=*/60, /*seed=*/42);
  int waits = 0;
  TimePoint before = clock.Now();
  while (backoff.Wait()) {
    ++waits;
    const Duration waited = clock.Now() - before;
    EXPECT_LE(waited, std::chrono::seconds(5));  // the policy's cap
    before = clock.Now();
    ASSERT_LT(waits, 10000) << "the deadline never ended the replays";
  }
  // Every wait went through the clock (none slept for real: this test is
  // instant), and they stopped once the 60 s had passed, not before.
  EXPECT_EQ(clock.sleeps(), waits);
  EXPECT_GE(clock.Now() - start, std::chrono::seconds(60));
  EXPECT_LE(clock.Now() - start, std::chrono::seconds(60) + std::chrono::milliseconds(1));
  // Capped exponential from 100 ms: a minute takes more than a handful of
  // waits and fewer than a minute of 100 ms ones.
  EXPECT_GT(waits, 10);
  EXPECT_LT(waits, 600);
  EXPECT_FALSE(backoff.Wait());  // past the deadline: at once
}

TEST(ReplayBackoffTest, ANonPositiveTimeoutGivesNoReplay) {
  ManualClock clock;
  ReplayBackoff backoff(clock, 0, 1);
  EXPECT_FALSE(backoff.Wait());
  EXPECT_EQ(clock.sleeps(), 0);
  EXPECT_NE(backoff.GaveUp(Status::Unavailable("server closed the connection"))
                .message()
                .find("gave up after"),
            std::string::npos);
}

}  // namespace
}  // namespace sluice::pg
