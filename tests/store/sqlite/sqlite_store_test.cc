// Unit tests of the SQLite store against real database files in a temp dir.
#include "store/sqlite/sqlite_store.h"

#include <gtest/gtest.h>
#include <sqlite3.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <optional>
#include <string>
#include <vector>

#include <fmt/format.h>

#include "common/hashing.h"
#include "store/sqlite/sqlite_util.h"

namespace sluice {
namespace {

namespace fs = std::filesystem;

class SqliteStoreTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() /
           ("sluice_sqlite_test_" + std::to_string(::getpid()) + "_" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(dir_);
    fs::create_directories(dir_);
    db_path_ = (dir_ / "store.db").string();
  }
  void TearDown() override { fs::remove_all(dir_); }

  SqliteStoreOptions Options() {
    SqliteStoreOptions o;
    o.busy_timeout_ms = 50;
    o.now_unix_ms = [this] { return now_ms_; };
    return o;
  }

  // With the embedding cache on (namespace "model-a:0") and text keys moved
  // into the main key table every `recent_limit` keys.
  SqliteStoreOptions CachedOptions(int recent_limit = 65536) {
    SqliteStoreOptions o = Options();
    o.store.embedding_cache_namespace = "model-a:0";
    o.recent_text_keys_limit = recent_limit;
    return o;
  }

  std::unique_ptr<SqliteStore> MustOpen(const SqliteStoreOptions& o) {
    auto store = SqliteStore::Open(db_path_, o);
    EXPECT_TRUE(store.ok()) << store.status().ToString();
    return store.ok() ? std::move(store).value() : nullptr;
  }

  static EmbeddedChunk MakeChunk(int n, int dims, const std::string& source = "doc.md") {
    EmbeddedChunk e;
    e.chunk.source_id = source;
    e.chunk.ordinal = static_cast<uint32_t>(n);
    e.chunk.id = Hash128Hex(source + "#" + std::to_string(n));
    e.chunk.text = "chunk text number " + std::to_string(n);
    e.chunk.domain = "manuals";
    e.chunk.category = "pumps";
    e.chunk.metadata_json = R"({"page_start":1})";
    e.chunk.byte_begin = static_cast<uint64_t>(n) * 100;
    e.chunk.byte_end = e.chunk.byte_begin + 99;
    e.chunk.token_estimate = 7;
    e.model = "test-model";
    uint64_t state = static_cast<uint64_t>(n) + 1;
    for (int i = 0; i < dims; ++i) {
      e.embedding.push_back(static_cast<float>(SplitMix64(state) % 2001) / 1000.0f - 1.0f);
    }
    return e;
  }

  static int64_t QueryInt(sqlite3* db, const std::string& sql) {
    sqlite3_stmt* st = nullptr;
    EXPECT_EQ(sqlite3_prepare_v2(db, sql.c_str(), -1, &st, nullptr), SQLITE_OK) << sql;
    EXPECT_EQ(sqlite3_step(st), SQLITE_ROW) << sql;
    const int64_t v = sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    return v;
  }

  fs::path dir_;
  std::string db_path_;
  int64_t now_ms_ = 1'000'000;
};

TEST_F(SqliteStoreTest, FreshSchemaHasTablesVersionAndWal) {
  auto store = MustOpen(Options());
  ASSERT_NE(store, nullptr);
  sqlite3* db = store->handle();
  EXPECT_EQ(QueryInt(db, "PRAGMA user_version"), kSqliteSchemaVersion);
  EXPECT_EQ(QueryInt(db,
                     "SELECT count(*) FROM sqlite_master WHERE type='table' AND name IN "
                     "('chunks','sources','meta')"),
            3);
  EXPECT_EQ(QueryInt(db,
                     "SELECT count(*) FROM sqlite_master WHERE type='index' AND "
                     "tbl_name='chunks' AND sql LIKE '%source_id%'"),
            1);
  sqlite3_stmt* st = nullptr;
  ASSERT_EQ(sqlite3_prepare_v2(db, "PRAGMA journal_mode", -1, &st, nullptr), SQLITE_OK);
  ASSERT_EQ(sqlite3_step(st), SQLITE_ROW);
  EXPECT_STREQ(reinterpret_cast<const char*>(sqlite3_column_text(st, 0)), "wal");
  sqlite3_finalize(st);
  EXPECT_EQ(QueryInt(db, "PRAGMA synchronous"), 1);  // NORMAL
  EXPECT_EQ(QueryInt(db, "PRAGMA page_size"), 16384);
  auto stats = store->Stats();
  ASSERT_TRUE(stats.ok());
  EXPECT_EQ(stats->chunks, 0u);
  EXPECT_EQ(stats->sources, 0u);
  EXPECT_EQ(store->Describe(), "sqlite:" + db_path_);
  EXPECT_TRUE(store->Close().ok());
  // Reopening an existing, current database is fine and keeps the version.
  auto again = MustOpen(Options());
  ASSERT_NE(again, nullptr);
  EXPECT_EQ(QueryInt(again->handle(), "PRAGMA user_version"), kSqliteSchemaVersion);
}

// The store says how it wants to be fed (issue 10): one transaction per
// Write of StoreOptions::batch_rows rows, 1000 by default, one at a time.
TEST_F(SqliteStoreTest, SaysItsRowsPerTransactionAndParallelWrites) {
  SqliteStoreOptions o;
  auto store = MustOpen(o);
  ASSERT_TRUE(store);
  EXPECT_EQ(store->RowsPerTransaction(), 4000u);
  EXPECT_EQ(store->ParallelWrites(), 1);
  store.reset();
  o.store.batch_rows = 64;
  EXPECT_EQ(MustOpen(o)->RowsPerTransaction(), 64u);
}

TEST_F(SqliteStoreTest, CustomTableNameAndValidation) {
  auto o = Options();
  o.store.table = "docs";
  auto store = MustOpen(o);
  ASSERT_NE(store, nullptr);
  EXPECT_EQ(store->sources_table(), "docs_sources");
  EXPECT_EQ(QueryInt(store->handle(),
                     "SELECT count(*) FROM sqlite_master WHERE type='table' AND "
                     "name IN ('docs','docs_sources','docs_meta')"),
            3);
  for (const char* bad : {"", "bad;name", "1abc", "a b", "sqlite_master", "x\"y"}) {
    o.store.table = bad;
    auto r = SqliteStore::Open(db_path_, o);
    ASSERT_FALSE(r.ok()) << bad;
    EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument) << bad;
  }
}

TEST_F(SqliteStoreTest, WriteAndReadBackExactVectorBytes) {
  auto store = MustOpen(Options());
  ASSERT_NE(store, nullptr);
  EmbeddedChunk e = MakeChunk(1, 6);
  e.embedding = {0.1f, -0.0f, 1e-40f /*denormal*/, -3.4e38f, 1.0f / 3.0f, 7.0f};
  auto w = store->Write(std::span<const EmbeddedChunk>(&e, 1));
  ASSERT_TRUE(w.status.ok()) << w.status.ToString();
  EXPECT_TRUE(w.rejected.empty());

  auto c = store->ReadChunk(e.chunk.id);
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  ASSERT_EQ(c->embedding_bytes.size(), 24u);
  EXPECT_EQ(std::memcmp(c->embedding_bytes.data(), e.embedding.data(), 24), 0);
  auto v = store->ReadEmbedding(e.chunk.id);
  ASSERT_TRUE(v.ok());
  ASSERT_EQ(v->size(), 6u);
  EXPECT_EQ(std::memcmp(v->data(), e.embedding.data(), 24), 0);
  EXPECT_EQ(c->text, e.chunk.text);
  EXPECT_EQ(c->source_id, "doc.md");
  EXPECT_EQ(c->ordinal, 1u);
  EXPECT_EQ(c->byte_begin, 100u);
  EXPECT_EQ(c->byte_end, 199u);
  EXPECT_EQ(c->metadata_json, R"({"page_start":1})");
  EXPECT_EQ(c->model, "test-model");
  EXPECT_EQ(c->dims, 6);
  EXPECT_EQ(c->token_estimate, 7u);
  EXPECT_EQ(c->updated_at_ms, now_ms_);
  EXPECT_EQ(store->dimensions(), 6);
  EXPECT_EQ(store->model(), "test-model");

  auto missing = store->ReadChunk("nope");
  EXPECT_EQ(missing.status().code(), StatusCode::kNotFound);

  // The dimension and model are persisted for the next open.
  store.reset();
  auto reopened = MustOpen(Options());
  ASSERT_NE(reopened, nullptr);
  EXPECT_EQ(reopened->dimensions(), 6);
  EXPECT_EQ(reopened->model(), "test-model");
}

TEST_F(SqliteStoreTest, IdenticalRerunRewritesNothing) {
  auto store = MustOpen(Options());
  ASSERT_NE(store, nullptr);
  std::vector<EmbeddedChunk> batch;
  for (int i = 0; i < 20; ++i) batch.push_back(MakeChunk(i, 8, i < 10 ? "a.md" : "b.md"));
  ASSERT_TRUE(store->Write(batch).status.ok());
  const int64_t first_ms = now_ms_;
  now_ms_ += 5000;
  const int64_t changes_before = sqlite3_total_changes64(store->handle());
  auto w = store->Write(batch);
  ASSERT_TRUE(w.status.ok()) << w.status.ToString();
  // No row of chunks, sources or meta was modified by the rerun.
  EXPECT_EQ(sqlite3_total_changes64(store->handle()), changes_before);
  auto stats = store->Stats();
  ASSERT_TRUE(stats.ok());
  EXPECT_EQ(stats->chunks, 20u);
  EXPECT_EQ(stats->sources, 2u);
  for (const auto& e : batch) {
    auto c = store->ReadChunk(e.chunk.id);
    ASSERT_TRUE(c.ok());
    EXPECT_EQ(c->updated_at_ms, first_ms);
  }
  auto src = store->ReadSource("a.md");
  ASSERT_TRUE(src.ok());
  EXPECT_EQ(src->chunk_count, 10u);
  EXPECT_EQ(src->updated_at_ms, first_ms);
  EXPECT_EQ(src->domain, "manuals");
}

TEST_F(SqliteStoreTest, ChangedTextUpdatesTheRow) {
  auto store = MustOpen(Options());
  ASSERT_NE(store, nullptr);
  std::vector<EmbeddedChunk> batch = {MakeChunk(0, 4), MakeChunk(1, 4)};
  ASSERT_TRUE(store->Write(batch).status.ok());
  const int64_t first_ms = now_ms_;
  now_ms_ += 1000;
  batch[1].chunk.text = "revised text";
  ASSERT_TRUE(store->Write(batch).status.ok());
  auto changed = store->ReadChunk(batch[1].chunk.id);
  ASSERT_TRUE(changed.ok());
  EXPECT_EQ(changed->text, "revised text");
  EXPECT_EQ(changed->updated_at_ms, now_ms_);
  auto same = store->ReadChunk(batch[0].chunk.id);
  ASSERT_TRUE(same.ok());
  EXPECT_EQ(same->updated_at_ms, first_ms);
  EXPECT_EQ(store->Stats()->chunks, 2u);
}

TEST_F(SqliteStoreTest, DimensionMismatchRowRejectedRestCommits) {
  auto store = MustOpen(Options());
  ASSERT_NE(store, nullptr);
  std::vector<EmbeddedChunk> batch = {MakeChunk(0, 4), MakeChunk(1, 5), MakeChunk(2, 4),
                                      MakeChunk(3, 0)};
  auto w = store->Write(batch);
  ASSERT_TRUE(w.status.ok()) << w.status.ToString();
  ASSERT_EQ(w.rejected.size(), 2u);
  EXPECT_EQ(w.rejected[0].index, 1u);
  EXPECT_EQ(w.rejected[0].why.code(), StatusCode::kRejected);
  EXPECT_NE(w.rejected[0].why.message().find("embedding has 5 dimensions, store has 4"),
            std::string::npos)
      << w.rejected[0].why.message();
  EXPECT_EQ(w.rejected[1].index, 3u);
  EXPECT_EQ(store->Stats()->chunks, 2u);
  EXPECT_EQ(store->ReadChunk(batch[1].chunk.id).status().code(), StatusCode::kNotFound);
  EXPECT_TRUE(store->ReadChunk(batch[2].chunk.id).ok());
  EXPECT_EQ(store->ReadSource("doc.md")->chunk_count, 2u);
}

