// Crash safety (docs/RESUME.md): the real `sluice` binary ingests through the
// simulated API (in this process, over loopback) and is killed with SIGKILL
// at random moments (seeded) again and again; the same command run to the end
// afterwards must leave exactly the store and aggregate files of one
// uninterrupted run: the same chunk ids, vectors, sources and fingerprints, no
// duplicates, no orphans, byte-identical aggregate JSON. Also: a SIGINT'd run
// reports cleanly, dead-letters nothing, and resumes to the same store.
// The crash tests run against SQLite and against a real PostgreSQL (DSN from
// SLUICE_TEST_PG_DSN; each store in its own table), issue 6's "the same on
// SQLite and on PostgreSQL".
#include <fcntl.h>
#include <libpq-fe.h>
#include <signal.h>
#include <spawn.h>
#include <sqlite3.h>
#include <sys/wait.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <algorithm>
#include <filesystem>
#include <map>
#include <random>
#include <thread>

#include "sluice/mock_api.h"
#include "store/postgres/pg_test_util.h"
#include "testing/sqlite_dump.h"
#include "testing/test_util.h"
#include "testing/wait.h"

extern char** environ;

namespace sluice {
namespace {

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
  for (int i = 0; i < 40; ++i) {
    const std::string folder = i % 2 == 0 ? "ops" : "maintenance/pumps";
    WriteFile(dir / ("corpus/" + folder + "/doc" + std::to_string(i) + ".md"),
              "# Doc " + std::to_string(i) + "\n\n" + Paragraphs(6, "w" + std::to_string(i)));
  }
  // Shared text across files: cache hits inside one run too.
  for (int i = 0; i < 4; ++i) {
    WriteFile(dir / ("corpus/ops/shared" + std::to_string(i) + ".txt"), Paragraphs(4, "shared"));
  }
}

enum class Backend { kSqlite, kPostgres };

std::string BackendName(Backend b) { return b == Backend::kSqlite ? "SQLite" : "PostgreSQL"; }
void PrintTo(Backend b, std::ostream* os) { *os << BackendName(b); }

// Where one store lives: a SQLite file in the test folder, or a table (with
// its _sources, _files and _embedding_cache neighbours) in the test cluster.
struct StoreRef {
  Backend backend = Backend::kSqlite;
  std::string sqlite_path;  // kSqlite
  std::string dsn, table;   // kPostgres

