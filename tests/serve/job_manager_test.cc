// JobManager in-process against the simulated API (over loopback): the
// queue, a shutdown mid-run that requeues and a reopen that resumes, jobs
// sharing a store kept apart, a damaged job file skipped. Waits are on the
// manager's own change notifications (WaitForChange), never sleeps. Also in
// the TSan set (scripts/check-sanitize.sh): workers, sampler and watchers
// share the one mutex.
#include "serve/job_manager.h"

#include <gtest/gtest.h>

#include <chrono>
#include <filesystem>
#include <functional>

#include "observe/exposition_parser.h"
#include "sluice/mock_api.h"
#include "testing/sqlite_query.h"
#include "testing/test_util.h"

namespace sluice::serve {
namespace {

using sluice::testing::ReadFile;
using sluice::testing::TempDir;
using sluice::testing::WriteFile;
using std::chrono::milliseconds;
using std::chrono::seconds;

constexpr auto kBound = seconds(120);

class JobManagerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    MockApiOptions mock;
    mock.dimensions = 16;
    mock.base_latency = milliseconds(100);
    auto server = MockApiServer::Start(mock);
    ASSERT_TRUE(server.ok()) << server.status().ToString();
    mock_ = std::move(*server);
    std::filesystem::create_directories(state());
    policy_.emplace(*PathPolicy::Create({}, state()));
    defaults_.store_uri = "sqlite:" + state() + "/default.db";
    defaults_.api_key_env = "SLUICE_JOB_MANAGER_TEST_NO_KEY";
  }
  std::string state() const { return dir_ / "state"; }

  Result<std::unique_ptr<JobManager>> Open(int max_jobs) {
    JobManagerOptions options;
    options.state_dir = state();
    options.max_jobs = max_jobs;
    options.sample_period = milliseconds(50);
    return JobManager::Open(options, [this](const JobRequest& r, const std::string& job_dir) {
      return BuildIngestOptions(r, job_dir, defaults_, *policy_);
    });
  }

  // A job of `records` one-chunk records through the mock, two per request,
  // committed two at a time, into `store` (a file in the state folder).
  ParsedJobBody Body(int records, const std::string& store) {
    std::string jsonl;
    for (int i = 0; i < records; ++i) {
      jsonl += "{\\\"id\\\":" + std::to_string(i) + ",\\\"text\\\":\\\"record " +
               std::to_string(i) + " on the weir\\\"}\\n";
    }
    auto body = ParseJobBody("{\"jsonl\":\"" + jsonl + "\",\"store\":\"sqlite:" + store +
                             "\",\"endpoint\":\"" + mock_->BaseUrl() +
                             "\",\"model\":\"m\",\"batch-size\":2,\"concurrency\":1,"
                             "\"store-batch\":2}");
    EXPECT_TRUE(body.ok()) << body.status().ToString();
    return std::move(*body);
  }

  // Waits (on the manager's notifications) until `done` holds for the job.
  JobView WaitUntil(JobManager& m, const std::string& id,
                    const std::function<bool(const JobView&)>& done) {
    const auto deadline = std::chrono::steady_clock::now() + kBound;
    JobView v = *m.Get(id);
    while (!done(v) && std::chrono::steady_clock::now() < deadline) {
      v = *m.WaitForChange(id, v.version, seconds(1));
    }
    return v;
  }

  TempDir dir_;
  std::unique_ptr<MockApiServer> mock_;
  std::optional<PathPolicy> policy_;
  JobDefaults defaults_;
};

bool Finished(const JobView& v) { return IsFinished(v.state); }

TEST_F(JobManagerTest, QueuedJobsRunAndFinish) {
  auto m = Open(1);
  ASSERT_TRUE(m.ok()) << m.status().ToString();
  auto a = (*m)->Submit(Body(6, state() + "/a.db"));
  auto b = (*m)->Submit(Body(4, state() + "/b.db"));
  ASSERT_TRUE(a.ok() && b.ok());
  EXPECT_EQ(b->state, JobState::kQueued);
  JobView a_done = WaitUntil(**m, a->id, Finished);
  JobView b_done = WaitUntil(**m, b->id, Finished);
  EXPECT_EQ(a_done.state, JobState::kSucceeded) << a_done.error;
  EXPECT_EQ(b_done.state, JobState::kSucceeded) << b_done.error;
  EXPECT_EQ(a_done.progress.chunks_stored, 6u);
  EXPECT_EQ(testing::StoredChunkCount(state() + "/a.db"), 6);
  EXPECT_EQ(testing::StoredChunkCount(state() + "/b.db"), 4);
  EXPECT_NE(a_done.report_json.find("\"reconciled\":true"), std::string::npos);
  EXPECT_EQ((*m)->List().size(), 2u);
  EXPECT_EQ((*m)->Cancel(a->id).status().code(), StatusCode::kBusy);
  EXPECT_EQ((*m)->Get("nope").status().code(), StatusCode::kNotFound);
}

