// The sluice binary as a user runs it: flags, config files, exit codes,
// reports, stdin, search, and `sluice mock-api` as a separate process.
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/file.h>
#include <sys/socket.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <filesystem>

#include <thread>

#include "testing/child_process.h"
#include "testing/sqlite_query.h"
#include "testing/test_util.h"
#include "testing/wait.h"

namespace sluice {
namespace {

using testing::ReadFile;
using testing::RunCommand;
using testing::TempDir;
using testing::WriteFile;

const std::string kSluice = SLUICE_BINARY;

uint16_t FreePort() {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr);
  socklen_t len = sizeof addr;
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len);
  ::close(fd);
  return ntohs(addr.sin_port);
}

bool CanConnect(uint16_t port) {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(port);
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  const bool ok = ::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0;
  ::close(fd);
  return ok;
}

// `sluice mock-api` in a child process, stopped with SIGINT.
class MockApiProcess {
 public:
  explicit MockApiProcess(std::vector<std::string> extra)
      : port_(FreePort()),
        process_(Args(port_, std::move(extra)), {.in = testing::ChildProcess::Inherit(),
                                                 .out = testing::ChildProcess::Null(),
                                                 .err = testing::ChildProcess::Inherit()}) {
    EXPECT_TRUE(process_.started());
    // Ready once it accepts connections (a loaded machine may take seconds).
    EXPECT_TRUE(testing::WaitUntil([this] { return CanConnect(port_); })) << "mock-api not up";
  }
  // The exit status after SIGINT (-1 if it did not exit within the bound).
  int Stop() {
    process_.Signal(SIGINT);
    return process_.WaitExit().value_or(-1);
  }
  std::string url() const { return "http://127.0.0.1:" + std::to_string(port_) + "/v1"; }

 private:
  static std::vector<std::string> Args(uint16_t port, std::vector<std::string> extra) {
    std::vector<std::string> args = {kSluice, "mock-api", "--port", std::to_string(port)};
    args.insert(args.end(), extra.begin(), extra.end());
    return args;
  }

  uint16_t port_;
  testing::ChildProcess process_;
};

void MakeCorpus(const TempDir& dir) {
  WriteFile(dir / "corpus/ops/gates.md",
            "# Gates\n\nOpen the gate slowly. Check the seal before the flood season.\n\n"
            "## Seals\n\nA worn seal leaks. Replace it with the spare from the store room.\n");
  WriteFile(dir / "corpus/ops/pumps.txt", "Pumps are started in sequence.\n\nNever run dry.\n");
}

std::string Common(const TempDir& dir) {
  return " --store sqlite:" + (dir / "s.db") + " --out " + (dir / "out") + " --dead-letter " +
         (dir / "out/dead.jsonl") + " --report " + (dir / "report.json") + " --no-progress";
}

TEST(CliTest, HelpListsSubcommandsAndFlags) {
  auto r = RunCommand(kSluice + " --help");
  EXPECT_EQ(r.exit_code, 0);
  for (const char* word : {"ingest", "search", "demo", "mock-api", "verify", "dead-letter"}) {
    EXPECT_NE(r.output.find(word), std::string::npos) << word;
  }
  r = RunCommand(kSluice + " ingest --help");
  EXPECT_EQ(r.exit_code, 0);
  for (const char* flag :
       {"--endpoint", "--batch-size", "--concurrency", "--store", "--chunk-tokens", "--dead-letter",
        "--report", "--parser-cmd", "--config", "--cleanup", "--reprocess-all", "--no-cache"}) {
    EXPECT_NE(r.output.find(flag), std::string::npos) << flag;
  }
}

