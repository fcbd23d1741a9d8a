// Unit tests of the SQLite store against real database files in a temp dir.
#include "store/sqlite/sqlite_store.h"

#include <gtest/gtest.h>
#include <sqlite3.h>
#include <unistd.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <string>
#include <vector>

#include "common/hashing.h"

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

// --- Resume support (docs/RESUME.md): fingerprints, stale deletion, cache. ---

SourceManifest Manifest(const std::string& file_id, const std::vector<EmbeddedChunk>& rows) {
  SourceManifest m;
  m.fingerprint.file_id = file_id;
  m.fingerprint.path = "/corpus/" + file_id;
  m.fingerprint.size_bytes = 100;
  m.fingerprint.mtime_ns = 5;
  m.fingerprint.content_hash = "h1";
  for (const auto& r : rows) m.chunk_ids.push_back(r.chunk.id);
  return m;
}

TEST_F(SqliteStoreTest, CommitSourcesRecordsFingerprintAndDeletesOnlyStaleChunks) {
  auto store = MustOpen(Options());
  std::vector<EmbeddedChunk> v1 = {MakeChunk(0, 4), MakeChunk(1, 4), MakeChunk(2, 4)};
  std::vector<EmbeddedChunk> other = {MakeChunk(0, 4, "other.md")};
  ASSERT_TRUE(store->Write(v1).status.ok());
  ASSERT_TRUE(store->Write(other).status.ok());
  std::vector<SourceManifest> m = {Manifest("doc.md", v1), Manifest("other.md", other)};
  auto deleted = store->CommitSources(m);
  ASSERT_TRUE(deleted.ok()) << deleted.status().ToString();
  EXPECT_EQ(*deleted, 0u);
  auto fps = store->LoadFingerprints();
  ASSERT_TRUE(fps.ok());
  ASSERT_EQ(fps->size(), 2u);
  EXPECT_EQ(store->ReadSource("doc.md")->content_hash.value_or(""), "h1");
  EXPECT_EQ(store->ReadSource("doc.md")->size_bytes.value_or(0), 100u);

  // Version 2 of doc.md keeps chunk 0 and adds chunk 7: chunks 1 and 2 go.
  std::vector<EmbeddedChunk> v2 = {MakeChunk(0, 4), MakeChunk(7, 4)};
  ASSERT_TRUE(store->Write(v2).status.ok());
  deleted = store->CommitSources(std::vector<SourceManifest>{Manifest("doc.md", v2)});
  ASSERT_TRUE(deleted.ok());
  EXPECT_EQ(*deleted, 2u);
  EXPECT_EQ(*store->ChunkIdsForSource("doc.md"),
            (std::vector<std::string>{v2[0].chunk.id, v2[1].chunk.id}));
  EXPECT_EQ(store->ReadSource("doc.md")->chunk_count, 2u);
  EXPECT_EQ(*store->FileChunkIds("doc.md"),
            (std::vector<std::string>{v2[0].chunk.id, v2[1].chunk.id}));
  EXPECT_TRUE(store->ReadChunk(other[0].chunk.id).ok());  // other files untouched

  // delete_stale = false keeps old ids listed; facts_only keeps the ids as they are.
  std::vector<EmbeddedChunk> v3 = {MakeChunk(9, 4)};
  ASSERT_TRUE(store->Write(v3).status.ok());
  SourceManifest keep = Manifest("doc.md", v3);
  keep.delete_stale = false;
  deleted = store->CommitSources(std::vector<SourceManifest>{keep});
  ASSERT_TRUE(deleted.ok());
  EXPECT_EQ(*deleted, 0u);
  EXPECT_EQ(store->FileChunkIds("doc.md")->size(), 3u);
  SourceManifest facts = Manifest("doc.md", {});
  facts.facts_only = true;
  facts.fingerprint.mtime_ns = 99;
  ASSERT_TRUE(store->CommitSources(std::vector<SourceManifest>{facts}).ok());
  EXPECT_EQ(store->FileChunkIds("doc.md")->size(), 3u);
  auto after_touch = store->LoadFingerprints();
  ASSERT_TRUE(after_touch.ok());
  for (const auto& f : *after_touch) {
    if (f.file_id == "doc.md") {
      EXPECT_EQ(f.mtime_ns, 99);
    }
  }
  std::vector<VerifyProblem> problems;
  ASSERT_TRUE(store->Verify(problems, 10).ok());
  EXPECT_TRUE(problems.empty()) << problems.front().kind << " " << problems.front().detail;

  // DeleteSources removes the file's chunks, its sources row and its fingerprint.
  deleted = store->DeleteSources(std::vector<std::string>{"doc.md"});
  ASSERT_TRUE(deleted.ok());
  EXPECT_EQ(*deleted, 3u);
  EXPECT_EQ(store->ReadSource("doc.md").status().code(), StatusCode::kNotFound);
  EXPECT_EQ(store->LoadFingerprints()->size(), 1u);
  EXPECT_EQ(store->Stats()->chunks, 1u);
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

TEST_F(SqliteStoreTest, VersionOneDatabaseIsUpgradedInPlace) {
  {
    auto store = MustOpen(Options());
    std::vector<EmbeddedChunk> rows = {MakeChunk(0, 4)};
    ASSERT_TRUE(store->Write(rows).status.ok());
    ASSERT_EQ(sqlite3_exec(store->handle(),
                           "DROP TABLE files; DROP TABLE embedding_cache; PRAGMA user_version = 1;",
                           nullptr, nullptr, nullptr),
              SQLITE_OK);
  }
  auto store = MustOpen(Options());
  EXPECT_EQ(QueryInt(store->handle(), "PRAGMA user_version"), kSqliteSchemaVersion);
  EXPECT_EQ(store->Stats()->chunks, 1u);
  EXPECT_TRUE(store->LoadFingerprints().ok());
}

}  // namespace
}  // namespace sluice