TEST_F(SqliteStoreTest, OptionDimensionsFixTheStoreAndMustMatchOnReopen) {
  auto o = Options();
  o.store.dimensions = 4;
  auto store = MustOpen(o);
  ASSERT_NE(store, nullptr);
  std::vector<EmbeddedChunk> batch = {MakeChunk(0, 3), MakeChunk(1, 4)};
  auto w = store->Write(batch);
  ASSERT_TRUE(w.status.ok());
  ASSERT_EQ(w.rejected.size(), 1u);
  EXPECT_EQ(w.rejected[0].index, 0u);
  store.reset();
  o.store.dimensions = 8;
  auto r = SqliteStore::Open(db_path_, o);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(r.status().message().find("holds 4-dimension vectors but 8"), std::string::npos)
      << r.status().message();
}

TEST_F(SqliteStoreTest, MissingDirectoryIsAClearError) {
  auto r = SqliteStore::Open("/nonexistent_sluice_dir/x/y/store.db", Options());
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), StatusCode::kNotFound);
  EXPECT_EQ(r.status().message(), "store directory '/nonexistent_sluice_dir/x/y' does not exist");
  // Through the plain factory too.
  auto plain = OpenSqliteStore("/nonexistent_sluice_dir/x/y/store.db", StoreOptions{});
  ASSERT_FALSE(plain.ok());
  EXPECT_EQ(plain.status().code(), StatusCode::kNotFound);
}

TEST_F(SqliteStoreTest, DirectoryThatIsAFileOrPathThatIsADirectory) {
  const std::string file = (dir_ / "plain").string();
  std::ofstream(file) << "x";
  auto r = SqliteStore::Open(file + "/store.db", Options());
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(r.status().message().find("is not a directory"), std::string::npos);
  auto d = SqliteStore::Open(dir_.string(), Options());
  ASSERT_FALSE(d.ok());
  EXPECT_NE(d.status().message().find("is a directory"), std::string::npos) << d.status().message();
}

TEST_F(SqliteStoreTest, CorruptFileIsAClearError) {
  {
    std::ofstream out(db_path_, std::ios::binary);
    for (int i = 0; i < 4096; ++i) out.put(static_cast<char>((i * 37 + 11) & 0xff));
  }
  auto r = SqliteStore::Open(db_path_, Options());
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), StatusCode::kCorrupt);
  EXPECT_EQ(r.status().message(), "'" + db_path_ + "' is not a SQLite database file");
}

TEST_F(SqliteStoreTest, LockedDatabaseAtOpenIsRetryable) {
  // A rollback-journal database held under an exclusive lock by another
  // connection cannot even be read.
  sqlite3* other = nullptr;
  ASSERT_EQ(sqlite3_open(db_path_.c_str(), &other), SQLITE_OK);
  ASSERT_EQ(sqlite3_exec(other,
                         "PRAGMA journal_mode=DELETE; CREATE TABLE t(x); BEGIN EXCLUSIVE; "
                         "INSERT INTO t VALUES (1);",
                         nullptr, nullptr, nullptr),
            SQLITE_OK);
  auto r = SqliteStore::Open(db_path_, Options());
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), StatusCode::kUnavailable);
  EXPECT_TRUE(r.status().IsRetryable());
  EXPECT_NE(r.status().message().find("is locked"), std::string::npos) << r.status().message();
  ASSERT_EQ(sqlite3_exec(other, "COMMIT", nullptr, nullptr, nullptr), SQLITE_OK);
  sqlite3_close(other);
  auto ok = SqliteStore::Open(db_path_, Options());
  EXPECT_TRUE(ok.ok()) << ok.status().ToString();
}

TEST_F(SqliteStoreTest, SecondWriterSeesBusyAsRetryableAndCommitsNothing) {
  auto a = MustOpen(Options());
  auto b = MustOpen(Options());
  ASSERT_NE(a, nullptr);
  ASSERT_NE(b, nullptr);
  std::vector<EmbeddedChunk> first = {MakeChunk(0, 4)};
  ASSERT_TRUE(a->Write(first).status.ok());
  EXPECT_EQ(b->Stats()->chunks, 1u);  // WAL: b reads a's commit

  // a holds the write lock (as if mid-transaction).
  ASSERT_EQ(sqlite3_exec(a->handle(), "BEGIN IMMEDIATE", nullptr, nullptr, nullptr), SQLITE_OK);
  std::vector<EmbeddedChunk> second = {MakeChunk(1, 4), MakeChunk(2, 4)};
  auto w = b->Write(second);
  ASSERT_FALSE(w.status.ok());
  EXPECT_EQ(w.status.code(), StatusCode::kUnavailable);
  EXPECT_TRUE(w.status.IsRetryable());
  EXPECT_EQ(b->Stats()->chunks, 1u);  // readers still work, nothing committed
  ASSERT_EQ(sqlite3_exec(a->handle(), "ROLLBACK", nullptr, nullptr, nullptr), SQLITE_OK);

  auto retry = b->Write(second);
  ASSERT_TRUE(retry.status.ok()) << retry.status.ToString();
  EXPECT_EQ(a->Stats()->chunks, 3u);
}

TEST_F(SqliteStoreTest, DiskFullIsIOErrorAndRollsBack) {
  auto store = MustOpen(Options());
  ASSERT_NE(store, nullptr);
  std::vector<EmbeddedChunk> small = {MakeChunk(0, 4)};
  ASSERT_TRUE(store->Write(small).status.ok());
  // Cap the file at its current size: the next big batch cannot fit.
  const int64_t pages = QueryInt(store->handle(), "PRAGMA page_count");
  ASSERT_EQ(
      sqlite3_exec(store->handle(), ("PRAGMA max_page_count=" + std::to_string(pages + 1)).c_str(),
                   nullptr, nullptr, nullptr),
      SQLITE_OK);
  std::vector<EmbeddedChunk> big;
  for (int i = 1; i <= 50; ++i) {
    big.push_back(MakeChunk(i, 4));
    big.back().chunk.text.assign(4000, 'x');
  }
  auto w = store->Write(big);
  ASSERT_FALSE(w.status.ok());
  EXPECT_EQ(w.status.code(), StatusCode::kIOError) << w.status.ToString();
  EXPECT_FALSE(w.status.IsRetryable());
  EXPECT_EQ(store->Stats()->chunks, 1u);
  EXPECT_EQ(store->ReadSource("doc.md")->chunk_count, 1u);
}

TEST_F(SqliteStoreTest, SearchRanksExactMatchFirst) {
  auto store = MustOpen(Options());
  ASSERT_NE(store, nullptr);
  std::vector<float> q = {1, 2, 3};
  auto empty = store->Search(q, 3);
  ASSERT_TRUE(empty.ok());
  EXPECT_TRUE(empty->empty());

  std::vector<EmbeddedChunk> batch;
  for (int i = 0; i < 60; ++i) batch.push_back(MakeChunk(i, 16));
  ASSERT_TRUE(store->Write(batch).status.ok());
  const std::vector<float> query = batch[17].embedding;
  auto hits = store->Search(query, 5);
  ASSERT_TRUE(hits.ok()) << hits.status().ToString();
  ASSERT_EQ(hits->size(), 5u);
  EXPECT_EQ((*hits)[0].chunk_id, batch[17].chunk.id);
  EXPECT_NEAR((*hits)[0].score, 1.0, 1e-9);
  EXPECT_EQ((*hits)[0].text, batch[17].chunk.text);
  EXPECT_EQ((*hits)[0].ordinal, 17u);
  EXPECT_EQ((*hits)[0].domain, "manuals");
  for (size_t i = 1; i < hits->size(); ++i) EXPECT_GE((*hits)[i - 1].score, (*hits)[i].score);
  // The k best really are the best: compare with a brute-force ranking.
  std::vector<double> all;
  for (const auto& e : batch) {
    double dot = 0, n1 = 0, n2 = 0;
    for (size_t i = 0; i < query.size(); ++i) {
      dot += double{e.embedding[i]} * query[i];
      n1 += double{e.embedding[i]} * e.embedding[i];
      n2 += double{query[i]} * query[i];
    }
    all.push_back(dot / std::sqrt(n1 * n2));
  }
  std::sort(all.rbegin(), all.rend());
  for (size_t i = 0; i < hits->size(); ++i) EXPECT_NEAR((*hits)[i].score, all[i], 1e-9);

  auto everything = store->Search(query, 1000);
  ASSERT_TRUE(everything.ok());
  EXPECT_EQ(everything->size(), 60u);
  auto wrong = store->Search(q, 3);
  ASSERT_FALSE(wrong.ok());
  EXPECT_EQ(wrong.status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(store->Search(query, 0).status().code(), StatusCode::kInvalidArgument);
  std::vector<float> zero(16, 0.0f);
  EXPECT_EQ(store->Search(zero, 3).status().code(), StatusCode::kInvalidArgument);
}

TEST_F(SqliteStoreTest, UpsertSourceKeepsFileFactsAcrossWrites) {
  auto store = MustOpen(Options());
  ASSERT_NE(store, nullptr);
  SourceRecord rec;
  rec.source_id = "doc.md";
  rec.path = "/corpus/doc.md";
  rec.domain = "manuals";
  rec.category = "pumps";
  rec.size_bytes = 1234;
  rec.mtime_ns = 42;
  rec.content_hash = "abc";
  ASSERT_TRUE(store->UpsertSource(rec).ok());
  std::vector<EmbeddedChunk> batch = {MakeChunk(0, 4), MakeChunk(1, 4), MakeChunk(2, 4)};
  ASSERT_TRUE(store->Write(batch).status.ok());
  auto src = store->ReadSource("doc.md");
  ASSERT_TRUE(src.ok());
  EXPECT_EQ(src->chunk_count, 3u);
  EXPECT_EQ(src->path, "/corpus/doc.md");
  EXPECT_EQ(src->size_bytes, std::optional<uint64_t>(1234));
  EXPECT_EQ(src->mtime_ns, std::optional<int64_t>(42));
  EXPECT_EQ(src->content_hash, std::optional<std::string>("abc"));
  auto ids = store->ChunkIdsForSource("doc.md");
  ASSERT_TRUE(ids.ok());
  ASSERT_EQ(ids->size(), 3u);
  EXPECT_EQ((*ids)[0], batch[0].chunk.id);
  EXPECT_EQ((*ids)[2], batch[2].chunk.id);
  EXPECT_EQ(store->ReadSource("other").status().code(), StatusCode::kNotFound);
}

TEST_F(SqliteStoreTest, NewerSchemaVersionIsRefused) {
  {
    auto store = MustOpen(Options());
    ASSERT_NE(store, nullptr);
    ASSERT_EQ(sqlite3_exec(store->handle(), "PRAGMA user_version=99", nullptr, nullptr, nullptr),
              SQLITE_OK);
  }
  auto r = SqliteStore::Open(db_path_, Options());
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(r.status().message().find("schema version 99"), std::string::npos)
      << r.status().message();
}

TEST_F(SqliteStoreTest, EmptyMetadataIsStoredAsEmptyObject) {
  auto store = MustOpen(Options());
  ASSERT_NE(store, nullptr);
  EmbeddedChunk e = MakeChunk(0, 4);
  e.chunk.metadata_json.clear();
  ASSERT_TRUE(store->Write(std::span<const EmbeddedChunk>(&e, 1)).status.ok());
  EXPECT_EQ(store->ReadChunk(e.chunk.id)->metadata_json, "{}");
}

// Issue 14: two runs into one store lost rows (one run's commit forgot the
// other's run records, so the other's commit deleted the chunks it had
// written). A run's store now holds a writer lock; a second run is refused at
// open, before anything is read or written, while readers still open.
TEST_F(SqliteStoreTest, ASecondRunIsRefusedWhileReadersStillOpen) {
  auto o = Options();
  o.store.exclusive_run = true;
  auto first = MustOpen(o);
  ASSERT_NE(first, nullptr);
  std::vector<EmbeddedChunk> batch = {MakeChunk(0, 4)};
  ASSERT_TRUE(first->Write(batch).status.ok());

  auto second = SqliteStore::Open(db_path_, o);
  ASSERT_FALSE(second.ok());
  EXPECT_EQ(second.status().code(), StatusCode::kBusy);
  EXPECT_NE(second.status().message().find("is in use by another sluice run (pid " +
                                           std::to_string(::getpid()) + ")"),
            std::string::npos)
      << second.status().message();
  EXPECT_NE(second.status().message().find(db_path_), std::string::npos);

  auto reader_options = Options();
  reader_options.store.read_only = true;
  auto reader = MustOpen(reader_options);
  ASSERT_NE(reader, nullptr);
  EXPECT_EQ(reader->Stats()->chunks, 1u);
  EXPECT_EQ(fs::status(db_path_ + ".lock").permissions() & fs::perms::all,
            fs::perms::owner_read | fs::perms::owner_write);

  first.reset();  // Close releases the lock
  auto after = MustOpen(o);
  EXPECT_NE(after, nullptr);
}

TEST_F(SqliteStoreTest, ReadOnlyOpenOfAMissingFileIsNotFoundAndCreatesNothing) {
  auto o = Options();
  o.store.read_only = true;
  auto r = SqliteStore::Open(db_path_, o);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), StatusCode::kNotFound);
  EXPECT_NE(r.status().message().find("does not exist"), std::string::npos);
  EXPECT_FALSE(fs::exists(db_path_));
}