TEST(CliTest, UnknownFlagAndConfigKeyAreUsageErrors) {
  TempDir dir;
  MakeCorpus(dir);
  auto r = RunCommand(kSluice + " ingest " + (dir / "corpus") + " --no-such-flag");
  EXPECT_EQ(r.exit_code, 2) << r.output;
  EXPECT_NE(r.output.find("--no-such-flag"), std::string::npos) << r.output;

  WriteFile(dir / "bad.toml", "batch-size = 8\nbatch_sise = 9\n");
  r = RunCommand(kSluice + " ingest " + (dir / "corpus") + " --config " + (dir / "bad.toml"));
  EXPECT_EQ(r.exit_code, 2) << r.output;
  EXPECT_NE(r.output.find("unknown key 'batch_sise'"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find(":2"), std::string::npos) << r.output;  // the line number

  WriteFile(dir / "bad-route.toml", "[[route]]\nglob = \"*\"\ndomian = \"x\"\n");
  r = RunCommand(kSluice + " ingest " + (dir / "corpus") + " --config " + (dir / "bad-route.toml"));
  EXPECT_EQ(r.exit_code, 2) << r.output;
  EXPECT_NE(r.output.find("unknown key 'domian' in [[route]]"), std::string::npos) << r.output;
}

TEST(CliTest, OfflineIngestWritesReportAndSearchFindsIt) {
  TempDir dir;
  MakeCorpus(dir);
  WriteFile(dir / "cfg.toml",
            "chunk-tokens = 32\nchunk-overlap = 4\n[[route]]\nglob = \"ops/*.md\"\n"
            "domain = \"operations\"\ncategory = \"gates\"\n");
  auto r = RunCommand(kSluice + " ingest " + (dir / "corpus") + " --embedder hash --config " +
                      (dir / "cfg.toml") + Common(dir));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("offline hash embedder"), std::string::npos) << r.output;
  const std::string report = ReadFile(dir / "report.json");
  EXPECT_NE(report.find("\"chunks_dead_lettered\":0"), std::string::npos) << report;
  EXPECT_NE(report.find("\"reconciled\":true"), std::string::npos) << report;
  EXPECT_TRUE(std::filesystem::exists(dir / "out/operations/gates.json"));

  r = RunCommand(kSluice + " search \"worn seal leaks\" --embedder hash -k 2 --store sqlite:" +
                 (dir / "s.db"));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("gates.md"), std::string::npos) << r.output;
}

TEST(CliTest, IngestsJsonlFromStdin) {
  TempDir dir;
  WriteFile(dir / "in.jsonl",
            "{\"id\":\"a\",\"text\":\"alpha text\",\"domain\":\"d\",\"category\":\"c\"}\n"
            "{\"id\":\"b\",\"text\":\"beta text\",\"metadata\":{\"k\":1}}\n");
  auto r = RunCommand("cat " + (dir / "in.jsonl") + " | " + kSluice + " ingest - --embedder hash" +
                      Common(dir));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(ReadFile(dir / "report.json").find("\"chunks_stored\":2"), std::string::npos);
}

TEST(CliTest, IngestThroughMockApiProcessWithApiKeyFromEnvironment) {
  TempDir dir;
  MakeCorpus(dir);
  ::setenv("SLUICE_TEST_MOCK_KEY", "sk-cli-secret", 1);
  MockApiProcess mock({"--api-key-env", "SLUICE_TEST_MOCK_KEY", "--dimensions", "48",
                       "--latency-ms", "5", "--fail-500", "0.1"});
  auto r = RunCommand("SLUICE_KEY=sk-cli-secret " + kSluice + " ingest " + (dir / "corpus") +
                      " --endpoint " + mock.url() + " --api-key-env SLUICE_KEY" + Common(dir));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_EQ(r.output.find("sk-cli-secret"), std::string::npos);
  EXPECT_EQ(ReadFile(dir / "report.json").find("sk-cli-secret"), std::string::npos);

  // A wrong key: exit 1 at once, with a clear message.
  // (--reprocess-all --no-cache: the unchanged rerun would send no request.)
  r = RunCommand("SLUICE_KEY=wrong " + kSluice + " ingest " + (dir / "corpus") + " --endpoint " +
                 mock.url() + " --api-key-env SLUICE_KEY --reprocess-all --no-cache" + Common(dir));
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_NE(r.output.find("401"), std::string::npos) << r.output;
  EXPECT_EQ(mock.Stop(), 0);
}

