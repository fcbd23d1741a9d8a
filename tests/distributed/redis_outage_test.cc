// RedisOutage on a ManualClock: waits grow and are capped, the outage gives
// up on time (not on a count of tries), and a success ends it.
#include "distributed/redis_outage.h"

#include <gtest/gtest.h>

namespace sluice {
namespace {

using std::chrono::milliseconds;
using std::chrono::seconds;

TEST(RedisOutageTest, WaitsAreCappedAndTheOutageGivesUpOnTime) {
  ManualClock clock;
  RedisOutage outage({seconds(20), milliseconds(250), seconds(2)}, clock, /*seed=*/7);
  EXPECT_FALSE(outage.ongoing());
  int tries = 0;
  while (auto wait = outage.Failed()) {
    ++tries;
    EXPECT_GE(*wait, milliseconds(25));  // never a zero wait
    EXPECT_LT(*wait, seconds(2));
    clock.SleepFor(*wait);
  }
  EXPECT_TRUE(outage.ongoing());
  EXPECT_GT(clock.Now() - TimePoint{}, seconds(20));
  EXPECT_LT(clock.Now() - TimePoint{}, seconds(22));
  EXPECT_GT(tries, 10);  // 20 s of waits below 2 s each
  EXPECT_EQ(outage.failures(), tries);
}

TEST(RedisOutageTest, ASuccessEndsTheOutageAndTheNextOneStartsAfresh) {
  ManualClock clock;
  RedisOutage outage({seconds(10), milliseconds(100), seconds(1)}, clock);
  EXPECT_EQ(outage.Succeeded(), std::nullopt);  // no outage, nothing to say
  ASSERT_TRUE(outage.Failed());
  clock.Advance(seconds(9));
  ASSERT_TRUE(outage.Failed());
  const std::optional<Duration> lasted = outage.Succeeded();
  ASSERT_TRUE(lasted);
  EXPECT_EQ(*lasted, seconds(9));
  EXPECT_FALSE(outage.ongoing());
  // A new outage has its own 10 s, however long the first one was.
  clock.Advance(seconds(100));
  ASSERT_TRUE(outage.Failed());
  clock.Advance(seconds(10));
  EXPECT_TRUE(outage.Failed());
  clock.Advance(milliseconds(1));
  EXPECT_FALSE(outage.Failed());
}

TEST(RedisOutageTest, TheSameSeedGivesTheSameWaits) {
  ManualClock a_clock, b_clock;
  RedisOutage a({seconds(60), milliseconds(250), seconds(5)}, a_clock, 42);
  RedisOutage b({seconds(60), milliseconds(250), seconds(5)}, b_clock, 42);
  for (int i = 0; i < 8; ++i) EXPECT_EQ(a.Failed(), b.Failed());
}

}  // namespace
}  // namespace sluice