TEST_F(SqliteStoreTest, AnotherModelIsRefusedNamingBothAndReembedReplacesEverything) {
  auto o = Options();
  o.store.model = "m1";
  o.store.dimensions = 4;
  o.store.embedding_cache_namespace = "m1:4";
  o.store.run_id = 7;
  {
    auto store = MustOpen(o);
    ASSERT_NE(store, nullptr);
    std::vector<EmbeddedChunk> batch = {MakeChunk(0, 4), MakeChunk(1, 4)};
    for (auto& e : batch) {
      e.model = "m1";
      e.chunk.file_id = "doc.md";
    }
    ASSERT_TRUE(store->Write(batch).status.ok());
    SourceManifest m;
    m.fingerprint.file_id = "doc.md";
    m.fingerprint.chunk_count = 2;
    m.run_id = 7;
    ASSERT_TRUE(store->CommitSources({&m, 1}).ok());
    EXPECT_EQ(store->StoredModel()->model, "m1");
    EXPECT_EQ(store->StoredModel()->dimensions, 4);
  }
  // Same dimensions, another model: refused, naming both.
  auto other = o;
  other.store.model = "m2";
  auto r = SqliteStore::Open(db_path_, other);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument);
  for (const char* part : {"model 'm1', 4 dimensions", "model 'm2', 4 dimensions", "--reembed"}) {
    EXPECT_NE(r.status().message().find(part), std::string::npos) << r.status().message();
  }
  // The offline embedder's vectors of the same length: refused too.
  other.store.model = "sluice-hash-v1";
  EXPECT_FALSE(SqliteStore::Open(db_path_, other).ok());

  // --reembed: nothing of m1 is left, and the store takes m2's dimensions.
  other.store.model = "m2";
  other.store.dimensions = 8;
  other.store.embedding_cache_namespace = "m2:8";
  other.store.reembed = true;
  auto store = MustOpen(other);
  ASSERT_NE(store, nullptr);
  EXPECT_EQ(store->Stats()->chunks, 0u);
  EXPECT_EQ(store->Stats()->sources, 0u);
  EXPECT_TRUE(store->LoadFingerprints()->empty());
  EXPECT_EQ(store->StoredModel()->dimensions, 0);
  std::vector<std::string_view> texts = {"chunk text number 0"};
  std::vector<CachedEmbedding> cached;
  ASSERT_TRUE(store->LookupEmbeddings("m1:4", texts, cached).ok());
  EXPECT_TRUE(cached[0].embedding.empty());
  for (const char* table : {"run_chunks", "embedding_cache", "meta"}) {
    EXPECT_EQ(QueryInt(store->handle(), std::string("SELECT count(*) FROM ") + table), 0) << table;
  }
  std::vector<EmbeddedChunk> batch = {MakeChunk(0, 8)};
  batch[0].model = "m2";
  auto w = store->Write(batch);
  ASSERT_TRUE(w.status.ok());
  EXPECT_TRUE(w.rejected.empty());
  EXPECT_EQ(store->StoredModel()->model, "m2");
  EXPECT_EQ(store->StoredModel()->dimensions, 8);
  store.reset();
  // Reopened by m2 without --reembed: its store now.
  other.store.reembed = false;
  EXPECT_NE(MustOpen(other), nullptr);
}

TEST_F(SqliteStoreTest, ClosedStoreRefusesWork) {
  auto store = MustOpen(Options());
  ASSERT_NE(store, nullptr);
  EXPECT_TRUE(store->Flush().ok());
  EXPECT_TRUE(store->Close().ok());
  EXPECT_TRUE(store->Close().ok());  // idempotent
  std::vector<EmbeddedChunk> batch = {MakeChunk(0, 4)};
  EXPECT_EQ(store->Write(batch).status.code(), StatusCode::kInvalidArgument);
  EXPECT_FALSE(store->Stats().ok());
  EXPECT_FALSE(store->Flush().ok());
}

// --- Resume support (docs/RESUME.md): fingerprints, run records, cache. ---

SourceManifest Manifest(const std::string& file_id, uint64_t run_id, uint64_t chunk_count) {
  SourceManifest m;
  m.fingerprint.file_id = file_id;
  m.fingerprint.path = "/corpus/" + file_id;
  m.fingerprint.size_bytes = 100;
  m.fingerprint.mtime_ns = 5;
  m.fingerprint.content_hash = "h1";
  m.fingerprint.chunk_count = chunk_count;
  m.run_id = run_id;
  return m;
}

class SqliteRunTest : public SqliteStoreTest {
 protected:
  // Chunk n of input file `file`, in source `source` (default: the file).
  static EmbeddedChunk FileChunk(int n, const std::string& file, const std::string& source = "") {
    EmbeddedChunk e = MakeChunk(n, 4, source.empty() ? file : source);
    e.chunk.file_id = file;
    return e;
  }
  SqliteStoreOptions RunOptions(uint64_t run_id) {
    SqliteStoreOptions o = Options();
    o.store.run_id = run_id;
    return o;
  }
  static std::vector<std::string> Ids(const std::vector<EmbeddedChunk>& rows) {
    std::vector<std::string> ids;
    for (const auto& r : rows) ids.push_back(r.chunk.id);
    return ids;
  }
  static std::optional<SourceFingerprint> Fingerprint(SqliteStore& store, const std::string& id) {
    auto all = store.LoadFingerprints();
    EXPECT_TRUE(all.ok());
    if (!all.ok()) return std::nullopt;
    for (const auto& f : *all) {
      if (f.file_id == id) return f;
    }
    return std::nullopt;
  }
  static int64_t RunRecords(SqliteStore& store, const std::string& where = "1") {
    return QueryInt(store.handle(), "SELECT count(*) FROM run_chunks WHERE " + where);
  }
  static std::vector<std::string> Problems(SqliteStore& store, size_t limit = 100) {
    std::vector<VerifyProblem> problems;
    EXPECT_TRUE(store.Verify(problems, limit).ok());
    std::vector<std::string> out;
    for (const auto& p : problems) out.push_back(p.kind + " " + p.subject);
    std::sort(out.begin(), out.end());
    return out;
  }
};

TEST_F(SqliteRunTest, FreshSchemaHasRunRecordsAndFileIndex) {
  auto store = MustOpen(Options());
  ASSERT_NE(store, nullptr);
  sqlite3* db = store->handle();
  EXPECT_EQ(QueryInt(db, "PRAGMA user_version"), kSqliteSchemaVersion);
  EXPECT_EQ(QueryInt(db,
                     "SELECT count(*) FROM sqlite_master WHERE type='table' AND name IN "
                     "('chunks','sources','meta','files','embedding_cache','run_chunks')"),
            6);
  EXPECT_EQ(QueryInt(db, "SELECT count(*) FROM pragma_table_info('chunks') WHERE name='file_id'"),
            1);
  EXPECT_EQ(QueryInt(db, "SELECT count(*) FROM pragma_table_info('files') WHERE name='chunk_ids'"),
            0);
  EXPECT_EQ(QueryInt(db,
                     "SELECT count(*) FROM sqlite_master WHERE type='index' AND "
                     "name='chunks_file_idx' AND sql LIKE '%file_id%'"),
            1);
  EXPECT_EQ(store->run_table(), "run_chunks");
  auto o = Options();
  o.store.table = "docs";
  auto docs = MustOpen(o);
  ASSERT_NE(docs, nullptr);
  EXPECT_EQ(docs->run_table(), "docs_run_chunks");
  EXPECT_EQ(QueryInt(db, "SELECT count(*) FROM sqlite_master WHERE name='docs_run_chunks'"), 1);
}

TEST_F(SqliteRunTest, WriteRecordsRunChunksOnlyWithARunAndAFile) {
  {
    auto no_run = MustOpen(Options());
    std::vector<EmbeddedChunk> rows = {FileChunk(0, "doc.md")};
    ASSERT_TRUE(no_run->Write(rows).status.ok());
    EXPECT_EQ(no_run->ReadChunk(rows[0].chunk.id)->file_id, "doc.md");
    EXPECT_EQ(RunRecords(*no_run), 0);
  }
  auto run = MustOpen(RunOptions(3));
  EmbeddedChunk from_stdin = MakeChunk(2, 4, "stdin-record");
  EmbeddedChunk bad = FileChunk(3, "doc.md");
  bad.embedding.push_back(0.5f);  // 5 dimensions: rejected, so not recorded
  std::vector<EmbeddedChunk> batch = {FileChunk(0, "doc.md"), FileChunk(1, "doc.md"), from_stdin,
                                      bad};
  auto w = run->Write(batch);
  ASSERT_TRUE(w.status.ok()) << w.status.ToString();
  ASSERT_EQ(w.rejected.size(), 1u);
  EXPECT_EQ(RunRecords(*run, "run_id = 3 AND file_id = 'doc.md'"), 2);
  EXPECT_EQ(RunRecords(*run), 2);
  EXPECT_EQ(QueryInt(run->handle(), "SELECT count(*) FROM chunks WHERE file_id IS NULL"), 1);
  EXPECT_EQ(run->ReadChunk(from_stdin.chunk.id)->file_id, "");
  // The same batch again changes no row at all (chunks, sources or records).
  const int64_t changes = sqlite3_total_changes64(run->handle());
  ASSERT_TRUE(run->Write(batch).status.ok());
  EXPECT_EQ(sqlite3_total_changes64(run->handle()), changes);
  // ReadChunks carries the file id too.
  auto read = run->ReadChunks(std::vector<std::string>{batch[1].chunk.id});
  ASSERT_TRUE(read.ok());
  ASSERT_EQ(read->size(), 1u);
  EXPECT_EQ((*read)[0].chunk.file_id, "doc.md");
}

TEST_F(SqliteRunTest, CommitDeletesOnlyChunksTheRunDidNotRecord) {
  std::vector<EmbeddedChunk> v1 = {FileChunk(0, "doc.md"), FileChunk(1, "doc.md"),
                                   FileChunk(2, "doc.md")};
  std::vector<EmbeddedChunk> other = {FileChunk(0, "other.md")};
  {
    auto run1 = MustOpen(RunOptions(1));
    ASSERT_TRUE(run1->Write(v1).status.ok());
    ASSERT_TRUE(run1->Write(other).status.ok());
    EXPECT_EQ(RunRecords(*run1, "run_id = 1"), 4);
    auto deleted = run1->CommitSources(
        std::vector<SourceManifest>{Manifest("doc.md", 1, 3), Manifest("other.md", 1, 1)});
    ASSERT_TRUE(deleted.ok()) << deleted.status().ToString();
    EXPECT_EQ(*deleted, 0u);
    EXPECT_EQ(RunRecords(*run1), 0);  // committed files' records are forgotten
    EXPECT_EQ(run1->LoadFingerprints()->size(), 2u);
    EXPECT_EQ(Fingerprint(*run1, "doc.md")->chunk_count, 3u);
    EXPECT_EQ(run1->ReadSource("doc.md")->content_hash.value_or(""), "h1");
    EXPECT_EQ(run1->ReadSource("doc.md")->size_bytes.value_or(0), 100u);
  }
  // Run 2 re-chunks doc.md: keeps chunk 0, adds 7; 1 and 2 are stale.
  // other.md is in flight (written, not committed) in run 2.
  auto run2 = MustOpen(RunOptions(2));
  std::vector<EmbeddedChunk> v2 = {FileChunk(0, "doc.md"), FileChunk(7, "doc.md")};
  ASSERT_TRUE(run2->Write(v2).status.ok());
  ASSERT_TRUE(run2->Write(other).status.ok());
  auto deleted = run2->CommitSources(std::vector<SourceManifest>{Manifest("doc.md", 2, 2)});
  ASSERT_TRUE(deleted.ok()) << deleted.status().ToString();
  EXPECT_EQ(*deleted, 2u);
  EXPECT_EQ(*run2->FileChunkIds("doc.md"), Ids(v2));
  EXPECT_EQ(run2->ReadSource("doc.md")->chunk_count, 2u);
  EXPECT_EQ(Fingerprint(*run2, "doc.md")->chunk_count, 2u);
  EXPECT_TRUE(run2->ReadChunk(other[0].chunk.id).ok());  // other files untouched
  EXPECT_EQ(RunRecords(*run2, "file_id = 'doc.md'"), 0);
  EXPECT_EQ(RunRecords(*run2, "file_id = 'other.md' AND run_id = 2"), 1);
  EXPECT_TRUE(Problems(*run2).empty());
}