// Issue 12: a run whose stderr is not a terminal (CI, cron, nohup) logs a
// progress line every --progress-interval, with the ETA and the cost of a
// model with a known price; the report carries tokens and the cost.
TEST(CliTest, ProgressIsLoggedWhenNotOnATerminalWithEtaAndCost) {
  TempDir dir;
  MakeCorpus(dir);
  // Four requests of 500 ms one after another: the run lasts at least 2 s,
  // twenty progress intervals.
  MockApiProcess mock({"--dimensions", "16", "--latency-ms", "500"});
  std::string common = Common(dir);
  common.erase(common.find(" --no-progress"));
  auto r = RunCommand(kSluice + " ingest " + (dir / "corpus") + " --endpoint " + mock.url() +
                      " --model text-embedding-3-small --concurrency 1 --batch-size 1" + common +
                      " --progress-interval 0.1");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  const size_t line = r.output.find("[sluice] progress: ");
  ASSERT_NE(line, std::string::npos) << r.output;
  const std::string first = r.output.substr(line, r.output.find('\n', line) - line);
  for (const char* part : {"sources ", "chunks ", "chunks/s", "ETA ", "$", "in flight "}) {
    EXPECT_NE(first.find(part), std::string::npos) << part << " in: " << first;
  }
  EXPECT_EQ(r.output.find("\r"), std::string::npos);  // no terminal redraws in a log
  const std::string report = ReadFile(dir / "report.json");
  EXPECT_NE(report.find("\"tokens\":"), std::string::npos) << report;
  EXPECT_NE(report.find("\"estimated_cost_usd\":"), std::string::npos) << report;
  EXPECT_EQ(report.find("\"estimated_cost_usd\":null"), std::string::npos) << report;
  EXPECT_NE(r.output.find("estimated cost"), std::string::npos) << r.output;

  // --quiet: nothing; a model without a known price: no cost, never guessed.
  std::string other_store = common;
  other_store.replace(other_store.find("s.db"), 4, "s2.db");  // a store of the other model
  r = RunCommand(kSluice + " ingest " + (dir / "corpus") + " --endpoint " + mock.url() +
                 " --model some-local-model --concurrency 1 --batch-size 1" + other_store +
                 " --progress-interval 0.1 --quiet");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_EQ(r.output.find("[sluice] progress: "), std::string::npos) << r.output;
  EXPECT_NE(ReadFile(dir / "report.json").find("\"estimated_cost_usd\":null"), std::string::npos);
  EXPECT_EQ(mock.Stop(), 0);
}

// Issue 14 changed this test (it was UnreachableEndpointDeadLettersAndExitsThree,
// expecting every chunk dead-lettered and exit 3): an endpoint nobody listens
// on says nothing about the input, so the run retries, then fails (exit 1)
// with one line naming the endpoint, dead-letters nothing and fingerprints nothing.
TEST(CliTest, UnreachableEndpointFailsWithExitOneAndDeadLettersNothing) {
  TempDir dir;
  MakeCorpus(dir);
  const uint16_t closed = FreePort();
  const std::string endpoint = "http://127.0.0.1:" + std::to_string(closed) + "/v1";
  auto r = RunCommand(kSluice + " ingest " + (dir / "corpus") + " --endpoint " + endpoint +
                      " --max-attempts 2" + Common(dir));
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_NE(r.output.find("cannot reach the embedding service at " + endpoint + "/embeddings"),
            std::string::npos)
      << r.output;
  EXPECT_FALSE(std::filesystem::exists(dir / "out/dead.jsonl")) << ReadFile(dir / "out/dead.jsonl");
  const std::string report = ReadFile(dir / "report.json");
  EXPECT_NE(report.find("\"reconciled\":true"), std::string::npos) << report;
  EXPECT_NE(report.find("\"chunks_dead_lettered\":0"), std::string::npos) << report;
  EXPECT_NE(report.find("\"sources_completed\":0"), std::string::npos) << report;
}

