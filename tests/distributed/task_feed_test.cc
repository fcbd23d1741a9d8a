// TaskFeed against the test Redis, without a pipeline: sources handed out by
// Next() on one thread and reported done from several others (as a reader
// pool and the store writer do), the bound on tasks in flight, the dead
// stream for dead-lettered sources, exit when idle, and a stop.
#include "distributed/task_feed.h"

#include <gtest/gtest.h>
#include <sys/stat.h>

#include <functional>
#include <mutex>
#include <set>
#include <thread>
#include <vector>

#include "distributed/redis_test_util.h"
#include "testing/test_util.h"

namespace sluice {
namespace {

struct Job {
  std::string url;
  std::string name;
  RedisEndpoint endpoint;
  ~Job() {
    auto client = RedisClient::Connect(endpoint);
    if (!client.ok()) return;
    const std::string p = "sluice:job:{" + name + "}";
    (*client)->Command({"DEL", p, p + ":tasks", p + ":dead", p + ":errors", p + ":workers",
                        p + ":worker:feed-test", p + ":splits", p + ":split:1"});
  }
};

TaskFeedOptions FeedOptions(const Job& job, bool exit_when_idle, size_t max_in_flight) {
  TaskFeedOptions o;
  o.endpoint = job.endpoint;
  o.stream = TaskStreamOptions{job.name, std::chrono::milliseconds(60000), 5};
  o.consumer = "feed-test";
  o.host = "test-host";
  o.pid = 1;
  o.exit_when_idle = exit_when_idle;
  o.max_in_flight = max_in_flight;
  o.claim_block = std::chrono::milliseconds(20);
  return o;
}

void Enqueue(const Job& job, int n) {
  auto stream = TaskStream::Open(job.endpoint, TaskStreamOptions{job.name});
  ASSERT_TRUE(stream.ok()) << stream.status().ToString();
  ASSERT_TRUE((*stream)->CreateJob(JobRecord{"{}", "sqlite:/x.db", "now"}).ok());
  std::vector<SourceTask> tasks;
  // Paths that exist, so a skipped source is acked (not buried as missing).
  for (int i = 0; i < n; ++i) tasks.push_back(SourceTask{"/", "t" + std::to_string(i), "r", 1, 1});
  ASSERT_TRUE((*stream)->Enqueue(tasks).ok());
}

JobStatus Summary(const Job& job) {
  auto stream = TaskStream::Open(job.endpoint, TaskStreamOptions{job.name});
  EXPECT_TRUE(stream.ok());
  auto s = (*stream)->Summary();
  EXPECT_TRUE(s.ok()) << s.status().ToString();
  return s.ok() ? *s : JobStatus{};
}

TEST(TaskFeedTest, EverySourceIsHandedOutOnceAndAckedFromManyThreads) {
  SLUICE_REQUIRE_REDIS(url);
  Job job{url, redistest::UniqueName("feed-acks"), *ParseRedisUrl(url)};
  Enqueue(job, 40);
  auto feed = TaskFeed::Open(FeedOptions(job, /*exit_when_idle=*/true, /*max_in_flight=*/4));
  ASSERT_TRUE(feed.ok()) << feed.status().ToString();
  TaskFeed& f = **feed;
  f.Start();
  std::atomic<bool> stopping{false};
  std::mutex mu;
  std::vector<SourceFile> handed;  // GUARDED_BY(mu)
  std::vector<std::thread> finishers;
  SourceFile file;
  // Four "readers" finish what the walker hands out; the bound of 4 in
  // flight means Next() must wait for them.
  while (f.Next(file, stopping)) {
    {
      std::lock_guard lock(mu);
      handed.push_back(file);
    }
    finishers.emplace_back([&f, id = file.relative_path, n = finishers.size()] {
      f.OnSourceDone(id, n == 7 ? SourceOutcome::kDeadLettered : SourceOutcome::kCommitted,
                     n == 7 ? Status::Corrupt("not a PDF") : Status::OK(), n == 7 ? 0 : 3);
    });
    if (finishers.size() % 4 == 0) {
      for (std::thread& t : finishers) {
        if (t.joinable()) t.join();
      }
    }
  }
  for (std::thread& t : finishers) {
    if (t.joinable()) t.join();
  }
  f.Stop();
  EXPECT_TRUE(f.error().ok()) << f.error().ToString();
  ASSERT_EQ(handed.size(), 40u);
  std::set<std::string> ids;
  for (const SourceFile& h : handed) ids.insert(h.relative_path);
  EXPECT_EQ(ids.size(), 40u);
  EXPECT_EQ(f.tasks_done(), 40u);
  const JobStatus s = Summary(job);
  EXPECT_EQ(s.done, 39u);
  EXPECT_EQ(s.dead, 1u);
  // Each done task's chunks, counted with it once; the clock of the rate set.
  EXPECT_EQ(s.chunks_stored, 39u * 3);
  EXPECT_GT(s.started_ms, 0);
  EXPECT_GE(s.last_done_ms, s.started_ms);
  EXPECT_TRUE(s.Drained());
  EXPECT_EQ(s.pending, 0u);
  EXPECT_EQ(s.in_flight, 0u);
  ASSERT_EQ(s.workers.size(), 1u);  // its last heartbeat
  EXPECT_EQ(s.workers[0].tasks_done, 40u);
}

TEST(TaskFeedTest, AStopEndsNextAndLeavesUnfinishedTasksPending) {
  SLUICE_REQUIRE_REDIS(url);
  Job job{url, redistest::UniqueName("feed-stop"), *ParseRedisUrl(url)};
  Enqueue(job, 3);
  auto feed = TaskFeed::Open(FeedOptions(job, /*exit_when_idle=*/false, /*max_in_flight=*/2));
  ASSERT_TRUE(feed.ok()) << feed.status().ToString();
  TaskFeed& f = **feed;
  std::atomic<bool> stopping{false};
  SourceFile a, b;
  ASSERT_TRUE(f.Next(a, stopping));
  ASSERT_TRUE(f.Next(b, stopping));
  // Two in flight, the bound: the next call waits until a stop.
  std::thread stopper([&] { stopping = true; });
  SourceFile c;
  EXPECT_FALSE(f.Next(c, stopping));
  stopper.join();
  f.OnSourceDone(a.relative_path, SourceOutcome::kUnchanged, Status::OK());
  f.Stop();
  const JobStatus s = Summary(job);
  EXPECT_EQ(s.done, 1u);
  EXPECT_EQ(s.in_flight, 1u);  // b: redelivered once the visibility timeout passes
  EXPECT_EQ(s.pending, 1u);    // never claimed
}

TEST(TaskFeedTest, ASourceChangedSinceTheEnqueueIsHandedOutAsItIsNow) {
  SLUICE_REQUIRE_REDIS(url);
  Job job{url, redistest::UniqueName("feed-changed"), *ParseRedisUrl(url)};
  testing::TempDir dir;
  const std::string path = dir / "a.md";
  testing::WriteFile(path, "first");
  struct stat before;
  ASSERT_EQ(::stat(path.c_str(), &before), 0);
  {
    auto stream = TaskStream::Open(job.endpoint, TaskStreamOptions{job.name});
    ASSERT_TRUE(stream.ok()) << stream.status().ToString();
    ASSERT_TRUE((*stream)->CreateJob(JobRecord{"{}", "sqlite:/x.db", "now"}).ok());
    const int64_t mtime_ns =
        static_cast<int64_t>(before.st_mtim.tv_sec) * 1000000000 + before.st_mtim.tv_nsec;
    ASSERT_TRUE((*stream)
                    ->Enqueue({SourceTask{path, "a.md", "r", static_cast<uint64_t>(before.st_size),
                                          mtime_ns}})
                    .ok());
  }
  // Rewritten after the enqueue: the worker must not take it for the old file
  // (its fingerprint would say "unchanged" and the new text never be read).
  testing::WriteFile(path, "the second, longer version");
  auto feed = TaskFeed::Open(FeedOptions(job, /*exit_when_idle=*/false, /*max_in_flight=*/1));
  ASSERT_TRUE(feed.ok()) << feed.status().ToString();
  std::atomic<bool> stopping{false};
  SourceFile file;
  ASSERT_TRUE((*feed)->Next(file, stopping));
  EXPECT_EQ(file.path, path);
  EXPECT_EQ(file.size_bytes, std::string("the second, longer version").size());
  (*feed)->OnSourceDone(file.relative_path, SourceOutcome::kCommitted, Status::OK(), 1);
  (*feed)->Stop();
  EXPECT_EQ(Summary(job).done, 1u);
}

// `path` as enqueue records it, cut into `n` ranges of 10 bytes.
void EnqueueSplitOf(const Job& job, const std::string& path, int n) {
  struct stat st;
  ASSERT_EQ(::stat(path.c_str(), &st), 0);
  const SourceTask whole{path, "big.jsonl", "r", static_cast<uint64_t>(st.st_size),
                         static_cast<int64_t>(st.st_mtim.tv_sec) * 1000000000 + st.st_mtim.tv_nsec};
  std::vector<SourceTask> ranges;
  for (int i = 0; i < n; ++i) {
    SourceTask r = whole;
    r.split = "planned";
    r.range_begin = static_cast<uint64_t>(i) * 10;
    r.range_end = static_cast<uint64_t>(i + 1) * 10;
    r.first_line = static_cast<uint64_t>(i) + 1;
    ranges.push_back(r);
  }
  auto stream = TaskStream::Open(job.endpoint, TaskStreamOptions{job.name});
  ASSERT_TRUE(stream.ok()) << stream.status().ToString();
  ASSERT_TRUE((*stream)->CreateJob(JobRecord{"{}", "sqlite:/x.db", "now"}).ok());
  ASSERT_TRUE((*stream)->EnqueueSplit(whole, ranges).ok());
}

// Ranges of one file are in flight together and finish in any order: each is
// handed out with its bytes and line, acked under its own id, and the last
// one's ack brings the whole-file pass, whose chunks are not counted again.
TEST(TaskFeedTest, RangesAreHandedOutWithTheirBytesAndAckedUnderTheirOwnIds) {
  SLUICE_REQUIRE_REDIS(url);
  Job job{url, redistest::UniqueName("feed-ranges"), *ParseRedisUrl(url)};
  testing::TempDir dir;
  const std::string path = dir / "big.jsonl";
  testing::WriteFile(path, "{\"id\":1}\n\n{\"id\":2}\n\n{\"id\":3}\n\n");
  EnqueueSplitOf(job, path, 3);
  auto feed = TaskFeed::Open(FeedOptions(job, /*exit_when_idle=*/true, /*max_in_flight=*/3));
  ASSERT_TRUE(feed.ok()) << feed.status().ToString();
  std::atomic<bool> stopping{false};
  std::vector<SourceFile> ranges(3);
  for (int i = 0; i < 3; ++i) {
    ASSERT_TRUE((*feed)->Next(ranges[static_cast<size_t>(i)], stopping));
    const SourceFile& r = ranges[static_cast<size_t>(i)];
    EXPECT_TRUE(r.IsRange());
    EXPECT_EQ(r.relative_path, "big.jsonl");
    EXPECT_EQ(r.range_begin, static_cast<uint64_t>(i) * 10);
    EXPECT_EQ(r.range_end, static_cast<uint64_t>(i + 1) * 10);
    EXPECT_EQ(r.first_line, static_cast<uint64_t>(i) + 1);
  }
  EXPECT_EQ(SourceDoneId(ranges[1]), "big.jsonl@10-20");
  (*feed)->OnSourceDone(SourceDoneId(ranges[2]), SourceOutcome::kCommitted, Status::OK(), 3);
  (*feed)->OnSourceDone(SourceDoneId(ranges[0]), SourceOutcome::kUnchanged, Status::OK(), 0);
  EXPECT_EQ(Summary(job).total, 3u);  // no pass while a range is left
  (*feed)->OnSourceDone(SourceDoneId(ranges[1]), SourceOutcome::kCommitted, Status::OK(), 4);
  SourceFile pass;
  ASSERT_TRUE((*feed)->Next(pass, stopping));
  EXPECT_FALSE(pass.IsRange());
  EXPECT_EQ(pass.path, path);
  EXPECT_EQ(SourceDoneId(pass), "big.jsonl");
  (*feed)->OnSourceDone(SourceDoneId(pass), SourceOutcome::kCommitted, Status::OK(), 7);
  SourceFile none;
  EXPECT_FALSE((*feed)->Next(none, stopping));
  (*feed)->Stop();
  const JobStatus s = Summary(job);
  EXPECT_EQ(s.total, 4u);
  EXPECT_EQ(s.done, 4u);
  EXPECT_EQ(s.chunks_stored, 7u);  // the ranges' 3 + 4; the pass rewrote them
}

// A range whose file changed since the enqueue would read other bytes at the
// old cut points: it is buried with the reason, never handed out.
TEST(TaskFeedTest, ARangeOfAFileChangedSinceTheEnqueueIsBuriedNotHandedOut) {
  SLUICE_REQUIRE_REDIS(url);
  Job job{url, redistest::UniqueName("feed-range-chg"), *ParseRedisUrl(url)};
  testing::TempDir dir;
  const std::string path = dir / "big.jsonl";
  testing::WriteFile(path, "{\"id\":1}\n\n{\"id\":2}\n\n");
  EnqueueSplitOf(job, path, 2);
  testing::WriteFile(path, "{\"id\":0}\n{\"id\":1}\n\n{\"id\":2}\n\n");
  auto feed = TaskFeed::Open(FeedOptions(job, /*exit_when_idle=*/true, /*max_in_flight=*/2));
  ASSERT_TRUE(feed.ok()) << feed.status().ToString();
  std::atomic<bool> stopping{false};
  SourceFile file;
  EXPECT_FALSE((*feed)->Next(file, stopping));
  (*feed)->Stop();
  const JobStatus s = Summary(job);
  EXPECT_EQ(s.dead, 2u);
  EXPECT_EQ(s.done, 0u);
  EXPECT_TRUE(s.Drained());
  auto stream = TaskStream::Open(job.endpoint, TaskStreamOptions{job.name});
  ASSERT_TRUE(stream.ok());
  auto dead = (*stream)->ListDead();
  ASSERT_TRUE(dead.ok());
  ASSERT_EQ(dead->size(), 2u);
  EXPECT_NE((*dead)[0].error.find("changed since the enqueue"), std::string::npos)
      << (*dead)[0].error;
  EXPECT_TRUE((*dead)[0].task.IsRange());
}

// A Redis user of the test's own that can be taken away and given back:
// while it is gone (ACL DELUSER also closes its connections) every command
// of a client logged in as it fails, as against a Redis that is down,
// without touching the Redis the other tests share.
class RevocableUser {
 public:
  RevocableUser(const std::string& url) : admin_endpoint_(*ParseRedisUrl(url)) {
    name_ = redistest::UniqueName("feed-outage");
    endpoint_ = admin_endpoint_;
    endpoint_.username = name_;
    endpoint_.password = "pw-" + name_;
    Grant();
  }
  ~RevocableUser() { Revoke(); }
  const RedisEndpoint& endpoint() const { return endpoint_; }
  void Grant() {
    Admin({"ACL", "SETUSER", name_, "on", ">" + endpoint_.password, "~*", "&*", "+@all"});
  }
  void Revoke() { Admin({"ACL", "DELUSER", name_}); }