TEST_F(SqliteRunTest, CommitDeletesLegacyRowsAndACrashedRunsChunks) {
  EmbeddedChunk keep = MakeChunk(5, 4, "keep.md");
  {
    // Rows stored before chunks had a file_id: doc.md's chunks 0 and 1, and
    // another file's.
    auto legacy = MustOpen(Options());
    std::vector<EmbeddedChunk> old = {MakeChunk(0, 4, "doc.md"), MakeChunk(1, 4, "doc.md"), keep};
    ASSERT_TRUE(legacy->Write(old).status.ok());
    EXPECT_EQ(QueryInt(legacy->handle(), "SELECT count(*) FROM chunks WHERE file_id IS NULL"), 3);
  }
  {
    // Run 5 stored chunk 3 of doc.md and died before committing it.
    auto crashed = MustOpen(RunOptions(5));
    std::vector<EmbeddedChunk> rows = {FileChunk(3, "doc.md")};
    ASSERT_TRUE(crashed->Write(rows).status.ok());
  }
  // Run 6 produces chunk 1 again (the legacy row gets its file_id) and 4.
  auto run6 = MustOpen(RunOptions(6));
  std::vector<EmbeddedChunk> now = {FileChunk(1, "doc.md"), FileChunk(4, "doc.md")};
  ASSERT_TRUE(run6->Write(now).status.ok());
  EXPECT_EQ(run6->ReadChunk(now[0].chunk.id)->file_id, "doc.md");
  EXPECT_EQ(RunRecords(*run6, "file_id = 'doc.md'"), 3);  // run 5's and run 6's
  auto deleted = run6->CommitSources(std::vector<SourceManifest>{Manifest("doc.md", 6, 2)});
  ASSERT_TRUE(deleted.ok()) << deleted.status().ToString();
  EXPECT_EQ(*deleted, 2u);  // legacy chunk 0 and the crashed run's chunk 3
  EXPECT_EQ(*run6->FileChunkIds("doc.md"), Ids(now));
  EXPECT_EQ(run6->ReadChunk(MakeChunk(0, 4, "doc.md").chunk.id).status().code(),
            StatusCode::kNotFound);
  EXPECT_EQ(run6->ReadChunk(FileChunk(3, "doc.md").chunk.id).status().code(),
            StatusCode::kNotFound);
  EXPECT_TRUE(run6->ReadChunk(keep.chunk.id).ok());  // a legacy row of another source stays
  EXPECT_EQ(RunRecords(*run6), 0);                   // every run's records of doc.md went
  EXPECT_EQ(run6->ReadSource("doc.md")->chunk_count, 2u);
  EXPECT_EQ(run6->ReadSource("keep.md")->chunk_count, 1u);
}

TEST_F(SqliteRunTest, CommitRecountsEverySourceOfAMultiSourceFile) {
  // A JSONL file: each record is its own source; they share the file id.
  {
    auto run1 = MustOpen(RunOptions(1));
    std::vector<EmbeddedChunk> rows = {FileChunk(0, "data.jsonl", "data.jsonl#1"),
                                       FileChunk(1, "data.jsonl", "data.jsonl#1"),
                                       FileChunk(0, "data.jsonl", "data.jsonl#2")};
    ASSERT_TRUE(run1->Write(rows).status.ok());
    ASSERT_TRUE(
        run1->CommitSources(std::vector<SourceManifest>{Manifest("data.jsonl", 1, 3)}).ok());
    EXPECT_EQ(run1->Stats()->sources, 2u);
  }
  // Run 2: record 2 is gone from the file, record 1 lost a chunk.
  auto run2 = MustOpen(RunOptions(2));
  std::vector<EmbeddedChunk> rows = {FileChunk(0, "data.jsonl", "data.jsonl#1")};
  ASSERT_TRUE(run2->Write(rows).status.ok());
  auto deleted = run2->CommitSources(std::vector<SourceManifest>{Manifest("data.jsonl", 2, 1)});
  ASSERT_TRUE(deleted.ok()) << deleted.status().ToString();
  EXPECT_EQ(*deleted, 2u);
  EXPECT_EQ(run2->ReadSource("data.jsonl#1")->chunk_count, 1u);
  EXPECT_EQ(run2->ReadSource("data.jsonl#2").status().code(), StatusCode::kNotFound);
  EXPECT_EQ(run2->Stats()->sources, 1u);
  EXPECT_EQ(QueryInt(run2->handle(), "SELECT count(*) FROM temp.sluice_touched_sources"), 0);
  EXPECT_TRUE(Problems(*run2).empty());
}

TEST_F(SqliteRunTest, CleanupNoneKeepsStaleChunksAndCountsThem) {
  {
    auto run1 = MustOpen(RunOptions(1));
    std::vector<EmbeddedChunk> v1 = {FileChunk(0, "doc.md"), FileChunk(1, "doc.md"),
                                     FileChunk(2, "doc.md")};
    ASSERT_TRUE(run1->Write(v1).status.ok());
    ASSERT_TRUE(run1->CommitSources(std::vector<SourceManifest>{Manifest("doc.md", 1, 3)}).ok());
  }
  auto run2 = MustOpen(RunOptions(2));
  std::vector<EmbeddedChunk> v2 = {FileChunk(0, "doc.md"), FileChunk(9, "doc.md")};
  ASSERT_TRUE(run2->Write(v2).status.ok());
  SourceManifest keep = Manifest("doc.md", 2, 2);
  keep.delete_stale = false;
  auto deleted = run2->CommitSources(std::vector<SourceManifest>{keep});
  ASSERT_TRUE(deleted.ok()) << deleted.status().ToString();
  EXPECT_EQ(*deleted, 0u);
  // Produced 2, kept the 2 earlier chunks run 2 did not produce (1 and 2).
  EXPECT_EQ(Fingerprint(*run2, "doc.md")->chunk_count, 4u);
  EXPECT_EQ(run2->FileChunkIds("doc.md")->size(), 4u);
  EXPECT_EQ(run2->ReadSource("doc.md")->chunk_count, 4u);
  EXPECT_EQ(RunRecords(*run2), 0);
  EXPECT_TRUE(Problems(*run2).empty());
}

// Under the writer lock a file with no stored chunk is written without run
// records (every chunk of it is this run's); a file that had chunks, also a
// crashed run's, keeps the recorded path, so its stale chunks still go.
TEST_F(SqliteRunTest, AFreshFileUnderTheWriterLockNeedsNoRunRecordsAndLosesNothing) {
  const auto locked = [this](uint64_t run_id) {
    SqliteStoreOptions o = RunOptions(run_id);
    o.store.exclusive_run = true;
    return MustOpen(o);
  };
  std::vector<EmbeddedChunk> v1 = {FileChunk(0, "doc.md"), FileChunk(1, "doc.md"),
                                   FileChunk(2, "doc.md")};
  {
    auto run1 = locked(1);
    ASSERT_NE(run1, nullptr);
    ASSERT_TRUE(run1->Write({v1.data(), 2}).status.ok());
    ASSERT_TRUE(run1->Write({v1.data() + 2, 1}).status.ok());
    EXPECT_EQ(RunRecords(*run1), 0);
    auto deleted = run1->CommitSources(std::vector<SourceManifest>{Manifest("doc.md", 1, 3)});
    ASSERT_TRUE(deleted.ok()) << deleted.status().ToString();
    EXPECT_EQ(*deleted, 0u);
    EXPECT_EQ(*run1->FileChunkIds("doc.md"), Ids(v1));
    EXPECT_EQ(Fingerprint(*run1, "doc.md")->chunk_count, 3u);
    EXPECT_EQ(run1->ReadSource("doc.md")->chunk_count, 3u);
    // --cleanup none on a fresh file counts only what the run produced.
    std::vector<EmbeddedChunk> added = {FileChunk(0, "new.md"), FileChunk(1, "new.md")};
    ASSERT_TRUE(run1->Write(added).status.ok());
    SourceManifest keep = Manifest("new.md", 1, 2);
    keep.delete_stale = false;
    ASSERT_TRUE(run1->CommitSources(std::vector<SourceManifest>{keep}).ok());
    EXPECT_EQ(Fingerprint(*run1, "new.md")->chunk_count, 2u);
    EXPECT_TRUE(Problems(*run1).empty());
  }
  {
    // Run 2 re-chunks doc.md (chunks 0 and 7): the file had chunks, so they
    // are recorded and 1 and 2 deleted as stale.
    auto run2 = locked(2);
    ASSERT_NE(run2, nullptr);
    std::vector<EmbeddedChunk> v2 = {FileChunk(0, "doc.md"), FileChunk(7, "doc.md")};
    ASSERT_TRUE(run2->Write(v2).status.ok());
    EXPECT_EQ(RunRecords(*run2, "file_id = 'doc.md' AND run_id = 2"), 2);
    auto deleted = run2->CommitSources(std::vector<SourceManifest>{Manifest("doc.md", 2, 2)});
    ASSERT_TRUE(deleted.ok()) << deleted.status().ToString();
    EXPECT_EQ(*deleted, 2u);
    EXPECT_EQ(*run2->FileChunkIds("doc.md"), Ids(v2));
    // Run 2 also starts crash.md (fresh: no records) and dies before its commit.
    std::vector<EmbeddedChunk> crashed = {FileChunk(0, "crash.md"), FileChunk(1, "crash.md")};
    ASSERT_TRUE(run2->Write(crashed).status.ok());
    EXPECT_EQ(RunRecords(*run2, "file_id = 'crash.md'"), 0);
  }
  // Run 3 finds crash.md changed (only chunk 0 now): the dead run's unrecorded
  // rows make the file not fresh, so chunk 1 is stale and goes.
  auto run3 = locked(3);
  ASSERT_NE(run3, nullptr);
  std::vector<EmbeddedChunk> v3 = {FileChunk(0, "crash.md")};
  ASSERT_TRUE(run3->Write(v3).status.ok());
  EXPECT_EQ(RunRecords(*run3, "file_id = 'crash.md' AND run_id = 3"), 1);
  auto deleted = run3->CommitSources(std::vector<SourceManifest>{Manifest("crash.md", 3, 1)});
  ASSERT_TRUE(deleted.ok()) << deleted.status().ToString();
  EXPECT_EQ(*deleted, 1u);
  EXPECT_EQ(*run3->FileChunkIds("crash.md"), Ids(v3));
  EXPECT_EQ(RunRecords(*run3), 0);
  EXPECT_TRUE(Problems(*run3).empty());
}

TEST_F(SqliteRunTest, FactsOnlyChangesOnlyTheFileFacts) {
  {
    auto run1 = MustOpen(RunOptions(1));
    std::vector<EmbeddedChunk> v1 = {FileChunk(0, "doc.md"), FileChunk(1, "doc.md"),
                                     FileChunk(2, "doc.md")};
    ASSERT_TRUE(run1->Write(v1).status.ok());
    ASSERT_TRUE(run1->CommitSources(std::vector<SourceManifest>{Manifest("doc.md", 1, 3)}).ok());
  }
  auto run2 = MustOpen(RunOptions(2));
  // A leftover record of this file (e.g. a retry wrote one chunk again).
  std::vector<EmbeddedChunk> again = {FileChunk(0, "doc.md")};
  ASSERT_TRUE(run2->Write(again).status.ok());
  SourceManifest touch = Manifest("doc.md", 2, 0);
  touch.facts_only = true;
  touch.fingerprint.mtime_ns = 99;
  touch.fingerprint.path = "/moved/doc.md";
  auto deleted = run2->CommitSources(std::vector<SourceManifest>{touch});
  ASSERT_TRUE(deleted.ok()) << deleted.status().ToString();
  EXPECT_EQ(*deleted, 0u);
  auto f = Fingerprint(*run2, "doc.md");
  ASSERT_TRUE(f.has_value());
  EXPECT_EQ(f->chunk_count, 3u);  // kept, not the manifest's 0
  EXPECT_EQ(f->mtime_ns, 99);
  EXPECT_EQ(f->path, "/moved/doc.md");
  EXPECT_EQ(run2->ReadSource("doc.md")->mtime_ns.value_or(0), 99);
  EXPECT_EQ(run2->ReadSource("doc.md")->path, "/moved/doc.md");
  EXPECT_EQ(run2->FileChunkIds("doc.md")->size(), 3u);
  EXPECT_EQ(RunRecords(*run2), 0);
  // A facts-only manifest of a file without a fingerprint records its count.
  SourceManifest fresh = Manifest("new.md", 2, 4);
  fresh.facts_only = true;
  ASSERT_TRUE(run2->CommitSources(std::vector<SourceManifest>{fresh}).ok());
  EXPECT_EQ(Fingerprint(*run2, "new.md")->chunk_count, 4u);
}

