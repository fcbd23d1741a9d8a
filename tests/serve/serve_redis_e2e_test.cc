// `sluice serve --redis` end to end: the real binary hands each job to a
// Redis job (the test Redis of scripts/test-services.sh, reached through an
// ACL user with a password, so the password has somewhere to leak), real
// `sluice worker` processes drain it, and the job's state, progress and
// report come back over the same HTTP API as an in-process job's. The
// simulated API runs in this process. Every wait is on a condition (an
// event, a GET, an exit) with a deadline, never a sleep.
#include <libpq-fe.h>
#include <signal.h>

#include <gtest/gtest.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <functional>
#include <thread>

#include "distributed/redis_client.h"
#include "distributed/redis_test_util.h"
#include "distributed/task_stream.h"
#include "serve/serve_process.h"
#include "sluice/mock_api.h"
#include "store/postgres/pg_test_util.h"
#include "testing/child_process.h"
#include "testing/sqlite_query.h"
#include "testing/test_util.h"

namespace sluice {
namespace {

using namespace servetest;  // NOLINT: the shared serve test helpers
using std::chrono::milliseconds;
using testing::ReadFile;
using testing::TempDir;
using testing::WriteFile;

constexpr const char* kRedisEnv = "SLUICE_SERVE_REDIS_TEST_URL";

class ServeRedisTest : public ::testing::Test {
 protected:
  void SetUp() override {
    redis_url_ = redistest::RedisUrlFromEnv();
    if (redis_url_.empty()) {
      if (redistest::ServicesRequired()) FAIL() << "SLUICE_TEST_REDIS_URL is not set";
      GTEST_SKIP() << "SLUICE_TEST_REDIS_URL not set; run under scripts/test-services.sh";
    }
    // An ACL user of its own with a password: the URL the server gets holds it.
    auto endpoint = ParseRedisUrl(redis_url_);
    ASSERT_TRUE(endpoint.ok());
    auto admin = RedisClient::Connect(*endpoint);
    ASSERT_TRUE(admin.ok()) << admin.status().ToString();
    user_ = redistest::UniqueName("serve");
    ASSERT_TRUE((*admin)
                    ->Command({"ACL", "SETUSER", user_, "on", ">" + std::string(kPassword), "~*",
                               "&*", "+@all"})
                    .ok());
    secret_url_ = "redis://" + user_ + ":" + kPassword + "@" + endpoint->host + ":" +
                  std::to_string(endpoint->port);
    ::setenv(kRedisEnv, secret_url_.c_str(), 1);
    prefix_ = redistest::UniqueName("srv") + "-";
    MockApiOptions mock;
    mock.dimensions = 16;
    mock.base_latency = milliseconds(20);
    auto server = MockApiServer::Start(mock);
    ASSERT_TRUE(server.ok()) << server.status().ToString();
    mock_ = std::move(*server);
    std::filesystem::create_directories(root());
  }
  void TearDown() override {
    if (mock_) mock_->Stop();
    if (redis_url_.empty()) return;
    auto endpoint = ParseRedisUrl(redis_url_);
    auto admin = RedisClient::Connect(*endpoint);
    if (!admin.ok()) return;
    for (const std::string& job : jobs_) {
      const std::string p = "sluice:job:{" + job + "}";
      (*admin)->Command({"DEL", p, p + ":tasks", p + ":dead", p + ":errors", p + ":workers"});
    }
    (*admin)->Command({"ACL", "DELUSER", user_});
    if (!dsn_.empty()) {
      pgtest::RawPg pg(dsn_);
      for (const std::string& t : tables_) {
        pg.Command("DROP TABLE IF EXISTS \"" + t + "\", \"" + t + "_sources\", \"" + t +
                   "_files\", \"" + t + "_embedding_cache\", \"" + t + "_run_chunks\"");
      }
    }
  }