  std::vector<std::string> Flags() const {
    if (backend == Backend::kSqlite) return {"--store", "sqlite:" + sqlite_path};
    return {"--store", dsn, "--table", table};
  }
  // The same flags, quoted for /bin/sh.
  std::string ShellFlags() const {
    std::string out;
    for (const std::string& f : Flags()) out += " '" + f + "'";
    return out;
  }
};

std::vector<std::string> Args(const TempDir& dir, const std::string& url, const StoreRef& store,
                              const std::string& out) {
  std::vector<std::string> args = {kSluice,
                                   "ingest",
                                   dir / "corpus",
                                   "--endpoint",
                                   url,
                                   "--model",
                                   "mock-model",
                                   "--out",
                                   dir / out,
                                   "--dead-letter",
                                   dir / (out + "/dead.jsonl"),
                                   "--report",
                                   dir / (out + "-report.json"),
                                   "--no-progress",
                                   "--concurrency",
                                   "2",
                                   "--batch-size",
                                   "4",
                                   "--chunk-tokens",
                                   "48",
                                   "--chunk-overlap",
                                   "0",
                                   "--readers",
                                   "2",
                                   "--store-batch",
                                   "8",
                                   "--aggregate-every",
                                   "5",
                                   "--aggregate-min-interval",
                                   "0",
                                   "--log-level",
                                   "error"};
  const std::vector<std::string> store_flags = store.Flags();
  args.insert(args.begin() + 7, store_flags.begin(), store_flags.end());
  return args;
}

// `stderr_path`: where the child's stderr goes (default: nowhere).
pid_t Spawn(std::vector<std::string> args, const std::string& stderr_path = "/dev/null") {
  std::vector<char*> argv;
  for (auto& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_addopen(&actions, 1, "/dev/null", O_WRONLY, 0);
  posix_spawn_file_actions_addopen(&actions, 2, stderr_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC,
                                   0644);
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

std::vector<std::string> DumpSqlite(const std::string& db) {
  return sluice::testing::DumpSqliteRows(
      db, {"SELECT 'c', id, source_id, file_id, ordinal, text, domain, category, metadata, "
           "hex(embedding), model, dims FROM chunks",
           "SELECT 's', source_id, chunk_count, size_bytes, mtime_ns, content_hash FROM sources",
           "SELECT 'f', file_id, chunk_count, size_bytes, mtime_ns, content_hash FROM files"});
}

// The PostgreSQL rows in DumpSqliteRows' form ("col|col|...|", NULL spelled
// out, sorted). embedding::text is exact: PostgreSQL 12+ prints floats in
// their shortest round-tripping form, so equal text is equal bits.
std::vector<std::string> DumpPostgres(const std::string& dsn, const std::string& table) {
  pgtest::RawPg pg(dsn);
  EXPECT_TRUE(pg.ok()) << PQerrorMessage(pg.get());
  const auto quoted = [&](const std::string& suffix) { return "\"" + table + suffix + "\""; };
  const std::string queries[] = {
      "SELECT 'c', id, source_id, file_id, ordinal, text, domain, category, metadata::text, "
      "embedding::text, model, dims FROM " +
          quoted(""),
      "SELECT 's', source_id, chunk_count, size_bytes, mtime_ns, content_hash FROM " +
          quoted("_sources"),
      "SELECT 'f', file_id, chunk_count, size_bytes, mtime_ns, content_hash FROM " +
          quoted("_files")};
  std::vector<std::string> rows;
  for (const std::string& sql : queries) {
    PGresult* r = PQexec(pg.get(), sql.c_str());
    if (PQresultStatus(r) != PGRES_TUPLES_OK) {
      ADD_FAILURE() << sql << ": " << PQresultErrorMessage(r);
    } else {
      for (int i = 0; i < PQntuples(r); ++i) {
        std::string row;
        for (int j = 0; j < PQnfields(r); ++j) {
          row += PQgetisnull(r, i, j) ? "NULL" : PQgetvalue(r, i, j);
          row += '|';
        }
        rows.push_back(std::move(row));
      }
    }
    PQclear(r);
  }
  std::sort(rows.begin(), rows.end());
  return rows;
}

std::vector<std::string> Dump(const StoreRef& store) {
  return store.backend == Backend::kSqlite ? DumpSqlite(store.sqlite_path)
                                           : DumpPostgres(store.dsn, store.table);
}

// The store's per-run records of which chunks a file produced: every file
// that completed has had its records removed.
std::string RunRecords(const StoreRef& store) {
  if (store.backend == Backend::kSqlite) {
    auto rows =
        sluice::testing::DumpSqliteRows(store.sqlite_path, {"SELECT count(*) FROM run_chunks"});
    return rows.empty() ? "" : rows[0];
  }
  pgtest::RawPg pg(store.dsn);
  return pg.Scalar("SELECT count(*) FROM \"" + store.table + "_run_chunks\"") + "|";
}

// How many files the store has fingerprinted so far; 0 while the store or
// its tables do not exist yet. Never fails the test: it is polled mid-run.
int64_t CompletedFiles(const StoreRef& store) {
  int64_t n = 0;
  if (store.backend == Backend::kSqlite) {
    sqlite3* db = nullptr;
    if (sqlite3_open_v2(store.sqlite_path.c_str(), &db, SQLITE_OPEN_READONLY, nullptr) ==
        SQLITE_OK) {
      sqlite3_stmt* st = nullptr;
      if (sqlite3_prepare_v2(db, "SELECT count(*) FROM files", -1, &st, nullptr) == SQLITE_OK &&
          sqlite3_step(st) == SQLITE_ROW) {
        n = sqlite3_column_int64(st, 0);
      }
      sqlite3_finalize(st);
    }
    sqlite3_close(db);
    return n;
  }
  PGconn* pg = PQconnectdb(store.dsn.c_str());
  const std::string sql = "SELECT count(*) FROM \"" + store.table + "_files\"";
  PGresult* r = PQexec(pg, sql.c_str());
  if (PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) == 1) {
    n = std::stoll(PQgetvalue(r, 0, 0));
  }
  PQclear(r);
  PQfinish(pg);
  return n;
}

// Every regular file under `root` (relative path -> content).
std::map<std::string, std::string> Files(const std::string& root) {
  std::map<std::string, std::string> out;
  namespace fs = std::filesystem;
  for (const auto& e : fs::recursive_directory_iterator(root)) {
    if (!e.is_regular_file()) continue;
    const std::string name = fs::relative(e.path(), root).string();
    // (No exception for FILE.json.tmp.<pid>: a kill during an aggregate
    // rewrite leaves one, and the next run's aggregator removes it.)
    out[name] = ReadFile(e.path());
  }
  return out;
}

// One reference run (ref_) and one store for the test to interrupt (store_),
// both on backend(); PostgreSQL tables are unique per store and dropped at the
// end.
class KillResumeFixture : public ::testing::Test {
 protected:
  virtual Backend backend() const = 0;

  void SetUp() override {
    ref_.backend = store_.backend = backend();
    if (backend() == Backend::kPostgres) {
      const std::string dsn = pgtest::DsnFromEnv("SLUICE_TEST_PG_DSN");
      if (dsn.empty()) {
        if (pgtest::ServicesRequired()) FAIL() << "SLUICE_TEST_PG_DSN is not set";
        GTEST_SKIP() << "SLUICE_TEST_PG_DSN not set; run under scripts/test-services.sh";
      }
      ref_.dsn = store_.dsn = dsn;
      ref_.table = pgtest::UniqueTable("kill_resume_ref");
      store_.table = pgtest::UniqueTable("kill_resume");
    } else {
      ref_.sqlite_path = dir_ / "ref.db";
      store_.sqlite_path = dir_ / "s.db";
    }
    MockApiOptions mock;
    mock.dimensions = 24;
    mock.base_latency = std::chrono::milliseconds(15);
    mock.jitter = std::chrono::milliseconds(10);
    auto server = MockApiServer::Start(mock);
    ASSERT_TRUE(server.ok()) << server.status().ToString();
    server_ = std::move(*server);
    MakeCorpus(dir_);
    const auto start = std::chrono::steady_clock::now();
    ASSERT_EQ(Wait(Spawn(Args(dir_, server_->BaseUrl(), ref_, "ref-out"))), 0);
    reference_ms_ = std::chrono::duration_cast<std::chrono::milliseconds>(
                        std::chrono::steady_clock::now() - start)
                        .count();
    reference_ = Dump(ref_);
    ASSERT_GT(reference_.size(), 100u);
  }
  void TearDown() override {
    if (server_) server_->Stop();
    if (backend() != Backend::kPostgres || ref_.dsn.empty()) return;
    pgtest::RawPg pg(ref_.dsn);
    if (!pg.ok()) return;
    for (const std::string& t : {ref_.table, store_.table}) {
      pg.Command("DROP TABLE IF EXISTS \"" + t + "\", \"" + t + "_sources\", \"" + t +
                 "_files\", \"" + t + "_embedding_cache\"");
    }
  }

  // `sluice verify` on `store` for the corpus.
  testing::CommandResult Verify(const StoreRef& store) {
    return RunCommand(kSluice + " verify" + store.ShellFlags() + " '" + (dir_ / "corpus") + "'");
  }

  void ExpectSameAsReference() {
    const std::vector<std::string> got_rows = Dump(store_);
    EXPECT_EQ(got_rows.size(), reference_.size());
    std::vector<std::string> missing, extra;
    std::set_difference(reference_.begin(), reference_.end(), got_rows.begin(), got_rows.end(),
                        std::back_inserter(missing));
    std::set_difference(got_rows.begin(), got_rows.end(), reference_.begin(), reference_.end(),
                        std::back_inserter(extra));
    EXPECT_TRUE(missing.empty() && extra.empty())
        << missing.size() << " reference rows missing, " << extra.size() << " extra rows";
    for (size_t i = 0; i < std::min<size_t>(3, missing.size()); ++i)
      ADD_FAILURE() << "missing " << missing[i];
    for (size_t i = 0; i < std::min<size_t>(3, extra.size()); ++i)
      ADD_FAILURE() << "extra " << extra[i];
    auto got = Files(dir_ / "out");
    auto want = Files(dir_ / "ref-out");
    EXPECT_FALSE(got.count(".sluice-incomplete"));
    EXPECT_EQ(got.size(), want.size());
    for (const auto& [name, content] : got) EXPECT_TRUE(want.count(name)) << "extra " << name;
    for (const auto& [name, content] : want) {
      EXPECT_TRUE(got.count(name) && got[name] == content) << name;
    }
    auto r = Verify(store_);
    EXPECT_EQ(r.exit_code, 0) << r.output;
  }

  TempDir dir_;
  StoreRef ref_, store_;
  std::unique_ptr<MockApiServer> server_;
  std::vector<std::string> reference_;
  int64_t reference_ms_ = 0;
};

// The crash tests, once per backend: .../SQLite and .../PostgreSQL.
class KillResumeTest : public KillResumeFixture, public ::testing::WithParamInterface<Backend> {
 protected:
  Backend backend() const override { return GetParam(); }
};

INSTANTIATE_TEST_SUITE_P(Backends, KillResumeTest,
                         ::testing::Values(Backend::kSqlite, Backend::kPostgres),
                         [](const ::testing::TestParamInfo<Backend>& info) {
                           return BackendName(info.param);
                         });

TEST_P(KillResumeTest, KillNineLoopEndsWithTheUninterruptedStore) {
  std::mt19937_64 rng(20261128);
  // Kill moments: some very early (schema creation, first batches), most
  // mid-run (fingerprint commits, aggregate rewrites every 5 files). Each
  // killed run resumes the last one's work and a kill lands at most a third
  // of a full run in, so the rounds advance through the corpus (12 kills
  // reach roughly a third of it) and the final run does the rest. The end of
  // a run (cleanup, marker removal) is covered by the SIGINT tests.
  const int64_t span_ms = std::max<int64_t>(100, reference_ms_ / 3);
  std::uniform_int_distribution<int64_t> moment(5, span_ms);
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(45);
  int kills = 0;
  for (int round = 0; round < 30 && kills < 12 && std::chrono::steady_clock::now() < deadline;
       ++round) {
    const pid_t pid = Spawn(Args(dir_, server_->BaseUrl(), store_, "out"));
    std::this_thread::sleep_for(std::chrono::milliseconds(moment(rng)));
    ::kill(pid, SIGKILL);
    const int code = Wait(pid);
    if (code == 128 + SIGKILL) ++kills;
  }
  EXPECT_GE(kills, 10);
  RecordProperty("sigkills", kills);
  ASSERT_EQ(Wait(Spawn(Args(dir_, server_->BaseUrl(), store_, "out"))), 0);
  ExpectSameAsReference();
  EXPECT_EQ(RunRecords(store_), "0|");  // the killed runs' records went with their commits
  // And the store is complete: a rerun sends nothing to the API.
  const uint64_t before = server_->Stats().requests;
  ASSERT_EQ(Wait(Spawn(Args(dir_, server_->BaseUrl(), store_, "out"))), 0);
  EXPECT_EQ(server_->Stats().requests, before);
  ExpectSameAsReference();
}

TEST_P(KillResumeTest, SigintGivesCleanReportAndResumableStore) {
  const pid_t pid = Spawn(Args(dir_, server_->BaseUrl(), store_, "out"));
  // Signal once a file is committed (not after a guessed delay: on a loaded
  // machine a third of the reference time may pass before any file is done,
  // and the resumed run below must find completed files to skip).
  ASSERT_TRUE(sluice::testing::WaitUntil([&] { return CompletedFiles(store_) > 0; }));
  ::kill(pid, SIGINT);
  EXPECT_EQ(Wait(pid), 130);
  const std::string report = ReadFile(dir_ / "out-report.json");
  EXPECT_NE(report.find("\"status\":\"cancelled\""), std::string::npos) << report;
  EXPECT_NE(report.find("\"reconciled\":true"), std::string::npos) << report;
  EXPECT_NE(report.find("\"chunks_dead_lettered\":0"), std::string::npos) << report;
  EXPECT_FALSE(std::filesystem::exists(dir_ / "out/dead.jsonl"));

  ASSERT_EQ(Wait(Spawn(Args(dir_, server_->BaseUrl(), store_, "out"))), 0);
  const std::string resumed = ReadFile(dir_ / "out-report.json");
  EXPECT_EQ(resumed.find("\"sources_unchanged\":0,"), std::string::npos) << resumed;
  ExpectSameAsReference();
}

TEST_P(KillResumeTest, SecondSignalExitsAtOnceAndIsStillResumable) {
  const std::string err = dir_ / "stderr.txt";
  const pid_t pid = Spawn(Args(dir_, server_->BaseUrl(), store_, "out"), err);
  // Mid-run, not after a guessed delay: before its signal handling is set up
  // a SIGINT kills sluice with the same 130, and a run that already ended
  // would exit 0.
  ASSERT_TRUE(sluice::testing::WaitUntil([&] { return CompletedFiles(store_) > 0; }));
  ::kill(pid, SIGINT);
  // The second only once the first was taken: two pending SIGINTs merge
  // into one, which would test the graceful stop twice.
  ASSERT_TRUE(sluice::testing::WaitUntil([&] {
    return ReadFile(err).find("stopping gracefully") != std::string::npos;
  })) << ReadFile(err);
  ::kill(pid, SIGINT);
  EXPECT_EQ(Wait(pid), 130) << ReadFile(err);
  ASSERT_EQ(Wait(Spawn(Args(dir_, server_->BaseUrl(), store_, "out"))), 0);
  ExpectSameAsReference();
}

TEST_P(KillResumeTest, VerifyFindsChangedDeletedAndNewFilesUntilCleanupFull) {
  auto r = Verify(ref_);
  EXPECT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find(": OK"), std::string::npos) << r.output;

  WriteFile(dir_ / "corpus/ops/doc0.md", "# Doc 0\n\nRewritten entirely.\n");
  std::filesystem::remove(dir_ / "corpus/ops/doc2.md");
  WriteFile(dir_ / "corpus/ops/new.md", "# New\n\nA new file.\n");
  r = Verify(ref_);
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_NE(r.output.find("changed          ops/doc0.md"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("deleted          ops/doc2.md"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("not_ingested     ops/new.md"), std::string::npos) << r.output;
  // Each kind found comes with what to do about it.
  EXPECT_NE(r.output.find("hint: deleted files: `sluice ingest --cleanup full`"), std::string::npos)
      << r.output;
  EXPECT_NE(r.output.find("hint: changed or new files: run `sluice ingest` again"),
            std::string::npos)
      << r.output;

  std::vector<std::string> args = Args(dir_, server_->BaseUrl(), ref_, "ref-out");
  args.push_back("--cleanup");
  args.push_back("full");
  ASSERT_EQ(Wait(Spawn(args)), 0);
  const std::string report = ReadFile(dir_ / "ref-out-report.json");
  EXPECT_NE(report.find("\"sources_deleted\":1"), std::string::npos) << report;
  EXPECT_NE(report.find("\"sources_unchanged\":42"), std::string::npos) << report;
  r = Verify(ref_);
  EXPECT_EQ(r.exit_code, 0) << r.output;
}

TEST(DeadLetterCliTest, BadPatternCorruptFileAndBadCleanupAreClearErrors) {
  TempDir dir;
  WriteFile(dir / "dead.jsonl", "{\"kind\":\"chunk\",\"reason\":\"unavailable\"}\n");
  auto r = RunCommand(kSluice + " dead-letter list --dead-letter " + (dir / "dead.jsonl"));
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_NE(r.output.find("chunk entry without"), std::string::npos) << r.output;
  WriteFile(dir / "dead.jsonl", "not json\n");
  r = RunCommand(kSluice + " dead-letter list --dead-letter " + (dir / "dead.jsonl"));
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_NE(r.output.find(":1: not a JSON object"), std::string::npos) << r.output;
  r = RunCommand(kSluice + " dead-letter list --dead-letter " + (dir / "none.jsonl"));
  EXPECT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("no dead letters"), std::string::npos) << r.output;
  r = RunCommand(kSluice + " dead-letter retry --dead-letter " + (dir / "none.jsonl") +
                 " --reason '(' --embedder hash --store sqlite:" + (dir / "s.db"));
  EXPECT_EQ(r.exit_code, 2) << r.output;
  EXPECT_NE(r.output.find("not a valid regular expression"), std::string::npos) << r.output;
  r = RunCommand(kSluice + " ingest " + dir.path() + " --cleanup everything");
  EXPECT_EQ(r.exit_code, 2) << r.output;
  r = RunCommand(kSluice + " verify --store sqlite:" + (dir / "no/such/dir.db"));
  EXPECT_EQ(r.exit_code, 1) << r.output;
}

TEST_P(KillResumeTest, DeadLetterRetryStoresItemsOnceTheApiRecovers) {
  // Every input is refused as too long (a 400 naming it: a failure that lies
  // in the input). Since issue 14 a service failing every request (it was
  // --fail-500 1.0 here) stops the run with nothing dead-lettered instead.
  MockApiOptions failing;
  failing.dimensions = 24;
  failing.max_tokens_per_input = 1;
  auto down = MockApiServer::Start(failing);
  ASSERT_TRUE(down.ok());
  std::vector<std::string> args = Args(dir_, (*down)->BaseUrl(), store_, "out");
  for (const char* extra : {"--max-attempts", "1", "--batch-size", "1"}) args.push_back(extra);
  // Every chunk fails permanently, yet the run goes through all files.
  EXPECT_EQ(Wait(Spawn(args)), 3);
  (*down)->Stop();
  const std::string dead = dir_ / "out/dead.jsonl";
  ASSERT_TRUE(std::filesystem::exists(dead));

  auto list = RunCommand(kSluice + " dead-letter list --dead-letter " + dead);
  EXPECT_EQ(list.exit_code, 0) << list.output;
  EXPECT_NE(list.output.find("chunks"), std::string::npos) << list.output;
  EXPECT_NE(list.output.find("dead letters in"), std::string::npos) << list.output;

  // A pattern that matches nothing retries nothing and keeps the file.
  auto none =
      RunCommand(kSluice + " dead-letter retry --dead-letter " + dead + " --reason no-such-reason" +
                 store_.ShellFlags() + " --endpoint " + server_->BaseUrl());
  EXPECT_EQ(none.exit_code, 0) << none.output;
  EXPECT_NE(none.output.find("nothing to retry"), std::string::npos) << none.output;
  EXPECT_TRUE(std::filesystem::exists(dead));

  // The healthy API: everything is stored and the file goes away.
  std::vector<std::string> retry = Args(dir_, server_->BaseUrl(), store_, "out");
  retry.erase(retry.begin() + 2);  // no input path
  retry[1] = "retry";
  retry.insert(retry.begin() + 1, "dead-letter");
  std::string command;
  for (const std::string& a : retry) command += "'" + a + "' ";
  auto r = RunCommand(command);
  EXPECT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("0 kept"), std::string::npos) << r.output;
  EXPECT_FALSE(std::filesystem::exists(dead));
  ExpectSameAsReference();
}

}  // namespace
}  // namespace sluice