TEST_F(SqliteRunTest, DeleteSourcesRemovesChunksFingerprintsRecordsAndSourcesRows) {
  EmbeddedChunk other = FileChunk(0, "other.md");
  {
    auto run1 = MustOpen(RunOptions(1));
    std::vector<EmbeddedChunk> rows = {FileChunk(1, "doc.md"),
                                       FileChunk(2, "doc.md"),
                                       FileChunk(0, "data.jsonl", "data.jsonl#1"),
                                       FileChunk(1, "data.jsonl", "data.jsonl#1"),
                                       FileChunk(0, "data.jsonl", "data.jsonl#2"),
                                       other};
    ASSERT_TRUE(run1->Write(rows).status.ok());
    ASSERT_TRUE(run1->CommitSources(std::vector<SourceManifest>{Manifest("doc.md", 1, 3),
                                                                Manifest("data.jsonl", 1, 3),
                                                                Manifest("other.md", 1, 1)})
                    .ok());
  }
  {
    // A row without a file id under doc.md's source (e.g. written by an
    // older sluice after doc.md was committed).
    auto legacy = MustOpen(Options());
    std::vector<EmbeddedChunk> old = {MakeChunk(0, 4, "doc.md")};
    ASSERT_TRUE(legacy->Write(old).status.ok());
  }
  auto run2 = MustOpen(RunOptions(2));
  std::vector<EmbeddedChunk> in_flight = {FileChunk(9, "doc.md")};
  ASSERT_TRUE(run2->Write(in_flight).status.ok());
  auto deleted =
      run2->DeleteSources(std::vector<std::string>{"doc.md", "data.jsonl", "never-seen.md"});
  ASSERT_TRUE(deleted.ok()) << deleted.status().ToString();
  EXPECT_EQ(*deleted, 7u);  // doc.md: legacy 0, 1, 2, in-flight 9; data.jsonl: 3
  for (const char* gone : {"doc.md", "data.jsonl#1", "data.jsonl#2"}) {
    EXPECT_EQ(run2->ReadSource(gone).status().code(), StatusCode::kNotFound) << gone;
  }
  auto fps = run2->LoadFingerprints();
  ASSERT_TRUE(fps.ok());
  ASSERT_EQ(fps->size(), 1u);
  EXPECT_EQ((*fps)[0].file_id, "other.md");
  EXPECT_EQ(RunRecords(*run2), 0);
  EXPECT_EQ(run2->Stats()->chunks, 1u);
  EXPECT_EQ(run2->Stats()->sources, 1u);
  EXPECT_TRUE(run2->ReadChunk(other.chunk.id).ok());
  EXPECT_TRUE(Problems(*run2).empty());
  auto none = run2->DeleteSources(std::vector<std::string>{});
  ASSERT_TRUE(none.ok());
  EXPECT_EQ(*none, 0u);
}

TEST_F(SqliteRunTest, FileChunkIdsAreOrderedBySourceOrdinalAndId) {
  auto store = MustOpen(RunOptions(1));
  EmbeddedChunk b0 = FileChunk(0, "data.jsonl", "b");
  EmbeddedChunk a2 = FileChunk(2, "data.jsonl", "a");
  EmbeddedChunk a1z = FileChunk(1, "data.jsonl", "a");
  a1z.chunk.id = "ffff";
  EmbeddedChunk a1y = FileChunk(1, "data.jsonl", "a");  // a split chunk's other piece
  a1y.chunk.id = "eeee";
  EmbeddedChunk legacy = MakeChunk(0, 4, "data.jsonl");  // no file id, source = the file
  std::vector<EmbeddedChunk> rows = {b0, a2, a1z, a1y, legacy, FileChunk(0, "other.md")};
  ASSERT_TRUE(store->Write(rows).status.ok());
  EXPECT_EQ(*store->FileChunkIds("data.jsonl"),
            (std::vector<std::string>{"eeee", "ffff", a2.chunk.id, b0.chunk.id, legacy.chunk.id}));
  EXPECT_TRUE(store->FileChunkIds("nothing.md")->empty());
}

TEST_F(SqliteRunTest, VerifyFindsMissingStaleOrphanWrongDimensionsAndMiscount) {
  auto store = MustOpen(RunOptions(1));
  std::vector<EmbeddedChunk> rows = {FileChunk(0, "short.md"), FileChunk(1, "short.md"),
                                     FileChunk(0, "long.md"),  FileChunk(1, "long.md"),
                                     FileChunk(2, "long.md"),  FileChunk(0, "ok.md")};
  ASSERT_TRUE(store->Write(rows).status.ok());
  ASSERT_TRUE(
      store
          ->CommitSources(std::vector<SourceManifest>{
              Manifest("short.md", 1, 3), Manifest("long.md", 1, 2), Manifest("ok.md", 1, 1)})
          .ok());
  EXPECT_EQ(Problems(*store),
            (std::vector<std::string>{"count_mismatch long.md", "missing_chunk short.md"}));
  // Damage the store behind its back.
  ASSERT_EQ(sqlite3_exec(store->handle(),
                         ("DELETE FROM sources WHERE source_id = 'ok.md';"
                          "UPDATE chunks SET dims = 5 WHERE id = '" +
                          rows[2].chunk.id +
                          "';"
                          "UPDATE sources SET chunk_count = 7 WHERE source_id = 'short.md';")
                             .c_str(),
                         nullptr, nullptr, nullptr),
            SQLITE_OK);
  EXPECT_EQ(Problems(*store), (std::vector<std::string>{
                                  "count_mismatch long.md",
                                  "count_mismatch short.md",
                                  "missing_chunk short.md",
                                  "orphan_chunk " + rows[5].chunk.id,
                                  "wrong_dimensions " + rows[2].chunk.id,
                              }));
  std::vector<VerifyProblem> few;
  ASSERT_TRUE(store->Verify(few, 2).ok());
  EXPECT_EQ(few.size(), 2u);
  for (const auto& p : few) EXPECT_FALSE(p.detail.empty());
}

TEST_F(SqliteRunTest, DeletionWindowsReachEveryRowOfBothKinds) {
  // More rows than one deletion window (4096) of each kind, interleaved by
  // rowid with another file's: legacy rows under doc.md's source, rows a
  // crashed run stored, rows the committing run recorded.
  constexpr int kLegacy = 6000;
  {
    auto legacy = MustOpen(Options());
    std::vector<EmbeddedChunk> rows;
    for (int i = 0; i < kLegacy; ++i) {
      rows.push_back(MakeChunk(i, 4, "doc.md"));
      rows.push_back(MakeChunk(i, 4, "other.md"));
    }
    ASSERT_TRUE(legacy->Write(rows).status.ok());
  }
  {
    auto crashed = MustOpen(RunOptions(6));
    std::vector<EmbeddedChunk> rows;
    for (int i = 15000; i < 20000; ++i) rows.push_back(FileChunk(i, "doc.md"));
    ASSERT_TRUE(crashed->Write(rows).status.ok());
  }
  auto run = MustOpen(RunOptions(7));
  std::vector<EmbeddedChunk> rows;
  for (int i = 0; i < kLegacy; i += 3) rows.push_back(FileChunk(i, "doc.md"));  // legacy, again
  for (int i = 6000; i < 15000; ++i) rows.push_back(FileChunk(i, "doc.md"));
  ASSERT_TRUE(run->Write(rows).status.ok());
  auto deleted = run->CommitSources(std::vector<SourceManifest>{Manifest("doc.md", 7, 11000)});
  ASSERT_TRUE(deleted.ok()) << deleted.status().ToString();
  EXPECT_EQ(*deleted, 4000u + 5000u);  // legacy rows not produced again + the crashed run's
  EXPECT_EQ(run->FileChunkIds("doc.md")->size(), 11000u);
  EXPECT_EQ(run->ReadSource("doc.md")->chunk_count, 11000u);
  EXPECT_EQ(run->ReadSource("other.md")->chunk_count, static_cast<uint64_t>(kLegacy));
  EXPECT_EQ(RunRecords(*run), 0);
  EXPECT_TRUE(Problems(*run).empty());
  // DeleteSources walks the same windows.
  deleted = run->DeleteSources(std::vector<std::string>{"other.md"});
  ASSERT_TRUE(deleted.ok());
  EXPECT_EQ(*deleted, static_cast<uint64_t>(kLegacy));
  EXPECT_EQ(run->Stats()->chunks, 11000u);
}

TEST_F(SqliteRunTest, CommitAndDeleteUnderAnotherWritersLockAreRetryable) {
  auto store = MustOpen(RunOptions(1));
  std::vector<EmbeddedChunk> rows = {FileChunk(0, "doc.md")};
  ASSERT_TRUE(store->Write(rows).status.ok());
  auto other = MustOpen(Options());
  ASSERT_EQ(sqlite3_exec(other->handle(), "BEGIN IMMEDIATE", nullptr, nullptr, nullptr), SQLITE_OK);
  auto commit = store->CommitSources(std::vector<SourceManifest>{Manifest("doc.md", 1, 1)});
  ASSERT_FALSE(commit.ok());
  EXPECT_EQ(commit.status().code(), StatusCode::kUnavailable);
  auto del = store->DeleteSources(std::vector<std::string>{"doc.md"});
  ASSERT_FALSE(del.ok());
  EXPECT_EQ(del.status().code(), StatusCode::kUnavailable);
  ASSERT_EQ(sqlite3_exec(other->handle(), "ROLLBACK", nullptr, nullptr, nullptr), SQLITE_OK);
  EXPECT_TRUE(store->LoadFingerprints()->empty());  // nothing committed
  EXPECT_EQ(RunRecords(*store), 1);
  auto retry = store->CommitSources(std::vector<SourceManifest>{Manifest("doc.md", 1, 1)});
  ASSERT_TRUE(retry.ok()) << retry.status().ToString();
  EXPECT_EQ(store->LoadFingerprints()->size(), 1u);
  // A closed store refuses the resume calls.
  ASSERT_TRUE(store->Close().ok());
  EXPECT_EQ(
      store->CommitSources(std::vector<SourceManifest>{Manifest("doc.md", 1, 1)}).status().code(),
      StatusCode::kInvalidArgument);
  EXPECT_EQ(store->DeleteSources(std::vector<std::string>{"doc.md"}).status().code(),
            StatusCode::kInvalidArgument);
  EXPECT_FALSE(store->FileChunkIds("doc.md").ok());
  std::vector<VerifyProblem> problems;
  EXPECT_FALSE(store->Verify(problems, 10).ok());
}

TEST_F(SqliteRunTest, CommitOfThousandsOfSmallFilesInOneCall) {
  constexpr int kFiles = 3000;
  std::vector<SourceManifest> manifests;
  {
    auto run1 = MustOpen(RunOptions(1));
    std::vector<EmbeddedChunk> rows;
    for (int f = 0; f < kFiles; ++f) {
      const std::string file = "f" + std::to_string(f) + ".md";
      rows.push_back(FileChunk(0, file));
      rows.push_back(FileChunk(1, file));
      manifests.push_back(Manifest(file, 1, 2));
    }
    ASSERT_TRUE(run1->Write(rows).status.ok());
    ASSERT_TRUE(run1->CommitSources(manifests).ok());
  }
  auto run2 = MustOpen(RunOptions(2));
  std::vector<EmbeddedChunk> rows;
  for (int f = 0; f < kFiles; ++f) {
    rows.push_back(FileChunk(0, "f" + std::to_string(f) + ".md"));
    manifests[f] = Manifest("f" + std::to_string(f) + ".md", 2, 1);
  }
  ASSERT_TRUE(run2->Write(rows).status.ok());
  const auto start = std::chrono::steady_clock::now();
  auto deleted = run2->CommitSources(manifests);
  const auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(
                      std::chrono::steady_clock::now() - start)
                      .count();
  ASSERT_TRUE(deleted.ok()) << deleted.status().ToString();
  EXPECT_EQ(*deleted, static_cast<uint64_t>(kFiles));
  RecordProperty("commit_3000_files_ms", std::to_string(ms));
  EXPECT_EQ(run2->Stats()->chunks, static_cast<uint64_t>(kFiles));
  EXPECT_EQ(run2->ReadSource("f1234.md")->chunk_count, 1u);
  EXPECT_EQ(RunRecords(*run2), 0);
  EXPECT_TRUE(Problems(*run2).empty());
}

// Peak resident memory (VmHWM) in KiB, after resetting it when `reset`.
int64_t PeakRssKb(bool reset) {
  if (reset) std::ofstream("/proc/self/clear_refs") << "5";
  std::ifstream status("/proc/self/status");
  std::string line;
  while (std::getline(status, line)) {
    if (line.rfind("VmHWM:", 0) == 0) return std::stoll(line.substr(6));
  }
  return -1;
}