  std::string root() const { return dir_ / "root"; }
  std::string state() const { return dir_ / "state"; }
  std::string log() const { return dir_ / "serve.log"; }
  std::vector<std::string> ServeFlags() const {
    return {"--allow-root", root(), "--redis-env", kRedisEnv, "--redis-job-prefix", prefix_};
  }
  void MakeCorpus(int files) {
    for (int i = 0; i < files; ++i) {
      WriteFile(root() + "/corpus/doc" + std::to_string(i) + ".txt",
                "Document " + std::to_string(i) + " on the spillway and the weir.\n");
    }
  }
  // The job's settings after "paths": the mock, small batches, one chunk a file.
  std::string Settings(const std::string& store) const {
    return ",\"store\":" + JsonString(store) + ",\"endpoint\":" + JsonString(mock_->BaseUrl()) +
           ",\"model\":\"mock-model\",\"batch-size\":2,\"concurrency\":1,\"store-batch\":2";
  }
  std::string CorpusJob(const std::string& store) const {
    return "{\"paths\":[" + JsonString(root() + "/corpus") + "]" + Settings(store) + "}";
  }
  // Posts a job; its id (empty on failure, with the response reported).
  std::string Submit(httplib::Client& client, const std::string& body) {
    auto r = client.Post("/v1/jobs", body, "application/json");
    EXPECT_TRUE(r) << httplib::to_string(r.error());
    if (!r) return {};
    EXPECT_EQ(r->status, 201) << r->body;
    responses_ += r->body;
    const std::string id = Json(r->body).Str("/id");
    if (!id.empty()) jobs_.push_back(prefix_ + id);
    return id;
  }
  // Follows the job's events until one satisfies `done` (or the final one
  // comes, or the bound passes); that event's data.
  std::string EventUntil(httplib::Client& client, const std::string& id,
                         const std::function<bool(Json&)>& done) {
    std::string matched;
    WatchEvents(client, id, [&](const std::string& name, const std::string& data) {
      responses_ += data;
      Json event(data);
      if (done(event) || name == "final") matched = data;
      return matched.empty();
    });
    return matched;
  }
  // Follows the job's events to its "final" one; its data.
  std::string FinalEvent(httplib::Client& client, const std::string& id) {
    std::string final_data;
    WatchEvents(client, id, [&](const std::string& name, const std::string& data) {
      responses_ += data;
      if (name == "final") final_data = data;
      return name != "final";
    });
    return final_data;
  }
  int RunWorker(const std::string& job, const std::string& log_path) {
    testing::ChildProcess worker({kSluice, "worker", "--redis-env", kRedisEnv, "--job", job,
                                  "--exit-when-idle", "--log-level", "info"},
                                 {.in = testing::ChildProcess::Null(),
                                  .out = testing::ChildProcess::File(log_path),
                                  .err = testing::ChildProcess::File(log_path + ".err")});
    EXPECT_TRUE(worker.started());
    return worker.WaitExit(kStepBound).value_or(-1);
  }
  std::unique_ptr<TaskStream> Stream(const std::string& job) {
    auto endpoint = ParseRedisUrl(secret_url_);
    auto stream = TaskStream::Open(*endpoint, TaskStreamOptions{job});
    EXPECT_TRUE(stream.ok()) << stream.status().ToString();
    return stream.ok() ? std::move(*stream) : nullptr;
  }
  void ExpectNoPasswordIn(const std::string& what, const std::string& text) {
    EXPECT_EQ(text.find(kPassword), std::string::npos) << what << ": " << text;
  }

