// TaskStream against the test Redis: enqueue, claim, ack; a task never acked
// handed to another consumer after the visibility timeout; a poison task in
// the dead stream after max deliveries; retry; heartbeats in the summary.
// Each test uses its own job name (tests run in parallel on one Redis).
#include "distributed/task_stream.h"

#include <gtest/gtest.h>

#include <chrono>
#include <set>

#include "distributed/redis_test_util.h"

namespace sluice {
namespace {

using std::chrono::milliseconds;
using Clock = std::chrono::steady_clock;

std::unique_ptr<TaskStream> OpenJob(const std::string& url, const std::string& job,
                                    milliseconds visibility = milliseconds(60000),
                                    int max_deliveries = 5) {
  auto endpoint = ParseRedisUrl(url);
  EXPECT_TRUE(endpoint.ok());
  if (!endpoint.ok()) return nullptr;
  auto stream = TaskStream::Open(*endpoint, TaskStreamOptions{job, visibility, max_deliveries});
  EXPECT_TRUE(stream.ok()) << stream.status().ToString();
  return stream.ok() ? std::move(*stream) : nullptr;
}

std::vector<SourceTask> Tasks(int n) {
  std::vector<SourceTask> tasks;
  for (int i = 0; i < n; ++i) {
    tasks.push_back(SourceTask{"/corpus/doc" + std::to_string(i) + ".md",
                               "doc" + std::to_string(i) + ".md", "corpus",
                               static_cast<uint64_t>(100 + i), 1700000000000000000LL + i});
  }
  return tasks;
}

void Cleanup(const std::string& url, const std::string& job) {
  auto endpoint = ParseRedisUrl(url);
  auto client = RedisClient::Connect(*endpoint);
  if (!client.ok()) return;
  const std::string p = "sluice:job:{" + job + "}";
  (*client)->Command({"DEL", p, p + ":tasks", p + ":dead", p + ":errors", p + ":workers",
                      p + ":splits", p + ":split:1", p + ":split:2"});
}

// A JSONL file cut into `n` ranges of 100 bytes (what sluice enqueue plans).
std::vector<SourceTask> Ranges(const SourceTask& whole, int n) {
  std::vector<SourceTask> ranges;
  for (int i = 0; i < n; ++i) {
    SourceTask r = whole;
    r.split = "planned";
    r.range_begin = static_cast<uint64_t>(i) * 100;
    r.range_end = static_cast<uint64_t>(i + 1) * 100;
    r.first_line = static_cast<uint64_t>(i) * 10 + 1;
    ranges.push_back(r);
  }
  return ranges;
}

TEST(TaskStreamTest, RefusesJobNamesThatWouldEscapeTheirKeys) {
  EXPECT_TRUE(ValidateJobName("nightly-2026.12_06").ok());
  for (const char* bad : {"", "a b", "x}y", "a:b", "a*"}) {
    EXPECT_FALSE(ValidateJobName(bad).ok()) << bad;
  }
}

TEST(TaskStreamTest, EnqueueClaimAckCountsEveryTaskOnce) {
  SLUICE_REQUIRE_REDIS(url);
  const std::string job = redistest::UniqueName("ts-basic");
  auto stream = OpenJob(url, job);
  ASSERT_NE(stream, nullptr);
  ASSERT_TRUE(
      stream->CreateJob(JobRecord{"{\"chunk-tokens\":[\"64\"]}", "postgres://h/db", "now"}).ok());
  auto job_record = stream->LoadJob();
  ASSERT_TRUE(job_record.ok()) << job_record.status().ToString();
  EXPECT_EQ(job_record->options_json, "{\"chunk-tokens\":[\"64\"]}");
  EXPECT_EQ(job_record->store_uri, "postgres://h/db");
  ASSERT_TRUE(stream->Enqueue(Tasks(5)).ok());

  auto status = stream->Summary();
  ASSERT_TRUE(status.ok()) << status.status().ToString();
  EXPECT_EQ(status->total, 5u);
  EXPECT_EQ(status->pending, 5u);

  auto first = stream->Claim("a", 3, milliseconds(10));
  ASSERT_TRUE(first.ok()) << first.status().ToString();
  ASSERT_EQ(first->size(), 3u);
  EXPECT_EQ((*first)[0].task.path, "/corpus/doc0.md");
  EXPECT_EQ((*first)[0].task.relative_path, "doc0.md");
  EXPECT_EQ((*first)[0].task.root_name, "corpus");
  EXPECT_EQ((*first)[0].task.size_bytes, 100u);
  EXPECT_EQ((*first)[0].task.mtime_ns, 1700000000000000000LL);
  auto second = stream->Claim("b", 10, milliseconds(10));
  ASSERT_TRUE(second.ok());
  ASSERT_EQ(second->size(), 2u);
  EXPECT_TRUE(stream->Claim("b", 10, milliseconds(10))->empty());  // nothing new

  status = stream->Summary();
  EXPECT_EQ(status->pending, 0u);
  EXPECT_EQ(status->in_flight, 5u);
  EXPECT_FALSE(*stream->Idle());

  for (const ClaimedTask& t : *first) EXPECT_TRUE(*stream->Ack(t.id));
  EXPECT_FALSE(*stream->Ack((*first)[0].id));  // a second ack counts nothing
  for (const ClaimedTask& t : *second) EXPECT_TRUE(*stream->Ack(t.id));
  status = stream->Summary();
  EXPECT_EQ(status->done, 5u);
  EXPECT_EQ(status->in_flight, 0u);
  EXPECT_EQ(status->pending, 0u);
  EXPECT_EQ(status->dead, 0u);
  EXPECT_TRUE(*stream->Idle());
  Cleanup(url, job);
}

TEST(TaskStreamTest, TaskNeverAckedIsReclaimedByAnotherWorkerAfterTheVisibilityTimeout) {
  SLUICE_REQUIRE_REDIS(url);
  const std::string job = redistest::UniqueName("ts-reclaim");
  auto stream = OpenJob(url, job, milliseconds(50));
  ASSERT_NE(stream, nullptr);
  ASSERT_TRUE(stream->CreateJob(JobRecord{"{}", "sqlite:x.db", "now"}).ok());
  ASSERT_TRUE(stream->Enqueue(Tasks(1)).ok());
  auto claimed = stream->Claim("dies", 1, milliseconds(10));
  ASSERT_TRUE(claimed.ok());
  ASSERT_EQ(claimed->size(), 1u);
  // Not before the timeout (it was claimed just now)...
  auto early = stream->ReclaimStale("survivor", 10);
  ASSERT_TRUE(early.ok()) << early.status().ToString();
  std::vector<ClaimedTask> reclaimed = *early;
  // ...but once it has been idle that long. Polled with a deadline, no sleep.
  const auto deadline = Clock::now() + std::chrono::seconds(10);
  while (reclaimed.empty() && Clock::now() < deadline) {
    auto r = stream->ReclaimStale("survivor", 10);
    ASSERT_TRUE(r.ok()) << r.status().ToString();
    reclaimed = *r;
  }
  ASSERT_EQ(reclaimed.size(), 1u);
  EXPECT_EQ(reclaimed[0].id, (*claimed)[0].id);
  EXPECT_EQ(reclaimed[0].task.path, "/corpus/doc0.md");
  EXPECT_TRUE(*stream->Ack(reclaimed[0].id, 7));
  // The dead worker's late ack counts nothing, neither the task nor its chunks.
  EXPECT_FALSE(*stream->Ack((*claimed)[0].id, 7));
  auto status = stream->Summary();
  EXPECT_EQ(status->done, 1u);
  EXPECT_EQ(status->chunks_stored, 7u);
  EXPECT_EQ(status->in_flight, 0u);
  Cleanup(url, job);
}

TEST(TaskStreamTest, ExtendKeepsALiveWorkersTaskFromBeingReclaimed) {
  SLUICE_REQUIRE_REDIS(url);
  const std::string job = redistest::UniqueName("ts-extend");
  auto stream = OpenJob(url, job, milliseconds(300));
  ASSERT_NE(stream, nullptr);
  ASSERT_TRUE(stream->CreateJob(JobRecord{"{}", "sqlite:x.db", "now"}).ok());
  ASSERT_TRUE(stream->Enqueue(Tasks(1)).ok());
  auto claimed = stream->Claim("slow", 1, milliseconds(10));
  ASSERT_EQ(claimed->size(), 1u);
  // Extended more often than the timeout: never reclaimed, however long it takes.
  const auto until = Clock::now() + milliseconds(900);
  while (Clock::now() < until) {
    ASSERT_TRUE(stream->Extend("slow", {(*claimed)[0].id}).ok());
    auto r = stream->ReclaimStale("thief", 10);
    ASSERT_TRUE(r.ok());
    ASSERT_TRUE(r->empty());
  }
  EXPECT_TRUE(*stream->Ack((*claimed)[0].id));
  Cleanup(url, job);
}

TEST(TaskStreamTest, PoisonTaskGoesToTheDeadStreamAfterMaxDeliveriesAndCanBeRetried) {
  SLUICE_REQUIRE_REDIS(url);
  const std::string job = redistest::UniqueName("ts-poison");
  auto stream = OpenJob(url, job, milliseconds(20), /*max_deliveries=*/3);
  ASSERT_NE(stream, nullptr);
  ASSERT_TRUE(stream->CreateJob(JobRecord{"{}", "sqlite:x.db", "now"}).ok());
  ASSERT_TRUE(stream->Enqueue(Tasks(1)).ok());
  auto claimed = stream->Claim("w1", 1, milliseconds(10));
  ASSERT_EQ(claimed->size(), 1u);
  ASSERT_TRUE(stream->NoteError((*claimed)[0].id, "parser crashed").ok());
  // Every worker that takes it dies: reclaimed twice more (3 deliveries), then buried.
  int reclaims = 0;
  const auto deadline = Clock::now() + std::chrono::seconds(10);
  while (Clock::now() < deadline) {
    auto r = stream->ReclaimStale("w" + std::to_string(reclaims + 2), 1);
    ASSERT_TRUE(r.ok()) << r.status().ToString();
    reclaims += static_cast<int>(r->size());
    if (stream->Summary()->dead == 1) break;
  }
  EXPECT_EQ(reclaims, 2);
  auto status = stream->Summary();
  EXPECT_EQ(status->dead, 1u);
  EXPECT_EQ(status->in_flight, 0u);
  EXPECT_EQ(status->pending, 0u);
  EXPECT_TRUE(*stream->Idle());
  auto dead = stream->ListDead();
  ASSERT_TRUE(dead.ok()) << dead.status().ToString();
  ASSERT_EQ(dead->size(), 1u);
  EXPECT_EQ((*dead)[0].task_id, (*claimed)[0].id);
  EXPECT_EQ((*dead)[0].task.path, "/corpus/doc0.md");
  EXPECT_EQ((*dead)[0].deliveries, 3);
  EXPECT_NE((*dead)[0].error.find("delivered 3 times"), std::string::npos) << (*dead)[0].error;
  EXPECT_NE((*dead)[0].error.find("parser crashed"), std::string::npos) << (*dead)[0].error;

  // Retry puts it back as a new task.
  auto retried = stream->RetryDead();
  ASSERT_TRUE(retried.ok()) << retried.status().ToString();
  EXPECT_EQ(*retried, 1u);
  status = stream->Summary();
  EXPECT_EQ(status->dead, 0u);
  EXPECT_EQ(status->pending, 1u);
  auto again = stream->Claim("w9", 1, milliseconds(10));
  ASSERT_EQ(again->size(), 1u);
  EXPECT_EQ((*again)[0].task.relative_path, "doc0.md");
  EXPECT_TRUE(stream->ListDead()->empty());
  Cleanup(url, job);
}

TEST(TaskStreamTest, BuryMovesATaskThatCannotSucceedToTheDeadStreamAtOnce) {
  SLUICE_REQUIRE_REDIS(url);
  const std::string job = redistest::UniqueName("ts-bury");
  auto stream = OpenJob(url, job);
  ASSERT_NE(stream, nullptr);
  ASSERT_TRUE(stream->CreateJob(JobRecord{"{}", "sqlite:x.db", "now"}).ok());
  ASSERT_TRUE(stream->Enqueue(Tasks(2)).ok());
  auto claimed = stream->Claim("w", 2, milliseconds(10));
  ASSERT_EQ(claimed->size(), 2u);
  EXPECT_TRUE(*stream->Bury((*claimed)[0].id, "corrupt: not a PDF"));
  EXPECT_FALSE(*stream->Bury((*claimed)[0].id, "again"));
  EXPECT_TRUE(*stream->Ack((*claimed)[1].id));
  auto status = stream->Summary();
  EXPECT_EQ(status->done, 1u);
  EXPECT_EQ(status->dead, 1u);
  EXPECT_TRUE(*stream->Idle());
  auto dead = stream->ListDead();
  ASSERT_EQ(dead->size(), 1u);
  EXPECT_EQ((*dead)[0].error, "corrupt: not a PDF");
  EXPECT_EQ((*dead)[0].deliveries, 1);
  Cleanup(url, job);
}

TEST(TaskStreamTest, HeartbeatsListLiveWorkers) {
  SLUICE_REQUIRE_REDIS(url);
  const std::string job = redistest::UniqueName("ts-heartbeat");
  auto stream = OpenJob(url, job);
  ASSERT_NE(stream, nullptr);
  ASSERT_TRUE(stream->CreateJob(JobRecord{"{}", "sqlite:x.db", "now"}).ok());
  ASSERT_TRUE(
      stream->Heartbeat(WorkerStatus{"host-1", "host", 42, 7, 0}, milliseconds(60000)).ok());
  ASSERT_TRUE(
      stream->Heartbeat(WorkerStatus{"host-2", "host", 43, 1, 0}, milliseconds(60000)).ok());
  auto status = stream->Summary();
  ASSERT_TRUE(status.ok());
  ASSERT_EQ(status->workers.size(), 2u);
  EXPECT_EQ(status->workers[0].consumer, "host-1");
  EXPECT_EQ(status->workers[0].pid, 42);
  EXPECT_EQ(status->workers[0].tasks_done, 7u);
  EXPECT_LT(status->workers[0].heartbeat_age_ms, 60000);
  Cleanup(url, job);
  auto endpoint = ParseRedisUrl(url);
  auto client = RedisClient::Connect(*endpoint);
  const std::string p = "sluice:job:{" + job + "}";
  (*client)->Command({"DEL", p + ":worker:host-1", p + ":worker:host-2"});
}

TEST(TaskStreamTest, TheLastRangesAckAddsTheWholeFilePassOnce) {
  SLUICE_REQUIRE_REDIS(url);
  const std::string job = redistest::UniqueName("ts-split");
  auto stream = OpenJob(url, job);
  ASSERT_NE(stream, nullptr);
  ASSERT_TRUE(stream->CreateJob(JobRecord{"{}", "postgres://h/db", "now"}).ok());
  const SourceTask whole{"/corpus/big.jsonl", "big.jsonl", "corpus", 300, 1700000000000000007LL};
  ASSERT_TRUE(stream->EnqueueSplit(whole, Ranges(whole, 3)).ok());
  auto status = stream->Summary();
  ASSERT_TRUE(status.ok());
  EXPECT_EQ(status->total, 3u);

  auto claimed = stream->Claim("a", 10, milliseconds(10));
  ASSERT_TRUE(claimed.ok());
  ASSERT_EQ(claimed->size(), 3u);
  for (int i = 0; i < 3; ++i) {
    const SourceTask& t = (*claimed)[static_cast<size_t>(i)].task;
    EXPECT_TRUE(t.IsRange());
    EXPECT_FALSE(t.whole_file_pass);
    EXPECT_EQ(t.path, whole.path);
    EXPECT_EQ(t.relative_path, whole.relative_path);
    EXPECT_EQ(t.size_bytes, 300u);
    EXPECT_EQ(t.mtime_ns, whole.mtime_ns);
    EXPECT_EQ(t.range_begin, static_cast<uint64_t>(i) * 100);
    EXPECT_EQ(t.range_end, static_cast<uint64_t>(i + 1) * 100);
    EXPECT_EQ(t.first_line, static_cast<uint64_t>(i) * 10 + 1);
  }
  const std::string split = (*claimed)[0].task.split;
  // Two of three acked (one twice): no whole-file pass yet.
  ASSERT_TRUE(*stream->Ack((*claimed)[2].id, 5, split));
  ASSERT_FALSE(*stream->Ack((*claimed)[2].id, 5, split));
  ASSERT_TRUE(*stream->Ack((*claimed)[0].id, 7, split));
  auto none = stream->Claim("b", 10, milliseconds(10));
  ASSERT_TRUE(none.ok());
  EXPECT_TRUE(none->empty());
  // The last one: the pass is added, counted as a task.
  ASSERT_TRUE(*stream->Ack((*claimed)[1].id, 6, split));
  ASSERT_FALSE(*stream->Ack((*claimed)[1].id, 6, split));
  auto pass = stream->Claim("b", 10, milliseconds(10));
  ASSERT_TRUE(pass.ok());
  ASSERT_EQ(pass->size(), 1u);
  const SourceTask& p = (*pass)[0].task;
  EXPECT_TRUE(p.whole_file_pass);
  EXPECT_FALSE(p.IsRange());
  EXPECT_EQ(p.path, whole.path);
  EXPECT_EQ(p.relative_path, whole.relative_path);
  EXPECT_EQ(p.root_name, whole.root_name);
  EXPECT_EQ(p.size_bytes, whole.size_bytes);
  EXPECT_EQ(p.mtime_ns, whole.mtime_ns);
  status = stream->Summary();
  ASSERT_TRUE(status.ok());
  EXPECT_EQ(status->total, 4u);
  EXPECT_EQ(status->done, 3u);
  EXPECT_EQ(status->chunks_stored, 18u);
  ASSERT_TRUE(*stream->Ack((*pass)[0].id, 0));
  status = stream->Summary();
  ASSERT_TRUE(status.ok());
  EXPECT_TRUE(status->Drained());
  EXPECT_EQ(status->done, 4u);
  Cleanup(url, job);
}

TEST(TaskStreamTest, ABuriedRangeHoldsTheWholeFilePassUntilItIsRetriedAndDone) {
  SLUICE_REQUIRE_REDIS(url);
  const std::string job = redistest::UniqueName("ts-split-dead");
  auto stream = OpenJob(url, job);
  ASSERT_NE(stream, nullptr);
  ASSERT_TRUE(stream->CreateJob(JobRecord{"{}", "postgres://h/db", "now"}).ok());
  const SourceTask whole{"/corpus/big.jsonl", "big.jsonl", "corpus", 200, 1700000000000000007LL};
  ASSERT_TRUE(stream->EnqueueSplit(whole, Ranges(whole, 2)).ok());
  auto claimed = stream->Claim("a", 10, milliseconds(10));
  ASSERT_TRUE(claimed.ok());
  ASSERT_EQ(claimed->size(), 2u);
  const std::string split = (*claimed)[0].task.split;
  ASSERT_TRUE(*stream->Bury((*claimed)[0].id, "changed since the enqueue"));
  ASSERT_TRUE(*stream->Ack((*claimed)[1].id, 4, split));
  auto status = stream->Summary();
  ASSERT_TRUE(status.ok());
  EXPECT_TRUE(status->Drained());  // no pass: the file is never committed from mixed ranges
  EXPECT_EQ(status->total, 2u);
  EXPECT_EQ(status->dead, 1u);
  auto dead = stream->ListDead();
  ASSERT_TRUE(dead.ok());
  ASSERT_EQ(dead->size(), 1u);
  EXPECT_TRUE((*dead)[0].task.IsRange());
  EXPECT_EQ((*dead)[0].task.range_end, 100u);
  // Retried (the cause fixed) and done: now the pass comes.
  ASSERT_EQ(*stream->RetryDead(), 1u);
  auto again = stream->Claim("a", 10, milliseconds(10));
  ASSERT_TRUE(again.ok());
  ASSERT_EQ(again->size(), 1u);
  EXPECT_EQ((*again)[0].task.split, split);
  EXPECT_EQ((*again)[0].task.range_begin, 0u);
  ASSERT_TRUE(*stream->Ack((*again)[0].id, 3, split));
  auto pass = stream->Claim("a", 10, milliseconds(10));
  ASSERT_TRUE(pass.ok());
  ASSERT_EQ(pass->size(), 1u);
  EXPECT_TRUE((*pass)[0].task.whole_file_pass);
  Cleanup(url, job);
}

TEST(TaskStreamTest, MissingJobIsNotFound) {
  SLUICE_REQUIRE_REDIS(url);
  auto stream = OpenJob(url, redistest::UniqueName("ts-missing"));
  ASSERT_NE(stream, nullptr);
  EXPECT_EQ(stream->LoadJob().status().code(), StatusCode::kNotFound);
}

}  // namespace
}  // namespace sluice