// Issue 14's reproduction: --endpoint .../v2 answers 404 to every request.
// The run fails at once (exit 1) and the corrected rerun (.../v1) stores
// every chunk instead of reporting every file unchanged.
TEST(CliTest, WrongEndpointPathFailsAndTheCorrectedRerunStoresEverything) {
  TempDir dir;
  MakeCorpus(dir);
  MockApiProcess mock({"--dimensions", "16"});
  std::string wrong = mock.url();
  wrong.replace(wrong.size() - 3, 3, "/v2");
  auto r = RunCommand("OPENAI_API_KEY=k " + kSluice + " ingest " + (dir / "corpus") +
                      " --endpoint " + wrong + Common(dir));
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_NE(r.output.find("HTTP 404 from " + wrong + "/embeddings"), std::string::npos) << r.output;
  EXPECT_FALSE(std::filesystem::exists(dir / "out/dead.jsonl")) << ReadFile(dir / "out/dead.jsonl");
  std::string report = ReadFile(dir / "report.json");
  EXPECT_NE(report.find("\"chunks_dead_lettered\":0"), std::string::npos) << report;
  EXPECT_NE(report.find("\"sources_completed\":0"), std::string::npos) << report;

  r = RunCommand("OPENAI_API_KEY=k " + kSluice + " ingest " + (dir / "corpus") + " --endpoint " +
                 mock.url() + Common(dir));
  EXPECT_EQ(r.exit_code, 0) << r.output;
  report = ReadFile(dir / "report.json");
  EXPECT_NE(report.find("\"sources_unchanged\":0"), std::string::npos) << report;
  EXPECT_NE(report.find("\"sources_completed\":2"), std::string::npos) << report;
  EXPECT_NE(report.find("\"chunks_abandoned\":0"), std::string::npos) << report;
  EXPECT_EQ(mock.Stop(), 0);
}

TEST(CliTest, SigintStopsGracefullyWithExit130) {
  TempDir dir;
  for (int i = 0; i < 50; ++i) {
    std::string text;
    // Distinct texts: copies of one text would be embedded once (docs/RESUME.md).
    for (int p = 0; p < 40; ++p) {
      text += "Paragraph " + std::to_string(p) + " of long file " + std::to_string(i) + ".\n\n";
    }
    WriteFile(dir / ("corpus/f" + std::to_string(i) + ".txt"), text);
  }
  MockApiProcess mock({"--latency-ms", "200"});
  auto r = RunCommand("( " + kSluice + " ingest " + (dir / "corpus") + " --endpoint " + mock.url() +
                      " --concurrency 2 --batch-size 4" + Common(dir) +
                      " & pid=$!; sleep 1; kill -INT $pid; wait $pid )");
  EXPECT_EQ(r.exit_code, 130) << r.output;
  EXPECT_NE(r.output.find("stopping gracefully"), std::string::npos) << r.output;
  EXPECT_NE(ReadFile(dir / "report.json").find("\"reconciled\":true"), std::string::npos);
}

}  // namespace
}  // namespace sluice

