// Incremental re-ingest, the embedding cache and resumability (docs/RESUME.md),
// with the offline hash embedder through the real pipeline: unchanged reruns
// embed nothing, an edited file embeds only its new chunks and loses its stale
// ones, cleanup modes, touched files, stops that resume to the same store, and
// Store::Verify findings.
//
// The same tests run on both stores: this file is built twice, as
// resume_test (SQLite, a unit test) and as resume_postgres_test with
// SLUICE_RESUME_POSTGRES (a real PostgreSQL from scripts/test-services.sh,
// one table set per store name and test).
#include <sqlite3.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <filesystem>
#include <map>
#include <set>
#include <thread>

#include "sluice/pipeline.h"
#include "store/sqlite/sqlite_store.h"
#include "testing/sqlite_dump.h"
#include "testing/test_util.h"
#ifdef SLUICE_RESUME_POSTGRES
#include "store/postgres/pg_test_util.h"
#endif

namespace sluice {
namespace {

using testing::Paragraphs;
using testing::ReadFile;
using testing::TempDir;
using testing::WriteFile;

// One kind of store under test. A test names its stores ("store", "fresh");
// the backend maps each name to a database or table of its own.
class Backend {
 public:
  virtual ~Backend() = default;
  virtual void Configure(IngestOptions& o, const std::string& name) = 0;
  // Every chunk row (id, source, ordinal, text, vector, model), every sources
  // row and every files row, as sorted comparable strings.
  virtual std::vector<std::string> Dump(const std::string& name) = 0;
  // A source's chunk ids by ordinal.
  virtual std::vector<std::string> ChunkIdsForSource(const std::string& name,
                                                     const std::string& source_id) = 0;
  virtual bool HasSourceRow(const std::string& name, const std::string& source_id) = 0;
  // Breaks the store: one listed chunk deleted (missing, and its source
  // miscounted), a chunk of no source (orphan), one vector of the wrong size.
  virtual void Corrupt(const std::string& name) = 0;
  std::unique_ptr<Store> Open(const std::string& name) {
    IngestOptions o;
    Configure(o, name);
    auto store = OpenStore(o.store_uri, o.store);
    EXPECT_TRUE(store.ok()) << store.status().ToString();
    return store.ok() ? std::move(*store) : nullptr;
  }
};

class SqliteBackend final : public Backend {
 public:
  explicit SqliteBackend(const TempDir& dir) : dir_(dir) {}
  void Configure(IngestOptions& o, const std::string& name) override {
    o.store_uri = "sqlite:" + Path(name);
  }
  std::vector<std::string> Dump(const std::string& name) override {
    return sluice::testing::DumpSqliteRows(
        Path(name),
        {"SELECT 'c', id, source_id, file_id, ordinal, text, hex(embedding), model, dims FROM "
         "chunks",
         "SELECT 's', source_id, chunk_count, size_bytes, mtime_ns, content_hash FROM sources",
         "SELECT 'f', file_id, chunk_count, size_bytes, content_hash FROM files",
         // After a complete run no file's run records are left.
         "SELECT 'r', count(*) FROM run_chunks"});
  }
  std::vector<std::string> ChunkIdsForSource(const std::string& name,
                                             const std::string& source_id) override {
    auto store = SqliteStore::Open(Path(name), SqliteStoreOptions{});
    EXPECT_TRUE(store.ok());
    if (!store.ok()) return {};
    auto ids = (*store)->ChunkIdsForSource(source_id);
    return ids.ok() ? *ids : std::vector<std::string>{};
  }
  bool HasSourceRow(const std::string& name, const std::string& source_id) override {
    auto store = SqliteStore::Open(Path(name), SqliteStoreOptions{});
    return store.ok() && (*store)->ReadSource(source_id).ok();
  }
  void Corrupt(const std::string& name) override {
    sqlite3* h = nullptr;
    ASSERT_EQ(sqlite3_open(Path(name).c_str(), &h), SQLITE_OK);
    ASSERT_EQ(sqlite3_exec(h,
                           "DELETE FROM chunks WHERE id = (SELECT id FROM chunks WHERE source_id = "
                           "'manuals/a.md' ORDER BY ordinal LIMIT 1);"
                           "INSERT INTO chunks (id, source_id, ordinal, text, dims, embedding) "
                           "VALUES ('orphan1', 'gone.md', 0, 'x', 32, zeroblob(128));"
                           "UPDATE chunks SET embedding = zeroblob(8) WHERE id = (SELECT id FROM "
                           "chunks WHERE source_id = 'notes/c.md' LIMIT 1);",
                           nullptr, nullptr, nullptr),
              SQLITE_OK);
    sqlite3_close(h);
  }

