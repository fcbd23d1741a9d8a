// A Redis job's counters as a `sluice serve` job shows them: progress,
// outcome once drained, report. Pure functions: no Redis needed.
#include "serve/redis_job_view.h"

#include <gtest/gtest.h>

namespace sluice::serve {
namespace {

JobStatus StatusOf(uint64_t total, uint64_t in_flight, uint64_t done, uint64_t dead) {
  JobStatus s;
  s.total = total;
  s.in_flight = in_flight;
  s.done = done;
  s.dead = dead;
  s.pending = total - in_flight - done - dead;
  s.chunks_stored = done * 3;
  s.started_ms = 1'000'000;
  s.now_ms = 1'010'000;  // 10 s after the first claim
  s.last_done_ms = 1'008'000;
  return s;
}

TEST(RedisJobViewTest, ProgressCarriesTheTasksChunksRateAndEta) {
  const JobProgress p = ProgressOfRedisJob(StatusOf(10, 2, 4, 1));
  ASSERT_TRUE(p.tasks.has_value());
  EXPECT_EQ(p.tasks->total, 10u);
  EXPECT_EQ(p.tasks->pending, 3u);
  EXPECT_EQ(p.tasks->in_flight, 2u);
  EXPECT_EQ(p.tasks->done, 4u);
  EXPECT_EQ(p.tasks->dead, 1u);
  EXPECT_EQ(p.sources_done, 5u);  // settled: done and dead
  EXPECT_EQ(p.chunks_stored, 12u);
  EXPECT_EQ(p.in_flight, 2);
  EXPECT_DOUBLE_EQ(p.elapsed_s, 10.0);  // not drained: to now
  EXPECT_DOUBLE_EQ(p.chunks_per_s, 1.2);
  ASSERT_TRUE(p.eta_s.has_value());
  EXPECT_DOUBLE_EQ(*p.eta_s, 10.0);  // 5 tasks left at 0.5 tasks/s
  EXPECT_EQ(p.chunks_produced, 0u);  // unknown to Redis
}

TEST(RedisJobViewTest, NoEtaBeforeTheFirstTaskIsDoneAndNoneLeftOnceDrained) {
  JobStatus waiting = StatusOf(4, 0, 0, 0);
  waiting.started_ms = 0;  // no claim yet
  const JobProgress before = ProgressOfRedisJob(waiting);
  EXPECT_FALSE(before.eta_s.has_value());
  EXPECT_DOUBLE_EQ(before.chunks_per_s, 0);
  EXPECT_DOUBLE_EQ(before.elapsed_s, 0);
  const JobProgress drained = ProgressOfRedisJob(StatusOf(4, 0, 4, 0));
  ASSERT_TRUE(drained.eta_s.has_value());
  EXPECT_DOUBLE_EQ(*drained.eta_s, 0);
  EXPECT_DOUBLE_EQ(drained.elapsed_s, 8.0);  // drained: to the last ack
}

TEST(RedisJobViewTest, OnlyADrainedJobHasAnOutcomeAndDeadTasksFailIt) {
  EXPECT_FALSE(OutcomeOfDrainedRedisJob(StatusOf(5, 1, 4, 0), "serve-j000001").has_value());
  auto clean = OutcomeOfDrainedRedisJob(StatusOf(5, 0, 5, 0), "serve-j000001");
  ASSERT_TRUE(clean.has_value());
  EXPECT_EQ(clean->end, RunEnd::kSucceeded);
  EXPECT_TRUE(clean->error.empty());
  auto dead = OutcomeOfDrainedRedisJob(StatusOf(5, 0, 3, 2), "serve-j000001");
  ASSERT_TRUE(dead.has_value());
  EXPECT_EQ(dead->end, RunEnd::kFailed);
  EXPECT_NE(dead->error.find("2 of 5 tasks are dead"), std::string::npos) << dead->error;
  EXPECT_NE(dead->error.find("sluice dead-letter list --redis URL --job serve-j000001"),
            std::string::npos)
      << dead->error;
  // A cancel's removed tasks count as settled: drained.
  JobStatus cancelled = StatusOf(5, 0, 1, 0);
  cancelled.cancelled = 4;
  cancelled.pending = 0;
  EXPECT_TRUE(OutcomeOfDrainedRedisJob(cancelled, "j").has_value());
}

TEST(RedisJobViewTest, ReportIsOneJsonLineWithoutThePasswordOfTheStore) {
  const std::string report =
      RedisJobReportJson(StatusOf(3, 0, 3, 0), "serve-j000002", "redis://u:***@h:6379",
                         "postgres://app:hunter2@db/ingest", RunEnd::kSucceeded);
  EXPECT_EQ(report.find('\n'), std::string::npos);
  EXPECT_EQ(report.find("hunter2"), std::string::npos) << report;
  EXPECT_NE(report.find("\"redis_job\":\"serve-j000002\""), std::string::npos) << report;
  EXPECT_NE(report.find("\"outcome\":\"succeeded\""), std::string::npos) << report;
  EXPECT_NE(report.find("\"tasks\":{\"total\":3,\"pending\":0,\"in_flight\":0,\"done\":3,"
                        "\"dead\":0,\"cancelled\":0}"),
            std::string::npos)
      << report;
  EXPECT_NE(report.find("\"chunks_stored\":9"), std::string::npos) << report;
}

}  // namespace
}  // namespace sluice::serve