namespace sluice {
namespace {

// Issue 14: two `sluice ingest` into one SQLite store at once both exited 0
// over a store missing rows. The test holds the store's run lock as a running
// ingest does (flock on "<db>.lock", holding our pid): a second ingest and a
// dead-letter retry fail at start with exit 4 naming the holder; search and
// verify, which only read, still work.
TEST(CliTest, SecondWriterOfOneSqliteStoreIsRefusedWhileReadersWork) {
  TempDir dir;
  MakeCorpus(dir);
  auto r = RunCommand(kSluice + " ingest " + (dir / "corpus") + " --embedder hash" + Common(dir));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  const std::string rows_before =
      testing::SqliteColumn(dir / "s.db", "SELECT count(*) FROM chunks")[0];

  const int lock_fd = ::open((dir / "s.db.lock").c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600);
  ASSERT_GE(lock_fd, 0);
  ASSERT_EQ(::flock(lock_fd, LOCK_EX | LOCK_NB), 0);
  const std::string pid = std::to_string(::getpid());
  ASSERT_EQ(::ftruncate(lock_fd, 0), 0);
  ASSERT_EQ(::pwrite(lock_fd, (pid + "\n").data(), pid.size() + 1, 0),
            static_cast<ssize_t>(pid.size() + 1));

  WriteFile(dir / "corpus/ops/new.md", "# New\n\nA new page about spillways.\n");
  r = RunCommand(kSluice + " ingest " + (dir / "corpus") + " --embedder hash" + Common(dir));
  EXPECT_EQ(r.exit_code, 4) << r.output;
  EXPECT_NE(r.output.find("store 'sqlite:" + (dir / "s.db") +
                          "' is in use by another sluice run (pid " + pid + ")"),
            std::string::npos)
      << r.output;
  WriteFile(dir / "dead.jsonl",
            "{\"kind\":\"source\",\"reason\":\"corrupt\",\"message\":\"x\","
            "\"source_id\":\"ops/new.md\",\"path\":\"" +
                (dir / "corpus/ops/new.md") + "\"}\n");
  r = RunCommand(kSluice + " dead-letter retry --embedder hash --dead-letter " +
                 (dir / "dead.jsonl") + " --store sqlite:" + (dir / "s.db") + " --out " +
                 (dir / "out") + " --no-progress");
  EXPECT_EQ(r.exit_code, 4) << r.output;
  EXPECT_NE(r.output.find("is in use by another sluice run (pid " + pid + ")"), std::string::npos)
      << r.output;
  r = RunCommand(kSluice + " search \"worn seal\" -k 1 --store sqlite:" + (dir / "s.db"));
  EXPECT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("gates.md"), std::string::npos) << r.output;
  r = RunCommand(kSluice + " verify --store sqlite:" + (dir / "s.db") + " " + (dir / "corpus"));
  EXPECT_EQ(r.exit_code, 1) << r.output;  // it ran, and found new.md not ingested
  EXPECT_NE(r.output.find("new.md"), std::string::npos) << r.output;
  EXPECT_EQ(testing::SqliteColumn(dir / "s.db", "SELECT count(*) FROM chunks")[0], rows_before);

  ::close(lock_fd);  // the first run ends
  r = RunCommand(kSluice + " ingest " + (dir / "corpus") + " --embedder hash" + Common(dir));
  EXPECT_EQ(r.exit_code, 0) << r.output;
  r = RunCommand(kSluice + " verify --store sqlite:" + (dir / "s.db") + " " + (dir / "corpus"));
  EXPECT_EQ(r.exit_code, 0) << r.output;
}

// Issue 14: vectors of different models mixed silently in one store.
TEST(CliTest, AStoreKeepsOneModelUntilReembedAndSearchUsesIt) {
  TempDir dir;
  MakeCorpus(dir);
  MockApiProcess mock({});
  const std::string db = dir / "s.db";
  const std::string api = " --endpoint " + mock.url() + " --dimensions 64";
  auto r = RunCommand(kSluice + " ingest " + (dir / "corpus") + api + " --model m1" + Common(dir));
  ASSERT_EQ(r.exit_code, 0) << r.output;

  // search embeds the query with the store's model and dimensions (the
  // defaults, text-embedding-3-small at the API's default length, failed).
  r = RunCommand(kSluice + " search \"worn seal leaks\" -k 1 --json --endpoint " + mock.url() +
                 " --store sqlite:" + db);
  EXPECT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("\"rank\":1"), std::string::npos) << r.output;
  // ... and refuses to embed it otherwise.
  r = RunCommand(kSluice + " search \"worn seal\" --embedder hash --store sqlite:" + db);
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_NE(r.output.find("'m1'"), std::string::npos) << r.output;