 private:
  std::string Path(const std::string& name) const { return dir_ / (name + ".db"); }
  const TempDir& dir_;
};

#ifdef SLUICE_RESUME_POSTGRES
class PostgresBackend final : public Backend {
 public:
  explicit PostgresBackend(std::string dsn) : dsn_(std::move(dsn)), raw_(dsn_) {
    EXPECT_TRUE(raw_.ok()) << PQerrorMessage(raw_.get());
  }
  void Configure(IngestOptions& o, const std::string& name) override {
    o.store_uri = dsn_;
    o.store.table = Table(name);
  }
  std::vector<std::string> Dump(const std::string& name) override {
    const std::string t = Table(name);
    std::vector<std::string> rows;
    for (const std::string& sql :
         {"SELECT concat_ws('|', 'c', id, source_id, file_id, ordinal, text, embedding::text, "
          "model, dims) "
          "FROM " +
              Q(t),
          "SELECT concat_ws('|', 's', source_id, chunk_count, size_bytes, mtime_ns, "
          "content_hash) FROM " +
              Q(t + "_sources"),
          "SELECT concat_ws('|', 'f', file_id, chunk_count, size_bytes, content_hash) FROM " +
              Q(t + "_files"),
          "SELECT concat_ws('|', 'r', count(*)) FROM " + Q(t + "_run_chunks")}) {
      for (std::string& row : raw_.Column(sql)) rows.push_back(std::move(row));
    }
    std::sort(rows.begin(), rows.end());
    return rows;
  }
  std::vector<std::string> ChunkIdsForSource(const std::string& name,
                                             const std::string& source_id) override {
    return raw_.Column("SELECT id FROM " + Q(Table(name)) + " WHERE source_id = '" + source_id +
                       "' ORDER BY ordinal");
  }
  bool HasSourceRow(const std::string& name, const std::string& source_id) override {
    return raw_.Scalar("SELECT count(*) FROM " + Q(Table(name) + "_sources") +
                       " WHERE source_id = '" + source_id + "'") == "1";
  }
  void Corrupt(const std::string& name) override {
    const std::string t = Q(Table(name));
    raw_.Command("DELETE FROM " + t + " WHERE id = (SELECT id FROM " + t +
                 " WHERE source_id = 'manuals/a.md' ORDER BY ordinal LIMIT 1)");
    raw_.Command("INSERT INTO " + t +
                 " (id, source_id, ordinal, byte_begin, byte_end, text, dims, embedding) SELECT "
                 "'orphan1', 'gone.md', 0, 0, 1, 'x', dims, embedding FROM " +
                 t + " LIMIT 1");
    raw_.Command("UPDATE " + t + " SET dims = 2 WHERE id = (SELECT id FROM " + t +
                 " WHERE source_id = 'notes/c.md' LIMIT 1)");
  }

 private:
  std::string Table(const std::string& name) {
    auto it = tables_.find(name);
    if (it == tables_.end()) it = tables_.emplace(name, pgtest::UniqueTable("r_" + name)).first;
    return it->second;
  }
  static std::string Q(const std::string& t) { return "\"" + t + "\""; }
  std::string dsn_;
  pgtest::RawPg raw_;
  std::map<std::string, std::string> tables_;
};
#endif

enum class BackendKind { kSqlite, kPostgres };

class ResumeTest : public ::testing::TestWithParam<BackendKind> {
 protected:
  void SetUp() override {
    if (GetParam() == BackendKind::kSqlite) {
      backend_ = std::make_unique<SqliteBackend>(dir_);
      return;
    }
#ifdef SLUICE_RESUME_POSTGRES
    SLUICE_REQUIRE_DSN(dsn, "SLUICE_TEST_PG_DSN");
    backend_ = std::make_unique<PostgresBackend>(dsn);
#endif
  }

  IngestOptions Options(const std::string& db = "store", const std::string& out = "out") {
    IngestOptions o;
    o.inputs = {dir_ / "corpus"};
    o.embedder = EmbedderKind::kHash;
    o.hash.dimensions = 32;
    backend_->Configure(o, db);
    o.aggregate.out_dir = dir_ / out;
    o.dead_letter_path = dir_ / (out + "/dead-letter.jsonl");
    o.progress = false;
    o.chunker.chunk_tokens = 64;
    o.chunker.overlap_tokens = 0;
    o.reader_threads = 2;
    o.embed.batch_size = 4;
    // These tests exercise the cache through the hash embedder, whose
    // default is off (EmbeddingCacheOn).
    o.embedding_cache = true;
    return o;
  }
  std::vector<std::string> Dump(const std::string& db = "store") { return backend_->Dump(db); }
  std::vector<VerifyProblem> VerifyStore(const std::string& db = "store") {
    auto store = backend_->Open(db);
    std::vector<VerifyProblem> problems;
    if (store) {
      EXPECT_TRUE(store->Verify(problems, 100).ok());
    }
    return problems;
  }
  uint64_t StoredChunks(const std::string& db = "store") {
    auto store = backend_->Open(db);
    return store ? store->Stats()->chunks : 0;
  }