 private:
  void Admin(const std::vector<std::string>& argv) {
    auto client = RedisClient::Connect(admin_endpoint_);
    ASSERT_TRUE(client.ok()) << client.status().ToString();
    auto reply = (*client)->Command(argv);
    ASSERT_TRUE(reply.ok()) << reply.status().ToString();
  }
  RedisEndpoint admin_endpoint_, endpoint_;
  std::string name_;
};

// A ManualClock that runs `on_sleep` with the count at every wait, so a test
// can end an outage after a given number of the feed's waits.
class HookedClock final : public Clock {
 public:
  TimePoint Now() const override { return clock_.Now(); }
  void SleepFor(Duration d) const override {
    clock_.SleepFor(d);
    if (on_sleep) on_sleep(clock_.sleeps());
  }
  int64_t sleeps() const { return clock_.sleeps(); }
  std::function<void(int64_t)> on_sleep;

 private:
  ManualClock clock_;
};

TEST(TaskFeedTest, AnOutageLongerThanTheTimeoutEndsTheFeedWithItsError) {
  SLUICE_REQUIRE_REDIS(url);
  Job job{url, redistest::UniqueName("feed-outage"), *ParseRedisUrl(url)};
  Enqueue(job, 1);
  RevocableUser user(url);
  HookedClock clock;
  TaskFeedOptions options = FeedOptions(job, /*exit_when_idle=*/true, 1);
  options.endpoint = user.endpoint();
  options.outage.give_up_after = std::chrono::seconds(30);
  options.clock = &clock;
  auto feed = TaskFeed::Open(options);
  ASSERT_TRUE(feed.ok()) << feed.status().ToString();
  user.Revoke();
  std::atomic<bool> stopping{false};
  SourceFile file;
  EXPECT_FALSE((*feed)->Next(file, stopping));
  // It gave up on the clock's time, waiting with backoff (not at once, not
  // after a count of tries), and says why.
  EXPECT_GT(clock.Now() - TimePoint{}, std::chrono::seconds(30));
  EXPECT_LT(clock.Now() - TimePoint{}, std::chrono::seconds(36));
  EXPECT_GT(clock.sleeps(), 6);
  EXPECT_NE((*feed)->error().ToString().find("Redis unreachable for more than 30 s"),
            std::string::npos)
      << (*feed)->error().ToString();
  EXPECT_EQ((*feed)->error().ToString().find(user.endpoint().password), std::string::npos);
  EXPECT_EQ(Summary(job).pending, 1u);  // the task is still there for a worker
}

TEST(TaskFeedTest, AnOutageShorterThanTheTimeoutIsRiddenOut) {
  SLUICE_REQUIRE_REDIS(url);
  Job job{url, redistest::UniqueName("feed-blip"), *ParseRedisUrl(url)};
  Enqueue(job, 1);
  RevocableUser user(url);
  HookedClock clock;
  TaskFeedOptions options = FeedOptions(job, /*exit_when_idle=*/true, 1);
  options.endpoint = user.endpoint();
  options.outage.give_up_after = std::chrono::seconds(30);
  options.clock = &clock;
  auto feed = TaskFeed::Open(options);
  ASSERT_TRUE(feed.ok()) << feed.status().ToString();
  user.Revoke();
  // Redis "comes back" during the feed's fifth wait.
  clock.on_sleep = [&](int64_t sleeps) {
    if (sleeps == 5) user.Grant();
  };
  std::atomic<bool> stopping{false};
  SourceFile file;
  ASSERT_TRUE((*feed)->Next(file, stopping)) << (*feed)->error().ToString();
  EXPECT_EQ(file.relative_path, "t0");
  EXPECT_TRUE((*feed)->error().ok());
  EXPECT_GE(clock.sleeps(), 5);
  EXPECT_LT(clock.Now() - TimePoint{}, std::chrono::seconds(30));
  (*feed)->OnSourceDone(file.relative_path, SourceOutcome::kCommitted, Status::OK(), 2);
  (*feed)->Stop();
  EXPECT_EQ(Summary(job).done, 1u);
}

}  // namespace
}  // namespace sluice