TEST_F(SqliteRunTest, AHugeSingleFileCommitsInFlatMemory) {
  // 200,000 chunks of one file; run 2 keeps half. No list of them is ever
  // held: commit memory is SQLite's bounded page cache, whatever the count.
  constexpr int kChunks = 200'000;
  constexpr int kBatch = 5'000;
  const auto write_run = [&](uint64_t run, int count) {
    auto store = MustOpen(RunOptions(run));
    std::vector<EmbeddedChunk> batch;
    for (int i = 0; i < count; i += kBatch) {
      batch.clear();
      for (int j = i; j < std::min(count, i + kBatch); ++j)
        batch.push_back(FileChunk(j, "big.txt"));
      auto w = store->Write(batch);
      ASSERT_TRUE(w.status.ok()) << w.status.ToString();
    }
  };
  write_run(1, kChunks);
  {
    auto store = MustOpen(Options());
    ASSERT_TRUE(
        store->CommitSources(std::vector<SourceManifest>{Manifest("big.txt", 1, kChunks)}).ok());
  }
  write_run(2, kChunks / 2);
  // A 2 MiB page cache (SQLite's default), so that what a held list of ids
  // would cost stands out from the cache filling up.
  SqliteStoreOptions small_cache = Options();
  small_cache.page_cache_bytes = 2 * 1024 * 1024;
  auto store = MustOpen(small_cache);
  EXPECT_EQ(RunRecords(*store), kChunks / 2);
  const int64_t rss_before = PeakRssKb(true);
  sqlite3_int64 sqlite_before = sqlite3_memory_highwater(1);  // reset the high-water mark
  sqlite_before = sqlite3_memory_used();
  auto deleted =
      store->CommitSources(std::vector<SourceManifest>{Manifest("big.txt", 2, kChunks / 2)});
  const sqlite3_int64 sqlite_peak = sqlite3_memory_highwater(0);
  const int64_t rss_peak = PeakRssKb(false);
  ASSERT_TRUE(deleted.ok()) << deleted.status().ToString();
  EXPECT_EQ(*deleted, static_cast<uint64_t>(kChunks / 2));
  EXPECT_EQ(store->Stats()->chunks, static_cast<uint64_t>(kChunks / 2));
  EXPECT_EQ(store->ReadSource("big.txt")->chunk_count, static_cast<uint64_t>(kChunks / 2));
  EXPECT_EQ(RunRecords(*store), 0);
  // SQLite's heap during the commit: ~280 KB measured, the same at 80,000
  // chunks. (One DELETE over all 100,000 stale rows took 4.9 MB: SQLite
  // collects a DELETE's rowids first; hence the windows.) 100,000 ids held
  // as strings would be ~10 MB.
  const int64_t sqlite_growth_kb = (sqlite_peak - sqlite_before) / 1024;
  RecordProperty("commit_sqlite_heap_growth_kb", std::to_string(sqlite_growth_kb));
  EXPECT_LT(sqlite_growth_kb, 1024);
  // The process's RSS is recorded, not asserted: under ASan freed memory sits
  // in quarantine (24 MB of growth measured there), and SQLite's own heap
  // above is what a held list would show.
  if (rss_before > 0 && rss_peak > 0) {
    RecordProperty("commit_peak_rss_growth_kb", std::to_string(rss_peak - rss_before));
  }
}

TEST_F(SqliteStoreTest, EmbeddingCacheIsKeyedByNamespaceAndTextAcrossConnections) {
  SqliteStoreOptions o = Options();
  o.store.embedding_cache_namespace = "model-a:0";
  auto writer = MustOpen(o);
  std::vector<EmbeddedChunk> rows = {MakeChunk(0, 4), MakeChunk(1, 4)};
  ASSERT_TRUE(writer->Write(rows).status.ok());

  auto reader = MustOpen(Options());  // a second connection, no namespace of its own
  std::vector<std::string_view> texts = {rows[1].chunk.text, "never embedded", rows[0].chunk.text};
  std::vector<CachedEmbedding> out;
  ASSERT_TRUE(reader->LookupEmbeddings("model-a:0", texts, out).ok());
  ASSERT_EQ(out.size(), 3u);
  EXPECT_EQ(out[0].embedding, rows[1].embedding);
  EXPECT_EQ(out[0].model, "test-model");
  EXPECT_TRUE(out[1].embedding.empty());
  EXPECT_EQ(out[2].embedding, rows[0].embedding);
  // Another model or dimension never matches.
  ASSERT_TRUE(reader->LookupEmbeddings("model-a:256", texts, out).ok());
  for (const auto& c : out) EXPECT_TRUE(c.embedding.empty());
  // The cache outlives the chunk.
  ASSERT_TRUE(writer->DeleteSources(std::vector<std::string>{"doc.md"}).ok());
  ASSERT_TRUE(reader->LookupEmbeddings("model-a:0", texts, out).ok());
  EXPECT_EQ(out[0].embedding, rows[1].embedding);
  // Without a namespace, Write records nothing.
  auto plain = MustOpen(Options());
  std::vector<EmbeddedChunk> more = {MakeChunk(5, 4)};
  ASSERT_TRUE(plain->Write(more).status.ok());
  std::vector<std::string_view> five = {more[0].chunk.text};
  ASSERT_TRUE(reader->LookupEmbeddings("model-a:0", five, out).ok());
  EXPECT_TRUE(out[0].embedding.empty());
}

// Whether a lookup could find anything: false only while neither a chunk row
// with a cache key nor a cache row exists (the cache stage then skips the
// lookups of texts it has not sent on itself).
TEST_F(SqliteStoreTest, MayHoldCachedEmbeddingsOnlyOnceAVectorIsKeyed) {
  auto plain = MustOpen(Options());
  EXPECT_FALSE(*plain->MayHoldCachedEmbeddings());
  std::vector<EmbeddedChunk> unkeyed = {MakeChunk(7, 4, "other.md")};  // no namespace: no key
  ASSERT_TRUE(plain->Write(unkeyed).status.ok());
  EXPECT_FALSE(*plain->MayHoldCachedEmbeddings());

  SqliteStoreOptions o = Options();
  o.store.embedding_cache_namespace = "model-a:0";
  auto writer = MustOpen(o);
  std::vector<EmbeddedChunk> rows = {MakeChunk(0, 4)};
  rows[0].chunk.file_id = "doc.md";
  ASSERT_TRUE(writer->Write(rows).status.ok());
  EXPECT_TRUE(*writer->MayHoldCachedEmbeddings());
  EXPECT_TRUE(*plain->MayHoldCachedEmbeddings());  // another connection sees it
  // Deleted, the chunk leaves its vector in the cache table: still true.
  ASSERT_TRUE(writer->DeleteSources(std::vector<std::string>{"doc.md"}).ok());
  EXPECT_EQ(writer->Stats()->chunks, 1u);  // the unkeyed row only
  EXPECT_TRUE(*writer->MayHoldCachedEmbeddings());
  ASSERT_TRUE(writer->Close().ok());
  EXPECT_FALSE(writer->MayHoldCachedEmbeddings().ok());
}

// Version 4: a stored chunk is the cache entry for its text (no second copy
// of the vector is written); the cache table receives a vector only when
// its chunk is deleted or its text is rewritten, so nothing embedded is lost.
TEST_F(SqliteStoreTest, TheChunkRowIsTheCacheEntryAndAVectorOutlivesItsChunk) {
  SqliteStoreOptions o = Options();
  o.store.embedding_cache_namespace = "model-a:0";
  auto writer = MustOpen(o);
  std::vector<EmbeddedChunk> rows = {MakeChunk(0, 4), MakeChunk(1, 4)};
  ASSERT_TRUE(writer->Write(rows).status.ok());
  EXPECT_EQ(QueryInt(writer->handle(), "SELECT count(*) FROM embedding_cache"), 0);
  EXPECT_EQ(QueryInt(writer->handle(), "SELECT count(*) FROM chunks WHERE text_key IS NOT NULL"),
            2);
  auto reader = MustOpen(Options());
  std::vector<CachedEmbedding> out;
  const std::string old_text = rows[0].chunk.text;
  std::vector<std::string_view> texts = {old_text};
  ASSERT_TRUE(reader->LookupEmbeddings("model-a:0", texts, out).ok());
  EXPECT_EQ(out[0].embedding, rows[0].embedding);

  // The same rows written again without a namespace (--no-cache) change
  // nothing, and the text still answers.
  auto plain = MustOpen(Options());
  const int64_t changes = sqlite3_total_changes64(plain->handle());
  ASSERT_TRUE(plain->Write(rows).status.ok());
  EXPECT_EQ(sqlite3_total_changes64(plain->handle()), changes);
  ASSERT_TRUE(reader->LookupEmbeddings("model-a:0", texts, out).ok());
  EXPECT_EQ(out[0].embedding, rows[0].embedding);

  // Chunk 0 gets another text and vector: the old text's vector moves into
  // the cache table; the new text answers from the row.
  std::vector<EmbeddedChunk> changed = {MakeChunk(0, 4)};
  changed[0].chunk.text = "a rewritten paragraph";
  changed[0].embedding = {0.5f, 0.25f, -0.5f, 1.0f};
  ASSERT_TRUE(writer->Write(changed).status.ok());
  EXPECT_EQ(QueryInt(writer->handle(), "SELECT count(*) FROM embedding_cache"), 1);
  std::vector<std::string_view> both = {old_text, changed[0].chunk.text};
  ASSERT_TRUE(reader->LookupEmbeddings("model-a:0", both, out).ok());
  EXPECT_EQ(out[0].embedding, rows[0].embedding);
  EXPECT_EQ(out[1].embedding, changed[0].embedding);

  // Stale chunks deleted at a commit keep their vectors too.
  SqliteStoreOptions run = o;
  run.store.run_id = 9;
  auto committer = MustOpen(run);
  std::vector<EmbeddedChunk> kept = {MakeChunk(1, 4)};
  kept[0].chunk.file_id = "doc.md";
  ASSERT_TRUE(committer->Write(kept).status.ok());
  SourceManifest m;
  m.fingerprint.file_id = "doc.md";
  m.fingerprint.path = "/corpus/doc.md";
  m.fingerprint.chunk_count = 1;
  m.run_id = 9;
  auto deleted = committer->CommitSources({&m, 1});
  ASSERT_TRUE(deleted.ok()) << deleted.status().ToString();
  EXPECT_EQ(*deleted, 1u);  // chunk 0 (legacy rule: source doc.md, no file id)
  EXPECT_EQ(committer->Stats()->chunks, 1u);
  ASSERT_TRUE(reader->LookupEmbeddings("model-a:0", both, out).ok());
  EXPECT_EQ(out[0].embedding, rows[0].embedding);
  EXPECT_EQ(out[1].embedding, changed[0].embedding);
}

// A version 3 store kept every vector in the cache table and none in a
// text_key: opened by this version it gains the column, and its cache table
// still answers for every text.
TEST_F(SqliteStoreTest, AVersionThreeCacheStillAnswersAfterTheUpgrade) {
  SqliteStoreOptions o = Options();
  o.store.embedding_cache_namespace = "model-a:0";
  std::vector<EmbeddedChunk> rows = {MakeChunk(0, 4), MakeChunk(1, 4)};
  {
    auto store = MustOpen(o);
    ASSERT_TRUE(store->Write(rows).status.ok());
    sqlite3* db = store->handle();
    // Back to version 3's shape: the vectors in the cache table, no text_key.
    ASSERT_EQ(sqlite3_exec(db,
                           "INSERT INTO embedding_cache (key, model, embedding) "
                           "SELECT text_key, model, embedding FROM chunks;"
                           "DROP TABLE text_keys; DROP TABLE text_keys_recent;"
                           "ALTER TABLE chunks DROP COLUMN text_key;"
                           "PRAGMA user_version = 3;",
                           nullptr, nullptr, nullptr),
              SQLITE_OK)
        << sqlite3_errmsg(db);
  }
  auto store = MustOpen(o);
  ASSERT_NE(store, nullptr);
  EXPECT_EQ(QueryInt(store->handle(), "PRAGMA user_version"), kSqliteSchemaVersion);
  EXPECT_EQ(QueryInt(store->handle(), "SELECT count(*) FROM chunks WHERE text_key IS NULL"), 2);
  std::vector<std::string_view> texts = {rows[0].chunk.text, rows[1].chunk.text};
  std::vector<CachedEmbedding> out;
  ASSERT_TRUE(store->LookupEmbeddings("model-a:0", texts, out).ok());
  EXPECT_EQ(out[0].embedding, rows[0].embedding);
  EXPECT_EQ(out[1].embedding, rows[1].embedding);
  // Written again, the rows take their keys.
  ASSERT_TRUE(store->Write(rows).status.ok());
  EXPECT_EQ(QueryInt(store->handle(), "SELECT count(*) FROM chunks WHERE text_key IS NULL"), 0);
}