namespace sluice {
namespace {

TEST(TaskStreamTest, RemoveUnclaimedDropsOnlyWhatNoWorkerHolds) {
  SLUICE_REQUIRE_REDIS(url);
  const std::string job = redistest::UniqueName("ts-cancel");
  auto stream = OpenJob(url, job);
  ASSERT_NE(stream, nullptr);
  ASSERT_TRUE(stream->CreateJob(JobRecord{"{}", "sqlite:/tmp/x.db", "now"}).ok());
  ASSERT_TRUE(stream->Enqueue(Tasks(6)).ok());
  auto held = stream->Claim("a", 2, milliseconds(10));
  ASSERT_TRUE(held.ok() && held->size() == 2u);
  ASSERT_TRUE(*stream->Ack((*held)[0].id));

  auto removed = stream->RemoveUnclaimed();
  ASSERT_TRUE(removed.ok()) << removed.status().ToString();
  EXPECT_EQ(*removed, 4u);
  auto status = stream->Summary();
  ASSERT_TRUE(status.ok());
  EXPECT_EQ(status->total, 6u);
  EXPECT_EQ(status->cancelled, 4u);
  EXPECT_EQ(status->pending, 0u);
  EXPECT_EQ(status->in_flight, 1u);  // the worker still holds it, to finish and ack
  EXPECT_TRUE(stream->Claim("b", 10, milliseconds(10))->empty());
  ASSERT_TRUE(*stream->Ack((*held)[1].id));
  EXPECT_TRUE(*stream->Idle());
  EXPECT_EQ(*stream->RemoveUnclaimed(), 0u);  // nothing left: idempotent
  Cleanup(url, job);
}

}  // namespace
}  // namespace sluice