  TempDir dir_;
  std::unique_ptr<Backend> backend_;
};

void MakeCorpus(const TempDir& dir) {
  WriteFile(dir / "corpus/manuals/a.md", "# Pumps\n\n" + Paragraphs(6, "pump"));
  WriteFile(dir / "corpus/manuals/b.txt", Paragraphs(6, "valve"));
  WriteFile(dir / "corpus/notes/c.md", "# Notes\n\n" + Paragraphs(3, "note"));
}

struct RunResult {
  IngestReport report;
  uint64_t produced = 0, stored = 0, requests = 0, dead = 0;
};

RunResult Ingest(const IngestOptions& o) {
  Pipeline p(o);
  RunResult r;
  r.report = p.Run();
  r.produced = Get(p.metrics().chunks_produced);
  r.stored = Get(p.metrics().chunks_stored);
  r.requests = Get(p.metrics().requests);
  r.dead = Get(p.metrics().chunks_dead_lettered);
  return r;
}

// Ingests and stops the test with the run's error when it fails.
#define ASSERT_INGESTS(options)                                                    \
  do {                                                                             \
    const RunResult ingested = Ingest(options);                                    \
    ASSERT_TRUE(ingested.report.status.ok()) << ingested.report.status.ToString(); \
  } while (false)

TEST_P(ResumeTest, UnchangedRerunReadsAndEmbedsNothing) {
  MakeCorpus(dir_);
  RunResult first = Ingest(Options());
  ASSERT_TRUE(first.report.status.ok()) << first.report.status.ToString();
  EXPECT_GT(first.requests, 0u);
  EXPECT_EQ(first.report.sources_completed, 3u);
  const auto before = Dump();

  RunResult again = Ingest(Options());
  ASSERT_TRUE(again.report.status.ok()) << again.report.status.ToString();
  EXPECT_EQ(again.requests, 0u);
  EXPECT_EQ(again.produced, 0u);
  EXPECT_EQ(again.report.sources_unchanged, 3u);
  EXPECT_TRUE(again.report.reconciled);
  EXPECT_EQ(Dump(), before);
  EXPECT_TRUE(VerifyStore().empty());
  const std::string json = FormatReportJson(again.report, Pipeline(Options()).metrics());
  for (const char* key :
       {"sources_unchanged", "cache_hits", "api_requests_saved", "api_tokens_saved",
        "chunks_deleted_stale", "sources_deleted", "chunks_abandoned"}) {
    EXPECT_NE(json.find(std::string("\"") + key + "\":"), std::string::npos) << key;
  }
}

TEST_P(ResumeTest, EditedFileEmbedsOnlyNewChunksAndDropsStaleOnes) {
  MakeCorpus(dir_);
  ASSERT_INGESTS(Options());
  // Replace the last three paragraphs of b.txt: its first chunks keep their text.
  WriteFile(dir_ / "corpus/manuals/b.txt", Paragraphs(3, "valve") + Paragraphs(2, "gasket", 10));

  RunResult edit = Ingest(Options());
  ASSERT_TRUE(edit.report.status.ok()) << edit.report.status.ToString();
  EXPECT_EQ(edit.report.sources_unchanged, 2u);
  EXPECT_GT(edit.report.cache_hits, 0u);  // the unchanged paragraphs
  EXPECT_LT(edit.report.cache_hits, edit.produced);
  EXPECT_GT(edit.report.chunks_deleted_stale, 0u);
  EXPECT_EQ(edit.produced, edit.stored);
  EXPECT_GT(edit.report.api_tokens_saved, 0u);
  // Only the misses went to the embedder: ceil(misses / 4) requests.
  const uint64_t misses = edit.produced - edit.report.cache_hits;
  EXPECT_GE(edit.requests, (misses + 3) / 4);
  EXPECT_LE(edit.requests, misses);

  // The same store as a fresh ingest of the edited corpus.
  ASSERT_INGESTS(Options("fresh", "fresh-out"));
  EXPECT_EQ(Dump(), Dump("fresh"));
  EXPECT_TRUE(VerifyStore().empty());
  // The aggregate file of the edited source's group matches the fresh one too.
  EXPECT_EQ(ReadFile(dir_ / "out/manuals/general.json"),
            ReadFile(dir_ / "fresh-out/manuals/general.json"));
}

TEST_P(ResumeTest, IdenticalTextIsEmbeddedOnceAcrossSources) {
  MakeCorpus(dir_);
  ASSERT_INGESTS(Options());
  // A copy of a.md under another name: same texts, new chunk ids, no requests.
  WriteFile(dir_ / "corpus/manuals/a-copy.md", ReadFile(dir_ / "corpus/manuals/a.md"));
  RunResult r = Ingest(Options());
  ASSERT_TRUE(r.report.status.ok());
  EXPECT_GT(r.produced, 0u);
  EXPECT_EQ(r.report.cache_hits, r.produced);
  EXPECT_EQ(r.requests, 0u);
  EXPECT_EQ(r.report.api_requests_saved, (r.produced + 3) / 4);
}

TEST_P(ResumeTest, RepeatedTextInOneRunIsEmbeddedOnce) {
  const std::string boilerplate = Paragraphs(4, "licence");
  for (int i = 0; i < 12; ++i) {
    WriteFile(dir_ / ("corpus/books/b" + std::to_string(i) + ".txt"), boilerplate);
  }
  IngestOptions o = Options();
  o.reader_threads = 3;
  Pipeline p(o);
  IngestReport r = p.Run();
  ASSERT_TRUE(r.status.ok()) << r.status.ToString();
  const Metrics& m = p.metrics();
  EXPECT_TRUE(r.reconciled);
  EXPECT_EQ(Get(m.chunks_stored), Get(m.chunks_produced));
  EXPECT_EQ(r.sources_completed, 12u);
  EXPECT_TRUE(VerifyStore().empty());
  auto store = backend_->Open("store");
  ASSERT_TRUE(store);
  auto b0 = store->ReadChunks(backend_->ChunkIdsForSource("store", "books/b0.txt"));
  auto b7 = store->ReadChunks(backend_->ChunkIdsForSource("store", "books/b7.txt"));
  ASSERT_TRUE(b0.ok() && b7.ok());
  std::set<std::string> distinct;
  for (const EmbeddedChunk& c : *b0) distinct.insert(c.chunk.text);
  ASSERT_GT(distinct.size(), 1u);
  // Each distinct text went to the embedder once; the copies waited for it.
  EXPECT_EQ(Get(m.chunks_embedded), distinct.size());
  EXPECT_EQ(r.cache_hits, Get(m.chunks_produced) - distinct.size());
  // Same vectors for every copy.
  ASSERT_EQ(b0->size(), b7->size());
  for (size_t i = 0; i < b0->size(); ++i) {
    EXPECT_EQ((*b0)[i].embedding.size(), 32u);
    EXPECT_EQ((*b0)[i].embedding, (*b7)[i].embedding);
  }
}

TEST_P(ResumeTest, NoCacheEmbedsAgain) {
  MakeCorpus(dir_);
  ASSERT_INGESTS(Options());
  IngestOptions o = Options();
  o.skip_unchanged = false;
  o.embedding_cache = false;
  RunResult r = Ingest(o);
  ASSERT_TRUE(r.report.status.ok());
  EXPECT_GT(r.requests, 0u);
  EXPECT_EQ(r.report.cache_hits, 0u);
  EXPECT_EQ(r.report.chunks_deleted_stale, 0u);  // same chunks
}

TEST_P(ResumeTest, TheHashEmbedderLeavesTheCacheOffUnlessAsked) {
  MakeCorpus(dir_);
  IngestOptions o = Options();
  o.embedding_cache.reset();
  o.skip_unchanged = false;
  RunResult first = Ingest(o);
  ASSERT_TRUE(first.report.status.ok());
  EXPECT_FALSE(first.report.embedding_cache);
  RunResult again = Ingest(o);
  ASSERT_TRUE(again.report.status.ok());
  EXPECT_FALSE(again.report.embedding_cache);
  EXPECT_EQ(again.report.cache_hits, 0u);
  EXPECT_EQ(again.requests, first.requests);  // everything embedded again
  EXPECT_EQ(again.report.chunks_deleted_stale, 0u);
  EXPECT_TRUE(VerifyStore().empty());
  // Asked for, the cache fills on the next run (the runs before wrote no
  // cache rows) and answers the one after it.
  o.embedding_cache = true;
  ASSERT_INGESTS(o);
  RunResult cached = Ingest(o);
  ASSERT_TRUE(cached.report.status.ok());
  EXPECT_TRUE(cached.report.embedding_cache);
  EXPECT_EQ(cached.requests, 0u);
  EXPECT_EQ(cached.report.cache_hits, cached.produced);
}

TEST(EmbeddingCacheDefaultTest, OnWithAServiceOffWithTheHashEmbedderUnlessSet) {
  IngestOptions o;
  EXPECT_FALSE(EmbeddingCacheOn(o));  // auto without an endpoint: hash
  o.http.endpoint = "http://127.0.0.1:1/v1";
  EXPECT_TRUE(EmbeddingCacheOn(o));  // auto with an endpoint: the service
  o.embedder = EmbedderKind::kHash;
  EXPECT_FALSE(EmbeddingCacheOn(o));
  o.embedding_cache = true;
  EXPECT_TRUE(EmbeddingCacheOn(o));
  o.embedder = EmbedderKind::kHttp;
  o.embedding_cache = false;
  EXPECT_FALSE(EmbeddingCacheOn(o));
}

TEST_P(ResumeTest, TouchedButUnchangedFileIsNotReparsed) {
  MakeCorpus(dir_);
  ASSERT_INGESTS(Options());
  namespace fs = std::filesystem;
  fs::last_write_time(dir_ / "corpus/notes/c.md",
                      fs::last_write_time(dir_ / "corpus/notes/c.md") + std::chrono::hours(1));
  RunResult r = Ingest(Options());
  ASSERT_TRUE(r.report.status.ok());
  EXPECT_EQ(r.report.sources_touched, 1u);
  EXPECT_EQ(r.report.sources_unchanged, 3u);
  EXPECT_EQ(r.produced, 0u);
  // The new mtime is recorded: the next run does not even hash it.
  RunResult again = Ingest(Options());
  EXPECT_EQ(again.report.sources_touched, 0u);
  EXPECT_EQ(again.report.sources_unchanged, 3u);
  EXPECT_TRUE(VerifyStore().empty());
}

// Files up to 1 MiB are read once, whole, and fingerprinted from those bytes;
// larger ones are hashed and parsed as streams. Either way the recorded hash
// is HashFileContents of the file (what `sluice status` compares), so a
// touched file of either size is recognised as unchanged.
TEST_P(ResumeTest, SmallAndLargeFilesGetTheSameFingerprintAsHashFileContents) {
  MakeCorpus(dir_);
  std::string large;
  for (int i = 0; large.size() <= (1u << 20) + 4096; i += 40) large += Paragraphs(40, "seal", i);
  WriteFile(dir_ / "corpus/manuals/large.txt", large);
  IngestOptions o = Options();
  o.chunker.chunk_tokens = 512;
  RunResult first = Ingest(o);
  ASSERT_TRUE(first.report.status.ok()) << first.report.status.ToString();
  EXPECT_EQ(first.report.sources_completed, 4u);
  EXPECT_EQ(first.produced, first.stored);
  const std::vector<std::string> dump = Dump();
  for (const char* rel : {"manuals/a.md", "manuals/b.txt", "manuals/large.txt"}) {
    Result<std::string> hash = HashFileContents(dir_ / (std::string("corpus/") + rel));
    ASSERT_TRUE(hash.ok()) << hash.status().ToString();
    EXPECT_TRUE(std::any_of(dump.begin(), dump.end(),
                            [&](const std::string& row) {
                              return row.find(rel) != std::string::npos &&
                                     row.find(*hash) != std::string::npos;
                            }))
        << rel << " is not recorded with hash " << *hash;
  }

  namespace fs = std::filesystem;
  for (const char* rel : {"manuals/b.txt", "manuals/large.txt"}) {
    const fs::path path = dir_ / (std::string("corpus/") + rel);
    fs::last_write_time(path, fs::last_write_time(path) + std::chrono::hours(1));
  }
  RunResult again = Ingest(o);
  ASSERT_TRUE(again.report.status.ok()) << again.report.status.ToString();
  EXPECT_EQ(again.report.sources_touched, 2u);
  EXPECT_EQ(again.report.sources_unchanged, 4u);
  EXPECT_EQ(again.produced, 0u);
}

TEST_P(ResumeTest, CleanupModesForDeletedFiles) {
  MakeCorpus(dir_);
  ASSERT_INGESTS(Options());
  const uint64_t all = StoredChunks();
  const uint64_t c_chunks = backend_->ChunkIdsForSource("store", "notes/c.md").size();
  ASSERT_GT(c_chunks, 0u);
  std::filesystem::remove(dir_ / "corpus/notes/c.md");

  // incremental (the default) keeps a deleted file's chunks.
  RunResult inc = Ingest(Options());
  ASSERT_TRUE(inc.report.status.ok());
  EXPECT_EQ(inc.report.sources_deleted, 0u);
  EXPECT_EQ(StoredChunks(), all);

  // full deletes them, and its fingerprint.
  IngestOptions full = Options();
  full.cleanup = CleanupMode::kFull;
  RunResult r = Ingest(full);
  ASSERT_TRUE(r.report.status.ok());
  EXPECT_EQ(r.report.sources_deleted, 1u);
  EXPECT_EQ(r.report.chunks_deleted_stale, c_chunks);
  EXPECT_EQ(StoredChunks(), all - c_chunks);
  EXPECT_FALSE(backend_->HasSourceRow("store", "notes/c.md"));
  EXPECT_TRUE(backend_->Open("store")->FileChunkIds("notes/c.md")->empty());
  EXPECT_TRUE(VerifyStore().empty());
}

TEST_P(ResumeTest, CleanupFullNeverDeletesOutsideTheGivenRoots) {
  MakeCorpus(dir_);
  WriteFile(dir_ / "other/x.md", "# Other\n\n" + Paragraphs(2, "other"));
  IngestOptions o = Options();
  o.inputs = {dir_ / "corpus", dir_ / "other"};
  ASSERT_INGESTS(o);
  const uint64_t all = StoredChunks();
  // Ingest only corpus/ with --cleanup full: other/x.md is not under it.
  IngestOptions only = Options();
  only.cleanup = CleanupMode::kFull;
  RunResult r = Ingest(only);
  ASSERT_TRUE(r.report.status.ok());
  EXPECT_EQ(r.report.sources_deleted, 0u);
  EXPECT_EQ(StoredChunks(), all);
}

TEST_P(ResumeTest, SameRelativePathUnderTwoRootsIsFingerprintedOnce) {
  WriteFile(dir_ / "a/x.md", "# A\n\n" + Paragraphs(2, "alpha"));
  WriteFile(dir_ / "b/x.md", "# B\n\n" + Paragraphs(2, "beta"));
  IngestOptions o = Options();
  o.inputs = {dir_ / "a", dir_ / "b"};
  o.reader_threads = 1;
  RunResult r = Ingest(o);
  ASSERT_TRUE(r.report.status.ok()) << r.report.status.ToString();
  EXPECT_EQ(r.report.sources_completed, 1u);
  EXPECT_EQ(r.produced, r.stored);
  auto fps = backend_->Open("store");
  ASSERT_TRUE(fps);
  auto loaded = fps->LoadFingerprints();
  ASSERT_TRUE(loaded.ok());
  ASSERT_EQ(loaded->size(), 1u);
  EXPECT_EQ((*loaded)[0].path, dir_ / "a/x.md");
}

TEST_P(ResumeTest, CleanupNoneKeepsStaleChunks) {
  MakeCorpus(dir_);
  ASSERT_INGESTS(Options());
  const uint64_t all = StoredChunks();
  WriteFile(dir_ / "corpus/manuals/b.txt", Paragraphs(2, "rewritten"));
  IngestOptions o = Options();
  o.cleanup = CleanupMode::kNone;
  RunResult r = Ingest(o);
  ASSERT_TRUE(r.report.status.ok());
  EXPECT_EQ(r.report.chunks_deleted_stale, 0u);
  EXPECT_EQ(StoredChunks(), all + r.produced);
  // The old chunks stay listed in the fingerprint, so they are not orphans.
  EXPECT_TRUE(VerifyStore().empty());
}

TEST_P(ResumeTest, StoppedRunResumesToTheSameStore) {
  for (int i = 0; i < 60; ++i) {
    WriteFile(dir_ / ("corpus/bulk/f" + std::to_string(i) + ".txt"),
              Paragraphs(8, "bulk" + std::to_string(i)));
  }
  IngestOptions o = Options();
  o.queue_capacity = 2;
  o.store.batch_rows = 5;
  o.reader_threads = 1;
  {
    Pipeline p(o);
    std::thread stopper([&] {
      while (Get(p.metrics().chunks_stored) < 20) std::this_thread::yield();
      p.RequestStop();
    });
    IngestReport stopped = p.Run();
    stopper.join();
    EXPECT_EQ(stopped.status.code(), StatusCode::kCancelled);
    EXPECT_TRUE(stopped.reconciled) << FormatReportText(stopped, p.metrics());
    // Nothing goes to the dead-letter file on a stop.
    EXPECT_EQ(Get(p.metrics().chunks_dead_lettered), 0u);
    EXPECT_FALSE(std::filesystem::exists(dir_ / "out/dead-letter.jsonl"));
    EXPECT_LT(stopped.sources_completed, 60u);
  }
  RunResult resumed = Ingest(o);
  ASSERT_TRUE(resumed.report.status.ok()) << resumed.report.status.ToString();
  EXPECT_GT(resumed.report.sources_unchanged, 0u);
  ASSERT_INGESTS(Options("fresh", "fresh-out"));
  EXPECT_EQ(Dump(), Dump("fresh"));
  EXPECT_EQ(ReadFile(dir_ / "out/bulk/general.json"),
            ReadFile(dir_ / "fresh-out/bulk/general.json"));
  EXPECT_FALSE(std::filesystem::exists(dir_ / "out/.sluice-incomplete"));
}

TEST_P(ResumeTest, CrashedRunsAggregateIsCompletedFromTheStore) {
  MakeCorpus(dir_);
  ASSERT_INGESTS(Options());
  const std::string complete = ReadFile(dir_ / "out/manuals/general.json");
  // As if a run had stored and fingerprinted everything, then died before
  // its aggregate rewrite: the group file is gone and the marker is there.
  std::filesystem::remove(dir_ / "out/manuals/general.json");
  WriteFile(dir_ / "out/.sluice-incomplete", "");
  RunResult r = Ingest(Options());
  ASSERT_TRUE(r.report.status.ok());
  EXPECT_EQ(r.produced, 0u);  // nothing re-read
  EXPECT_EQ(ReadFile(dir_ / "out/manuals/general.json"), complete);
  EXPECT_FALSE(std::filesystem::exists(dir_ / "out/.sluice-incomplete"));
}

// The embed stage splits (or truncates) chunks above the service's per-input
// limit into pieces with new ids: the files still complete, their fingerprints
// list the pieces, and a later edit does not delete them as stale.
TEST_P(ResumeTest, OversizeChunksSplitOrTruncatedStillCompleteTheirFiles) {
  for (OversizeInputPolicy policy : {OversizeInputPolicy::kSplit, OversizeInputPolicy::kTruncate}) {
    // A store and corpus of its own per policy.
    const std::string db = policy == OversizeInputPolicy::kSplit ? "split" : "truncate";
    std::filesystem::remove_all(dir_ / "corpus");
    MakeCorpus(dir_);
    IngestOptions o = Options(db, "out-" + db);
    o.embed.max_tokens_per_input = 24;  // chunks are ~64 tokens: all oversize
    o.embed.oversize = policy;
    RunResult first = Ingest(o);
    ASSERT_TRUE(first.report.status.ok()) << first.report.status.ToString();
    EXPECT_EQ(first.report.sources_completed, 3u);
    EXPECT_TRUE(first.report.reconciled);
    EXPECT_TRUE(VerifyStore(db).empty());

    RunResult again = Ingest(o);
    EXPECT_EQ(again.report.sources_unchanged, 3u);
    EXPECT_EQ(again.requests, 0u);

    WriteFile(dir_ / "corpus/manuals/b.txt", Paragraphs(3, "valve") + Paragraphs(1, "new", 20));
    RunResult edit = Ingest(o);
    ASSERT_TRUE(edit.report.status.ok());
    EXPECT_GT(edit.report.chunks_deleted_stale, 0u);
    const auto problems = VerifyStore(db);
    EXPECT_TRUE(problems.empty()) << problems.front().kind << " " << problems.front().detail;
    // (Not compared with a fresh run: where the embed stage cuts depends on
    // the bytes-per-token ratio it has learned so far.) Every piece stored is
    // listed in its file's fingerprint: verify found no orphan above.
    EXPECT_EQ(backend_->ChunkIdsForSource(db, "manuals/b.txt").size(),
              backend_->Open(db)->FileChunkIds("manuals/b.txt")->size());
  }
}

TEST_P(ResumeTest, VerifyReportsMissingOrphanAndMiscountedChunks) {
  MakeCorpus(dir_);
  ASSERT_INGESTS(Options());
  ASSERT_TRUE(VerifyStore().empty());
  // A missing chunk, an orphan (no source row) and a wrong-dimension vector.
  backend_->Corrupt("store");
  std::set<std::string> kinds;
  for (const VerifyProblem& p : VerifyStore()) kinds.insert(p.kind);
  EXPECT_EQ(kinds, (std::set<std::string>{"missing_chunk", "orphan_chunk", "wrong_dimensions",
                                          "count_mismatch"}));
}

// Issue 14: two ingests at once into one SQLite store both reported success
// over a store missing hundreds of rows (one run's commit forgot the other's
// run records, so the other's commit deleted the chunks it had written).
// SQLite: the second run is refused at start while the first holds the
// store. PostgreSQL: the runs go side by side and end with one run's rows.
TEST_P(ResumeTest, TwoRunsAtOnceEndWithTheRowsOfOneRun) {
  MakeCorpus(dir_);
  for (int i = 0; i < 12; ++i) {
    WriteFile(dir_ / ("corpus/more/f" + std::to_string(i) + ".md"),
              "# More " + std::to_string(i) + "\n\n" + Paragraphs(4, "word", i * 10));
  }
  if (GetParam() == BackendKind::kSqlite) {
    IngestOptions o = Options();
    StoreOptions as_a_run = o.store;
    as_a_run.exclusive_run = true;  // what a running ingest holds
    auto first = OpenStore(o.store_uri, as_a_run);
    ASSERT_TRUE(first.ok()) << first.status().ToString();
    RunResult second = Ingest(Options("store", "out-second"));
    EXPECT_EQ(second.report.status.code(), StatusCode::kBusy) << second.report.status.ToString();
    EXPECT_NE(second.report.status.message().find("is in use by another sluice run (pid " +
                                                  std::to_string(::getpid()) + ")"),
              std::string::npos)
        << second.report.status.message();
    EXPECT_EQ(second.produced, 0u);
    first->reset();
    ASSERT_INGESTS(Options());
  } else {
    // Small batches so that commits of one run fall between the other's writes.
    IngestOptions a = Options("store", "out-a"), b = Options("store", "out-b");
    a.store.batch_rows = 2;
    b.store.batch_rows = 3;
    RunResult ra;
    std::thread other([&] { ra = Ingest(a); });
    RunResult rb = Ingest(b);
    other.join();
    ASSERT_TRUE(ra.report.status.ok()) << ra.report.status.ToString();
    ASSERT_TRUE(rb.report.status.ok()) << rb.report.status.ToString();
    EXPECT_TRUE(ra.report.reconciled);
    EXPECT_TRUE(rb.report.reconciled);
  }
  ASSERT_INGESTS(Options("fresh", "fresh-out"));
  EXPECT_EQ(Dump(), Dump("fresh"));
  EXPECT_TRUE(VerifyStore().empty());
  // And a rerun finds every file complete.
  RunResult again = Ingest(Options());
  ASSERT_TRUE(again.report.status.ok()) << again.report.status.ToString();
  EXPECT_EQ(again.report.sources_unchanged, 15u);
  EXPECT_EQ(Dump(), Dump("fresh"));
}

// Issue 14: a store belongs to one (model, dimensions). Another one is
// refused at start, naming both; --reembed (StoreOptions::reembed) replaces
// everything, as a fresh ingest with the new embedder would.
TEST_P(ResumeTest, AnotherDimensionIsRefusedUntilReembedReplacesEverything) {
  MakeCorpus(dir_);
  ASSERT_INGESTS(Options());  // 32 dimensions
  IngestOptions wider = Options();
  wider.hash.dimensions = 48;
  RunResult refused = Ingest(wider);
  EXPECT_EQ(refused.report.status.code(), StatusCode::kInvalidArgument);
  for (const char* part : {"model 'sluice-hash-v1', 32 dimensions",
                           "model 'sluice-hash-v1', 48 dimensions", "--reembed"}) {
    EXPECT_NE(refused.report.status.message().find(part), std::string::npos)
        << refused.report.status.message();
  }
  EXPECT_EQ(refused.produced, 0u);

  wider.store.reembed = true;
  RunResult reembedded = Ingest(wider);
  ASSERT_TRUE(reembedded.report.status.ok()) << reembedded.report.status.ToString();
  EXPECT_EQ(reembedded.report.sources_unchanged, 0u);
  EXPECT_EQ(reembedded.report.cache_hits, 0u);
  EXPECT_EQ(reembedded.dead, 0u);
  IngestOptions fresh = Options("fresh", "fresh-out");
  fresh.hash.dimensions = 48;
  ASSERT_INGESTS(fresh);
  EXPECT_EQ(Dump(), Dump("fresh"));
  EXPECT_TRUE(VerifyStore().empty());

  // The store is the 48-dimension embedder's now: a rerun skips every file,
  // and the 32-dimension one is refused in its turn.
  wider.store.reembed = false;
  RunResult again = Ingest(wider);
  ASSERT_TRUE(again.report.status.ok()) << again.report.status.ToString();
  EXPECT_EQ(again.report.sources_unchanged, 3u);
  EXPECT_EQ(Ingest(Options()).report.status.code(), StatusCode::kInvalidArgument);
}

#ifdef SLUICE_RESUME_POSTGRES
INSTANTIATE_TEST_SUITE_P(PostgreSQL, ResumeTest, ::testing::Values(BackendKind::kPostgres));
#else
INSTANTIATE_TEST_SUITE_P(SQLite, ResumeTest, ::testing::Values(BackendKind::kSqlite));

// Store-independent checks, in the SQLite build only.
TEST_P(ResumeTest, UnwritableAggregateMarkerFailsBeforeAnyWork) {
  MakeCorpus(dir_);
  // A directory where the marker file must go: it cannot be created.
  std::filesystem::create_directories(dir_ / "out/.sluice-incomplete/x");
  Pipeline p(Options());
  IngestReport r = p.Run();
  EXPECT_EQ(r.status.code(), StatusCode::kIOError) << r.status.ToString();
  EXPECT_NE(r.status.message().find(".sluice-incomplete"), std::string::npos);
  EXPECT_EQ(Get(p.metrics().chunks_produced), 0u);
}

TEST(ResumeOptionsTest, ParseCleanupMode) {
  EXPECT_EQ(*ParseCleanupMode("none"), CleanupMode::kNone);
  EXPECT_EQ(*ParseCleanupMode("incremental"), CleanupMode::kIncremental);
  EXPECT_EQ(*ParseCleanupMode("full"), CleanupMode::kFull);
  EXPECT_EQ(ParseCleanupMode("all").status().code(), StatusCode::kInvalidArgument);
}

#endif

}  // namespace
}  // namespace sluice
