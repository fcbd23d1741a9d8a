// The PostgreSQL store's resume methods (docs/RESUME.md): fingerprints and
// stale-chunk deletion in one transaction, cleanup modes, the embedding cache,
// ReadChunks and Verify; each test runs against a real PostgreSQL 15 (real[]
// vectors, COPY path) and against PGlite with pgvector (vector(N), prepared
// INSERTs). Both services come from scripts/test-services.sh; PGlite's shared
// backend makes the whole binary hold the "pglite" resource lock.
#include <gtest/gtest.h>

#include <unistd.h>

#include <algorithm>
#include <set>
#include <tuple>

#include "pg_test_util.h"
#include "store/postgres/postgres_store.h"

namespace sluice {
namespace {

using pgtest::RawPg;
using pgtest::TestChunk;
using pgtest::UniqueTable;

constexpr int kDims = 8;

// The manifest of `file_id` as run `run_id` completes it, having produced
// `produced` chunks.
SourceManifest Manifest(const std::string& file_id, uint64_t produced, uint64_t run_id) {
  SourceManifest m;
  m.fingerprint.file_id = file_id;
  m.fingerprint.path = "/corpus/" + file_id;
  m.fingerprint.size_bytes = 1000 + produced;
  m.fingerprint.mtime_ns = 1'700'000'000'000'000'000 + static_cast<int64_t>(produced);
  m.fingerprint.content_hash = "hash-" + std::to_string(produced);
  m.fingerprint.chunk_count = produced;
  m.run_id = run_id;
  return m;
}

std::vector<std::string> Ids(const std::vector<EmbeddedChunk>& chunks) {
  std::vector<std::string> out;
  for (const auto& c : chunks) out.push_back(c.chunk.id);
  return out;
}

// Chunk n of a file (its source id is the file id, as for a plain file).
EmbeddedChunk FileChunk(const std::string& file_id, uint64_t n) {
  EmbeddedChunk e = TestChunk(n, kDims, file_id);
  e.chunk.file_id = file_id;
  return e;
}

// Chunks n in [first, first + count) of one file.
std::vector<EmbeddedChunk> FileChunks(const std::string& file_id, uint64_t first, size_t count) {
  std::vector<EmbeddedChunk> out;
  for (uint64_t n = first; n < first + count; ++n) out.push_back(FileChunk(file_id, n));
  return out;
}

// FileChunkIds' order: by source id, ordinal, id.
std::vector<std::string> Sorted(std::vector<EmbeddedChunk> chunks) {
  std::sort(chunks.begin(), chunks.end(), [](const EmbeddedChunk& a, const EmbeddedChunk& b) {
    return std::tie(a.chunk.source_id, a.chunk.ordinal, a.chunk.id) <
           std::tie(b.chunk.source_id, b.chunk.ordinal, b.chunk.id);
  });
  return Ids(chunks);
}

class PostgresResumeTest : public ::testing::TestWithParam<const char*> {
 protected:
  void SetUp() override {
    dsn_ = pgtest::DsnFromEnv(GetParam());
    if (dsn_.empty()) {
      if (pgtest::ServicesRequired()) FAIL() << GetParam() << " is not set";
      GTEST_SKIP() << GetParam() << " not set; run under scripts/test-services.sh";
    }
    pglite_ = std::string(GetParam()) == "SLUICE_TEST_PGVECTOR_DSN";
    raw_ = std::make_unique<RawPg>(dsn_);
    ASSERT_TRUE(raw_->ok()) << PQerrorMessage(raw_->get());
    if (pglite_) raw_->Command("DEALLOCATE ALL");
    table_ = UniqueTable("resume");
  }
  // A store for run `run_id` (0: records no run).
  std::unique_ptr<Store> Open(uint64_t run_id = 0, const std::string& cache_namespace = "") {
    StoreOptions o;
    o.table = table_;
    o.embedding_cache_namespace = cache_namespace;
    o.reconnect_timeout_s = 10;
    o.run_id = run_id;
    auto s = OpenPostgresStore(dsn_, o);
    EXPECT_TRUE(s.ok()) << s.status().ToString();
    return s.ok() ? std::move(*s) : nullptr;
  }
  void Write(Store& store, const std::vector<EmbeddedChunk>& chunks) {
    WriteResult w = store.Write(chunks);
    ASSERT_TRUE(w.status.ok()) << w.status.ToString();
    ASSERT_TRUE(w.rejected.empty());
  }
  Result<uint64_t> Commit(Store& store, std::vector<SourceManifest> manifests) {
    return store.CommitSources(manifests);
  }
  std::vector<VerifyProblem> Verify(Store& store) {
    std::vector<VerifyProblem> problems;
    Status s = store.Verify(problems, 100);
    EXPECT_TRUE(s.ok()) << s.ToString();
    return problems;
  }
  // "kind subject" of each problem.
  std::set<std::string> Problems(Store& store) {
    std::set<std::string> out;
    for (const VerifyProblem& p : Verify(store)) out.insert(p.kind + " " + p.subject);
    return out;
  }
  std::string Q(const std::string& suffix = "") { return "\"" + table_ + suffix + "\""; }
  // Creates `role`, which may read and write this test's tables but does not
  // own them (no ALTER, no ANALYZE), and points dsn_ at it.
  void ConnectAsWriterRole(const std::string& role) {
    ASSERT_TRUE(raw_->Command("DROP ROLE IF EXISTS " + role));
    ASSERT_TRUE(raw_->Command("CREATE ROLE " + role + " LOGIN"));
    ASSERT_TRUE(raw_->Command("GRANT SELECT, INSERT, UPDATE, DELETE ON " + Q() + ", " +
                              Q("_sources") + ", " + Q("_files") + ", " + Q("_embedding_cache") +
                              ", " + Q("_run_chunks") + " TO " + role));
    ASSERT_EQ(dsn_.find("postgres@"), std::string("postgres://").size()) << dsn_;
    dsn_.replace(dsn_.find("postgres@"), std::string("postgres").size(), role);
  }
  std::string RunRecords(const std::string& file_id) {
    return raw_->Scalar("SELECT count(*) FROM " + Q("_run_chunks") + " WHERE file_id = '" +
                        file_id + "'");
  }

