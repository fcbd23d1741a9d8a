#include "sluice/metrics.h"

#include <gtest/gtest.h>

namespace sluice {
namespace {

TEST(LatencyRecorderTest, Percentiles) {
  LatencyRecorder r;
  for (int i = 1; i <= 100; ++i) r.Record(std::chrono::milliseconds(i));
  LatencySummary s = r.Summary();
  EXPECT_EQ(s.count, 100u);
  EXPECT_DOUBLE_EQ(s.p50_ms, 50);
  EXPECT_DOUBLE_EQ(s.p95_ms, 95);
  EXPECT_DOUBLE_EQ(s.p99_ms, 99);
  EXPECT_DOUBLE_EQ(s.max_ms, 100);
  EXPECT_DOUBLE_EQ(s.mean_ms, 50.5);
}

TEST(LatencyRecorderTest, BoundedReservoirKeepsCountAndMax) {
  LatencyRecorder r(/*max_samples=*/100);
  for (int i = 1; i <= 10000; ++i) r.Record(std::chrono::microseconds(i));
  LatencySummary s = r.Summary();
  EXPECT_EQ(s.count, 10000u);
  EXPECT_DOUBLE_EQ(s.max_ms, 10);
  EXPECT_GT(s.p50_ms, 2.0);  // a uniform sample of 0..10 ms has its median near 5
  EXPECT_LT(s.p50_ms, 8.0);
}

TEST(LatencyRecorderTest, EmptyIsZero) {
  LatencyRecorder r;
  EXPECT_EQ(r.Summary().count, 0u);
  EXPECT_EQ(r.Summary().p99_ms, 0);
}

}  // namespace
}  // namespace sluice
