// Service tests of the PostgreSQL store against a real PostgreSQL 15 server
// (started by scripts/test-services.sh; the restart test starts its own).
#include <unistd.h>

#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <latch>
#include <set>
#include <thread>

#include "pg_test_util.h"
#include "store/postgres/pg_binary.h"
#include "store/postgres/postgres_store.h"

namespace sluice {
namespace {

using pgtest::RawPg;
using pgtest::TestChunk;
using pgtest::TestChunks;
using pgtest::UniqueTable;

constexpr int kDims = 16;

std::unique_ptr<Store> MustOpen(const std::string& dsn, const StoreOptions& options) {
  auto store = OpenPostgresStore(dsn, options);
  EXPECT_TRUE(store.ok()) << store.status().ToString();
  return store.ok() ? std::move(*store) : nullptr;
}

StoreOptions Options(const std::string& table) {
  StoreOptions o;
  o.table = table;
  o.batch_rows = 500;
  o.pool_size = 2;
  return o;
}

// The store says how it wants to be fed (issue 10): the pipeline asks it
// instead of looking at the URI's scheme.
TEST(PostgresStoreTest, SaysItsRowsPerTransactionAndParallelWrites) {
  SLUICE_REQUIRE_DSN(dsn, "SLUICE_TEST_PG_DSN");
  StoreOptions o = Options(UniqueTable("feed"));
  o.batch_rows = 0;  // the store's own default
  o.pool_size = 3;
  auto store = MustOpen(dsn, o);
  ASSERT_TRUE(store);
  EXPECT_EQ(store->RowsPerTransaction(), 500u);
  EXPECT_EQ(store->ParallelWrites(), 3);  // the COPY path writes on the whole pool
  o.batch_rows = 40;
  auto given = MustOpen(dsn, o);
  ASSERT_TRUE(given);
  EXPECT_EQ(given->RowsPerTransaction(), 40u);
}

TEST(PostgresStoreTest, FreshSchemaUsesRealArrayWithExternalStorageAndJsonb) {
  SLUICE_REQUIRE_DSN(dsn, "SLUICE_TEST_PG_DSN");
  const std::string table = UniqueTable("fresh");
  auto store = MustOpen(dsn, Options(table));
  ASSERT_TRUE(store);
  auto batch = TestChunks(0, 25, kDims);
  for (size_t i = 0; i < 10; ++i) batch[i].chunk.file_id = "docs/" + batch[i].chunk.source_id;
  WriteResult w = store->Write(batch);
  ASSERT_TRUE(w.status.ok()) << w.status.ToString();
  EXPECT_TRUE(w.rejected.empty());

  const PostgresSchemaInfo info = GetPostgresSchemaInfo(*store);
  EXPECT_FALSE(info.pgvector);  // Debian's PostgreSQL has no pgvector
  EXPECT_TRUE(info.copy_path);
  EXPECT_EQ(info.dimensions, kDims);
  EXPECT_EQ(info.sources_table, table + "_sources");

  RawPg pg(dsn);
  ASSERT_TRUE(pg.ok());
  const std::string reg = "'\"" + table + "\"'::regclass";
  EXPECT_EQ(pg.Scalar("SELECT format_type(atttypid, atttypmod) FROM pg_attribute WHERE attrelid=" +
                      reg + " AND attname='embedding'"),
            "real[]");
  EXPECT_EQ(pg.Scalar("SELECT attstorage FROM pg_attribute WHERE attrelid=" + reg +
                      " AND attname='embedding'"),
            "e");
  EXPECT_EQ(pg.Scalar("SELECT format_type(atttypid, atttypmod) FROM pg_attribute WHERE attrelid=" +
                      reg + " AND attname='metadata'"),
            "jsonb");
  EXPECT_EQ(pg.Scalar("SELECT count(*) FROM \"" + table + "\""), "25");
  // file_id is indexed; a chunk of no file has NULL (binary COPY's -1).
  EXPECT_EQ(pg.Scalar("SELECT to_regclass('\"" + table + "_file_id_idx\"') IS NOT NULL"), "t");
  EXPECT_EQ(
      pg.Scalar("SELECT string_agg(coalesce(file_id, '-'), ',' ORDER BY file_id) FROM (SELECT "
                "DISTINCT file_id FROM \"" +
                table + "\") d"),
      "docs/doc-0.md,-");
  // Every column landed as written.
  const auto& c = batch[7];
  EXPECT_EQ(
      pg.Scalar("SELECT concat_ws('|', source_id, ordinal, byte_begin, byte_end, text, domain,"
                " category, metadata->>'n', model, dims, token_estimate) FROM \"" +
                table + "\" WHERE id='" + c.chunk.id + "'"),
      c.chunk.source_id + "|" + std::to_string(c.chunk.ordinal) + "|" +
          std::to_string(c.chunk.byte_begin) + "|" + std::to_string(c.chunk.byte_end) + "|" +
          c.chunk.text + "|manuals|pumps|7|test-model|16|17");
  {
    // The real[] encoding round-trips bit for bit (binary result).
    const std::string sql = "SELECT embedding FROM \"" + table + "\" WHERE id='" + c.chunk.id + "'";
    PGresult* r = PQexecParams(pg.get(), sql.c_str(), 0, nullptr, nullptr, nullptr, nullptr, 1);
    ASSERT_EQ(PQntuples(r), 1);
    const std::string bytes(PQgetvalue(r, 0, 0), PQgetlength(r, 0, 0));
    PQclear(r);
    EXPECT_EQ(bytes, pg::EncodeFloat4ArrayBinary(c.embedding));
  }
  // Sources: doc-0..doc-2 with their chunk counts.
  EXPECT_EQ(pg.Scalar("SELECT string_agg(source_id || '=' || chunk_count, ',' ORDER BY source_id)"
                      " FROM \"" +
                      table + "_sources\""),
            "doc-0.md=10,doc-1.md=10,doc-2.md=5");
  auto stats = store->Stats();
  ASSERT_TRUE(stats.ok());
  EXPECT_EQ(stats->chunks, 25u);
  EXPECT_EQ(stats->sources, 3u);
  EXPECT_TRUE(store->Close().ok());

  // Reopening an existing table probes it instead of recreating it.
  auto again = MustOpen(dsn, Options(table));
  ASSERT_TRUE(again);
  EXPECT_EQ(GetPostgresSchemaInfo(*again).dimensions, kDims);
  StoreOptions wrong = Options(table);
  wrong.dimensions = kDims + 1;
  auto mismatch = OpenPostgresStore(dsn, wrong);
  ASSERT_FALSE(mismatch.ok());
  EXPECT_EQ(mismatch.status().code(), StatusCode::kInvalidArgument);
}

TEST(PostgresStoreTest, RerunWritesNoDuplicatesAndRewritesNothing) {
  SLUICE_REQUIRE_DSN(dsn, "SLUICE_TEST_PG_DSN");
  const std::string table = UniqueTable("rerun");
  auto store = MustOpen(dsn, Options(table));
  ASSERT_TRUE(store);
  auto batch = TestChunks(0, 60, kDims);
  ASSERT_TRUE(store->Write(batch).status.ok());
  RawPg pg(dsn);
  const std::string q =
      "SELECT string_agg(id || ':' || xmin::text, ',' ORDER BY id) FROM \"" + table + "\"";
  const std::string before = pg.Scalar(q);
  const std::string sources_before = pg.Scalar(
      "SELECT string_agg(xmin::text, ',' ORDER BY source_id) FROM \"" + table + "_sources\"");

  ASSERT_TRUE(store->Write(batch).status.ok());  // the same corpus again
  EXPECT_EQ(pg.Scalar("SELECT count(*) FROM \"" + table + "\""), "60");
  EXPECT_EQ(pg.Scalar(q), before) << "unchanged rows were rewritten";
  EXPECT_EQ(pg.Scalar("SELECT string_agg(xmin::text, ',' ORDER BY source_id) FROM \"" + table +
                      "_sources\""),
            sources_before);

  // One changed row is rewritten, and only that one.
  batch[5].chunk.text += " (edited)";
  ASSERT_TRUE(store->Write(batch).status.ok());
  EXPECT_EQ(pg.Scalar("SELECT count(*) FROM \"" + table + "\""), "60");
  EXPECT_EQ(pg.Scalar("SELECT text FROM \"" + table + "\" WHERE id='" + batch[5].chunk.id + "'"),
            batch[5].chunk.text);
  EXPECT_EQ(pg.Scalar("SELECT count(*) FROM \"" + table +
                      "\" WHERE updated_at > (SELECT min(updated_at) FROM \"" + table + "\")"),
            "1");
  // A batch holding the same id twice keeps the last copy.
  std::vector<EmbeddedChunk> dup = {batch[1], batch[1]};
  dup[1].chunk.text = "last wins";
  WriteResult w = store->Write(dup);
  ASSERT_TRUE(w.status.ok()) << w.status.ToString();
  EXPECT_EQ(pg.Scalar("SELECT text FROM \"" + table + "\" WHERE id='" + batch[1].chunk.id + "'"),
            "last wins");
}

TEST(PostgresStoreTest, BadRowIsRejectedWithServerMessageAndTheRestCommits) {
  SLUICE_REQUIRE_DSN(dsn, "SLUICE_TEST_PG_DSN");
  const std::string table = UniqueTable("badrow");
  StoreOptions o = Options(table);
  o.dimensions = kDims;
  auto store = MustOpen(dsn, o);
  ASSERT_TRUE(store);
  auto batch = TestChunks(100, 30, kDims);
  batch[7].embedding.pop_back();  // wrong dimension
  batch[11].chunk.id.clear();     // no id: refused before the server sees it
  batch[21].embedding.push_back(0.5f);
  WriteResult w = store->Write(batch);
  ASSERT_TRUE(w.status.ok()) << w.status.ToString();
  ASSERT_EQ(w.rejected.size(), 3u);
  EXPECT_EQ(w.rejected[0].index, 7u);
  EXPECT_EQ(w.rejected[1].index, 11u);
  EXPECT_EQ(w.rejected[2].index, 21u);
  EXPECT_EQ(w.rejected[0].why.code(), StatusCode::kRejected);
  EXPECT_FALSE(w.rejected[0].why.IsRetryable());
  EXPECT_NE(w.rejected[0].why.message().find("violates check constraint"), std::string::npos)
      << w.rejected[0].why.message();
  EXPECT_NE(w.rejected[1].why.message().find("no id"), std::string::npos);
  RawPg pg(dsn);
  EXPECT_EQ(pg.Scalar("SELECT count(*) FROM \"" + table + "\""), "27");
  EXPECT_EQ(
      pg.Scalar("SELECT count(*) FROM \"" + table + "\" WHERE id='" + batch[7].chunk.id + "'"),
      "0");
  // A data error in one transaction of a split batch does not lose the others.
  o.batch_rows = 10;
  auto split = MustOpen(dsn, o);
  auto more = TestChunks(200, 35, kDims);
  more[33].embedding.clear();
  w = split->Write(more);
  ASSERT_TRUE(w.status.ok()) << w.status.ToString();
  ASSERT_EQ(w.rejected.size(), 1u);
  EXPECT_EQ(w.rejected[0].index, 33u);
  EXPECT_EQ(pg.Scalar("SELECT count(*) FROM \"" + table + "\""), std::to_string(27 + 34));
}

TEST(PostgresStoreTest, ConcurrentWritersWithOverlappingBatches) {
  SLUICE_REQUIRE_DSN(dsn, "SLUICE_TEST_PG_DSN");
  const std::string table = UniqueTable("concurrent");
  StoreOptions o = Options(table);
  o.batch_rows = 50;
  auto a = MustOpen(dsn, o);
  auto b = MustOpen(dsn, o);
  ASSERT_TRUE(a && b);
  std::atomic<int> failures{0};
  // Writer a: ids 0..1999, writer b: ids 1000..2999, in opposite orders, in
  // batches of 200 split into parallel transactions of 50.
  auto run = [&](Store* store, int first, bool reverse) {
    for (int k = 0; k < 10; ++k) {
      const int part = reverse ? 9 - k : k;
      auto batch = TestChunks(first + part * 200, 200, kDims);
      WriteResult w = store->Write(batch);
      if (!w.status.ok() || !w.rejected.empty()) {
        ++failures;
        ADD_FAILURE() << w.status.ToString();
      }
    }
  };
  std::thread ta(run, a.get(), 0, false);
  std::thread tb(run, b.get(), 1000, true);
  ta.join();
  tb.join();
  EXPECT_EQ(failures.load(), 0);
  RawPg pg(dsn);
  EXPECT_EQ(pg.Scalar("SELECT count(*) FROM \"" + table + "\""), "3000");
  EXPECT_EQ(pg.Scalar("SELECT count(DISTINCT id) FROM \"" + table + "\""), "3000");
  EXPECT_EQ(pg.Scalar("SELECT sum(chunk_count) FROM \"" + table + "_sources\""), "3000");
}

TEST(PostgresStoreTest, RaceOnANewIdFallsBackToTheUpsert) {
  SLUICE_REQUIRE_DSN(dsn, "SLUICE_TEST_PG_DSN");
  const std::string table = UniqueTable("race");
  StoreOptions o = Options(table);
  o.dimensions = kDims;
  auto store = MustOpen(dsn, o);
  ASSERT_TRUE(store);
  auto batch = TestChunks(0, 20, kDims);
  // Another client inserts one of the batch's ids (under another source, so
  // the per-source lock does not order us) and commits only after the store
  // has looked the ids up: the store's direct COPY hits a unique violation.
  RawPg other(dsn);
  ASSERT_TRUE(other.Command("BEGIN"));
  ASSERT_TRUE(other.Command("INSERT INTO \"" + table +
                            "\" (id, source_id, ordinal, byte_begin, byte_end, text, dims, "
                            "embedding) VALUES ('" +
                            batch[3].chunk.id + "', 'elsewhere', 0, 0, 0, 'theirs', " +
                            std::to_string(kDims) + ", array_fill(0.5::real, ARRAY[" +
                            std::to_string(kDims) + "]))"));
  WriteResult w;
  std::thread writer([&] { w = store->Write(batch); });
  // Commit only once the writer really waits on our row's lock (not after a
  // guessed delay: on a loaded machine the writer may not have started yet).
  RawPg watcher(dsn);
  for (int i = 0; i < 60000; ++i) {
    if (watcher.Scalar("SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                       "AND query LIKE '%" +
                       table + "%'") != "0") {
      break;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(1));  // polling a condition, bounded
  }
  ASSERT_TRUE(other.Command("COMMIT"));
  writer.join();
  ASSERT_TRUE(w.status.ok()) << w.status.ToString();
  EXPECT_TRUE(w.rejected.empty());
  RawPg pg(dsn);
  EXPECT_EQ(pg.Scalar("SELECT count(*) FROM \"" + table + "\""), "20");
  EXPECT_EQ(pg.Scalar("SELECT text FROM \"" + table + "\" WHERE id='" + batch[3].chunk.id + "'"),
            batch[3].chunk.text);
}

TEST(PostgresStoreTest, ServerDownAtStartFailsFastWithoutPassword) {
  const int port = pgtest::FreeLoopbackPort();  // nothing listens there
  const std::string dsn =
      "postgres://sluice:hunter2secret@127.0.0.1:" + std::to_string(port) + "/db";
  const auto start = std::chrono::steady_clock::now();
  auto store = OpenPostgresStore(dsn, StoreOptions{});
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  ASSERT_FALSE(store.ok());
  EXPECT_LT(seconds, 6.0);
  EXPECT_EQ(store.status().code(), StatusCode::kUnavailable);
  const std::string msg = store.status().message();
  EXPECT_NE(msg.find("127.0.0.1"), std::string::npos) << msg;
  EXPECT_NE(msg.find(std::to_string(port)), std::string::npos) << msg;
  EXPECT_EQ(msg.find("hunter2secret"), std::string::npos) << msg;
}

TEST(PostgresStoreTest, PasswordNeverAppearsInErrorsOrDescribe) {
  SLUICE_REQUIRE_DSN(dsn, "SLUICE_TEST_PG_DSN");
  // postgres://postgres@127.0.0.1:PORT/postgres -> with a password and a
  // database that does not exist (trust auth accepts any password).
  std::string with_pw = dsn;
  with_pw.replace(with_pw.find("postgres@"), 9, "postgres:s3cr3t-pw@");
  const std::string missing_db = with_pw.substr(0, with_pw.rfind('/')) + "/no_such_db_sluice";
  auto bad = OpenPostgresStore(missing_db, StoreOptions{});
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(bad.status().code(), StatusCode::kNotFound) << bad.status().ToString();
  EXPECT_EQ(bad.status().message().find("s3cr3t-pw"), std::string::npos) << bad.status().message();
  EXPECT_NE(bad.status().message().find("***"), std::string::npos) << bad.status().message();
  auto good = OpenPostgresStore(with_pw, Options(UniqueTable("redact")));
  ASSERT_TRUE(good.ok()) << good.status().ToString();
  EXPECT_EQ((*good)->Describe().find("s3cr3t-pw"), std::string::npos);
  // (An error raised mid-write is checked in the restart test.)
}

TEST(PostgresStoreTest, ExistingTableOfAnotherShapeIsRefused) {
  SLUICE_REQUIRE_DSN(dsn, "SLUICE_TEST_PG_DSN");
  const std::string table = UniqueTable("foreign");
  RawPg pg(dsn);
  ASSERT_TRUE(pg.Command("CREATE TABLE \"" + table + "\" (id text PRIMARY KEY, embedding text)"));
  auto s = OpenPostgresStore(dsn, Options(table));
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(s.status().message().find("embedding type text"), std::string::npos)
      << s.status().message();
}

TEST(PostgresStoreTest, OptionsAreValidated) {
  SLUICE_REQUIRE_DSN(dsn, "SLUICE_TEST_PG_DSN");
  StoreOptions o = Options(UniqueTable("opts"));
  o.create_index = "btree";
  auto s = OpenPostgresStore(dsn, o);
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.status().code(), StatusCode::kInvalidArgument);
  o.create_index = "hnsw";  // no pgvector on Debian's server
  s = OpenPostgresStore(dsn, o);
  ASSERT_FALSE(s.ok());
  EXPECT_NE(s.status().message().find("pgvector"), std::string::npos);
  o.create_index = "";
  o.pool_size = 0;
  EXPECT_FALSE(OpenPostgresStore(dsn, o).ok());
  // PostgreSQL cuts names at 63 bytes: "<table>_embedding_cache" must stay whole.
  o.pool_size = 2;
  o.table = std::string(48, 't');
  s = OpenPostgresStore(dsn, o);
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(s.status().message().find("47 bytes"), std::string::npos) << s.status().message();
}

// SECURITY.md: identifiers are quoted. A table name holding a quote, a
// semicolon and SQL is a name like any other: its tables are made under
// exactly that name, rows round-trip, and nothing else is touched.
TEST(PostgresStoreTest, HostileTableNameIsQuotedNotExecuted) {
  SLUICE_REQUIRE_DSN(dsn, "SLUICE_TEST_PG_DSN");
  RawPg pg(dsn);
  ASSERT_TRUE(pg.ok());
  const std::string pid = std::to_string(getpid());
  const std::string victim = "v" + pid;
  ASSERT_TRUE(
      pg.Command("DROP TABLE IF EXISTS " + victim + "; CREATE TABLE " + victim + " (x int)"));
  const std::string table = "Q" + pid + "\"; DROP TABLE " + victim + "; --";
  ASSERT_LE(table.size(), 47u);
  auto store = MustOpen(dsn, Options(table));
  ASSERT_TRUE(store);
  auto batch = TestChunks(0, 5, kDims);
  WriteResult w = store->Write(batch);
  ASSERT_TRUE(w.status.ok()) << w.status.ToString();
  auto hits = store->Search(batch[0].embedding, 1);
  ASSERT_TRUE(hits.ok()) << hits.status().ToString();
  ASSERT_EQ(hits->size(), 1u);
  EXPECT_EQ((*hits)[0].chunk_id, batch[0].chunk.id);
  EXPECT_EQ(pg.Scalar("SELECT count(*) FROM pg_class WHERE relname = '" + victim + "'"), "1");
  // The chunks table and its sources table, under their exact names.
  EXPECT_EQ(
      pg.Scalar("SELECT count(*) FROM pg_class WHERE relname IN ('Q" + pid + "\"; DROP TABLE " +
                victim + "; --', 'Q" + pid + "\"; DROP TABLE " + victim + "; --_sources')"),
      "2");
  store.reset();
  pg.Command("DROP TABLE " + victim);
}

TEST(PostgresStoreTest, LargeWriteIsSplitAcrossThePool) {
  SLUICE_REQUIRE_DSN(dsn, "SLUICE_TEST_PG_DSN");
  const std::string table = UniqueTable("split");
  StoreOptions o = Options(table);
  o.batch_rows = 100;
  o.pool_size = 3;
  auto store = MustOpen(dsn, o);
  ASSERT_TRUE(store);
  WriteResult w = store->Write(TestChunks(0, 1050, kDims));
  ASSERT_TRUE(w.status.ok()) << w.status.ToString();
  RawPg pg(dsn);
  EXPECT_EQ(pg.Scalar("SELECT count(*) FROM \"" + table + "\""), "1050");
}

TEST(PostgresStoreTest, RealArraySearchIsAnExactClientScan) {
  SLUICE_REQUIRE_DSN(dsn, "SLUICE_TEST_PG_DSN");
  auto store = MustOpen(dsn, Options(UniqueTable("scan")));
  ASSERT_TRUE(store);
  auto batch = TestChunks(0, 300, kDims);
  ASSERT_TRUE(store->Write(batch).status.ok());
  // Query: row 42's vector, slightly perturbed; expected order by exact cosine.
  std::vector<float> query = batch[42].embedding;
  query[0] += 0.01f;
  std::vector<std::pair<double, size_t>> expected;
  for (size_t i = 0; i < batch.size(); ++i) {
    double dot = 0, a = 0, b = 0;
    for (int j = 0; j < kDims; ++j) {
      dot += double(query[j]) * batch[i].embedding[j];
      a += double(query[j]) * query[j];
      b += double(batch[i].embedding[j]) * batch[i].embedding[j];
    }
    expected.emplace_back(dot / std::sqrt(a * b), i);
  }
  std::sort(expected.rbegin(), expected.rend());
  auto hits = store->Search(query, 5);
  ASSERT_TRUE(hits.ok()) << hits.status().ToString();
  ASSERT_EQ(hits->size(), 5u);
  for (size_t i = 0; i < 5; ++i) {
    EXPECT_EQ((*hits)[i].chunk_id, batch[expected[i].second].chunk.id) << i;
    EXPECT_NEAR((*hits)[i].score, expected[i].first, 1e-9);
  }
  EXPECT_EQ((*hits)[0].text, batch[42].chunk.text);
  EXPECT_EQ((*hits)[0].source_id, batch[42].chunk.source_id);
  EXPECT_NE((*hits)[0].metadata_json.find("\"n\": 42"), std::string::npos)
      << (*hits)[0].metadata_json;
  auto wrong = store->Search(std::vector<float>(3, 1.0f), 5);
  EXPECT_FALSE(wrong.ok());
}

// ---- server restart mid-ingest, on a private cluster -------------------------

std::string Shell(const std::string& cmd) {
  std::string out;
  FILE* p = popen((cmd + " 2>&1").c_str(), "r");
  if (!p) return "popen failed";
  char buf[512];
  while (fgets(buf, sizeof buf, p)) out += buf;
  const int rc = pclose(p);
  if (rc != 0) out = "FAILED(" + std::to_string(rc) + "): " + out;
  return out;
}

// A throwaway cluster of its own, so stopping it disturbs no other test.
class PrivateCluster {
 public:
  bool Start(std::string* why) {
    std::string bindir = pgtest::DsnFromEnv("SLUICE_TEST_PG_BINDIR");
    if (bindir.empty()) {
      *why = "SLUICE_TEST_PG_BINDIR not set";
      return false;
    }
    as_ = getuid() == 0 ? "runuser -u postgres -- " : "";
    dir_ = "/tmp/sluice-pgtest-" + std::to_string(getpid());
    pg_ctl_ = bindir + "/pg_ctl";
    port_ = pgtest::FreeLoopbackPort();
    std::filesystem::remove_all(dir_);
    std::filesystem::create_directories(dir_);
    std::string out = Shell((getuid() == 0 ? "chown postgres: " + dir_ + " && " : "") + as_ +
                            bindir + "/initdb -D " + dir_ + "/data -A trust -U postgres --no-sync");
    if (out.starts_with("FAILED")) {
      *why = out;
      return false;
    }
    std::ofstream conf(dir_ + "/data/postgresql.auto.conf", std::ios::app);
    conf << "port = " << port_ << "\nlisten_addresses = '127.0.0.1'\nunix_socket_directories = '"
         << dir_ << "'\n";
    conf.close();
    return Ctl("start", why);
  }
  bool Ctl(const std::string& action, std::string* why) {
    const std::string out = Shell(as_ + pg_ctl_ + " -D " + dir_ + "/data -l " + dir_ +
                                  "/pg.log -m fast -w -t 60 " + action);
    if (out.starts_with("FAILED")) {
      *why = out;
      return false;
    }
    return true;
  }
  ~PrivateCluster() {
    if (!dir_.empty()) {
      std::string ignored;
      Shell(as_ + pg_ctl_ + " -D " + dir_ + "/data -m immediate -w stop");
      std::filesystem::remove_all(dir_);
    }
  }
  std::string Dsn() const {
    return "postgres://postgres:restart-pw@127.0.0.1:" + std::to_string(port_) + "/postgres";
  }