  WriteFile(dir / "corpus/ops/pumps.txt", "Pumps are started in sequence.\n\nNever run dry!\n");
  r = RunCommand(kSluice + " ingest " + (dir / "corpus") + api + " --model m2" + Common(dir));
  EXPECT_EQ(r.exit_code, 1) << r.output;
  for (const char* part : {"model 'm1', 64 dimensions", "model 'm2', 64 dimensions", "--reembed"}) {
    EXPECT_NE(r.output.find(part), std::string::npos) << part << "\n" << r.output;
  }
  // Without --endpoint: the offline embedder's vectors of the same length.
  r = RunCommand(kSluice + " ingest " + (dir / "corpus") + " --embedder hash --hash-dimensions 64" +
                 Common(dir));
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_NE(r.output.find("model 'sluice-hash-v1', 64 dimensions"), std::string::npos) << r.output;
  EXPECT_EQ(testing::SqliteColumn(db, "SELECT DISTINCT model FROM chunks"),
            std::vector<std::string>{"m1"});

  r = RunCommand(kSluice + " ingest " + (dir / "corpus") + api + " --model m2 --reembed" +
                 Common(dir));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_EQ(testing::SqliteColumn(db, "SELECT DISTINCT model FROM chunks"),
            std::vector<std::string>{"m2"});
  // Nothing of m1 is left to answer from (the chunk rows are the cache's
  // entries since version 4; the cache table holds only deleted chunks').
  EXPECT_EQ(testing::SqliteColumn(db, "SELECT count(*) FROM embedding_cache WHERE model <> 'm2'"),
            std::vector<std::string>{"0"});
  EXPECT_EQ(testing::SqliteColumn(db, "SELECT value FROM meta WHERE key = 'model'"),
            std::vector<std::string>{"m2"});
  EXPECT_NE(ReadFile(dir / "report.json").find("\"cache_hits\":0"), std::string::npos);
  r = RunCommand(kSluice + " verify --store sqlite:" + db + " " + (dir / "corpus"));
  EXPECT_EQ(r.exit_code, 0) << r.output;
  r = RunCommand(kSluice + " search \"worn seal leaks\" -k 1 --endpoint " + mock.url() +
                 " --store sqlite:" + db);
  EXPECT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("gates.md"), std::string::npos) << r.output;
}

TEST(CliTest, SearchAndVerifyOfAMissingStoreFailWithoutCreatingIt) {
  TempDir dir;
  for (const std::string command :
       {" search \"seal\" --embedder hash --store sqlite:", " verify --store sqlite:"}) {
    auto r = RunCommand(kSluice + command + (dir / "nope.db"));
    EXPECT_EQ(r.exit_code, 1) << command << r.output;
    EXPECT_NE(r.output.find("store 'sqlite:" + (dir / "nope.db") + "' does not exist"),
              std::string::npos)
        << r.output;
    EXPECT_FALSE(std::filesystem::exists(dir / "nope.db"));
  }
}

TEST(CliTest, ReembedIsAnIngestFlagAndAConfigKey) {
  auto r = RunCommand(kSluice + " ingest --help");
  EXPECT_NE(r.output.find("--reembed"), std::string::npos) << r.output;
  TempDir dir;
  MakeCorpus(dir);
  WriteFile(dir / "cfg.toml", "reembed = true\nembedder = \"hash\"\n");
  r = RunCommand(kSluice + " ingest " + (dir / "corpus") + " --config " + (dir / "cfg.toml") +
                 Common(dir));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  r = RunCommand(kSluice + " ingest " + (dir / "corpus") + " --config " + (dir / "cfg.toml") +
                 Common(dir));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  // Every run re-embeds everything: nothing is skipped as unchanged.
  EXPECT_NE(ReadFile(dir / "report.json").find("\"sources_unchanged\":0"), std::string::npos);
}