// Version 5: a chunk's text key goes into the recent key table, and moves
// into the main one, in key order, once the recent one holds
// recent_text_keys_limit keys; a text answers wherever its key is.
TEST_F(SqliteStoreTest, TextKeysMoveToTheMainTableAndEveryTextStillAnswers) {
  SqliteStoreOptions o = CachedOptions(5);
  auto store = MustOpen(o);
  ASSERT_NE(store, nullptr);
  sqlite3* db = store->handle();
  std::vector<EmbeddedChunk> rows;
  for (int n = 0; n < 12; ++n) rows.push_back(MakeChunk(n, 4));
  // Writes of 2 rows: 2, 4 recent; the third write reaches 6 >= 5 and moves
  // all six; then 2, 4 recent again; the sixth write moves those six.
  const int64_t expected_recent[] = {2, 4, 0, 2, 4, 0};
  for (int w = 0; w < 6; ++w) {
    ASSERT_TRUE(store->Write(std::span(rows).subspan(static_cast<size_t>(w) * 2, 2)).status.ok());
    EXPECT_EQ(QueryInt(db, "SELECT count(*) FROM text_keys_recent"), expected_recent[w]) << w;
    EXPECT_EQ(QueryInt(db, "SELECT count(*) FROM text_keys") +
                  QueryInt(db, "SELECT count(*) FROM text_keys_recent"),
              2 * (w + 1))
        << w;
  }
  // An unchanged row written again adds no key.
  ASSERT_TRUE(store->Write(std::span(rows).subspan(0, 2)).status.ok());
  EXPECT_EQ(QueryInt(db, "SELECT count(*) FROM text_keys_recent"), 0);
  // Each entry is its chunk's key prefix and rowid.
  for (const EmbeddedChunk& row : rows) {
    const std::string key = EmbeddingCacheKey("model-a:0", row.chunk.text);
    EXPECT_EQ(QueryInt(db,
                       "SELECT count(*) FROM text_keys k JOIN chunks c ON c.rowid = "
                       "k.chunk_rowid WHERE k.key = " +
                           std::to_string(sqlite::TextKeyPrefix(key)) + " AND c.text_key = '" +
                           key + "'"),
              1)
        << row.chunk.id;
  }
  // The keys moved so far answer, and so do recent ones; another connection
  // (its own count of recent keys) sees both.
  std::vector<EmbeddedChunk> more = {MakeChunk(20, 4)};
  ASSERT_TRUE(store->Write(more).status.ok());
  EXPECT_EQ(QueryInt(db, "SELECT count(*) FROM text_keys_recent"), 1);
  auto reader = MustOpen(Options());
  std::vector<std::string_view> texts;
  for (const EmbeddedChunk& row : rows) texts.push_back(row.chunk.text);
  texts.push_back(more[0].chunk.text);
  texts.push_back("a text never stored");
  std::vector<CachedEmbedding> out;
  ASSERT_TRUE(reader->LookupEmbeddings("model-a:0", texts, out).ok());
  for (size_t i = 0; i < rows.size(); ++i) EXPECT_EQ(out[i].embedding, rows[i].embedding) << i;
  EXPECT_EQ(out[rows.size()].embedding, more[0].embedding);
  EXPECT_TRUE(out.back().embedding.empty());
  // Reopened, the store counts its recent keys: four more reach the limit.
  ASSERT_TRUE(store->Close().ok());
  store = MustOpen(o);
  std::vector<EmbeddedChunk> last;
  for (int n = 21; n < 25; ++n) last.push_back(MakeChunk(n, 4));
  ASSERT_TRUE(store->Write(last).status.ok());
  EXPECT_EQ(QueryInt(store->handle(), "SELECT count(*) FROM text_keys_recent"), 0);
  EXPECT_EQ(QueryInt(store->handle(), "SELECT count(*) FROM text_keys"), 17);
}

// Two connections writing the same store (no writer lock), each with its own
// count of recent keys: a move takes every recent key, the other
// connection's too, and each text answers from either connection.
TEST_F(SqliteStoreTest, TwoWritersShareTheKeyTablesAndEveryTextAnswers) {
  SqliteStoreOptions o = CachedOptions(3);
  auto first = MustOpen(o);
  auto second = MustOpen(o);
  ASSERT_NE(first, nullptr);
  ASSERT_NE(second, nullptr);
  std::vector<EmbeddedChunk> rows;
  for (int n = 0; n < 10; ++n) rows.push_back(MakeChunk(n, 4, "doc" + std::to_string(n % 2)));
  for (size_t i = 0; i < rows.size(); ++i) {
    SqliteStore& writer = i % 2 == 0 ? *first : *second;
    ASSERT_TRUE(writer.Write(std::span(rows).subspan(i, 1)).status.ok()) << i;
  }
  sqlite3* db = first->handle();
  EXPECT_EQ(QueryInt(db, "SELECT count(*) FROM text_keys") +
                QueryInt(db, "SELECT count(*) FROM text_keys_recent"),
            10);
  EXPECT_GT(QueryInt(db, "SELECT count(*) FROM text_keys"), 0);  // some moves happened
  std::vector<std::string_view> texts;
  for (const EmbeddedChunk& row : rows) texts.push_back(row.chunk.text);
  for (SqliteStore* reader : {first.get(), second.get()}) {
    std::vector<CachedEmbedding> out;
    ASSERT_TRUE(reader->LookupEmbeddings("model-a:0", texts, out).ok());
    for (size_t i = 0; i < rows.size(); ++i) EXPECT_EQ(out[i].embedding, rows[i].embedding) << i;
  }
}

// A lookup checks the whole text key on the chunk row: an entry whose prefix
// is the text's but whose chunk holds another text (two keys sharing 64
// bits, or a rowid a deleted chunk left and a new one took) answers nothing.
TEST_F(SqliteStoreTest, AKeyEntryPointingAtAnotherTextNeverAnswersForIt) {
  SqliteStoreOptions o = Options();
  o.store.embedding_cache_namespace = "model-a:0";
  auto store = MustOpen(o);
  ASSERT_NE(store, nullptr);
  std::vector<EmbeddedChunk> rows = {MakeChunk(0, 4)};
  ASSERT_TRUE(store->Write(rows).status.ok());
  const std::string other = "a text that was never embedded";
  const int64_t prefix = sqlite::TextKeyPrefix(EmbeddingCacheKey("model-a:0", other));
  for (const char* table : {"text_keys", "text_keys_recent"}) {
    const std::string sql = fmt::format(
        "INSERT INTO {} (key, chunk_rowid) SELECT {}, rowid FROM chunks", table, prefix);
    ASSERT_EQ(sqlite3_exec(store->handle(), sql.c_str(), nullptr, nullptr, nullptr), SQLITE_OK);
  }
  std::vector<std::string_view> texts = {other, rows[0].chunk.text};
  std::vector<CachedEmbedding> out;
  ASSERT_TRUE(store->LookupEmbeddings("model-a:0", texts, out).ok());
  EXPECT_TRUE(out[0].embedding.empty());
  EXPECT_EQ(out[1].embedding, rows[0].embedding);
}

// A version 4 store found text keys through an index on chunks.text_key:
// opened by this version its keys move into the key tables, the index goes,
// and every text still answers.
TEST_F(SqliteStoreTest, AVersionFourStoreMovesItsKeysIntoTheKeyTables) {
  SqliteStoreOptions o = Options();
  o.store.embedding_cache_namespace = "model-a:0";
  std::vector<EmbeddedChunk> rows;
  for (int n = 0; n < 30; ++n) rows.push_back(MakeChunk(n, 4));
  {
    auto store = MustOpen(o);
    ASSERT_NE(store, nullptr);
    ASSERT_TRUE(store->Write(rows).status.ok());
    ASSERT_EQ(sqlite3_exec(store->handle(),
                           "DROP TABLE text_keys; DROP TABLE text_keys_recent;"
                           "CREATE INDEX chunks_text_key_idx ON chunks (text_key);"
                           "PRAGMA user_version = 4;",
                           nullptr, nullptr, nullptr),
              SQLITE_OK);
  }
  auto store = MustOpen(o);
  ASSERT_NE(store, nullptr);
  sqlite3* db = store->handle();
  EXPECT_EQ(QueryInt(db, "PRAGMA user_version"), kSqliteSchemaVersion);
  EXPECT_EQ(QueryInt(db, "SELECT count(*) FROM sqlite_master WHERE name = 'chunks_text_key_idx'"),
            0);
  EXPECT_EQ(QueryInt(db, "SELECT count(*) FROM text_keys"), 30);
  EXPECT_EQ(QueryInt(db, "SELECT count(*) FROM text_keys_recent"), 0);
  std::vector<std::string_view> texts;
  for (const EmbeddedChunk& row : rows) texts.push_back(row.chunk.text);
  std::vector<CachedEmbedding> out;
  ASSERT_TRUE(store->LookupEmbeddings("model-a:0", texts, out).ok());
  for (size_t i = 0; i < rows.size(); ++i) EXPECT_EQ(out[i].embedding, rows[i].embedding) << i;
  // Reopened, the store is current and its keys are not moved again.
  ASSERT_TRUE(store->Close().ok());
  auto again = MustOpen(o);
  ASSERT_NE(again, nullptr);
  EXPECT_EQ(QueryInt(again->handle(), "SELECT count(*) FROM text_keys"), 30);
}

// The schema of versions 1 and 2 exactly as those versions created it (a
// fixture: these statements must not follow the current code).
constexpr const char* kVersion1Ddl =
    "PRAGMA journal_mode=WAL;"
    "CREATE TABLE IF NOT EXISTS \"chunks\" (id TEXT PRIMARY KEY, source_id TEXT NOT NULL, "
    "ordinal INTEGER, byte_begin INTEGER, byte_end INTEGER, text TEXT, domain TEXT, "
    "category TEXT, metadata TEXT, model TEXT, dims INTEGER, embedding BLOB, "
    "token_estimate INTEGER, updated_at INTEGER);"
    "CREATE INDEX IF NOT EXISTS \"chunks_source_idx\" ON \"chunks\" (source_id);"
    "CREATE TABLE IF NOT EXISTS \"sources\" (source_id TEXT PRIMARY KEY, path TEXT, domain TEXT, "
    "category TEXT, chunk_count INTEGER, size_bytes INTEGER, mtime_ns INTEGER, "
    "content_hash TEXT, updated_at INTEGER);"
    "CREATE TABLE IF NOT EXISTS \"meta\" (key TEXT PRIMARY KEY, value TEXT);";
constexpr const char* kVersion2Ddl =
    "CREATE TABLE IF NOT EXISTS \"files\" (file_id TEXT PRIMARY KEY, path TEXT, "
    "size_bytes INTEGER, mtime_ns INTEGER, content_hash TEXT, chunk_count INTEGER, "
    "chunk_ids TEXT, updated_at INTEGER);"
    "CREATE TABLE IF NOT EXISTS \"embedding_cache\" (key TEXT PRIMARY KEY, model TEXT, "
    "embedding BLOB) WITHOUT ROWID;";

class SqliteUpgradeTest : public SqliteStoreTest {
 protected:
  void TearDown() override {
    if (old_ != nullptr) sqlite3_close(old_);
    SqliteStoreTest::TearDown();
  }
  // Creates an old-version file with the fixture DDL.
  void CreateOld(int version) {
    ASSERT_EQ(sqlite3_open(db_path_.c_str(), &old_), SQLITE_OK);
    std::string ddl = kVersion1Ddl;
    if (version >= 2) ddl += kVersion2Ddl;
    ddl += "PRAGMA user_version = " + std::to_string(version) + ";";
    ddl += "INSERT INTO meta VALUES ('dimensions', '4'), ('model', 'test-model');";
    ASSERT_EQ(sqlite3_exec(old_, ddl.c_str(), nullptr, nullptr, nullptr), SQLITE_OK);
  }
  // A chunk row and its source's count, as the old Write stored them.
  std::string AddOldChunk(const std::string& source, int ordinal) {
    const std::string id = Hash128Hex(source + "#" + std::to_string(ordinal));
    const std::string sql =
        "INSERT INTO chunks (id, source_id, ordinal, byte_begin, byte_end, text, domain, "
        "category, metadata, model, dims, embedding, token_estimate, updated_at) VALUES ('" +
        id + "', '" + source + "', " + std::to_string(ordinal) +
        ", 0, 1, 'old text', 'd', 'c', '{}', 'test-model', 4, zeroblob(16), 1, 1);"
        "INSERT INTO sources (source_id, domain, category, chunk_count, updated_at) VALUES ('" +
        source +
        "', 'd', 'c', 1, 1) ON CONFLICT(source_id) DO UPDATE SET chunk_count = chunk_count + 1;";
    EXPECT_EQ(sqlite3_exec(old_, sql.c_str(), nullptr, nullptr, nullptr), SQLITE_OK) << sql;
    return id;
  }
  void AddOldFile(const std::string& file_id, const std::vector<std::string>& ids,
                  const std::string& raw_list = "") {
    std::string list = raw_list;
    for (const auto& id : ids) list += id + "\n";
    sqlite3_stmt* st = nullptr;
    ASSERT_EQ(sqlite3_prepare_v2(old_,
                                 "INSERT INTO files VALUES (?1, '/corpus/' || ?1, 10, 20, 'hash', "
                                 "?2, ?3, 1)",
                                 -1, &st, nullptr),
              SQLITE_OK);
    sqlite3_bind_text(st, 1, file_id.c_str(), -1, SQLITE_TRANSIENT);
    sqlite3_bind_int64(st, 2, static_cast<int64_t>(ids.size()));
    sqlite3_bind_text(st, 3, list.c_str(), -1, SQLITE_TRANSIENT);
    EXPECT_EQ(sqlite3_step(st), SQLITE_DONE);
    sqlite3_finalize(st);
  }
  void CloseOld() {
    sqlite3_close(old_);
    old_ = nullptr;
  }
  static std::string FileIdOf(SqliteStore& store, const std::string& chunk_id) {
    auto c = store.ReadChunk(chunk_id);
    EXPECT_TRUE(c.ok()) << chunk_id;
    return c.ok() ? c->file_id : "<missing>";
  }

