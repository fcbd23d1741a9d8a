// Redis restarted in the middle of a distributed job (docs/DISTRIBUTED.md,
// failure cases): the test runs its own redis-server (append-only file,
// fsync on every write, no RDB snapshots) on a free loopback port, two
// `sluice worker --exit-when-idle` processes ingest a corpus through a slow
// simulated API into the test PostgreSQL, and once some tasks are done and
// some are not, Redis is stopped (SIGTERM, exit awaited) and started again on
// the same port from the same directory. The workers must ride out the
// outage (their task feed and heartbeat retry, acks that failed are redone
// after the visibility timeout) and finish the job: every task done once,
// and the store holding exactly the chunks of a single-process ingest of the
// same corpus (ids, texts, vectors, fingerprints), each once, with the job's
// chunk count equal to the rows stored.
//
// No sleep synchronises anything: each step waits for an observable state
// (Redis answering PING, the done counter, the workers' logs) with a bound
// that only turns a hang into a failure.
#include <libpq-fe.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <csignal>
#include <cstdlib>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "distributed/redis_client.h"
#include "distributed/redis_test_util.h"
#include "sluice/mock_api.h"
#include "store/postgres/pg_table_dump.h"
#include "store/postgres/pg_test_util.h"
#include "testing/child_process.h"
#include "testing/test_util.h"
#include "testing/wait.h"

namespace sluice {
namespace {

using pgtest::Dump;
using testing::ChildProcess;
using testing::ReadFile;
using testing::RunCommand;
using testing::TempDir;
using testing::WaitUntil;
using testing::WriteFile;

const std::string kSluice = SLUICE_BINARY;
constexpr const char* kRedisServer = "/usr/bin/redis-server";
// Generous: a loaded 2-core machine running the ASan build is slow.
constexpr std::chrono::seconds kBound{120};

std::string Quote(const std::string& s) { return "'" + s + "'"; }

// A port no one listens on now (the kernel's choice for an ephemeral bind).
int FreeLoopbackPort() {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) return -1;
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = 0;
  socklen_t len = sizeof(addr);
  int port = -1;
  if (::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0 &&
      ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) == 0) {
    port = ntohs(addr.sin_port);
  }
  ::close(fd);
  return port;
}

// This test's own redis-server: durable (every write fsynced to the
// append-only file before it is acknowledged), in `dir`, on `port`.
std::unique_ptr<ChildProcess> StartRedis(const std::string& dir, int port, const std::string& log) {
  return std::make_unique<ChildProcess>(
      std::vector<std::string>{kRedisServer, "--port", std::to_string(port), "--bind", "127.0.0.1",
                               "--dir", dir, "--appendonly", "yes", "--appendfsync", "always",
                               "--save", "", "--daemonize", "no"},
      ChildProcess::Streams{ChildProcess::Null(), ChildProcess::File(log, /*append=*/true),
                            ChildProcess::File(log, /*append=*/true)});
}

bool Answers(const RedisEndpoint& endpoint) {
  auto client = RedisClient::Connect(endpoint, std::chrono::milliseconds(500));
  if (!client.ok()) return false;
  auto pong = (*client)->Command({"PING"});
  return pong.ok() && pong->str == "PONG";
}

std::string Paragraphs(int n, const std::string& word) {
  std::string s;
  for (int i = 0; i < n; ++i) {
    s += "Paragraph " + std::to_string(i) + " about " + word + ". ";
    for (int j = 0; j < 25; ++j) s += word + std::to_string(j * 7 + i) + " ";
    s += "\n\n";
  }
  return s;
}

long long ChunkRows(const std::string& dsn, const std::string& table) {
  pgtest::RawPg pg(dsn);
  PGresult* r = PQexec(pg.get(), ("SELECT count(*) FROM \"" + table + "\"").c_str());
  long long n = -1;
  if (PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) == 1) {
    n = std::atoll(PQgetvalue(r, 0, 0));
  }
  PQclear(r);
  return n;
}

// The integer after `"key":` in a JSON text, or -1.
long long JsonInteger(const std::string& json, const std::string& key) {
  const size_t at = json.find("\"" + key + "\":");
  if (at == std::string::npos) return -1;
  return std::atoll(json.c_str() + at + key.size() + 3);
}