 private:
  std::string dir_, pg_ctl_, as_;
  int port_ = 0;
};

TEST(PostgresStoreTest, ServerRestartMidIngestLosesAndDuplicatesNothing) {
  SLUICE_REQUIRE_DSN(dsn, "SLUICE_TEST_PG_DSN");
  PrivateCluster cluster;
  std::string why;
  ASSERT_TRUE(cluster.Start(&why)) << why;
  const std::string table = UniqueTable("restart");
  StoreOptions o = Options(table);
  o.batch_rows = 100;
  o.reconnect_timeout_s = 60;
  auto store = MustOpen(cluster.Dsn(), o);
  ASSERT_TRUE(store);

  constexpr int kBatches = 40;
  constexpr int kRows = 100;
  std::vector<Status> failures;
  // The writer pauses after batch 5 until the server is down and after
  // batch 20 until it has restarted, so batches 6 and 21 meet the outage
  // and the broken connection however fast or slow the writer runs (it
  // could otherwise finish all 40 before the first stop).
  std::latch at_5{1}, at_20{1}, server_down{1}, server_restarted{1};
  std::thread writer([&] {
    for (int b = 0; b < kBatches; ++b) {
      WriteResult w = store->Write(TestChunks(b * kRows, kRows, kDims));
      if (!w.status.ok() || !w.rejected.empty()) failures.push_back(w.status);
      if (b + 1 == 5) {
        at_5.count_down();
        server_down.wait();
      } else if (b + 1 == 20) {
        at_20.count_down();
        server_restarted.wait();
      }
    }
  });
  at_5.wait();
  const bool stopped = cluster.Ctl("stop", &why);
  server_down.count_down();
  if (stopped) {
    // The outage's length (not a synchronisation): the writer retries
    // meanwhile, within its 60 s reconnect_timeout_s.
    std::this_thread::sleep_for(std::chrono::milliseconds(800));
  }
  const bool started = stopped && cluster.Ctl("start", &why);
  at_20.wait();
  const bool restarted = started && cluster.Ctl("restart", &why);  // a second, immediate one
  server_restarted.count_down();
  writer.join();
  ASSERT_TRUE(stopped && started && restarted) << why;
  for (const auto& f : failures) ADD_FAILURE() << f.ToString();
  EXPECT_EQ(failures.size(), 0u);
  RawPg pg(cluster.Dsn());
  ASSERT_TRUE(pg.ok());
  EXPECT_EQ(pg.Scalar("SELECT count(*) FROM \"" + table + "\""), std::to_string(kBatches * kRows));
  EXPECT_EQ(pg.Scalar("SELECT count(DISTINCT id) FROM \"" + table + "\""),
            std::to_string(kBatches * kRows));

  // Server gone for longer than reconnect_timeout_s: a retryable error, fast,
  // with no password in it.
  o.reconnect_timeout_s = 1.5;
  auto short_store = MustOpen(cluster.Dsn(), o);
  ASSERT_TRUE(short_store);
  ASSERT_TRUE(cluster.Ctl("stop", &why)) << why;
  const auto start = std::chrono::steady_clock::now();
  WriteResult w = short_store->Write(TestChunks(90000, 10, kDims));
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  EXPECT_EQ(w.status.code(), StatusCode::kUnavailable) << w.status.ToString();
  EXPECT_TRUE(w.status.IsRetryable());
  EXPECT_LT(seconds, 8.0);
  EXPECT_EQ(w.status.message().find("restart-pw"), std::string::npos) << w.status.message();
  // And once it is back, the same batch goes through.
  ASSERT_TRUE(cluster.Ctl("start", &why)) << why;
  w = short_store->Write(TestChunks(90000, 10, kDims));
  EXPECT_TRUE(w.status.ok()) << w.status.ToString();
}

}  // namespace
}  // namespace sluice
