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

TEST(HistogramTest, BucketsAreCumulativeWithLessOrEqualBounds) {
  Histogram h({1, 2, 5});
  for (double v : {0.5, 1.0, 1.5, 2.0, 4.0, 7.0, 100.0}) h.Observe(v);
  const Histogram::Snapshot s = h.Read();
  ASSERT_EQ(s.upper_bounds, (std::vector<double>{1, 2, 5}));
  // le=1: 0.5, 1.0 (a value equal to a bound is in that bucket); le=2: +1.5, 2.0;
  // le=5: +4.0; +Inf: +7, 100.
  EXPECT_EQ(s.cumulative_counts, (std::vector<uint64_t>{2, 4, 5, 7}));
  EXPECT_EQ(s.count, 7u);
  EXPECT_DOUBLE_EQ(s.sum, 0.5 + 1 + 1.5 + 2 + 4 + 7 + 100);
}

TEST(HistogramTest, EmptyHasZeroBucketsAndTheInfBucket) {
  Histogram h({0.1});
  const Histogram::Snapshot s = h.Read();
  EXPECT_EQ(s.cumulative_counts, (std::vector<uint64_t>{0, 0}));
  EXPECT_EQ(s.count, 0u);
  EXPECT_EQ(s.sum, 0);
}

TEST(LatencyRecorderTest, RecordsIntoTheSecondsHistogram) {
  LatencyRecorder r;
  r.Record(std::chrono::milliseconds(3));    // <= 0.005 s
  r.Record(std::chrono::milliseconds(200));  // <= 0.25 s
  r.Record(std::chrono::minutes(5));         // +Inf only
  const Histogram::Snapshot s = r.histogram().Read();
  ASSERT_EQ(s.upper_bounds, LatencyBucketsSeconds());
  EXPECT_EQ(s.cumulative_counts.front(), 1u);
  EXPECT_EQ(s.cumulative_counts[5], 2u);                               // le=0.25
  EXPECT_EQ(s.cumulative_counts[s.cumulative_counts.size() - 2], 2u);  // le=120
  EXPECT_EQ(s.cumulative_counts.back(), 3u);
  EXPECT_NEAR(s.sum, 300.203, 1e-9);
}

}  // namespace
}  // namespace sluice