class RedisRestartE2eTest : public ::testing::Test {
 protected:
  void TearDown() override {
    if (server_) server_->Stop();
    if (dsn_.empty()) return;
    pgtest::RawPg pg(dsn_);
    if (!pg.ok()) return;
    for (const std::string& t : tables_) {
      pg.Command("DROP TABLE IF EXISTS \"" + t + "\", \"" + t + "_sources\", \"" + t +
                 "_files\", \"" + t + "_embedding_cache\", \"" + t + "_run_chunks\"");
    }
  }
  std::string dsn_;
  std::vector<std::string> tables_;
  std::unique_ptr<MockApiServer> server_;
};

TEST_F(RedisRestartE2eTest, WorkersRideOutARedisRestartAndStoreEveryChunkOnce) {
  SLUICE_REQUIRE_DSN(dsn, "SLUICE_TEST_PG_DSN");
  dsn_ = dsn;
  TempDir dir;
  constexpr int kDocs = 40;
  for (int i = 0; i < kDocs; ++i) {
    WriteFile(dir / ("corpus/d" + std::to_string(i % 4) + "/doc" + std::to_string(i) + ".md"),
              "# Doc " + std::to_string(i) + "\n\n" + Paragraphs(5, "r" + std::to_string(i)));
  }
  // Slow enough that the job is still running when Redis goes away.
  MockApiOptions mock;
  mock.dimensions = 16;
  mock.base_latency = std::chrono::milliseconds(300);
  auto server = MockApiServer::Start(mock);
  ASSERT_TRUE(server.ok()) << server.status().ToString();
  server_ = std::move(*server);
  const std::string ref_table = pgtest::UniqueTable("restart_ref");
  const std::string job_table = pgtest::UniqueTable("restart_job");
  tables_ = {ref_table, job_table};
  const auto settings = [&](const std::string& table) {
    std::string s;
    for (const std::string& a :
         {std::string("--store"), dsn, std::string("--table"), table, std::string("--endpoint"),
          server_->BaseUrl(), std::string("--model"), std::string("mock-model"),
          std::string("--concurrency"), std::string("2"), std::string("--batch-size"),
          std::string("4"), std::string("--chunk-tokens"), std::string("48"),
          std::string("--chunk-overlap"), std::string("0"), std::string("--store-batch"),
          std::string("8")}) {
      s += " " + Quote(a);
    }
    return s;
  };

  // The reference: one process, the whole corpus.
  auto ref = RunCommand(kSluice + " ingest " + Quote(dir / "corpus") +
                        " --no-progress --no-aggregate --log-level error --out " +
                        Quote(dir / "ref-out") + settings(ref_table));
  ASSERT_EQ(ref.exit_code, 0) << ref.output;
  const std::vector<std::string> reference = Dump(dsn, ref_table);
  ASSERT_GT(reference.size(), 100u);

  // Redis, durable, in its own folder.
  const int port = FreeLoopbackPort();
  ASSERT_GT(port, 0);
  const std::string redis_dir = dir / "redis";
  std::filesystem::create_directories(redis_dir);
  const std::string redis_log = dir / "redis.log";
  const std::string redis_url = "redis://127.0.0.1:" + std::to_string(port);
  auto endpoint = ParseRedisUrl(redis_url);
  ASSERT_TRUE(endpoint.ok());
  std::unique_ptr<ChildProcess> redis = StartRedis(redis_dir, port, redis_log);
  ASSERT_TRUE(redis->started());
  ASSERT_TRUE(WaitUntil([&] { return Answers(*endpoint); }, kBound)) << ReadFile(redis_log);

  const std::string job = redistest::UniqueName("restart");
  const std::string prefix = "sluice:job:{" + job + "}";
  auto enqueued = RunCommand(kSluice + " enqueue " + Quote(dir / "corpus") + " --redis " +
                             Quote(redis_url) + " --job " + Quote(job) + settings(job_table));
  ASSERT_EQ(enqueued.exit_code, 0) << enqueued.output;

  std::vector<std::unique_ptr<ChildProcess>> workers;
  for (int i = 0; i < 2; ++i) {
    const std::string log = dir / ("worker" + std::to_string(i) + ".log");
    workers.push_back(std::make_unique<ChildProcess>(
        std::vector<std::string>{kSluice, "worker", "--redis", redis_url, "--job", job,
                                 "--exit-when-idle", "--visibility-timeout", "2", "--max-in-flight",
                                 "2", "--max-deliveries", "100"},
        ChildProcess::Streams{ChildProcess::Null(), ChildProcess::File(log),
                              ChildProcess::File(log)}));
    ASSERT_TRUE(workers.back()->started());
  }
  const auto worker_logs = [&] {
    std::string all;
    for (int i = 0; i < 2; ++i) {
      all += "--- worker " + std::to_string(i) + ":\n" +
             ReadFile(dir / ("worker" + std::to_string(i) + ".log"));
    }
    return all;
  };

  // Some tasks done, some not: then Redis goes away.
  auto watcher = RedisClient::Connect(*endpoint);
  ASSERT_TRUE(watcher.ok()) << watcher.status().ToString();
  long long done_before = 0;
  ASSERT_TRUE(WaitUntil(
      [&] {
        auto done = (*watcher)->Command({"HGET", prefix, "done"});
        done_before = done.ok() ? done->AsInteger() : 0;
        return done_before >= 3;
      },
      kBound))
      << worker_logs();
  watcher->reset();
  redis->Signal(SIGTERM);
  const std::optional<int> redis_exit = redis->WaitExit(kBound);
  ASSERT_TRUE(redis_exit.has_value()) << ReadFile(redis_log);
  EXPECT_EQ(*redis_exit, 0) << ReadFile(redis_log);
  ASSERT_FALSE(Answers(*endpoint));
  // Both workers notice the outage (their heartbeat beats every half second).
  ASSERT_TRUE(WaitUntil(
      [&] {
        for (int i = 0; i < 2; ++i) {
          const std::string log = ReadFile(dir / ("worker" + std::to_string(i) + ".log"));
          // RedisClient's words for a refused and a lost connection.
          if (log.find("cannot reach Redis at " + endpoint->Redacted()) == std::string::npos &&
              log.find("lost the connection to Redis at " + endpoint->Redacted()) ==
                  std::string::npos) {
            return false;
          }
        }
        return true;
      },
      kBound))
      << worker_logs();
  for (const auto& w : workers) {
    ASSERT_FALSE(w->Exited()) << "a worker ended while Redis was down:\n" << worker_logs();
  }

  // Back on the same port, from its append-only file.
  redis = StartRedis(redis_dir, port, redis_log);
  ASSERT_TRUE(redis->started());
  ASSERT_TRUE(WaitUntil([&] { return Answers(*endpoint); }, kBound)) << ReadFile(redis_log);
  auto client = RedisClient::Connect(*endpoint);
  ASSERT_TRUE(client.ok()) << client.status().ToString();
  auto total = (*client)->Command({"HGET", prefix, "total"});
  ASSERT_TRUE(total.ok());
  EXPECT_EQ(total->AsInteger(), kDocs) << "the job did not survive the restart";
  auto done_after = (*client)->Command({"HGET", prefix, "done"});
  EXPECT_GE(done_after->AsInteger(), done_before) << "acknowledged work was lost";
  EXPECT_LT(done_after->AsInteger(), kDocs) << "the job ended before the restart: a weaker test";

  for (size_t i = 0; i < workers.size(); ++i) {
    const std::optional<int> code = workers[i]->WaitExit(std::chrono::seconds(240));
    ASSERT_TRUE(code.has_value()) << "worker " << i << " still running:\n" << worker_logs();
    EXPECT_EQ(*code, 0) << worker_logs();
  }

  auto status =
      RunCommand(kSluice + " status --json --redis " + Quote(redis_url) + " --job " + Quote(job));
  ASSERT_EQ(status.exit_code, 0) << status.output;
  EXPECT_NE(status.output.find("\"total\":" + std::to_string(kDocs) +
                               ",\"pending\":0,\"in_flight\":0,\"done\":" + std::to_string(kDocs) +
                               ",\"dead\":0"),
            std::string::npos)
      << status.output << worker_logs();
  // Every chunk once, exactly the reference's; counted once by the job.
  const std::vector<std::string> got = Dump(dsn, job_table);
  EXPECT_EQ(got.size(), reference.size());
  EXPECT_TRUE(got == reference) << "the store differs from the single-process one";
  EXPECT_EQ(ChunkRows(dsn, job_table), ChunkRows(dsn, ref_table));
  EXPECT_EQ(JsonInteger(status.output, "chunks_stored"), ChunkRows(dsn, job_table))
      << status.output;
}

}  // namespace
}  // namespace sluice