  static constexpr const char* kPassword = "pw-s3cret-9f2b";
  TempDir dir_;
  std::string redis_url_, secret_url_, user_, prefix_, dsn_;
  std::vector<std::string> jobs_, tables_;
  std::unique_ptr<MockApiServer> mock_;
  std::string responses_;  // every response body seen, for the password check
};

TEST_F(ServeRedisTest, TwoWorkersDrainAServedJobAndItsCountsAreTheStores) {
  SLUICE_REQUIRE_DSN(dsn, "SLUICE_TEST_PG_DSN");
  dsn_ = dsn;
  const std::string table = pgtest::UniqueTable("serve_redis");
  tables_.push_back(table);
  constexpr int kFiles = 16;
  MakeCorpus(kFiles);
  ServeProcess serve(state(), ServeFlags(), log());
  ASSERT_FALSE(serve.url().empty()) << ReadFile(log());
  httplib::Client client = serve.Client();

  // Checked as without Redis: an unknown key is 400 naming it; and what the
  // workers cannot do is refused at once too.
  auto bad = client.Post("/v1/jobs", "{\"paths\":[" + JsonString(root()) + "],\"chunk-tokenz\":64}",
                         "application/json");
  ASSERT_TRUE(bad);
  EXPECT_EQ(bad->status, 400) << bad->body;
  EXPECT_NE(bad->body.find("chunk-tokenz"), std::string::npos) << bad->body;
  auto per_process = client.Post(
      "/v1/jobs",
      "{\"paths\":[" + JsonString(root()) + "],\"report\":" + JsonString(root() + "/r.json") + "}",
      "application/json");
  ASSERT_TRUE(per_process);
  EXPECT_EQ(per_process->status, 400) << per_process->body;
  EXPECT_NE(per_process->body.find("'report'"), std::string::npos) << per_process->body;
  responses_ += bad->body + per_process->body;

  const std::string id =
      Submit(client, "{\"paths\":[" + JsonString(root() + "/corpus") + "]" + Settings(dsn) +
                         ",\"table\":" + JsonString(table) + "}");
  ASSERT_FALSE(id.empty());
  const std::string job = prefix_ + id;
  const std::string running = EventUntil(client, id, [](Json& j) {
    return j.Str("/state") == "running" && j.Int("/progress/tasks/total") == kFiles;
  });
  Json started(running);
  ASSERT_EQ(started.Str("/state"), "running") << running << ReadFile(log());
  EXPECT_EQ(started.Str("/redis_job"), job);
  EXPECT_EQ(started.Int("/progress/tasks/pending"), kFiles);

  // Two workers, as an operator would start them on this host.
  int exit_a = -1, exit_b = -1;
  std::thread second([&] { exit_b = RunWorker(job, dir_ / "worker-b.log"); });
  exit_a = RunWorker(job, dir_ / "worker-a.log");
  second.join();
  EXPECT_EQ(exit_a, 0) << ReadFile(dir_ / "worker-a.log.err");
  EXPECT_EQ(exit_b, 0) << ReadFile(dir_ / "worker-b.log.err");

  const std::string final_data = FinalEvent(client, id);
  Json done(final_data);
  ASSERT_EQ(done.Str("/state"), "succeeded") << final_data << ReadFile(log());
  EXPECT_EQ(done.Int("/progress/tasks/done"), kFiles) << final_data;
  EXPECT_EQ(done.Int("/report/tasks/total"), kFiles) << final_data;
  EXPECT_EQ(done.Int("/report/tasks/dead"), 0) << final_data;
  EXPECT_EQ(done.Str("/report/redis_job"), job);
  pgtest::RawPg pg(dsn);
  const int64_t rows = std::stoll(pg.Scalar("SELECT count(*) FROM \"" + table + "\""));
  EXPECT_EQ(rows, kFiles);
  EXPECT_EQ(done.Int("/report/chunks_stored"), rows) << final_data;
  EXPECT_EQ(done.Int("/progress/chunks_stored"), rows) << final_data;

  auto metrics = client.Get("/metrics");
  ASSERT_TRUE(metrics);
  EXPECT_EQ(metrics->status, 200);
  EXPECT_NE(metrics->body.find("sluice_serve_jobs{state=\"succeeded\"} 1"), std::string::npos)
      << metrics->body;
  auto list = client.Get("/v1/jobs");
  ASSERT_TRUE(list);
  responses_ += list->body + metrics->body;

  serve.child().Signal(SIGTERM);
  EXPECT_EQ(serve.child().WaitExit(), 0);
  ExpectNoPasswordIn("responses", responses_);
  const std::string serve_log = ReadFile(log());
  ExpectNoPasswordIn("serve log", serve_log);
  EXPECT_NE(serve_log.find("redis://" + user_ + ":***@"), std::string::npos) << serve_log;
  ExpectNoPasswordIn("job file", ReadFile(state() + "/jobs/" + id + "/job.json"));
  for (const char* worker_log :
       {"worker-a.log", "worker-a.log.err", "worker-b.log", "worker-b.log.err"}) {
    ExpectNoPasswordIn(worker_log, ReadFile(dir_ / worker_log));
  }
}

TEST_F(ServeRedisTest, ACancelRemovesTheUnclaimedTasksAndTheJobStaysCancelled) {
  constexpr int kFiles = 10, kHeld = 3;
  MakeCorpus(kFiles);
  const std::string store = root() + "/cancel.db";
  ServeProcess serve(state(), ServeFlags(), log());
  ASSERT_FALSE(serve.url().empty()) << ReadFile(log());
  httplib::Client client = serve.Client();
  const std::string id = Submit(client, CorpusJob("sqlite:" + store));
  ASSERT_FALSE(id.empty());
  const std::string job = prefix_ + id;
  Json running(EventUntil(client, id, [](Json& j) {
    return j.Str("/state") == "running" && j.Int("/progress/tasks/total") == kFiles;
  }));
  ASSERT_EQ(running.Str("/state"), "running") << ReadFile(log());

  // A worker holds some tasks (claimed, not acked) when the cancel comes.
  auto worker = Stream(job);
  ASSERT_NE(worker, nullptr);
  auto held = worker->Claim("test-worker", kHeld, milliseconds(10));
  ASSERT_TRUE(held.ok());
  ASSERT_EQ(held->size(), static_cast<size_t>(kHeld));

  auto cancelled = client.Delete("/v1/jobs/" + id);
  ASSERT_TRUE(cancelled);
  EXPECT_TRUE(cancelled->status == 200 || cancelled->status == 202) << cancelled->body;
  Json done(FinalEvent(client, id));
  ASSERT_EQ(done.Str("/state"), "cancelled") << ReadFile(log());
  EXPECT_EQ(done.Int("/report/tasks/cancelled"), kFiles - kHeld);
  EXPECT_EQ(done.Int("/report/tasks/in_flight"), kHeld);

  auto status = worker->Summary();
  ASSERT_TRUE(status.ok());
  EXPECT_EQ(status->pending, 0u);
  EXPECT_EQ(status->cancelled, static_cast<uint64_t>(kFiles - kHeld));
  EXPECT_TRUE(worker->Claim("another-worker", kFiles, milliseconds(10))->empty());
  auto endpoint = ParseRedisUrl(secret_url_);
  auto client_redis = RedisClient::Connect(*endpoint);
  ASSERT_TRUE(client_redis.ok());
  auto length = (*client_redis)->Command({"XLEN", worker->TasksKey()});
  ASSERT_TRUE(length.ok());
  EXPECT_EQ(length->integer, kHeld);  // only the held ones, until their worker acks them
  // The holder finishes and acks its tasks; the job stays cancelled.
  for (const ClaimedTask& t : *held) EXPECT_TRUE(*worker->Ack(t.id));
  EXPECT_TRUE(*worker->Idle());
  EXPECT_EQ(client.Delete("/v1/jobs/" + id)->status, 409);
  auto again = client.Get("/v1/jobs/" + id);
  ASSERT_TRUE(again);
  EXPECT_EQ(Json(again->body).Str("/state"), "cancelled");
  ExpectNoPasswordIn("responses", responses_ + again->body);
  ExpectNoPasswordIn("serve log", ReadFile(log()));
}

TEST_F(ServeRedisTest, ARestartedServerWatchesItsRunningJobAgainWithoutEnqueueingItTwice) {
  constexpr int kFiles = 12;
  MakeCorpus(kFiles);
  const std::string store = root() + "/restart.db";
  const std::string handed = dir_ / "handed-off.txt";
  // The hand-off writes the job id and its exit status: it must run once,
  // when the job ends under the second server.
  const std::vector<std::string> hook = {
      "--on-complete", "sh -c 'echo \"$SLUICE_JOB $SLUICE_EXIT_STATUS\" >> " + handed + "'"};
  std::string id;
  {
    std::vector<std::string> flags = ServeFlags();
    flags.insert(flags.end(), hook.begin(), hook.end());
    ServeProcess serve(state(), flags, log());
    ASSERT_FALSE(serve.url().empty()) << ReadFile(log());
    httplib::Client client = serve.Client();
    id = Submit(client, CorpusJob("sqlite:" + store));
    ASSERT_FALSE(id.empty());
    Json running(EventUntil(client, id, [](Json& j) {
      return j.Str("/state") == "running" && j.Int("/progress/tasks/total") == kFiles;
    }));
    ASSERT_EQ(running.Str("/state"), "running") << ReadFile(log());
    serve.child().Signal(SIGTERM);
    ASSERT_EQ(serve.child().WaitExit(), 0) << ReadFile(log());
  }
  EXPECT_FALSE(std::filesystem::exists(handed)) << "a shutdown is no end of the job";
  const std::string job = prefix_ + id;
  auto stream = Stream(job);
  ASSERT_NE(stream, nullptr);
  EXPECT_EQ(stream->Summary()->total, static_cast<uint64_t>(kFiles));

  std::vector<std::string> flags = ServeFlags();
  flags.insert(flags.end(), hook.begin(), hook.end());
  ServeProcess serve(state(), flags, log());
  ASSERT_FALSE(serve.url().empty()) << ReadFile(log());
  httplib::Client client = serve.Client();
  Json resumed(EventUntil(client, id, [](Json& j) {
    return j.Str("/state") == "running" && j.Int("/attempts") == 2 &&
           j.Int("/progress/tasks/total") == kFiles;
  }));
  ASSERT_EQ(resumed.Str("/state"), "running") << ReadFile(log());
  EXPECT_EQ(RunWorker(job, dir_ / "worker.log"), 0) << ReadFile(dir_ / "worker.log.err");
  Json done(FinalEvent(client, id));
  ASSERT_EQ(done.Str("/state"), "succeeded") << ReadFile(log());
  EXPECT_EQ(done.Int("/report/tasks/total"), kFiles) << "enqueued twice";
  EXPECT_EQ(stream->Summary()->total, static_cast<uint64_t>(kFiles));
  EXPECT_EQ(done.Int("/report/chunks_stored"), testing::StoredChunkCount(store));
  EXPECT_EQ(testing::StoredChunkCount(store), kFiles);
  std::string report_json;
  {
    auto r = client.Get("/v1/jobs/" + id);
    ASSERT_TRUE(r);
    report_json = r->body;
  }
  EXPECT_NE(report_json.find("\"handoff\":{\"command\""), std::string::npos) << report_json;
  EXPECT_EQ(ReadFile(handed), id + " 0\n");
  ExpectNoPasswordIn("serve log", ReadFile(log()));
  ExpectNoPasswordIn("responses", responses_);
}

TEST_F(ServeRedisTest, DeadTasksATakenNameAGoneJobAndABadUrlFailClearlyWithoutThePassword) {
  // A bad Redis URL: the server does not start (2), and says why.
  ::setenv("SLUICE_SERVE_REDIS_TEST_BAD_URL",
           ("http://" + user_ + ":" + kPassword + "@127.0.0.1:1").c_str(), 1);
  auto bad_url = testing::RunCommand("timeout 60 " + kSluice +
                                     " serve --listen 127.0.0.1:0 --redis-env "
                                     "SLUICE_SERVE_REDIS_TEST_BAD_URL --state-dir " +
                                     (dir_ / "state-bad"));
  EXPECT_EQ(bad_url.exit_code, 2) << bad_url.output;
  EXPECT_NE(bad_url.output.find("redis://"), std::string::npos) << bad_url.output;
  ExpectNoPasswordIn("serve output", bad_url.output);

  // One source that can never parse: its task dies, the job fails naming it.
  WriteFile(root() + "/corpus/good.txt", "A page on the sluice gate.\n");
  WriteFile(root() + "/corpus/broken.pdf", "%PDF-1.4\n1 0 obj << /Type /Catalog");  // truncated
  ServeProcess serve(state(), ServeFlags(), log());
  ASSERT_FALSE(serve.url().empty()) << ReadFile(log());
  httplib::Client client = serve.Client();
  const std::string id = Submit(client, CorpusJob("sqlite:" + root() + "/dead.db"));
  ASSERT_FALSE(id.empty());
  Json running(EventUntil(client, id, [](Json& j) { return j.Int("/progress/tasks/total") == 2; }));
  ASSERT_EQ(running.Str("/state"), "running") << ReadFile(log());
  // 3: the worker, as `sluice ingest`, says a source failed.
  EXPECT_EQ(RunWorker(prefix_ + id, dir_ / "worker.log"), 3) << ReadFile(dir_ / "worker.log.err");
  Json failed(FinalEvent(client, id));
  ASSERT_EQ(failed.Str("/state"), "failed") << ReadFile(log());
  EXPECT_NE(failed.Str("/error").find("1 of 2 tasks are dead"), std::string::npos)
      << failed.Str("/error");
  EXPECT_NE(failed.Str("/error").find("sluice dead-letter list --redis URL --job " + prefix_ + id),
            std::string::npos)
      << failed.Str("/error");
  EXPECT_EQ(failed.Int("/report/tasks/done"), 1);
  EXPECT_EQ(failed.Int("/report/tasks/dead"), 1);

  // The next id's Redis name taken already (another server on this Redis):
  // the job fails at its start, nothing is added to that Redis job.
  const std::string next =
      "j" + std::string(6 - std::to_string(std::stoi(id.substr(1)) + 1).size(), '0') +
      std::to_string(std::stoi(id.substr(1)) + 1);
  jobs_.push_back(prefix_ + next);
  auto other = Stream(prefix_ + next);
  ASSERT_NE(other, nullptr);
  ASSERT_TRUE(other->CreateJob(JobRecord{"{}", "sqlite:/elsewhere.db", "now"}).ok());
  ASSERT_EQ(Submit(client, CorpusJob("sqlite:" + root() + "/taken.db")), next);
  Json refused(FinalEvent(client, next));
  EXPECT_EQ(refused.Str("/state"), "failed") << ReadFile(log());
  EXPECT_NE(refused.Str("/error").find("exists already"), std::string::npos)
      << refused.Str("/error");
  EXPECT_EQ(other->Summary()->total, 0u);

  // A running job whose Redis keys are deleted under it fails, saying so.
  const std::string gone = Submit(client, CorpusJob("sqlite:" + root() + "/gone.db"));
  ASSERT_FALSE(gone.empty());
  Json watched(
      EventUntil(client, gone, [](Json& j) { return j.Int("/progress/tasks/total") == 2; }));
  ASSERT_EQ(watched.Str("/state"), "running") << ReadFile(log());
  {
    auto endpoint = ParseRedisUrl(secret_url_);
    auto admin = RedisClient::Connect(*endpoint);
    ASSERT_TRUE(admin.ok());
    const std::string p = "sluice:job:{" + prefix_ + gone + "}";
    ASSERT_TRUE((*admin)->Command({"DEL", p, p + ":tasks"}).ok());
  }
  Json vanished(FinalEvent(client, gone));
  EXPECT_EQ(vanished.Str("/state"), "failed") << ReadFile(log());
  EXPECT_NE(vanished.Str("/error").find("is gone"), std::string::npos) << vanished.Str("/error");
  ExpectNoPasswordIn("responses", responses_);
  ExpectNoPasswordIn("serve log", ReadFile(log()));
}

}  // namespace
}  // namespace sluice