// The whole pipeline into real PostgreSQL (and pgvector through PGlite), in
// one command, then search. Needs scripts/test-services.sh (make test).
std::string ServiceDsn(const char* name) {
  const char* dsn = std::getenv(name);
  return dsn != nullptr ? dsn : "";
}

// Uses the default table names ("chunks", "sources"): the store tests all use
// their own, so this is the only user of them in the throwaway cluster.
void IngestAndSearchPostgres(const std::string& dsn) {
  TempDir dir;
  MakeCorpus(dir);
  const std::string common = " --embedder hash --hash-dimensions 64 --store '" + dsn + "'";
  // --reprocess-all: the same relative paths may be fingerprinted already
  // when the test runs twice against one cluster.
  auto r = RunCommand(kSluice + " ingest " + (dir / "corpus") + common + " --out " + (dir / "out") +
                      " --dead-letter " + (dir / "out/dead.jsonl") + " --report " +
                      (dir / "report.json") + " --no-progress --reprocess-all");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  std::string report = ReadFile(dir / "report.json");
  EXPECT_NE(report.find("\"reconciled\":true"), std::string::npos) << report;
  EXPECT_NE(report.find("\"chunks_stored\":3"), std::string::npos) << report;
  // A rerun skips every file: fingerprints are kept in PostgreSQL too.
  r = RunCommand(kSluice + " ingest " + (dir / "corpus") + common +
                 " --no-aggregate --dead-letter " + (dir / "out/dead.jsonl") + " --report " +
                 (dir / "report2.json") + " --no-progress");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  report = ReadFile(dir / "report2.json");
  EXPECT_NE(report.find("\"reconciled\":true"), std::string::npos) << report;
  EXPECT_NE(report.find("\"sources_unchanged\":2"), std::string::npos) << report;
  EXPECT_NE(report.find("\"chunks_produced\":0"), std::string::npos) << report;
  r = RunCommand(kSluice + " verify --store '" + dsn + "' " + (dir / "corpus"));
  EXPECT_EQ(r.exit_code, 0) << r.output;
  r = RunCommand(kSluice + " search \"worn seal leaks\" -k 5 --json" + common);
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("\"rank\":1"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("gates.md"), std::string::npos) << r.output;
  EXPECT_EQ(r.output.find("\"rank\":4"), std::string::npos) << r.output;  // 3 chunks, no duplicates
}

TEST(CliPostgresTest, IngestIntoPostgresInOneCommand) {
  const std::string dsn = ServiceDsn("SLUICE_TEST_PG_DSN");
  if (dsn.empty()) {
    if (std::getenv("SLUICE_TEST_SERVICES") != nullptr) FAIL() << "SLUICE_TEST_PG_DSN missing";
    GTEST_SKIP() << "needs scripts/test-services.sh";
  }
  IngestAndSearchPostgres(dsn);
}

}  // namespace
}  // namespace sluice

namespace sluice {
namespace {

TEST(CliPostgresTest, IngestIntoPgvectorInOneCommand) {
  const std::string dsn = ServiceDsn("SLUICE_TEST_PGVECTOR_DSN");
  if (dsn.empty()) {
    if (std::getenv("SLUICE_TEST_SERVICES") != nullptr)
      FAIL() << "SLUICE_TEST_PGVECTOR_DSN missing";
    GTEST_SKIP() << "needs scripts/test-services.sh";
  }
  // PGlite has one shared backend: this test holds the "pglite" resource lock
  // (tests/e2e/CMakeLists.txt) like the other pgvector tests.
  IngestAndSearchPostgres(dsn);
}

}  // namespace
}  // namespace sluice
