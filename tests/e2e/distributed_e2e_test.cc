// Distributed workers end to end (docs/DISTRIBUTED.md): the real `sluice`
// binary enqueues a corpus into the test Redis, three `sluice worker
// --exit-when-idle` processes ingest it through the simulated API (in this
// process, over loopback) into the test PostgreSQL, and one of them is
// SIGKILLed once Redis shows it has finished a task. The survivors take over
// its tasks after the visibility timeout; the store must then hold exactly
// the chunks of one single-process `sluice ingest` of the same corpus (same
// ids, texts and vectors, same fingerprints), `sluice status` must say
// everything is done, and the one poison source (a truncated PDF, which can
// never parse) must be in the job's dead stream with its error.
#include <fcntl.h>
#include <libpq-fe.h>
#include <signal.h>
#include <spawn.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <functional>
#include <map>
#include <thread>

#include "distributed/redis_client.h"
#include "distributed/redis_test_util.h"
#include "distributed/task_stream.h"
#include "sluice/mock_api.h"
#include "store/postgres/pg_table_dump.h"
#include "store/postgres/pg_test_util.h"
#include "testing/test_util.h"

extern char** environ;

namespace sluice {
namespace {

using pgtest::Dump;
using testing::ReadFile;
using testing::RunCommand;
using testing::TempDir;
using testing::WriteFile;

const std::string kSluice = SLUICE_BINARY;

std::string Paragraphs(int n, const std::string& word) {
  std::string s;
  for (int i = 0; i < n; ++i) {
    s += "Paragraph " + std::to_string(i) + " about " + word + ". ";
    for (int j = 0; j < 25; ++j) s += word + std::to_string(j * 7 + i) + " ";
    s += "\n\n";
  }
  return s;
}

void MakeCorpus(const TempDir& dir) {
  for (int i = 0; i < 48; ++i) {
    const std::string folder = i % 2 == 0 ? "ops" : "maintenance/pumps";
    WriteFile(dir / ("corpus/" + folder + "/doc" + std::to_string(i) + ".md"),
              "# Doc " + std::to_string(i) + "\n\n" + Paragraphs(6, "w" + std::to_string(i)));
  }
  WriteFile(dir / "corpus/plans/broken.pdf", "%PDF-1.4\n1 0 obj << /Type /Catalog");  // truncated
}

std::string Quote(const std::string& s) { return "'" + s + "'"; }

pid_t Spawn(std::vector<std::string> args, const std::string& log) {
  std::vector<char*> argv;
  for (auto& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_addopen(&actions, 1, log.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
  posix_spawn_file_actions_adddup2(&actions, 1, 2);
  pid_t pid = -1;
  posix_spawn(&pid, argv[0], &actions, nullptr, argv.data(), environ);
  posix_spawn_file_actions_destroy(&actions);
  return pid;
}

int Wait(pid_t pid) {
  int status = 0;
  ::waitpid(pid, &status, 0);
  return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

// Starts `n` workers of `job` with `flags`, logging to dir/<tag><i>.log
// (a pid is -1 when the spawn failed).
std::vector<pid_t> SpawnWorkers(const TempDir& dir, const std::string& redis_url,
                                const std::string& job, int n, const std::string& tag,
                                const std::vector<std::string>& flags) {
  std::vector<pid_t> workers;
  for (int i = 0; i < n; ++i) {
    std::vector<std::string> args = {kSluice, "worker", "--redis", redis_url, "--job", job};
    args.insert(args.end(), flags.begin(), flags.end());
    workers.push_back(Spawn(std::move(args), dir / (tag + std::to_string(i) + ".log")));
  }
  return workers;
}

// The job's counters hash, and worker `pid`'s heartbeat record
// (docs/DISTRIBUTED.md).
std::string JobKey(const std::string& job) { return "sluice:job:{" + job + "}"; }
std::string WorkerKey(const std::string& job, pid_t pid) {
  char host[256] = {};
  ::gethostname(host, sizeof(host) - 1);
  return JobKey(job) + ":worker:" + host + "-" + std::to_string(pid);
}

// Waits, at most 120 s, until `field` of hash `key` is at least 1.
bool WaitUntilAtLeastOne(RedisClient& redis, const std::string& key, const std::string& field) {
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(120);
  while (std::chrono::steady_clock::now() < deadline) {
    auto value = redis.Command({"HGET", key, field});
    if (!value.ok()) {
      ADD_FAILURE() << value.status().ToString();
      return false;
    }
    if (value->AsInteger() >= 1) return true;
    // The poll's pace, not a synchronisation: the condition above is.
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  return false;
}

// Chunks and fingerprints of a store table, sorted, in one comparable form.

class DistributedE2eTest : public ::testing::Test {
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
  // The ingest settings both the reference run and the job use.
  std::vector<std::string> Settings(const std::string& table) const {
    return {"--store",         dsn_,
            "--table",         table,
            "--endpoint",      server_->BaseUrl(),
            "--model",         "mock-model",
            "--concurrency",   "2",
            "--batch-size",    "4",
            "--chunk-tokens",  "48",
            "--chunk-overlap", "0",
            "--readers",       "2",
            "--store-batch",   "8",
            "--log-level",     "error"};
  }

  // The simulated API at `latency`, 24-d vectors, into server_.
  void StartMock(std::chrono::milliseconds latency) {
    MockApiOptions mock;
    mock.dimensions = 24;
    mock.base_latency = latency;
    auto server = MockApiServer::Start(mock);
    ASSERT_TRUE(server.ok()) << server.status().ToString();
    server_ = std::move(*server);
  }

  std::string dsn_;
  std::vector<std::string> tables_;
  std::unique_ptr<MockApiServer> server_;
};

// Removes a job's keys from the test Redis.
void ForgetJobs(const std::string& redis_url, const std::vector<std::string>& jobs) {
  auto endpoint = ParseRedisUrl(redis_url);
  ASSERT_TRUE(endpoint.ok());
  auto client = RedisClient::Connect(*endpoint);
  ASSERT_TRUE(client.ok());
  for (const std::string& job : jobs) {
    const std::string prefix = JobKey(job);
    (*client)->Command({"DEL", prefix, prefix + ":tasks", prefix + ":dead", prefix + ":errors",
                        prefix + ":workers"});
  }
}

// Requests per minute of the simulated API in the three-worker test.
constexpr double kJobRpm = 1200;

TEST_F(DistributedE2eTest, ThreeWorkersOneKilledStoreEveryChunkOnceAndBuryThePoisonTask) {
  SLUICE_REQUIRE_DSN(dsn, "SLUICE_TEST_PG_DSN");
  SLUICE_REQUIRE_REDIS(redis_url);
  dsn_ = dsn;
  TempDir dir;
  MakeCorpus(dir);
  MockApiOptions mock;
  mock.dimensions = 24;
  mock.base_latency = std::chrono::milliseconds(40);
  mock.jitter = std::chrono::milliseconds(10);
  // A limit that binds: 20 requests a second, a burst of one second's worth.
  // The workers learn it from the x-ratelimit headers into their shared
  // budget and together stay within it (checked on the mock's own counters).
  mock.rpm = kJobRpm;
  mock.burst_seconds = 1;
  auto server = MockApiServer::Start(mock);
  ASSERT_TRUE(server.ok()) << server.status().ToString();
  server_ = std::move(*server);

  // The reference: one process, the whole corpus (exit 3: the PDF is dead-lettered).
  const std::string ref_table = pgtest::UniqueTable("dist_ref");
  const std::string job_table = pgtest::UniqueTable("dist_job");
  tables_ = {ref_table, job_table};
  std::string ingest = kSluice + " ingest " + Quote(dir / "corpus") + " --no-progress --out " +
                       Quote(dir / "ref-out") + " --no-aggregate";
  for (const std::string& s : Settings(ref_table)) ingest += " " + Quote(s);
  auto ref = RunCommand(ingest);
  ASSERT_EQ(ref.exit_code, 3) << ref.output;
  const std::vector<std::string> reference = Dump(dsn, ref_table);
  ASSERT_GT(reference.size(), 200u);

  // The job.
  const std::string job = redistest::UniqueName("e2e");
  std::string enqueue = kSluice + " enqueue " + Quote(dir / "corpus") + " --redis " +
                        Quote(redis_url) + " --job " + Quote(job) + " --budget-name " + Quote(job);
  for (const std::string& s : Settings(job_table)) enqueue += " " + Quote(s);
  auto enqueued = RunCommand(enqueue);
  ASSERT_EQ(enqueued.exit_code, 0) << enqueued.output;
  EXPECT_NE(enqueued.output.find("enqueued 49 tasks"), std::string::npos) << enqueued.output;

  const MockApiStats before_job = server_->Stats();
  const auto job_started = std::chrono::steady_clock::now();
  const std::vector<pid_t> workers =
      SpawnWorkers(dir, redis_url, job, 3, "worker",
                   {"--exit-when-idle", "--visibility-timeout", "1", "--max-in-flight", "4"});
  for (pid_t pid : workers) ASSERT_GT(pid, 0);

  // Kill worker 0 once Redis shows it has finished a task (its heartbeat
  // record counts them), while tasks are still left.
  auto endpoint = ParseRedisUrl(redis_url);
  ASSERT_TRUE(endpoint.ok());
  auto redis = RedisClient::Connect(*endpoint);
  ASSERT_TRUE(redis.ok()) << redis.status().ToString();
  ASSERT_TRUE(WaitUntilAtLeastOne(**redis, WorkerKey(job, workers[0]), "tasks"))
      << ReadFile(dir / "worker0.log");
  const std::string prefix = JobKey(job);
  auto done_at_kill = (*redis)->Command({"HGET", prefix, "done"});
  ASSERT_EQ(::kill(workers[0], SIGKILL), 0);
  EXPECT_EQ(Wait(workers[0]), 128 + SIGKILL);
  EXPECT_LT(done_at_kill->AsInteger(), 48) << "the run ended before the kill: a weaker test";

  // The survivors finish everything, the dead worker's tasks included.
  for (int i = 1; i < 3; ++i) {
    const int code = Wait(workers[i]);
    EXPECT_TRUE(code == 0 || code == 3) << "worker " << i << " exited " << code << ":\n"
                                        << ReadFile(dir / ("worker" + std::to_string(i) + ".log"));
  }
  // Together within the API's limit, judged by the API: what it admitted
  // during the job fits its burst plus its rate over the job's time, and it
  // refused at most 1% of the workers' requests.
  const double job_seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - job_started).count();
  const MockApiStats after_job = server_->Stats();
  const uint64_t job_requests = after_job.requests - before_job.requests;
  const uint64_t job_admitted = after_job.ok - before_job.ok;
  const uint64_t job_429s = after_job.rate_limited - before_job.rate_limited;
  std::fprintf(stderr, "job: %llu requests, %llu admitted, %llu 429s in %.1f s (limit %.0f/min)\n",
               static_cast<unsigned long long>(job_requests),
               static_cast<unsigned long long>(job_admitted),
               static_cast<unsigned long long>(job_429s), job_seconds, kJobRpm);
  EXPECT_GT(job_requests, 10u);
  EXPECT_LE(static_cast<double>(job_admitted), kJobRpm / 60 * (1 + job_seconds) + 1)
      << job_admitted << " admitted in " << job_seconds << " s";
  EXPECT_LE(job_429s * 100, job_requests) << job_429s << " 429s of " << job_requests;

  auto status =
      RunCommand(kSluice + " status --json --redis " + Quote(redis_url) + " --job " + Quote(job));
  ASSERT_EQ(status.exit_code, 0) << status.output;
  EXPECT_NE(status.output.find("\"total\":49,\"pending\":0,\"in_flight\":0,\"done\":48,\"dead\":1"),
            std::string::npos)
      << status.output;
  auto dead = RunCommand(kSluice + " dead-letter list --redis " + Quote(redis_url) + " --job " +
                         Quote(job));
  ASSERT_EQ(dead.exit_code, 0) << dead.output;
  EXPECT_NE(dead.output.find("1 dead tasks"), std::string::npos) << dead.output;
  EXPECT_NE(dead.output.find("plans/broken.pdf"), std::string::npos) << dead.output;
  EXPECT_NE(dead.output.find("not a readable PDF"), std::string::npos) << dead.output;

  // Every chunk once, exactly the reference's (ids, texts, vectors), and the
  // same fingerprints.
  std::vector<std::string> got = Dump(dsn, job_table);
  EXPECT_EQ(got.size(), reference.size());
  EXPECT_TRUE(got == reference) << "the distributed store differs from the single-process one";

  // Nothing about the job names a secret: the store URI has no password here,
  // and the recorded options are the flags given.
  auto record = (*redis)->Command({"HGET", prefix, "store"});
  EXPECT_EQ(record->str, dsn);

  // The workers paced against one budget in the job's Redis, under the
  // job's --budget-name: the limit they learned is there.
  const std::string budget = "sluice:budget:{" + job + "}";
  auto learned = (*redis)->Command({"EXISTS", budget + ":limits"});
  ASSERT_TRUE(learned.ok());
  EXPECT_EQ(learned->integer, 1) << "the workers shared no budget";
  (*redis)->Command({"DEL", prefix, prefix + ":tasks", prefix + ":dead", prefix + ":errors",
                     prefix + ":workers", budget + ":limits", budget + ":requests",
                     budget + ":tokens", budget + ":unpaced"});
}

// Every regular file under `root` (hidden ones, such as the report, left
// out), by relative path, with its bytes.
std::map<std::string, std::string> FilesUnder(const std::filesystem::path& root) {
  std::map<std::string, std::string> files;
  for (const auto& e : std::filesystem::recursive_directory_iterator(root)) {
    if (!e.is_regular_file() || e.path().filename().string().starts_with(".")) continue;
    files[std::filesystem::relative(e.path(), root).string()] = ReadFile(e.path());
  }
  return files;
}

uint64_t JsonNumber(const std::string& json, const std::string& key) {
  const size_t at = json.find("\"" + key + "\":");
  if (at == std::string::npos) return 0;
  return std::stoull(json.substr(at + key.size() + 3));
}

// `sluice status --wait --out DIR` blocks while two workers take the job,
// then reports the chunks the store holds and writes the aggregate files
// byte for byte as a single-process `sluice ingest` of the corpus does.
TEST_F(DistributedE2eTest, StatusWaitCountsTheStoredChunksAndWritesTheSingleProcessAggregate) {
  SLUICE_REQUIRE_DSN(dsn, "SLUICE_TEST_PG_DSN");
  SLUICE_REQUIRE_REDIS(redis_url);
  dsn_ = dsn;
  TempDir dir;
  MakeCorpus(dir);
  std::filesystem::remove(dir / "corpus/plans/broken.pdf");
  StartMock(std::chrono::milliseconds(5));
  if (HasFatalFailure()) return;
  const std::string ref_table = pgtest::UniqueTable("dist_wref");
  const std::string job_table = pgtest::UniqueTable("dist_wjob");
  tables_ = {ref_table, job_table};

  std::string ingest =
      kSluice + " ingest " + Quote(dir / "corpus") + " --no-progress --out " + Quote(dir / "ref");
  for (const std::string& s : Settings(ref_table)) ingest += " " + Quote(s);
  auto ref = RunCommand(ingest);
  ASSERT_EQ(ref.exit_code, 0) << ref.output;

  const std::string job = redistest::UniqueName("e2e-wait");
  const std::string redis = " --redis " + Quote(redis_url) + " --job " + Quote(job);
  std::string enqueue = kSluice + " enqueue " + Quote(dir / "corpus") + redis;
  for (const std::string& s : Settings(job_table)) enqueue += " " + Quote(s);
  auto enqueued = RunCommand(enqueue);
  ASSERT_EQ(enqueued.exit_code, 0) << enqueued.output;
  const std::vector<pid_t> workers =
      SpawnWorkers(dir, redis_url, job, 2, "worker", {"--exit-when-idle", "--max-in-flight", "4"});
  for (pid_t pid : workers) ASSERT_GT(pid, 0);
  auto waited =
      RunCommand(kSluice + " status --wait --json" + redis + " --out " + Quote(dir / "job-out"));
  for (size_t i = 0; i < workers.size(); ++i) {
    EXPECT_EQ(Wait(workers[i]), 0) << ReadFile(dir / ("worker" + std::to_string(i) + ".log"));
  }
  ASSERT_EQ(waited.exit_code, 0) << waited.output;
  EXPECT_NE(waited.output.find("\"pending\":0,\"in_flight\":0,\"done\":48,\"dead\":0"),
            std::string::npos)
      << waited.output;
  EXPECT_NE(waited.output.find("\"drained\":true"), std::string::npos) << waited.output;

  // The job's chunk count is the store's.
  pgtest::RawPg pg(dsn);
  ASSERT_TRUE(pg.ok());
  PGresult* r = PQexec(pg.get(), ("SELECT count(*) FROM \"" + job_table + "\"").c_str());
  ASSERT_EQ(PQresultStatus(r), PGRES_TUPLES_OK) << PQresultErrorMessage(r);
  const uint64_t stored = std::stoull(PQgetvalue(r, 0, 0));
  PQclear(r);
  EXPECT_GT(stored, 100u);
  EXPECT_EQ(JsonNumber(waited.output, "chunks_stored"), stored) << waited.output;
  auto text = RunCommand(kSluice + " status" + redis);
  EXPECT_NE(text.output.find("chunks    " + std::to_string(stored) + " stored"), std::string::npos)
      << text.output;
  EXPECT_NE(text.output.find("eta       drained"), std::string::npos) << text.output;

  // The aggregate files: those of the single-process run, byte for byte.
  const auto expected = FilesUnder(dir / "ref");
  ASSERT_FALSE(expected.empty());
  EXPECT_TRUE(FilesUnder(dir / "job-out") == expected) << waited.output;

  ForgetJobs(redis_url, {job});
}

TEST_F(DistributedE2eTest, EnqueueLeavesOutFilesTheStoreHoldsUnchanged) {
  SLUICE_REQUIRE_DSN(dsn, "SLUICE_TEST_PG_DSN");
  SLUICE_REQUIRE_REDIS(redis_url);
  dsn_ = dsn;
  TempDir dir;
  MakeCorpus(dir);
  std::filesystem::remove(dir / "corpus/plans/broken.pdf");
  StartMock(std::chrono::milliseconds(5));
  if (HasFatalFailure()) return;
  const std::string table = pgtest::UniqueTable("dist_skip");
  tables_ = {table};
  std::string settings;
  for (const std::string& s : Settings(table)) settings += " " + Quote(s);

  // Into a store that does not exist yet: every file.
  const std::string first = redistest::UniqueName("e2e-skip-a");
  auto all = RunCommand(kSluice + " enqueue " + Quote(dir / "corpus") + " --redis " +
                        Quote(redis_url) + " --job " + first + settings);
  ASSERT_EQ(all.exit_code, 0) << all.output;
  EXPECT_NE(all.output.find("enqueued 48 tasks"), std::string::npos) << all.output;
  EXPECT_NE(all.output.find("; 0 files unchanged"), std::string::npos) << all.output;
  auto worked = RunCommand(kSluice + " worker --exit-when-idle --redis " + Quote(redis_url) +
                           " --job " + first);
  ASSERT_EQ(worked.exit_code, 0) << worked.output;

  // Again once the store holds them, one file changed since: only that one.
  WriteFile(dir / "corpus/ops/doc4.md", "# Doc 4, rewritten\n\n" + Paragraphs(3, "changed"));
  const std::string second = redistest::UniqueName("e2e-skip-b");
  auto again = RunCommand(kSluice + " enqueue " + Quote(dir / "corpus") + " --redis " +
                          Quote(redis_url) + " --job " + second + settings);
  ASSERT_EQ(again.exit_code, 0) << again.output;
  EXPECT_NE(again.output.find("enqueued 1 tasks"), std::string::npos) << again.output;
  EXPECT_NE(again.output.find("; 47 files unchanged"), std::string::npos) << again.output;
  // --reprocess-all (re-read everything) enqueues everything.
  const std::string third = redistest::UniqueName("e2e-skip-c");
  auto forced = RunCommand(kSluice + " enqueue " + Quote(dir / "corpus") + " --redis " +
                           Quote(redis_url) + " --job " + third + settings + " --reprocess-all");
  ASSERT_EQ(forced.exit_code, 0) << forced.output;
  EXPECT_NE(forced.output.find("enqueued 48 tasks"), std::string::npos) << forced.output;

  ForgetJobs(redis_url, {first, second, third});
}

TEST_F(DistributedE2eTest, IngestWithRedisEnqueuesAndWorksTheWholeJobInOneCommand) {
  SLUICE_REQUIRE_DSN(dsn, "SLUICE_TEST_PG_DSN");
  SLUICE_REQUIRE_REDIS(redis_url);
  dsn_ = dsn;
  TempDir dir;
  MakeCorpus(dir);
  std::filesystem::remove(dir / "corpus/plans/broken.pdf");
  StartMock(std::chrono::milliseconds(5));
  if (HasFatalFailure()) return;
  const std::string ref_table = pgtest::UniqueTable("dist_iref");
  const std::string job_table = pgtest::UniqueTable("dist_ijob");
  tables_ = {ref_table, job_table};
  std::string ref_settings, job_settings;
  for (const std::string& s : Settings(ref_table)) ref_settings += " " + Quote(s);
  for (const std::string& s : Settings(job_table)) job_settings += " " + Quote(s);
  auto ref = RunCommand(kSluice + " ingest " + Quote(dir / "corpus") + " --no-progress --out " +
                        Quote(dir / "ref") + ref_settings);
  ASSERT_EQ(ref.exit_code, 0) << ref.output;

  const std::string ingest =
      kSluice + " ingest " + Quote(dir / "corpus") + " --redis " + Quote(redis_url) + job_settings;
  auto first = RunCommand(ingest);
  ASSERT_EQ(first.exit_code, 0) << first.output;
  EXPECT_NE(first.output.find("enqueued 48 tasks to job 'ingest-"), std::string::npos)
      << first.output;
  // Every chunk, as the single-process run stored it.
  EXPECT_EQ(Dump(dsn, job_table), Dump(dsn, ref_table));
  // The same command again: the same job, nothing left to do.
  auto second = RunCommand(ingest);
  ASSERT_EQ(second.exit_code, 0) << second.output;
  EXPECT_NE(second.output.find("enqueued 0 tasks"), std::string::npos) << second.output;
  const size_t named = first.output.find("job '");
  ASSERT_NE(named, std::string::npos);
  const std::string job =
      first.output.substr(named + 5, first.output.find('\'', named + 5) - named - 5);
  EXPECT_NE(second.output.find("job '" + job + "'"), std::string::npos) << second.output;

  // A per-process output is refused, not silently dropped; --job alone too.
  auto report = RunCommand(ingest + " --report " + Quote(dir / "r.json"));
  EXPECT_EQ(report.exit_code, 2) << report.output;
  EXPECT_NE(report.output.find("--report is not available with --redis"), std::string::npos)
      << report.output;
  auto job_alone =
      RunCommand(kSluice + " ingest " + Quote(dir / "corpus") + " --job x" + job_settings);
  EXPECT_EQ(job_alone.exit_code, 2) << job_alone.output;

  ForgetJobs(redis_url, {job});
}

// A JSONL export of `records` records (ids r0..), each of a few paragraphs;
// `skip(i)`: leave record i out.
std::string JsonlExport(int records, const std::function<bool(int)>& skip = nullptr) {
  std::string out;
  for (int i = 0; i < records; ++i) {
    if (skip && skip(i)) continue;
    std::string text = "Record " + std::to_string(i) + " about pumps.";
    for (int j = 0; j < 30; ++j) text += " v" + std::to_string(i * 31 + j);
    text += "\\n\\nSecond paragraph of record " + std::to_string(i) + ".";
    out += "{\"id\":\"r" + std::to_string(i) + "\",\"text\":\"" + text +
           "\",\"metadata\":{\"n\":" + std::to_string(i) + "}}\n";
  }
  return out;
}

// A small corpus around one JSONL file much larger than --split-bytes.
void MakeSplitCorpus(const TempDir& dir, const std::string& jsonl) {
  for (int i = 0; i < 4; ++i) {
    WriteFile(dir / ("corpus/docs/doc" + std::to_string(i) + ".md"),
              "# Doc " + std::to_string(i) + "\n\n" + Paragraphs(4, "w" + std::to_string(i)));
  }
  WriteFile(dir / "corpus/exports/big.jsonl", jsonl);
}

// Runs `n` workers of `job` until it is drained; their exit codes.
std::vector<int> RunWorkers(const TempDir& dir, const std::string& redis_url,
                            const std::string& job, int n, const std::string& tag) {
  std::vector<int> codes;
  for (pid_t pid :
       SpawnWorkers(dir, redis_url, job, n, tag, {"--exit-when-idle", "--max-in-flight", "2"})) {
    codes.push_back(pid > 0 ? Wait(pid) : -1);
  }
  return codes;
}

std::string WorkerLogs(const TempDir& dir, const std::string& tag, int n) {
  std::string logs;
  for (int i = 0; i < n; ++i) logs += ReadFile(dir / (tag + std::to_string(i) + ".log"));
  return logs;
}

// Chunks and fingerprints in a store table (0 when no run created it yet).
uint64_t StoredRows(const std::string& dsn, const std::string& table) {
  pgtest::RawPg pg(dsn);
  EXPECT_TRUE(pg.ok());
  if (pg.Scalar("SELECT to_regclass('\"" + table + "\"') IS NULL") == "t") return 0;
  return std::stoull(pg.Scalar("SELECT (SELECT count(*) FROM \"" + table +
                               "\") + (SELECT count(*) FROM \"" + table + "_files\")"));
}

// The range tasks `sluice enqueue --split-bytes 16384` says it made of one file (0: none).
uint64_t RangesSplit(const std::string& output) {
  const std::string said = "split 1 JSONL files larger than 16384 bytes into ";
  const size_t at = output.find(said);
  return at == std::string::npos ? 0 : std::stoull(output.substr(at + said.size()));
}

void ForgetSplitJob(const std::string& redis_url, const std::string& job) {
  ForgetJobs(redis_url, {job});
  auto endpoint = ParseRedisUrl(redis_url);
  ASSERT_TRUE(endpoint.ok());
  auto client = RedisClient::Connect(*endpoint);
  ASSERT_TRUE(client.ok());
  const std::string prefix = JobKey(job);
  std::vector<std::string> del = {"DEL", prefix + ":splits"};
  for (int i = 1; i <= 4; ++i) del.push_back(prefix + ":split:" + std::to_string(i));
  (*client)->Command(del);
}

// A JSONL file above --split-bytes is cut into range tasks that two workers
// share; the store then holds exactly what one `sluice ingest` stores (ids,
// texts, vectors; the file's fingerprint with its whole chunk_count), the
// job counts every chunk once, and a rerun after records were removed from
// the file leaves none of their chunks behind.
TEST_F(DistributedE2eTest, SplitJsonlRangesStoreWhatOneProcessStoresAndARerunLeavesNoStaleChunk) {
  SLUICE_REQUIRE_DSN(dsn, "SLUICE_TEST_PG_DSN");
  SLUICE_REQUIRE_REDIS(redis_url);
  dsn_ = dsn;
  TempDir dir;
  const std::string jsonl = JsonlExport(400);
  ASSERT_GT(jsonl.size(), 5u * 16384);
  MakeSplitCorpus(dir, jsonl);
  StartMock(std::chrono::milliseconds(2));
  if (HasFatalFailure()) return;
  const std::string ref_table = pgtest::UniqueTable("dist_split_ref");
  const std::string job_table = pgtest::UniqueTable("dist_split");
  tables_ = {ref_table, job_table};
  std::string ref_settings, job_settings;
  for (const std::string& s : Settings(ref_table)) ref_settings += " " + Quote(s);
  for (const std::string& s : Settings(job_table)) job_settings += " " + Quote(s);
  const std::string ingest = kSluice + " ingest " + Quote(dir / "corpus") +
                             " --no-progress --no-aggregate --out " + Quote(dir / "ref") +
                             ref_settings;

  for (int round = 0; round < 2; ++round) {
    SCOPED_TRACE("round " + std::to_string(round));
    if (round == 1) {
      // Every third record removed, one added: the removed ones' chunks are stale.
      WriteFile(dir / "corpus/exports/big.jsonl",
                JsonlExport(400, [](int i) { return i % 3 == 1; }) +
                    "{\"id\":\"extra\",\"text\":\"a record added in round two\"}\n");
    }
    auto ref = RunCommand(ingest);
    ASSERT_EQ(ref.exit_code, 0) << ref.output;
    const std::vector<std::string> reference = Dump(dsn, ref_table);
    ASSERT_GT(reference.size(), 400u);

    const std::string job = redistest::UniqueName("e2e-split");
    auto enqueued =
        RunCommand(kSluice + " enqueue " + Quote(dir / "corpus") + " --redis " + Quote(redis_url) +
                   " --job " + job + " --split-bytes 16384" + job_settings);
    ASSERT_EQ(enqueued.exit_code, 0) << enqueued.output;
    const uint64_t ranges = RangesSplit(enqueued.output);
    EXPECT_GE(ranges, 4u) << enqueued.output;
    // The markdown files changed in neither round: the second enqueue leaves them out.
    const uint64_t others = round == 0 ? 4 : 0;
    EXPECT_NE(enqueued.output.find("enqueued " + std::to_string(others + ranges) + " tasks"),
              std::string::npos)
        << enqueued.output;

    const std::vector<int> codes = RunWorkers(dir, redis_url, job, 2, "w" + std::to_string(round));
    for (int code : codes) EXPECT_EQ(code, 0) << WorkerLogs(dir, "w" + std::to_string(round), 2);

    // Every range and the one whole-file pass are tasks, all done.
    auto status =
        RunCommand(kSluice + " status --json --redis " + Quote(redis_url) + " --job " + Quote(job));
    ASSERT_EQ(status.exit_code, 0) << status.output;
    const uint64_t total = others + ranges + 1;
    EXPECT_NE(status.output.find("\"total\":" + std::to_string(total) +
                                 ",\"pending\":0,\"in_flight\":0,\"done\":" +
                                 std::to_string(total) + ",\"dead\":0"),
              std::string::npos)
        << status.output;

    const std::vector<std::string> got = Dump(dsn, job_table);
    EXPECT_EQ(got.size(), reference.size());
    EXPECT_TRUE(got == reference) << "the distributed store differs from the single-process one";
    if (round == 0) {
      // Each chunk counted once: by its range, not again by the whole-file pass.
      pgtest::RawPg pg(dsn);
      ASSERT_TRUE(pg.ok());
      PGresult* r = PQexec(pg.get(), ("SELECT count(*) FROM \"" + job_table + "\"").c_str());
      ASSERT_EQ(PQresultStatus(r), PGRES_TUPLES_OK) << PQresultErrorMessage(r);
      const uint64_t stored = std::stoull(PQgetvalue(r, 0, 0));
      PQclear(r);
      EXPECT_EQ(JsonNumber(status.output, "chunks_stored"), stored) << status.output;
    }
    ForgetSplitJob(redis_url, job);
  }
}

// A file that repeats an id is not split, even above --split-bytes: two
// ranges would each store a record under that source id; as one task the
// reader refuses the repeat exactly as `sluice ingest` does.
TEST_F(DistributedE2eTest, SplitJsonlWithARepeatedIdStaysOneTask) {
  SLUICE_REQUIRE_DSN(dsn, "SLUICE_TEST_PG_DSN");
  SLUICE_REQUIRE_REDIS(redis_url);
  dsn_ = dsn;
  TempDir dir;
  // Record r5 again at the very end: far from its first line, in another range.
  std::string jsonl = JsonlExport(300);
  jsonl += "{\"id\":\"r5\",\"text\":\"a second record r5\"}\n";
  MakeSplitCorpus(dir, jsonl);
  StartMock(std::chrono::milliseconds(2));
  if (HasFatalFailure()) return;
  const std::string ref_table = pgtest::UniqueTable("dist_dup_ref");
  const std::string job_table = pgtest::UniqueTable("dist_dup");
  tables_ = {ref_table, job_table};
  std::string ref_settings, job_settings;
  for (const std::string& s : Settings(ref_table)) ref_settings += " " + Quote(s);
  for (const std::string& s : Settings(job_table)) job_settings += " " + Quote(s);
  auto ref = RunCommand(kSluice + " ingest " + Quote(dir / "corpus") +
                        " --no-progress --no-aggregate --out " + Quote(dir / "ref") + ref_settings);
  ASSERT_EQ(ref.exit_code, 3) << ref.output;  // the repeat is dead-lettered

  const std::string job = redistest::UniqueName("e2e-split-dup");
  auto enqueued =
      RunCommand(kSluice + " enqueue " + Quote(dir / "corpus") + " --redis " + Quote(redis_url) +
                 " --job " + job + " --split-bytes 16384" + job_settings);
  ASSERT_EQ(enqueued.exit_code, 0) << enqueued.output;
  EXPECT_NE(enqueued.output.find("enqueued 5 tasks"), std::string::npos) << enqueued.output;
  EXPECT_EQ(enqueued.output.find("split "), std::string::npos) << enqueued.output;
  EXPECT_NE(enqueued.output.find("kept 1 JSONL files larger than 16384 bytes whole (one task "
                                 "each): an id is on more than one line (exports/big.jsonl: id "
                                 "\"r5\")"),
            std::string::npos)
      << enqueued.output;
  const std::vector<int> codes = RunWorkers(dir, redis_url, job, 2, "w");
  // Exit 3 from the worker that refused the repeat (a dead-lettered record).
  EXPECT_EQ(codes[0] + codes[1], 3) << WorkerLogs(dir, "w", 2);
  auto status =
      RunCommand(kSluice + " status --json --redis " + Quote(redis_url) + " --job " + Quote(job));
  EXPECT_NE(status.output.find("\"total\":5,\"pending\":0,\"in_flight\":0,\"done\":5,\"dead\":0"),
            std::string::npos)
      << status.output;
  // The first r5 stored, the repeat not: as the single-process run did.
  EXPECT_TRUE(Dump(dsn, job_table) == Dump(dsn, ref_table));
  ForgetSplitJob(redis_url, job);
}

// A file changed between the enqueue and the claim of its ranges: each range
// is buried with the reason instead of reading the new bytes at the old cut
// points, and the file is never committed from mixed ranges.
TEST_F(DistributedE2eTest, SplitJsonlChangedSinceTheEnqueueIsDeadLetteredNotMixed) {
  SLUICE_REQUIRE_DSN(dsn, "SLUICE_TEST_PG_DSN");
  SLUICE_REQUIRE_REDIS(redis_url);
  dsn_ = dsn;
  TempDir dir;
  const std::string jsonl = JsonlExport(300);
  MakeSplitCorpus(dir, jsonl);
  std::filesystem::remove_all(dir / "corpus/docs");
  StartMock(std::chrono::milliseconds(2));
  if (HasFatalFailure()) return;
  const std::string job_table = pgtest::UniqueTable("dist_chg");
  tables_ = {job_table};
  std::string job_settings;
  for (const std::string& s : Settings(job_table)) job_settings += " " + Quote(s);
  const std::string job = redistest::UniqueName("e2e-split-chg");
  auto enqueued =
      RunCommand(kSluice + " enqueue " + Quote(dir / "corpus") + " --redis " + Quote(redis_url) +
                 " --job " + job + " --split-bytes 16384" + job_settings);
  ASSERT_EQ(enqueued.exit_code, 0) << enqueued.output;
  const uint64_t ranges = RangesSplit(enqueued.output);
  ASSERT_GE(ranges, 2u);

  // Records inserted at the front: every old cut point now falls elsewhere.
  WriteFile(dir / "corpus/exports/big.jsonl",
            "{\"id\":\"new\",\"text\":\"inserted after the enqueue\"}\n" + jsonl);
  const std::vector<int> codes = RunWorkers(dir, redis_url, job, 1, "w");
  EXPECT_EQ(codes[0], 0) << WorkerLogs(dir, "w", 1);

  auto status =
      RunCommand(kSluice + " status --json --redis " + Quote(redis_url) + " --job " + Quote(job));
  EXPECT_NE(status.output.find(
                "\"total\":" + std::to_string(ranges) +
                ",\"pending\":0,\"in_flight\":0,\"done\":0,\"dead\":" + std::to_string(ranges)),
            std::string::npos)
      << status.output;
  auto dead = RunCommand(kSluice + " dead-letter list --redis " + Quote(redis_url) + " --job " +
                         Quote(job));
  ASSERT_EQ(dead.exit_code, 0) << dead.output;
  EXPECT_NE(dead.output.find(std::to_string(ranges) + " dead tasks"), std::string::npos)
      << dead.output;
  EXPECT_NE(dead.output.find("exports/big.jsonl bytes 0-"), std::string::npos) << dead.output;
  EXPECT_NE(dead.output.find("changed since the enqueue"), std::string::npos) << dead.output;
  // Nothing of it stored, no fingerprint: enqueueing it again redoes it whole.
  EXPECT_EQ(StoredRows(dsn, job_table), 0u);

  // A range of a file no JSONL parser reads (enqueue never makes one; a
  // hand-made task) is dead-lettered, not parsed whole once per range.
  const std::string md = dir / "corpus/docs/a.md";
  WriteFile(md, "# A\n\n" + Paragraphs(3, "md"));
  struct stat st;
  ASSERT_EQ(::stat(md.c_str(), &st), 0);
  {
    auto endpoint = ParseRedisUrl(redis_url);
    ASSERT_TRUE(endpoint.ok());
    auto stream = TaskStream::Open(*endpoint, TaskStreamOptions{job});
    ASSERT_TRUE(stream.ok()) << stream.status().ToString();
    SourceTask whole{md, "docs/a.md", "corpus", static_cast<uint64_t>(st.st_size),
                     static_cast<int64_t>(st.st_mtim.tv_sec) * 1000000000 + st.st_mtim.tv_nsec};
    SourceTask range = whole;
    range.split = "planned";
    range.range_end = whole.size_bytes;
    ASSERT_TRUE((*stream)->EnqueueSplit(whole, {range}).ok());
  }
  EXPECT_EQ(RunWorkers(dir, redis_url, job, 1, "md")[0], 3) << WorkerLogs(dir, "md", 1);
  dead = RunCommand(kSluice + " dead-letter list --redis " + Quote(redis_url) + " --job " +
                    Quote(job));
  EXPECT_NE(dead.output.find("only JSONL files are split into ranges"), std::string::npos)
      << dead.output;
  EXPECT_EQ(StoredRows(dsn, job_table), 0u);
  ForgetSplitJob(redis_url, job);
}

// A worker SIGKILLed while it holds range tasks: another reclaims them after
// the visibility timeout and redoes them; chunks the dead one had stored are
// upserts by id, so the store still equals one `sluice ingest`, and the job
// counts every chunk once (only acked ranges count theirs).
TEST_F(DistributedE2eTest, SplitJsonlRangeOfAKilledWorkerIsRedoneAndStoredOnce) {
  SLUICE_REQUIRE_DSN(dsn, "SLUICE_TEST_PG_DSN");
  SLUICE_REQUIRE_REDIS(redis_url);
  dsn_ = dsn;
  TempDir dir;
  MakeSplitCorpus(dir, JsonlExport(400));
  std::filesystem::remove_all(dir / "corpus/docs");
  StartMock(std::chrono::milliseconds(30));
  if (HasFatalFailure()) return;
  const std::string ref_table = pgtest::UniqueTable("dist_kill_ref");
  const std::string job_table = pgtest::UniqueTable("dist_kill");
  tables_ = {ref_table, job_table};
  std::string ref_settings, job_settings;
  for (const std::string& s : Settings(ref_table)) ref_settings += " " + Quote(s);
  for (const std::string& s : Settings(job_table)) job_settings += " " + Quote(s);
  auto ref = RunCommand(kSluice + " ingest " + Quote(dir / "corpus") +
                        " --no-progress --no-aggregate --out " + Quote(dir / "ref") + ref_settings);
  ASSERT_EQ(ref.exit_code, 0) << ref.output;

  const std::string job = redistest::UniqueName("e2e-split-kill");
  auto enqueued =
      RunCommand(kSluice + " enqueue " + Quote(dir / "corpus") + " --redis " + Quote(redis_url) +
                 " --job " + job + " --split-bytes 16384" + job_settings);
  ASSERT_EQ(enqueued.exit_code, 0) << enqueued.output;
  const uint64_t ranges = RangesSplit(enqueued.output);
  ASSERT_GE(ranges, 4u) << enqueued.output;

  const std::vector<pid_t> workers =
      SpawnWorkers(dir, redis_url, job, 2, "k",
                   {"--exit-when-idle", "--visibility-timeout", "1", "--max-in-flight", "1"});
  for (pid_t pid : workers) ASSERT_GT(pid, 0);
  // Kill worker 0 once it has finished a range (its heartbeat counts them)
  // and so holds the next one, while ranges are left.
  auto endpoint = ParseRedisUrl(redis_url);
  ASSERT_TRUE(endpoint.ok());
  auto redis = RedisClient::Connect(*endpoint);
  ASSERT_TRUE(redis.ok()) << redis.status().ToString();
  ASSERT_TRUE(WaitUntilAtLeastOne(**redis, WorkerKey(job, workers[0]), "tasks"))
      << ReadFile(dir / "k0.log");
  auto done_at_kill = (*redis)->Command({"HGET", JobKey(job), "done"});
  ASSERT_EQ(::kill(workers[0], SIGKILL), 0);
  EXPECT_EQ(Wait(workers[0]), 128 + SIGKILL);
  EXPECT_LT(static_cast<uint64_t>(done_at_kill->AsInteger()), ranges)
      << "the ranges were all done before the kill: a weaker test";
  EXPECT_EQ(Wait(workers[1]), 0) << ReadFile(dir / "k1.log");

  auto status =
      RunCommand(kSluice + " status --json --redis " + Quote(redis_url) + " --job " + Quote(job));
  const std::string total = std::to_string(ranges + 1);
  EXPECT_NE(status.output.find("\"total\":" + total +
                               ",\"pending\":0,\"in_flight\":0,\"done\":" + total + ",\"dead\":0"),
            std::string::npos)
      << status.output;
  EXPECT_TRUE(Dump(dsn, job_table) == Dump(dsn, ref_table));
  EXPECT_EQ(JsonNumber(status.output, "chunks_stored"),
            StoredRows(dsn, job_table) - 1)  // less the file's fingerprint row
      << status.output;
  ForgetSplitJob(redis_url, job);
}

TEST_F(DistributedE2eTest, SigtermStopsAWorkerGracefullyAndAnotherFinishesItsTasks) {
  SLUICE_REQUIRE_DSN(dsn, "SLUICE_TEST_PG_DSN");
  SLUICE_REQUIRE_REDIS(redis_url);
  dsn_ = dsn;
  TempDir dir;
  MakeCorpus(dir);
  StartMock(std::chrono::milliseconds(40));
  if (HasFatalFailure()) return;
  const std::string ref_table = pgtest::UniqueTable("dist_term_ref");
  const std::string job_table = pgtest::UniqueTable("dist_term");
  tables_ = {ref_table, job_table};
  std::string ingest = kSluice + " ingest " + Quote(dir / "corpus") + " --no-progress --out " +
                       Quote(dir / "ref-out") + " --no-aggregate";
  for (const std::string& s : Settings(ref_table)) ingest += " " + Quote(s);
  auto ref = RunCommand(ingest);
  ASSERT_EQ(ref.exit_code, 3) << ref.output;

  const std::string job = redistest::UniqueName("e2e-term");
  std::string enqueue = kSluice + " enqueue " + Quote(dir / "corpus") + " --redis " +
                        Quote(redis_url) + " --job " + Quote(job);
  for (const std::string& s : Settings(job_table)) enqueue += " " + Quote(s);
  auto enqueued = RunCommand(enqueue);
  ASSERT_EQ(enqueued.exit_code, 0) << enqueued.output;

  // One worker, stopped by SIGTERM once it has finished a task.
  const pid_t first = Spawn({kSluice, "worker", "--redis", redis_url, "--job", job,
                             "--visibility-timeout", "1", "--max-in-flight", "4"},
                            dir / "first.log");
  ASSERT_GT(first, 0);
  auto endpoint = ParseRedisUrl(redis_url);
  ASSERT_TRUE(endpoint.ok());
  auto redis = RedisClient::Connect(*endpoint);
  ASSERT_TRUE(redis.ok()) << redis.status().ToString();
  const std::string prefix = JobKey(job);
  ASSERT_TRUE(WaitUntilAtLeastOne(**redis, prefix, "done")) << ReadFile(dir / "first.log");
  ASSERT_EQ(::kill(first, SIGTERM), 0);
  EXPECT_EQ(Wait(first), 128 + SIGTERM);
  const std::string log = ReadFile(dir / "first.log");
  EXPECT_NE(log.find("stopping gracefully"), std::string::npos) << log;
  EXPECT_NE(log.find("tasks done"), std::string::npos) << log;  // it got to its report
  auto done_after_stop = (*redis)->Command({"HGET", prefix, "done"});
  EXPECT_LT(done_after_stop->AsInteger(), 48) << "the run ended before the stop: a weaker test";

  // A second worker finishes the job, the first one's unacked tasks included.
  const int code = Wait(Spawn({kSluice, "worker", "--redis", redis_url, "--job", job,
                               "--exit-when-idle", "--visibility-timeout", "1"},
                              dir / "second.log"));
  EXPECT_TRUE(code == 0 || code == 3) << code << ":\n" << ReadFile(dir / "second.log");
  auto status =
      RunCommand(kSluice + " status --json --redis " + Quote(redis_url) + " --job " + Quote(job));
  EXPECT_NE(status.output.find("\"total\":49,\"pending\":0,\"in_flight\":0,\"done\":48,\"dead\":1"),
            std::string::npos)
      << status.output;
  EXPECT_TRUE(Dump(dsn, job_table) == Dump(dsn, ref_table));
  (*redis)->Command({"DEL", prefix, prefix + ":tasks", prefix + ":dead", prefix + ":errors",
                     prefix + ":workers"});
}

TEST(DistributedCliTest, ATaskWhoseFileThisWorkerCannotSeeIsDeadNotDone) {
  SLUICE_REQUIRE_REDIS(redis_url);
  TempDir dir;
  WriteFile(dir / "corpus/kept.md", "# Kept\n\nStays where it was.\n");
  WriteFile(dir / "corpus/gone.md", "# Gone\n\nRemoved after the enqueue.\n");
  const std::string job = redistest::UniqueName("e2e-gone");
  const std::string redis = " --redis " + Quote(redis_url) + " --job " + Quote(job);
  auto enqueued = RunCommand(kSluice + " enqueue " + Quote(dir / "corpus") + redis +
                             " --embedder hash --store " + Quote("sqlite:" + (dir / "s.db")));
  ASSERT_EQ(enqueued.exit_code, 0) << enqueued.output;
  std::filesystem::remove(dir / "corpus/gone.md");
  auto worked = RunCommand("cd " + Quote(dir.path()) + " && " + kSluice + " worker" + redis +
                           " --exit-when-idle --visibility-timeout 1");
  EXPECT_EQ(worked.exit_code, 0) << worked.output;
  auto status = RunCommand(kSluice + " status --json" + redis);
  EXPECT_NE(status.output.find("\"total\":2,\"pending\":0,\"in_flight\":0,\"done\":1,\"dead\":1"),
            std::string::npos)
      << status.output;
  auto dead = RunCommand(kSluice + " dead-letter list" + redis);
  EXPECT_NE(dead.output.find("gone.md does not exist on"), std::string::npos) << dead.output;
  // Once the file is back, a retry ingests it.
  WriteFile(dir / "corpus/gone.md", "# Gone\n\nBack again.\n");
  auto retried = RunCommand(kSluice + " dead-letter retry" + redis);
  EXPECT_NE(retried.output.find("1 tasks"), std::string::npos) << retried.output;
  worked = RunCommand("cd " + Quote(dir.path()) + " && " + kSluice + " worker" + redis +
                      " --exit-when-idle --visibility-timeout 1");
  EXPECT_EQ(worked.exit_code, 0) << worked.output;
  status = RunCommand(kSluice + " status --json" + redis);
  EXPECT_NE(status.output.find("\"total\":2,\"pending\":0,\"in_flight\":0,\"done\":2,\"dead\":0"),
            std::string::npos)
      << status.output;
  auto endpoint = ParseRedisUrl(redis_url);
  auto client = RedisClient::Connect(*endpoint);
  ASSERT_TRUE(client.ok());
  const std::string prefix = JobKey(job);
  (*client)->Command({"DEL", prefix, prefix + ":tasks", prefix + ":dead", prefix + ":errors"});
}

TEST(DistributedCliTest, RefusesASqliteStoreWithARemoteRedisAndNeverPrintsPasswords) {
  TempDir dir;
  WriteFile(dir / "corpus/a.md", "# A\n\nText.\n");
  auto r = RunCommand(kSluice + " enqueue " + Quote(dir / "corpus") +
                      " --redis redis://:hunter2@10.1.2.3:6379 --job j --store sqlite:x.db");
  EXPECT_EQ(r.exit_code, 2) << r.output;
  EXPECT_NE(r.output.find("SQLite"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("PostgreSQL"), std::string::npos) << r.output;
  EXPECT_EQ(r.output.find("hunter2"), std::string::npos) << r.output;
}

TEST(DistributedCliTest, StoreUriIsRecordedWithoutItsPassword) {
  SLUICE_REQUIRE_REDIS(redis_url);
  TempDir dir;
  WriteFile(dir / "corpus/a.md", "# A\n\nText.\n");
  const std::string job = redistest::UniqueName("e2e-secret");
  auto r = RunCommand(kSluice + " enqueue " + Quote(dir / "corpus") + " --redis " +
                      Quote(redis_url) + " --job " + Quote(job) +
                      " --store 'postgres://ingest:s3cret-pw@db.example:5432/docs'" +
                      " --budget-redis 'redis://:budget-pw@127.0.0.1:1/0' --embedder hash");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_EQ(r.output.find("s3cret-pw"), std::string::npos) << r.output;
  auto endpoint = ParseRedisUrl(redis_url);
  auto redis = RedisClient::Connect(*endpoint);
  ASSERT_TRUE(redis.ok());
  const std::string prefix = JobKey(job);
  auto all = (*redis)->Command({"HGETALL", prefix});
  ASSERT_TRUE(all.ok());
  std::string text;
  for (const RedisReply& e : all->elements) text += e.str + "\n";
  EXPECT_EQ(text.find("s3cret-pw"), std::string::npos) << text;
  // A budget URL is the worker's own (its --redis): never recorded, it could hold a password.
  EXPECT_EQ(text.find("budget-pw"), std::string::npos) << text;
  EXPECT_EQ(text.find("budget-redis"), std::string::npos) << text;
  EXPECT_NE(text.find("postgres://ingest@db.example:5432/docs"), std::string::npos) << text;
  EXPECT_NE(text.find("\"embedder\":[\"hash\"]"), std::string::npos) << text;
  auto status =
      RunCommand(kSluice + " status --redis " + Quote(redis_url) + " --job " + Quote(job));
  EXPECT_NE(status.output.find("1 total: 1 pending"), std::string::npos) << status.output;
  (*redis)->Command({"DEL", prefix, prefix + ":tasks"});
}

}  // namespace
}  // namespace sluice