  std::string dsn_;
  bool pglite_ = false;
  std::unique_ptr<RawPg> raw_;
  std::string table_;
};

TEST_P(PostgresResumeTest, FingerprintsWorkBeforeTheFirstWriteAndRoundTrip) {
  auto store = Open(1);
  ASSERT_TRUE(store);
  auto none = store->LoadFingerprints();
  ASSERT_TRUE(none.ok()) << none.status().ToString();
  EXPECT_TRUE(none->empty());
  auto no_ids = store->FileChunkIds("nothing.md");
  ASSERT_TRUE(no_ids.ok()) << no_ids.status().ToString();
  EXPECT_TRUE(no_ids->empty());
  // An empty file completes before any chunk (and so the chunks table) exists.
  auto empty = Commit(*store, {Manifest("empty.md", 0, 1)});
  ASSERT_TRUE(empty.ok()) << empty.status().ToString();
  EXPECT_EQ(*empty, 0u);

  const auto chunks = FileChunks("doc.md", 0, 5);
  Write(*store, chunks);
  EXPECT_EQ(RunRecords("doc.md"), "5");
  EXPECT_EQ(raw_->Scalar("SELECT count(*) FROM " + Q() + " WHERE file_id = 'doc.md'"), "5");
  SourceManifest doc = Manifest("doc.md", 5, 1);
  auto deleted = Commit(*store, {doc});
  ASSERT_TRUE(deleted.ok()) << deleted.status().ToString();
  EXPECT_EQ(*deleted, 0u);
  EXPECT_EQ(RunRecords("doc.md"), "0");  // forgotten once committed
  auto loaded = store->LoadFingerprints();
  ASSERT_TRUE(loaded.ok());
  ASSERT_EQ(loaded->size(), 2u);
  const SourceFingerprint& f = (*loaded)[0].file_id == "doc.md" ? (*loaded)[0] : (*loaded)[1];
  EXPECT_EQ(f.path, doc.fingerprint.path);
  EXPECT_EQ(f.size_bytes, doc.fingerprint.size_bytes);
  EXPECT_EQ(f.mtime_ns, doc.fingerprint.mtime_ns);
  EXPECT_EQ(f.content_hash, doc.fingerprint.content_hash);
  EXPECT_EQ(f.chunk_count, 5u);
  EXPECT_EQ(*store->FileChunkIds("doc.md"), Sorted(chunks));
  // The sources row of a plain file carries the file's facts.
  EXPECT_EQ(
      raw_->Scalar("SELECT concat_ws('|', path, size_bytes, mtime_ns, content_hash, "
                   "chunk_count) FROM " +
                   Q("_sources") + " WHERE source_id = 'doc.md'"),
      doc.fingerprint.path + "|1005|" + std::to_string(doc.fingerprint.mtime_ns) + "|hash-5|5");
  EXPECT_TRUE(Verify(*store).empty());
  // The schema: file_id is indexed, the files table has no id list.
  EXPECT_EQ(raw_->Scalar("SELECT to_regclass('" + Q("_file_id_idx") + "') IS NOT NULL"), "t");
  EXPECT_EQ(raw_->Scalar("SELECT count(*) FROM pg_attribute WHERE attrelid = '" + Q("_files") +
                         "'::regclass AND attname = 'chunk_ids' AND NOT attisdropped"),
            "0");
}

// Dead-letter retry: a file fingerprinted before any chunk of it was stored
// (every chunk dead-lettered) is missing its chunks until they are retried;
// the sources row the retried chunks create takes the file's facts.
TEST_P(PostgresResumeTest, SourceRowCreatedAfterTheFingerprintTakesItsFacts) {
  auto store = Open(1);
  ASSERT_TRUE(store);
  const auto chunks = FileChunks("doc.md", 0, 3);
  Write(*store, {FileChunk("other.md", 40)});  // the chunks table exists
  ASSERT_TRUE(Commit(*store, {Manifest("doc.md", 3, 1)}).ok());
  EXPECT_EQ(Problems(*store), (std::set<std::string>{"missing_chunk doc.md"}));
  auto retry = Open(2);  // the retry is a later run
  ASSERT_TRUE(retry);
  Write(*retry, chunks);
  EXPECT_EQ(raw_->Scalar("SELECT concat_ws('|', path, size_bytes, mtime_ns, content_hash, "
                         "chunk_count) FROM " +
                         Q("_sources") + " WHERE source_id = 'doc.md'"),
            "/corpus/doc.md|1003|" + std::to_string(Manifest("doc.md", 3, 1).fingerprint.mtime_ns) +
                "|hash-3|3");
  EXPECT_TRUE(Verify(*store).empty());
}

// The heart of the contract: committing a file deletes every stored chunk of
// it that its run did not record: chunks the edit dropped, chunks a crashed
// run left, rows written before chunks had a file_id; nothing of other files.
TEST_P(PostgresResumeTest, CommitDeletesChunksTheRunDidNotRecord) {
  auto first = Open(1);
  ASSERT_TRUE(first);
  Write(*first, FileChunks("doc.md", 0, 10));
  Write(*first, FileChunks("other.md", 50, 3));
  auto deleted = Commit(*first, {Manifest("doc.md", 10, 1), Manifest("other.md", 3, 1)});
  ASSERT_TRUE(deleted.ok()) << deleted.status().ToString();
  EXPECT_EQ(*deleted, 0u);
  // A crashed run 7 stored chunk 200 of doc.md and never committed it.
  auto crashed = Open(7);
  ASSERT_TRUE(crashed);
  Write(*crashed, {FileChunk("doc.md", 200)});
  // Rows from before chunks had a file_id: 300 of doc.md (found by its
  // source id), 310 of legacy.md (never fingerprinted: untouched).
  auto legacy = Open();
  ASSERT_TRUE(legacy);
  Write(*legacy, {TestChunk(300, kDims, "doc.md"), TestChunk(310, kDims, "legacy.md")});
  EXPECT_EQ(raw_->Scalar("SELECT count(*) FROM " + Q() + " WHERE file_id IS NULL"), "2");

  // Run 2: the edit keeps chunks 0-4 (written again: unchanged rows, still
  // recorded) and adds 100; it also stores new.md, not completed yet.
  auto second = Open(2);
  ASSERT_TRUE(second);
  std::vector<EmbeddedChunk> now = FileChunks("doc.md", 0, 5);
  now.push_back(FileChunk("doc.md", 100));
  Write(*second, now);
  Write(*second, {FileChunk("new.md", 400)});
  EXPECT_EQ(RunRecords("doc.md"), "7");  // run 2's six and the crashed run's one
  deleted = Commit(*second, {Manifest("doc.md", 6, 2)});
  ASSERT_TRUE(deleted.ok()) << deleted.status().ToString();
  EXPECT_EQ(*deleted, 7u);  // 5-9, 200 and 300
  EXPECT_EQ(second->Stats()->chunks, 6u + 3u + 1u + 1u);
  EXPECT_EQ(*second->FileChunkIds("doc.md"), Sorted(now));
  EXPECT_EQ(RunRecords("doc.md"), "0");  // every run's records of the file
  EXPECT_EQ(RunRecords("new.md"), "1");  // other files' records stay
  EXPECT_EQ(raw_->Scalar("SELECT chunk_count FROM " + Q("_sources") + " WHERE source_id='doc.md'"),
            "6");
  EXPECT_EQ(raw_->Scalar("SELECT count(*) FROM " + Q() + " WHERE source_id='other.md'"), "3");
  EXPECT_EQ(raw_->Scalar("SELECT count(*) FROM " + Q() + " WHERE source_id='legacy.md'"), "1");
  EXPECT_EQ(raw_->Scalar("SELECT count(*) FROM " + Q() + " WHERE source_id='new.md'"), "1");
  EXPECT_TRUE(Verify(*second).empty());

  // A run that produced nothing for the file: every chunk goes, and with
  // them the sources row.
  deleted = Commit(*second, {Manifest("doc.md", 0, 3)});
  ASSERT_TRUE(deleted.ok()) << deleted.status().ToString();
  EXPECT_EQ(*deleted, 6u);
  EXPECT_EQ(raw_->Scalar("SELECT count(*) FROM " + Q("_sources") + " WHERE source_id='doc.md'"),
            "0");
  EXPECT_TRUE(second->FileChunkIds("doc.md")->empty());
  EXPECT_TRUE(Verify(*second).empty());
}

// Issue 14: two runs storing the same file at once. Run 1 committing the
// file used to forget every run's records of it, so run 2's commit then
// took the chunks it had stored before as stale and deleted them: the file
// was fingerprinted complete and short of chunks. A commit now forgets only
// its own run's records (and records of the chunks it deleted).
TEST_P(PostgresResumeTest, TwoRunsOfOneFileAtOnceKeepEveryChunk) {
  auto one = Open(1);
  auto two = Open(2);
  ASSERT_TRUE(one && two);
  const auto chunks = FileChunks("doc.md", 0, 5);
  Write(*two, {chunks[0], chunks[1], chunks[2]});  // run 2 is part way through
  Write(*one, chunks);
  auto deleted = Commit(*one, {Manifest("doc.md", 5, 1)});
  ASSERT_TRUE(deleted.ok()) << deleted.status().ToString();
  EXPECT_EQ(*deleted, 0u);
  EXPECT_EQ(RunRecords("doc.md"), "3");  // run 2's, still needed
  Write(*two, {chunks[3], chunks[4]});
  deleted = Commit(*two, {Manifest("doc.md", 5, 2)});
  ASSERT_TRUE(deleted.ok()) << deleted.status().ToString();
  EXPECT_EQ(*deleted, 0u);
  EXPECT_EQ(*two->FileChunkIds("doc.md"), Sorted(chunks));
  EXPECT_EQ(RunRecords("doc.md"), "0");
  EXPECT_TRUE(Verify(*two).empty());
}

// Issue 14: a store belongs to one (model, dimensions).
TEST_P(PostgresResumeTest, AnotherModelIsRefusedNamingBothAndReembedReplacesEverything) {
  const auto open = [&](const std::string& model, int dims, bool reembed) {
    StoreOptions o;
    o.table = table_;
    o.reconnect_timeout_s = 10;
    o.run_id = 1;
    o.model = model;
    o.dimensions = dims;
    o.reembed = reembed;
    o.embedding_cache_namespace = model + ":" + std::to_string(dims);
    return OpenPostgresStore(dsn_, o);
  };
  {
    auto m1 = open("m1", kDims, false);
    ASSERT_TRUE(m1.ok()) << m1.status().ToString();
    auto chunks = FileChunks("doc.md", 0, 3);
    for (auto& c : chunks) c.model = "m1";
    Write(**m1, chunks);
    ASSERT_TRUE(Commit(**m1, {Manifest("doc.md", 3, 1)}).ok());
    auto stored = (*m1)->StoredModel();
    ASSERT_TRUE(stored.ok()) << stored.status().ToString();
    EXPECT_EQ(stored->model, "m1");
    EXPECT_EQ(stored->dimensions, kDims);
  }
  auto refused = open("m2", kDims, false);
  ASSERT_FALSE(refused.ok());
  EXPECT_EQ(refused.status().code(), StatusCode::kInvalidArgument);
  const std::string dims = std::to_string(kDims) + " dimensions";
  for (const std::string& part :
       {"model 'm1', " + dims, "model 'm2', " + dims, std::string("--reembed"), table_}) {
    EXPECT_NE(refused.status().message().find(part), std::string::npos)
        << refused.status().message();
  }
  EXPECT_FALSE(open("m1", kDims * 2, false).ok());  // same model, other dimension

  // --reembed with another dimension: every table starts over.
  auto m2 = open("m2", kDims * 2, true);
  ASSERT_TRUE(m2.ok()) << m2.status().ToString();
  EXPECT_EQ((*m2)->Stats()->chunks, 0u);
  EXPECT_TRUE((*m2)->LoadFingerprints()->empty());
  EXPECT_EQ(raw_->Scalar("SELECT count(*) FROM " + Q("_embedding_cache")), "0");
  EXPECT_EQ(raw_->Scalar("SELECT count(*) FROM " + Q("_run_chunks")), "0");
  EXPECT_EQ((*m2)->StoredModel()->dimensions, 0);
  EmbeddedChunk wide = TestChunk(7, kDims * 2, "doc.md");
  wide.chunk.file_id = "doc.md";
  wide.model = "m2";
  Write(**m2, {wide});
  EXPECT_EQ((*m2)->StoredModel()->model, "m2");
  EXPECT_EQ((*m2)->StoredModel()->dimensions, kDims * 2);
  m2->reset();
  EXPECT_TRUE(open("m2", kDims * 2, false).ok());  // its store now
  EXPECT_FALSE(open("m1", kDims, false).ok());
}

TEST_P(PostgresResumeTest, CleanupNoneCountsKeptChunksAndFactsOnlyKeepsTheCount) {
  auto first = Open(1);
  ASSERT_TRUE(first);
  const auto old_chunks = FileChunks("doc.md", 0, 4);
  Write(*first, old_chunks);
  ASSERT_TRUE(Commit(*first, {Manifest("doc.md", 4, 1)}).ok());
  auto second = Open(2);
  ASSERT_TRUE(second);
  const auto new_chunks = FileChunks("doc.md", 2, 4);  // 2, 3 stay; 4, 5 are new
  Write(*second, new_chunks);
  SourceManifest keep = Manifest("doc.md", 4, 2);
  keep.delete_stale = false;
  auto deleted = Commit(*second, {keep});
  ASSERT_TRUE(deleted.ok()) << deleted.status().ToString();
  EXPECT_EQ(*deleted, 0u);
  EXPECT_EQ(RunRecords("doc.md"), "0");
  // Produced (4) plus the stored ones the run did not record (0, 1).
  auto loaded = second->LoadFingerprints();
  ASSERT_TRUE(loaded.ok());
  ASSERT_EQ(loaded->size(), 1u);
  EXPECT_EQ((*loaded)[0].chunk_count, 6u);
  EXPECT_EQ(*second->FileChunkIds("doc.md"), Sorted(FileChunks("doc.md", 0, 6)));
  EXPECT_TRUE(Verify(*second).empty());

  // Only the file's facts changed: the count stays, nothing is deleted
  // (the run recorded nothing), the run records go.
  auto third = Open(3);
  ASSERT_TRUE(third);
  Write(*third, {FileChunk("doc.md", 0)});
  SourceManifest touched = Manifest("doc.md", 0, 3);
  touched.facts_only = true;
  touched.fingerprint.mtime_ns = 42;
  deleted = Commit(*third, {touched});
  ASSERT_TRUE(deleted.ok()) << deleted.status().ToString();
  EXPECT_EQ(*deleted, 0u);
  EXPECT_EQ(RunRecords("doc.md"), "0");
  EXPECT_EQ(third->FileChunkIds("doc.md")->size(), 6u);
  loaded = third->LoadFingerprints();
  ASSERT_TRUE(loaded.ok());
  ASSERT_EQ(loaded->size(), 1u);
  EXPECT_EQ((*loaded)[0].mtime_ns, 42);
  EXPECT_EQ((*loaded)[0].chunk_count, 6u);
  EXPECT_EQ(raw_->Scalar("SELECT mtime_ns FROM " + Q("_sources") + " WHERE source_id='doc.md'"),
            "42");
  EXPECT_TRUE(Verify(*third).empty());
}

TEST_P(PostgresResumeTest, DeleteSourcesRemovesChunksFingerprintsRunRecordsAndSourceRows) {
  auto store = Open(1);
  ASSERT_TRUE(store);
  Write(*store, FileChunks("a.md", 0, 3));
  Write(*store, FileChunks("b.md", 10, 4));
  ASSERT_TRUE(Commit(*store, {Manifest("a.md", 3, 1), Manifest("b.md", 4, 1)}).ok());
  // b.md also has a row from before file_ids and an uncommitted run's chunk.
  auto legacy = Open();
  ASSERT_TRUE(legacy);
  Write(*legacy, {TestChunk(30, kDims, "b.md")});
  auto later = Open(5);
  ASSERT_TRUE(later);
  Write(*later, {FileChunk("b.md", 20)});
  EXPECT_EQ(RunRecords("b.md"), "1");
  auto deleted = store->DeleteSources(std::vector<std::string>{"b.md", "never-seen.md"});
  ASSERT_TRUE(deleted.ok()) << deleted.status().ToString();
  EXPECT_EQ(*deleted, 6u);
  EXPECT_EQ(store->Stats()->chunks, 3u);
  EXPECT_EQ(store->Stats()->sources, 1u);
  EXPECT_EQ(RunRecords("b.md"), "0");
  EXPECT_TRUE(store->FileChunkIds("b.md")->empty());
  EXPECT_EQ(store->LoadFingerprints()->size(), 1u);
  EXPECT_TRUE(Verify(*store).empty());
}

// Run records are written in the batch's transaction for the rows the store
// accepted that have a file (row-by-row path: one row is refused).
TEST_P(PostgresResumeTest, RunRecordsOnlyForAcceptedRowsWithAFile) {
  auto store = Open(9);
  ASSERT_TRUE(store);
  Write(*store, {FileChunk("doc.md", 0)});  // fixes the dimension
  std::vector<EmbeddedChunk> batch = FileChunks("doc.md", 1, 3);
  batch[1].embedding.resize(kDims / 2);            // refused: wrong dimension
  batch.push_back(TestChunk(60, kDims, "stdin"));  // no file
  WriteResult w = store->Write(batch);
  ASSERT_TRUE(w.status.ok()) << w.status.ToString();
  ASSERT_EQ(w.rejected.size(), 1u);
  EXPECT_EQ(w.rejected[0].index, 1u);
  std::vector<std::string> recorded = {FileChunk("doc.md", 0).chunk.id, batch[0].chunk.id,
                                       batch[2].chunk.id};
  std::sort(recorded.begin(), recorded.end());
  EXPECT_EQ(
      raw_->Column("SELECT chunk_id FROM " + Q("_run_chunks") +
                   " WHERE file_id = 'doc.md' AND run_id = 9 ORDER BY chunk_id COLLATE \"C\""),
      recorded);
  EXPECT_EQ(raw_->Scalar("SELECT count(*) FROM " + Q("_run_chunks")), "3");
  EXPECT_EQ(raw_->Scalar("SELECT count(*) FROM " + Q() + " WHERE id = '" + batch[3].chunk.id +
                         "' AND file_id IS NULL"),
            "1");
  // A row stored without a file gets it when written again with one.
  EmbeddedChunk again = batch[3];
  again.chunk.file_id = "stdin";
  Write(*store, {again});
  EXPECT_EQ(raw_->Scalar("SELECT file_id FROM " + Q() + " WHERE id = '" + batch[3].chunk.id + "'"),
            "stdin");
  // A store with no run records none.
  auto no_run = Open();
  ASSERT_TRUE(no_run);
  Write(*no_run, {FileChunk("doc.md", 70)});
  EXPECT_EQ(raw_->Scalar("SELECT count(*) FROM " + Q("_run_chunks")), "4");
}

TEST_P(PostgresResumeTest, ManyFilesCommitInOneCall) {
  auto store = Open(1);
  ASSERT_TRUE(store);
  const size_t files = pglite_ ? 200 : 2000;
  std::vector<EmbeddedChunk> chunks;
  std::vector<SourceManifest> manifests;
  for (size_t i = 0; i < files; ++i) {
    const std::string file = "f" + std::to_string(i) + ".md";
    chunks.push_back(FileChunk(file, i));
    manifests.push_back(Manifest(file, 1, 1));
  }
  Write(*store, chunks);
  auto deleted = store->CommitSources(manifests);
  ASSERT_TRUE(deleted.ok()) << deleted.status().ToString();
  EXPECT_EQ(*deleted, 0u);
  EXPECT_EQ(store->LoadFingerprints()->size(), files);
  EXPECT_EQ(raw_->Scalar("SELECT count(*) FROM " + Q("_run_chunks")), "0");
  EXPECT_TRUE(Verify(*store).empty());
}

TEST_P(PostgresResumeTest, EmbeddingCacheAnswersBitExactlyPerNamespace) {
  auto writer = Open(0, "test-model:8");
  ASSERT_TRUE(writer);
  std::vector<EmbeddedChunk> chunks = FileChunks("doc.md", 0, 6);
  // Two chunks with one text: one cache row.
  chunks.push_back(TestChunk(99, kDims, "copy.md"));
  chunks.back().chunk.text = chunks[0].chunk.text;
  chunks.back().embedding = chunks[0].embedding;
  Write(*writer, chunks);
  EXPECT_EQ(raw_->Scalar("SELECT count(*) FROM " + Q("_embedding_cache")), "6");

  auto reader = Open();  // a second store object, as the pipeline's cache stage uses
  ASSERT_TRUE(reader);
  std::vector<std::string_view> texts;
  for (const auto& c : chunks) texts.push_back(c.chunk.text);
  texts.push_back("never embedded");
  std::vector<CachedEmbedding> found;
  Status s = reader->LookupEmbeddings("test-model:8", texts, found);
  ASSERT_TRUE(s.ok()) << s.ToString();
  ASSERT_EQ(found.size(), texts.size());
  for (size_t i = 0; i < chunks.size(); ++i) {
    EXPECT_EQ(found[i].embedding, chunks[i].embedding) << i;
    EXPECT_EQ(found[i].model, "test-model");
  }
  EXPECT_TRUE(found.back().embedding.empty());
  // Another model or dimension never matches.
  ASSERT_TRUE(reader->LookupEmbeddings("test-model:16", texts, found).ok());
  for (const auto& f : found) EXPECT_TRUE(f.embedding.empty());
}

TEST_P(PostgresResumeTest, MayHoldCachedEmbeddingsOnlyOnceTheCacheHasARow) {
  auto plain = Open(1);  // no namespace: writes no cache rows
  ASSERT_TRUE(plain);
  auto fresh = plain->MayHoldCachedEmbeddings();
  ASSERT_TRUE(fresh.ok()) << fresh.status().ToString();
  EXPECT_FALSE(*fresh);
  Write(*plain, FileChunks("a.md", 0, 2));
  EXPECT_FALSE(*plain->MayHoldCachedEmbeddings());
  auto keyed = Open(2, "test-model:8");
  ASSERT_TRUE(keyed);
  Write(*keyed, FileChunks("b.md", 10, 1));
  EXPECT_TRUE(*keyed->MayHoldCachedEmbeddings());
  EXPECT_TRUE(*plain->MayHoldCachedEmbeddings());
}

TEST_P(PostgresResumeTest, ReadChunksReturnsEveryFieldInTheAskedOrder) {
  auto store = Open();
  ASSERT_TRUE(store);
  const auto chunks = FileChunks("doc.md", 0, 5);
  Write(*store, chunks);
  auto got = store->ReadChunks(std::vector<std::string>{chunks[3].chunk.id, "missing",
                                                        chunks[0].chunk.id, chunks[4].chunk.id});
  ASSERT_TRUE(got.ok()) << got.status().ToString();
  ASSERT_EQ(got->size(), 3u);
  const size_t want[] = {3, 0, 4};
  for (size_t i = 0; i < 3; ++i) {
    const EmbeddedChunk& a = (*got)[i];
    const EmbeddedChunk& b = chunks[want[i]];
    EXPECT_EQ(a.chunk.id, b.chunk.id);
    EXPECT_EQ(a.chunk.source_id, b.chunk.source_id);
    EXPECT_EQ(a.chunk.file_id, "doc.md");
    EXPECT_EQ(a.chunk.ordinal, b.chunk.ordinal);
    EXPECT_EQ(a.chunk.byte_begin, b.chunk.byte_begin);
    EXPECT_EQ(a.chunk.byte_end, b.chunk.byte_end);
    EXPECT_EQ(a.chunk.text, b.chunk.text);
    EXPECT_EQ(a.chunk.domain, b.chunk.domain);
    EXPECT_EQ(a.chunk.category, b.chunk.category);
    // jsonb keeps the value, not the text; ReadChunks gives back the
    // canonical text (sorted keys, no spaces).
    EXPECT_EQ(a.chunk.metadata_json, "{\"n\":" + std::to_string(want[i]) + ",\"title\":\"T\"}");
    EXPECT_EQ(a.chunk.token_estimate, b.chunk.token_estimate);
    EXPECT_EQ(a.model, b.model);
    EXPECT_EQ(a.embedding, b.embedding);
  }
}

TEST_P(PostgresResumeTest, VerifyFindsEachKindOfProblem) {
  auto store = Open(1);
  ASSERT_TRUE(store);
  const auto a = FileChunks("a.md", 0, 4);
  const auto b = FileChunks("b.md", 10, 4);
  Write(*store, a);
  Write(*store, b);
  ASSERT_TRUE(Commit(*store, {Manifest("a.md", 4, 1), Manifest("b.md", 4, 1)}).ok());
  ASSERT_TRUE(Verify(*store).empty());
  const std::string cols =
      "source_id, ordinal, byte_begin, byte_end, text, domain, category, metadata, model, dims, "
      "embedding, token_estimate";
  // A chunk of b.md deleted (b.md misses one; its sources row miscounts); a
  // chunk of no source; a stale chunk of a.md (more stored than counted; its
  // sources row miscounts); a chunk whose dims column disagrees.
  raw_->Command("DELETE FROM " + Q() + " WHERE id = '" + b[0].chunk.id + "'");
  raw_->Command("INSERT INTO " + Q() + " (id, " + cols + ") SELECT 'orphan1', 'gone.md', " +
                cols.substr(cols.find("ordinal")) + " FROM " + Q() + " WHERE id = '" +
                a[0].chunk.id + "'");
  raw_->Command("INSERT INTO " + Q() + " (id, file_id, " + cols + ") SELECT 'stale1', file_id, " +
                cols + " FROM " + Q() + " WHERE id = '" + a[1].chunk.id + "'");
  raw_->Command("UPDATE " + Q() + " SET dims = 3 WHERE id = '" + a[2].chunk.id + "'");
  EXPECT_EQ(Problems(*store), (std::set<std::string>{"missing_chunk b.md", "count_mismatch b.md",
                                                     "count_mismatch a.md", "orphan_chunk orphan1",
                                                     "wrong_dimensions " + a[2].chunk.id}));
  // The file findings are about the file's count, not its sources row.
  size_t file_findings = 0;
  for (const VerifyProblem& p : Verify(*store)) {
    if (p.subject == "a.md" && p.detail.find("fingerprint") != std::string::npos) {
      EXPECT_EQ(p.kind, "count_mismatch");
      ++file_findings;
    }
    if (p.subject == "b.md" && p.detail.find("fingerprint") != std::string::npos) {
      EXPECT_EQ(p.kind, "missing_chunk");
      ++file_findings;
    }
  }
  EXPECT_EQ(file_findings, 2u);
  std::vector<VerifyProblem> capped;
  ASSERT_TRUE(store->Verify(capped, 2).ok());
  EXPECT_EQ(capped.size(), 2u);
}

// A store written before chunks had a file_id: its files table lists each
// file's chunk ids. Opening it moves the lists into chunks.file_id, drops the
// column and adds the run records table; rows no list names keep working by
// their source id.
TEST_P(PostgresResumeTest, OpeningMigratesChunkIdListsToFileIds) {
  {
    auto store = Open(1);
    ASSERT_TRUE(store);
    Write(*store, FileChunks("a.md", 0, 4));
    // A JSONL file: its records are sources of their own.
    std::vector<EmbeddedChunk> records = {TestChunk(20, kDims, "data.jsonl:1"),
                                          TestChunk(21, kDims, "data.jsonl:2")};
    Write(*store, records);
    ASSERT_TRUE(Commit(*store, {Manifest("a.md", 3, 1), Manifest("data.jsonl", 2, 1)}).ok());
    ASSERT_TRUE(store->Close().ok());
  }
  // The old shape, by hand: no file_id (nor its index), no run records
  // table, the files table with chunk_ids. a.md lists 0-2; chunk 3 is a
  // crashed run's leftover no list names.
  const std::string listed_a = "ARRAY['" + FileChunk("a.md", 0).chunk.id + "','" +
                               FileChunk("a.md", 1).chunk.id + "','" +
                               FileChunk("a.md", 2).chunk.id + "']";
  const std::string listed_jl = "ARRAY['" + TestChunk(20, kDims, "data.jsonl:1").chunk.id + "','" +
                                TestChunk(21, kDims, "data.jsonl:2").chunk.id + "']";
  ASSERT_TRUE(raw_->Command("ALTER TABLE " + Q() + " DROP COLUMN file_id"));
  ASSERT_TRUE(raw_->Command("DROP TABLE " + Q("_run_chunks")));
  ASSERT_TRUE(raw_->Command("ALTER TABLE " + Q("_files") +
                            " ADD COLUMN chunk_ids text[] NOT NULL DEFAULT '{}'"));
  ASSERT_TRUE(raw_->Command("UPDATE " + Q("_files") + " SET chunk_ids = CASE file_id WHEN 'a.md' " +
                            "THEN " + listed_a + " ELSE " + listed_jl + " END"));

  auto store = Open(2);
  ASSERT_TRUE(store);
  EXPECT_EQ(raw_->Scalar("SELECT count(*) FROM pg_attribute WHERE attrelid = '" + Q("_files") +
                         "'::regclass AND attname = 'chunk_ids' AND NOT attisdropped"),
            "0");
  EXPECT_EQ(raw_->Scalar("SELECT to_regclass('" + Q("_file_id_idx") + "') IS NOT NULL AND " +
                         "to_regclass('" + Q("_run_chunks") + "') IS NOT NULL"),
            "t");
  EXPECT_EQ(raw_->Scalar("SELECT string_agg(coalesce(file_id, '-'), ',' ORDER BY source_id, "
                         "ordinal) FROM " +
                         Q()),
            "a.md,a.md,a.md,-,data.jsonl,data.jsonl");
  // The JSONL file's chunks are found by their file id now.
  EXPECT_EQ(*store->FileChunkIds("data.jsonl"),
            Ids({TestChunk(20, kDims, "data.jsonl:1"), TestChunk(21, kDims, "data.jsonl:2")}));
  EXPECT_EQ(store->FileChunkIds("a.md")->size(), 4u);  // 3 by file_id, the leftover by source
  // The leftover is stale for the next run of a.md.
  Write(*store, FileChunks("a.md", 0, 3));
  auto deleted = Commit(*store, {Manifest("a.md", 3, 2)});
  ASSERT_TRUE(deleted.ok()) << deleted.status().ToString();
  EXPECT_EQ(*deleted, 1u);
  EXPECT_EQ(*store->FileChunkIds("a.md"), Ids(FileChunks("a.md", 0, 3)));
  EXPECT_TRUE(Verify(*store).empty());
  ASSERT_TRUE(store->Close().ok());
  // Opening again finds nothing to migrate.
  auto again = Open(3);
  ASSERT_TRUE(again);
  EXPECT_TRUE(Verify(*again).empty());
}

// PostgreSQL only: PGlite has one backend, and terminating it ends the server.
class PostgresOnlyResumeTest : public PostgresResumeTest {};

TEST_P(PostgresOnlyResumeTest, LostConnectionsAreReplayed) {
  // The store's connections get an application_name of this test's own, so
  // terminating them leaves every other test's connections alone (tests run
  // in parallel against one cluster).
  const std::string app = "sluice_lost_" + table_;
  StoreOptions o;
  o.table = table_;
  o.embedding_cache_namespace = "test-model:8";
  o.reconnect_timeout_s = 10;
  o.run_id = 1;
  const char* joiner = dsn_.find('?') == std::string::npos ? "?" : "&";
  auto opened = OpenPostgresStore(dsn_ + joiner + "application_name=" + app, o);
  ASSERT_TRUE(opened.ok()) << opened.status().ToString();
  auto store = std::move(*opened);
  const auto chunks = FileChunks("doc.md", 0, 4);
  Write(*store, chunks);
  const std::string kill_ours =
      "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE application_name = '" +
      app + "'";
  // The pool's one connection in use so far, and the session holding the
  // run's liveness lock (taken again by the commit below).
  ASSERT_EQ(raw_->Scalar(kill_ours), "2");
  raw_->Scalar(kill_ours);
  auto deleted = Commit(*store, {Manifest("doc.md", 4, 1)});
  ASSERT_TRUE(deleted.ok()) << deleted.status().ToString();
  raw_->Scalar(kill_ours);
  ASSERT_TRUE(store->LoadFingerprints().ok());
  raw_->Scalar(kill_ours);
  std::vector<std::string_view> texts = {chunks[0].chunk.text};
  std::vector<CachedEmbedding> found;
  ASSERT_TRUE(store->LookupEmbeddings("test-model:8", texts, found).ok());
  EXPECT_EQ(found[0].embedding, chunks[0].embedding);
  raw_->Scalar(kill_ours);
  EXPECT_TRUE(Verify(*store).empty());
}

// A table filled from empty by this store: once it holds 10,000 rows the
// commit refreshes the planner's statistics (without them its joins read the
// whole chunks table per commit). A role that may write but not ANALYZE
// the tables (not their owner) still commits: the refresh is skipped.
TEST_P(PostgresOnlyResumeTest, CommitRefreshesTheStatisticsOfATableFilledFromEmpty) {
  const std::string reltuples =
      "SELECT reltuples::bigint FROM pg_class WHERE oid = to_regclass('" + Q() + "')";
  const auto write_files = [&](Store& store, int first, int files, uint64_t run) {
    std::vector<SourceManifest> manifests;
    for (int f = first; f < first + files; ++f) {
      const std::string file = "f" + std::to_string(f) + ".md";
      Write(store, FileChunks(file, static_cast<uint64_t>(f) * 1000, 1000));
      manifests.push_back(Manifest(file, 1000, run));
    }
    auto deleted = Commit(store, manifests);
    ASSERT_TRUE(deleted.ok()) << deleted.status().ToString();
    EXPECT_EQ(*deleted, 0u);
  };
  {
    auto owner = Open(1);
    ASSERT_TRUE(owner);
    write_files(*owner, 0, 10, 1);
    // ANALYZE samples every row of a table this small: the estimate is exact.
    EXPECT_EQ(raw_->Scalar(reltuples), "10000");
    write_files(*owner, 10, 5, 1);  // below the next check (20,000 written)
  }
  const std::string owner_dsn = dsn_;
  const std::string role = "sluice_stats_" + std::to_string(getpid());
  ASSERT_NO_FATAL_FAILURE(ConnectAsWriterRole(role));
  {
    // Its own 10,000 rows are more than the statistics' 10,000 - 5,000 in
    // all; the server refuses its ANALYZE with a warning, and it commits.
    auto writer = Open(2);
    ASSERT_TRUE(writer);
    write_files(*writer, 15, 10, 2);
    EXPECT_EQ(writer->LoadFingerprints()->size(), 25u);
  }
  dsn_ = owner_dsn;
  EXPECT_EQ(raw_->Scalar("SELECT count(*) FROM " + Q()), "25000");
  raw_->Command("DROP OWNED BY " + role);
  raw_->Command("DROP ROLE " + role);
}

// A role that may read and write the tables but not ALTER them: it works
// once file_id exists; it cannot add it (an error at open); it cannot
// migrate a chunk_ids files table (the store opens without resume).
TEST_P(PostgresOnlyResumeTest, RoleWithoutAlterUsesMigratedTablesOnly) {
  {
    auto owner = Open(1);
    ASSERT_TRUE(owner);
    Write(*owner, FileChunks("a.md", 0, 3));
    ASSERT_TRUE(Commit(*owner, {Manifest("a.md", 3, 1)}).ok());
  }
  const std::string owner_dsn = dsn_;
  const std::string role = "sluice_rw_" + std::to_string(getpid());
  ASSERT_NO_FATAL_FAILURE(ConnectAsWriterRole(role));

  {
    auto store = Open(2);
    ASSERT_TRUE(store);
    Write(*store, FileChunks("a.md", 0, 2));
    auto deleted = Commit(*store, {Manifest("a.md", 2, 2)});
    ASSERT_TRUE(deleted.ok()) << deleted.status().ToString();
    EXPECT_EQ(*deleted, 1u);
    EXPECT_TRUE(Verify(*store).empty());
  }

  ASSERT_TRUE(raw_->Command("ALTER TABLE " + Q() + " DROP COLUMN file_id"));
  {
    StoreOptions o;
    o.table = table_;
    auto refused = OpenPostgresStore(dsn_, o);
    ASSERT_FALSE(refused.ok());
    EXPECT_EQ(refused.status().code(), StatusCode::kPermissionDenied)
        << refused.status().ToString();
    EXPECT_NE(refused.status().message().find("file_id"), std::string::npos);
  }

  ASSERT_TRUE(raw_->Command("ALTER TABLE " + Q() + " ADD COLUMN file_id text"));
  ASSERT_TRUE(raw_->Command("CREATE INDEX " + Q("_file_id_idx") + " ON " + Q() + " (file_id)"));
  ASSERT_TRUE(raw_->Command("ALTER TABLE " + Q("_files") +
                            " ADD COLUMN chunk_ids text[] NOT NULL DEFAULT '{}'"));
  {
    auto store = Open(3);
    ASSERT_TRUE(store);
    auto loaded = store->LoadFingerprints();
    ASSERT_FALSE(loaded.ok());
    EXPECT_EQ(loaded.status().code(), StatusCode::kInvalidArgument);
    EXPECT_NE(loaded.status().message().find("migrate"), std::string::npos)
        << loaded.status().ToString();
    Write(*store, FileChunks("b.md", 10, 2));  // writing still works
    EXPECT_EQ(raw_->Scalar("SELECT count(*) FROM " + Q() + " WHERE file_id = 'b.md'"), "2");
  }
  dsn_ = owner_dsn;
  raw_->Command("DROP OWNED BY " + role);
  raw_->Command("DROP ROLE " + role);
}

INSTANTIATE_TEST_SUITE_P(Servers, PostgresResumeTest,
                         ::testing::Values("SLUICE_TEST_PG_DSN", "SLUICE_TEST_PGVECTOR_DSN"),
                         [](const auto& info) {
                           return std::string(info.param) == "SLUICE_TEST_PG_DSN" ? "PostgreSQL"
                                                                                  : "PGliteVector";
                         });
INSTANTIATE_TEST_SUITE_P(Server, PostgresOnlyResumeTest, ::testing::Values("SLUICE_TEST_PG_DSN"),
                         [](const auto&) { return std::string("PostgreSQL"); });

}  // namespace
}  // namespace sluice