  sqlite3* old_ = nullptr;
};

TEST_F(SqliteUpgradeTest, VersionTwoDatabaseIsUpgradedInPlace) {
  CreateOld(2);
  const std::vector<std::string> doc = {AddOldChunk("doc.md", 0), AddOldChunk("doc.md", 1),
                                        AddOldChunk("doc.md", 2)};
  const std::vector<std::string> data = {AddOldChunk("data.jsonl#1", 0),
                                         AddOldChunk("data.jsonl#2", 0)};
  const std::string unlisted = AddOldChunk("crashed.md", 0);  // stored, never fingerprinted
  AddOldFile("doc.md", doc);
  AddOldFile("data.jsonl", data);
  AddOldFile("empty.md", {});
  AddOldFile("odd.md", {}, "not\"json\n");  // a list no store wrote: skipped, not fatal
  CloseOld();

  {
    auto store = MustOpen(Options());
    ASSERT_NE(store, nullptr);
    sqlite3* db = store->handle();
    EXPECT_EQ(QueryInt(db, "PRAGMA user_version"), kSqliteSchemaVersion);
    EXPECT_EQ(store->Stats()->chunks, 6u);  // every chunk kept
    for (const auto& id : doc) EXPECT_EQ(FileIdOf(*store, id), "doc.md");
    for (const auto& id : data) EXPECT_EQ(FileIdOf(*store, id), "data.jsonl");
    EXPECT_EQ(FileIdOf(*store, unlisted), "");
    EXPECT_EQ(
        QueryInt(db, "SELECT count(*) FROM pragma_table_info('files') WHERE name='chunk_ids'"), 0);
    EXPECT_EQ(QueryInt(db, "SELECT count(*) FROM sqlite_master WHERE name='run_chunks'"), 1);
    EXPECT_EQ(QueryInt(db, "SELECT count(*) FROM sqlite_master WHERE name='chunks_file_idx'"), 1);
    auto fps = store->LoadFingerprints();
    ASSERT_TRUE(fps.ok());
    EXPECT_EQ(fps->size(), 4u);
    EXPECT_EQ(*store->FileChunkIds("data.jsonl"), data);
    EXPECT_EQ(*store->FileChunkIds("crashed.md"), std::vector<std::string>{unlisted});
    EXPECT_EQ(store->dimensions(), 4);
  }
  // Opening the now current file takes no write lock.
  sqlite3* holder = nullptr;
  ASSERT_EQ(sqlite3_open(db_path_.c_str(), &holder), SQLITE_OK);
  ASSERT_EQ(sqlite3_exec(holder, "BEGIN IMMEDIATE", nullptr, nullptr, nullptr), SQLITE_OK);
  {
    auto reopened = SqliteStore::Open(db_path_, Options());
    EXPECT_TRUE(reopened.ok()) << reopened.status().ToString();
  }
  ASSERT_EQ(sqlite3_exec(holder, "ROLLBACK", nullptr, nullptr, nullptr), SQLITE_OK);
  sqlite3_close(holder);

  // The first run after the upgrade re-chunks doc.md into its chunk 0 only.
  SqliteStoreOptions o = Options();
  o.store.run_id = 1;
  auto run = MustOpen(o);
  EmbeddedChunk again = MakeChunk(0, 4, "doc.md");
  again.chunk.id = doc[0];
  again.chunk.file_id = "doc.md";
  ASSERT_TRUE(run->Write(std::span<const EmbeddedChunk>(&again, 1)).status.ok());
  SourceManifest m;
  m.fingerprint.file_id = "doc.md";
  m.fingerprint.chunk_count = 1;
  m.run_id = 1;
  auto deleted = run->CommitSources(std::vector<SourceManifest>{m});
  ASSERT_TRUE(deleted.ok()) << deleted.status().ToString();
  EXPECT_EQ(*deleted, 2u);
  EXPECT_EQ(*run->FileChunkIds("doc.md"), std::vector<std::string>{doc[0]});
  EXPECT_EQ(run->ReadSource("doc.md")->chunk_count, 1u);
}

TEST_F(SqliteUpgradeTest, UpgradeUnderAnotherWritersLockIsRetryableAndChangesNothing) {
  CreateOld(2);
  const std::string id = AddOldChunk("doc.md", 0);
  AddOldFile("doc.md", {id});
  ASSERT_EQ(sqlite3_exec(old_, "BEGIN IMMEDIATE", nullptr, nullptr, nullptr), SQLITE_OK);
  auto locked = SqliteStore::Open(db_path_, Options());
  ASSERT_FALSE(locked.ok());
  EXPECT_EQ(locked.status().code(), StatusCode::kUnavailable);
  ASSERT_EQ(sqlite3_exec(old_, "ROLLBACK", nullptr, nullptr, nullptr), SQLITE_OK);
  EXPECT_EQ(QueryInt(old_, "PRAGMA user_version"), 2);
  EXPECT_EQ(
      QueryInt(old_, "SELECT count(*) FROM pragma_table_info('files') WHERE name='chunk_ids'"), 1);
  CloseOld();
  auto store = MustOpen(Options());
  ASSERT_NE(store, nullptr);
  EXPECT_EQ(FileIdOf(*store, id), "doc.md");
}

TEST_F(SqliteUpgradeTest, EachTablePrefixIsUpgradedWhenItsStoreOpens) {
  CreateOld(2);
  const std::string id = AddOldChunk("doc.md", 0);
  AddOldFile("doc.md", {id});
  CloseOld();
  // A store with another prefix creates its own current tables and sets
  // the file's version; the default prefix's old tables stay as they were...
  auto o = Options();
  o.store.table = "docs";
  ASSERT_NE(MustOpen(o), nullptr);
  {
    sqlite3* db = nullptr;
    ASSERT_EQ(sqlite3_open(db_path_.c_str(), &db), SQLITE_OK);
    EXPECT_EQ(QueryInt(db, "PRAGMA user_version"), kSqliteSchemaVersion);
    EXPECT_EQ(QueryInt(db, "SELECT count(*) FROM pragma_table_info('chunks') WHERE name='file_id'"),
              0);
    sqlite3_close(db);
  }
  // ...until their own store opens and finds them older than the version.
  auto store = MustOpen(Options());
  ASSERT_NE(store, nullptr);
  EXPECT_EQ(FileIdOf(*store, id), "doc.md");
  EXPECT_EQ(QueryInt(store->handle(),
                     "SELECT count(*) FROM pragma_table_info('files') WHERE name='chunk_ids'"),
            0);
}

TEST_F(SqliteUpgradeTest, VersionOneDatabaseIsUpgradedInPlace) {
  CreateOld(1);
  const std::string id = AddOldChunk("doc.md", 0);
  CloseOld();
  auto store = MustOpen(Options());
  ASSERT_NE(store, nullptr);
  EXPECT_EQ(QueryInt(store->handle(), "PRAGMA user_version"), kSqliteSchemaVersion);
  EXPECT_EQ(store->Stats()->chunks, 1u);
  EXPECT_EQ(FileIdOf(*store, id), "");
  EXPECT_TRUE(store->LoadFingerprints().ok());
  EXPECT_EQ(*store->FileChunkIds("doc.md"), std::vector<std::string>{id});  // legacy rule
  EXPECT_EQ(QueryInt(store->handle(),
                     "SELECT count(*) FROM sqlite_master WHERE type='table' AND name IN "
                     "('files','embedding_cache','run_chunks')"),
            3);
}

// Checkpoints run on their own thread; the log still has a bound, because
// the writer copies the rest itself once the log reaches wal_limit_pages and
// its next commit starts the log over (wal_checkpointer.h).
TEST_F(SqliteStoreTest, CheckpointsRunBesideTheWriterAndTheLogStaysBounded) {
  auto o = Options();
  o.checkpoint_pages = 4;
  o.wal_limit_pages = 32;
  auto store = MustOpen(o);
  ASSERT_NE(store, nullptr);
  const std::string wal = db_path_ + "-wal";
  constexpr int kBatches = 60, kRows = 40;
  // A frame is a 16 KiB page and a 24-byte header; the log has a 32-byte
  // header. One commit may add its own frames past the limit.
  const uintmax_t bound = 32 + (32 + 64) * (16384 + 24);
  uintmax_t largest = 0;
  for (int b = 0; b < kBatches; ++b) {
    std::vector<EmbeddedChunk> batch;
    for (int i = 0; i < kRows; ++i) {
      EmbeddedChunk e = MakeChunk(b * kRows + i, 64);
      e.chunk.text.append(700, 'x');  // several pages per commit
      batch.push_back(std::move(e));
    }
    auto w = store->Write(batch);
    ASSERT_TRUE(w.status.ok()) << w.status.ToString();
    largest = std::max(largest, fs::file_size(wal));
    ASSERT_LE(fs::file_size(wal), bound) << "after batch " << b;
  }
  EXPECT_GT(largest, 4u * 16384) << "the test must write past the checkpoint threshold";
  EXPECT_GE(store->background_checkpoints(), 1u);
  ASSERT_TRUE(store->Close().ok());

  // Everything committed is there, and the file is sound.
  sqlite3* db = nullptr;
  ASSERT_EQ(sqlite3_open(db_path_.c_str(), &db), SQLITE_OK);
  EXPECT_EQ(QueryInt(db, "SELECT count(*) FROM chunks"), kBatches * kRows);
  sqlite3_stmt* st = nullptr;
  ASSERT_EQ(sqlite3_prepare_v2(db, "PRAGMA integrity_check", -1, &st, nullptr), SQLITE_OK);
  ASSERT_EQ(sqlite3_step(st), SQLITE_ROW);
  EXPECT_STREQ(reinterpret_cast<const char*>(sqlite3_column_text(st, 0)), "ok");
  sqlite3_finalize(st);
  sqlite3_close(db);
}

// Flush checkpoints too, and SQLite answers a checkpoint beside a running one
// SQLITE_BUSY, so Flush waits for the background one first. Every commit here
// asks for a checkpoint, so one runs most of the time; before Flush waited,
// the first few rounds had collided (and a whole ResumeTest run failed).
TEST_F(SqliteStoreTest, FlushBesideARunningBackgroundCheckpointSucceeds) {
  auto o = Options();
  o.checkpoint_pages = 1;
  auto store = MustOpen(o);
  ASSERT_NE(store, nullptr);
  int n = 0;
  for (int round = 0; round < 40; ++round) {
    for (int commit = 0; commit < 10; ++commit) {
      std::vector<EmbeddedChunk> batch;
      for (int i = 0; i < 5; ++i) batch.push_back(MakeChunk(n++, 64));
      ASSERT_TRUE(store->Write(batch).status.ok());
    }
    Status flushed = store->Flush();
    ASSERT_TRUE(flushed.ok()) << "round " << round << ": " << flushed.ToString();
  }
}

TEST_F(SqliteStoreTest, ZeroCheckpointPagesLeavesCheckpointsToSqlite) {
  auto o = Options();
  o.checkpoint_pages = 0;
  auto store = MustOpen(o);
  ASSERT_NE(store, nullptr);
  std::vector<EmbeddedChunk> batch;
  for (int i = 0; i < 50; ++i) batch.push_back(MakeChunk(i, 16));
  ASSERT_TRUE(store->Write(batch).status.ok());
  EXPECT_EQ(store->background_checkpoints(), 0u);
  auto r = store->ReadChunk(batch[7].chunk.id);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
}

}  // namespace
}  // namespace sluice