TEST_F(JobManagerTest, AShutdownMidRunRequeuesAndTheReopenResumes) {
  const std::string store = state() + "/s.db";
  std::string id;
  {
    auto m = Open(1);
    ASSERT_TRUE(m.ok());
    auto job = (*m)->Submit(Body(30, store));
    ASSERT_TRUE(job.ok());
    id = job->id;
    JobView v = WaitUntil(**m, id, [](const JobView& v) {
      return v.progress.chunks_stored > 0 || IsFinished(v.state);
    });
    ASSERT_EQ(v.state, JobState::kRunning);
    (*m)->Shutdown();
    EXPECT_TRUE((*m)->shutting_down());
    JobView stopped = *(*m)->Get(id);
    EXPECT_EQ(stopped.state, JobState::kQueued);
    EXPECT_FALSE(stopped.cancel_requested);
    // A submission after the stop is refused.
    EXPECT_EQ((*m)->Submit(Body(1, store)).status().code(), StatusCode::kUnavailable);
  }
  const int64_t before = testing::StoredChunkCount(store);
  EXPECT_GT(before, 0);
  EXPECT_LT(before, 30);
  auto m = Open(1);
  ASSERT_TRUE(m.ok());
  JobView done = WaitUntil(**m, id, Finished);
  EXPECT_EQ(done.state, JobState::kSucceeded) << done.error;
  EXPECT_EQ(done.attempts, 2);
  EXPECT_EQ(testing::StoredChunkCount(store), 30);
}

TEST_F(JobManagerTest, JobsOnOneStoreNeverRunAtOnce) {
  // Two workers, one store: run together, the second would fail on the
  // store's lock (busy); the manager keeps it queued instead.
  auto m = Open(2);
  ASSERT_TRUE(m.ok());
  const std::string store = state() + "/shared.db";
  auto a = (*m)->Submit(Body(8, store));
  auto b = (*m)->Submit(Body(8, store));
  ASSERT_TRUE(a.ok() && b.ok());
  JobView b_done = WaitUntil(**m, b->id, Finished);
  JobView a_done = WaitUntil(**m, a->id, Finished);
  EXPECT_EQ(a_done.state, JobState::kSucceeded) << a_done.error;
  EXPECT_EQ(b_done.state, JobState::kSucceeded) << b_done.error;
  EXPECT_EQ(testing::StoredChunkCount(store), 8);  // the same ids: the second run's are upserts
}

TEST_F(JobManagerTest, ACancelledQueuedJobNeverRunsAndADamagedFileIsSkipped) {
  WriteFile(state() + "/jobs/j000007/job.json", "{not json");
  auto m = Open(1);
  ASSERT_TRUE(m.ok()) << m.status().ToString();
  EXPECT_TRUE((*m)->List().empty());
  auto a = (*m)->Submit(Body(6, state() + "/a.db"));
  auto b = (*m)->Submit(Body(6, state() + "/b.db"));
  ASSERT_TRUE(a.ok() && b.ok());
  EXPECT_EQ(a->id, "j000008");  // numbering continues after every folder it found
  auto cancelled = (*m)->Cancel(b->id);
  ASSERT_TRUE(cancelled.ok());
  EXPECT_EQ(cancelled->state, JobState::kCancelled);
  WaitUntil(**m, a->id, Finished);
  EXPECT_FALSE(std::filesystem::exists(state() + "/b.db"));
  EXPECT_NE(ReadFile(state() + "/jobs/" + b->id + "/job.json").find("\"cancelled\""),
            std::string::npos);
}

TEST_F(JobManagerTest, MetricsCountJobsByStateAndLabelEachRunningJobsCounters) {
  auto m = Open(1);
  ASSERT_TRUE(m.ok());
  // 200 records, two per 100 ms request, one at a time: ten seconds of work,
  // so the job is still running when its first commit is seen.
  auto job = (*m)->Submit(Body(200, state() + "/m.db"));
  ASSERT_TRUE(job.ok());
  JobView v = WaitUntil(**m, job->id, [](const JobView& v) {
    return v.progress.chunks_stored > 0 || IsFinished(v.state);
  });
  ASSERT_EQ(v.state, JobState::kRunning);
  const std::string text = (*m)->PrometheusText();
  auto e = sluice::testing::ParseExposition(text);
  ASSERT_EQ(e.error, "") << text;
  EXPECT_EQ(e.Value("sluice_serve_jobs", {{"state", "running"}}), 1);
  EXPECT_EQ(e.Value("sluice_serve_jobs", {{"state", "succeeded"}}), 0);
  auto stored = e.Value("sluice_chunks_stored_total", {{"sluice_job", job->id}});
  ASSERT_TRUE(stored.has_value()) << text;
  EXPECT_GE(*stored, static_cast<double>(v.progress.chunks_stored));
  EXPECT_TRUE(e.Value("sluice_embed_requests_total", {{"sluice_job", job->id}}).has_value());

  // Stopped (back to queued for the next start): its run's series are gone.
  (*m)->Shutdown();
  e = sluice::testing::ParseExposition((*m)->PrometheusText());
  ASSERT_EQ(e.error, "");
  EXPECT_EQ(e.Value("sluice_serve_jobs", {{"state", "queued"}}), 1);
  EXPECT_EQ(e.Value("sluice_serve_jobs", {{"state", "running"}}), 0);
  EXPECT_EQ(e.families.count("sluice_chunks_stored_total"), 0u);
}

}  // namespace
}  // namespace sluice::serve
