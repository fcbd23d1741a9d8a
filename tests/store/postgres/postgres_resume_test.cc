// The PostgreSQL store's resume methods (docs/RESUME.md): fingerprints and
// stale-chunk deletion in one transaction, cleanup modes, the embedding cache,
// ReadChunks and Verify; each test runs against a real PostgreSQL 15 (real[]
// vectors, COPY path) and against PGlite with pgvector (vector(N), prepared
// INSERTs). Both services come from scripts/test-services.sh; PGlite's shared
// backend makes the whole binary hold the "pglite" resource lock.
#include <gtest/gtest.h>

#include <set>

#include "pg_test_util.h"
#include "store/postgres/postgres_store.h"

namespace sluice {
namespace {

using pgtest::RawPg;
using pgtest::TestChunk;
using pgtest::UniqueTable;

constexpr int kDims = 8;

SourceManifest Manifest(const std::string& file_id, std::vector<std::string> ids) {
  SourceManifest m;
  m.fingerprint.file_id = file_id;
  m.fingerprint.path = "/corpus/" + file_id;
  m.fingerprint.size_bytes = 1000 + ids.size();
  m.fingerprint.mtime_ns = 1'700'000'000'000'000'000 + static_cast<int64_t>(ids.size());
  m.fingerprint.content_hash = "hash-" + std::to_string(ids.size());
  m.fingerprint.chunk_count = ids.size();
  m.chunk_ids = std::move(ids);
  return m;
}

std::vector<std::string> Ids(const std::vector<EmbeddedChunk>& chunks) {
  std::vector<std::string> out;
  for (const auto& c : chunks) out.push_back(c.chunk.id);
  return out;
}

// Chunks n in [first, first + count) of one file.
std::vector<EmbeddedChunk> FileChunks(const std::string& file_id, uint64_t first, size_t count) {
  std::vector<EmbeddedChunk> out;
  for (uint64_t n = first; n < first + count; ++n) out.push_back(TestChunk(n, kDims, file_id));
  return out;
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
  std::unique_ptr<Store> Open(const std::string& cache_namespace = "") {
    StoreOptions o;
    o.table = table_;
    o.embedding_cache_namespace = cache_namespace;
    o.reconnect_timeout_s = 10;
    auto s = OpenPostgresStore(dsn_, o);
    EXPECT_TRUE(s.ok()) << s.status().ToString();
    return s.ok() ? std::move(*s) : nullptr;
  }
  void Write(Store& store, const std::vector<EmbeddedChunk>& chunks) {
    WriteResult w = store.Write(chunks);
    ASSERT_TRUE(w.status.ok()) << w.status.ToString();
    ASSERT_TRUE(w.rejected.empty());
  }
  std::vector<VerifyProblem> Verify(Store& store) {
    std::vector<VerifyProblem> problems;
    Status s = store.Verify(problems, 100);
    EXPECT_TRUE(s.ok()) << s.ToString();
    return problems;
  }
  std::string Q(const std::string& suffix = "") { return "\"" + table_ + suffix + "\""; }

  std::string dsn_;
  bool pglite_ = false;
  std::unique_ptr<RawPg> raw_;
  std::string table_;
};

TEST_P(PostgresResumeTest, FingerprintsWorkBeforeTheFirstWriteAndRoundTrip) {
  auto store = Open();
  ASSERT_TRUE(store);
  auto none = store->LoadFingerprints();
  ASSERT_TRUE(none.ok()) << none.status().ToString();
  EXPECT_TRUE(none->empty());
  EXPECT_TRUE(store->FileChunkIds("nothing.md")->empty());
  // An empty file completes before any chunk (and so the chunks table) exists.
  auto empty = store->CommitSources(std::vector<SourceManifest>{Manifest("empty.md", {})});
  ASSERT_TRUE(empty.ok()) << empty.status().ToString();
  EXPECT_EQ(*empty, 0u);

  Write(*store, FileChunks("doc.md", 0, 5));
  SourceManifest doc = Manifest("doc.md", Ids(FileChunks("doc.md", 0, 5)));
  ASSERT_TRUE(store->CommitSources(std::vector<SourceManifest>{doc}).ok());
  auto loaded = store->LoadFingerprints();
  ASSERT_TRUE(loaded.ok());
  ASSERT_EQ(loaded->size(), 2u);
  const SourceFingerprint& f = (*loaded)[0].file_id == "doc.md" ? (*loaded)[0] : (*loaded)[1];
  EXPECT_EQ(f.path, doc.fingerprint.path);
  EXPECT_EQ(f.size_bytes, doc.fingerprint.size_bytes);
  EXPECT_EQ(f.mtime_ns, doc.fingerprint.mtime_ns);
  EXPECT_EQ(f.content_hash, doc.fingerprint.content_hash);
  EXPECT_EQ(f.chunk_count, 5u);
  EXPECT_EQ(*store->FileChunkIds("doc.md"), doc.chunk_ids);
  // The sources row of a plain file carries the file's facts.
  EXPECT_EQ(
      raw_->Scalar("SELECT concat_ws('|', path, size_bytes, mtime_ns, content_hash, "
                   "chunk_count) FROM " +
                   Q("_sources") + " WHERE source_id = 'doc.md'"),
      doc.fingerprint.path + "|1005|" + std::to_string(doc.fingerprint.mtime_ns) + "|hash-5|5");
  EXPECT_TRUE(Verify(*store).empty());
}

// Dead-letter retry: a file fingerprinted before any chunk of it was stored
// (every chunk dead-lettered) gets its facts into the sources row that the
// retried chunks create.
TEST_P(PostgresResumeTest, SourceRowCreatedAfterTheFingerprintTakesItsFacts) {
  auto store = Open();
  ASSERT_TRUE(store);
  const auto chunks = FileChunks("doc.md", 0, 3);
  SourceManifest doc = Manifest("doc.md", Ids(chunks));
  ASSERT_TRUE(store->CommitSources(std::vector<SourceManifest>{doc}).ok());
  Write(*store, chunks);
  EXPECT_EQ(
      raw_->Scalar("SELECT concat_ws('|', path, size_bytes, mtime_ns, content_hash, "
                   "chunk_count) FROM " +
                   Q("_sources") + " WHERE source_id = 'doc.md'"),
      doc.fingerprint.path + "|1003|" + std::to_string(doc.fingerprint.mtime_ns) + "|hash-3|3");
  EXPECT_TRUE(Verify(*store).empty());
}

TEST_P(PostgresResumeTest, CommitDeletesStaleChunksIncludingUnlistedOnesOfTheFile) {
  auto store = Open();
  ASSERT_TRUE(store);
  Write(*store, FileChunks("doc.md", 0, 10));
  Write(*store, FileChunks("other.md", 50, 3));
  ASSERT_TRUE(store
                  ->CommitSources(std::vector<SourceManifest>{
                      Manifest("doc.md", Ids(FileChunks("doc.md", 0, 10))),
                      Manifest("other.md", Ids(FileChunks("other.md", 50, 3)))})
                  .ok());
  // The edit keeps chunks 0-4, adds 100; a crashed run had also stored 200
  // under the file's id without listing it anywhere.
  std::vector<EmbeddedChunk> now = FileChunks("doc.md", 0, 5);
  now.push_back(TestChunk(100, kDims, "doc.md"));
  Write(*store, now);
  Write(*store, {TestChunk(200, kDims, "doc.md")});
  auto deleted = store->CommitSources(std::vector<SourceManifest>{Manifest("doc.md", Ids(now))});
  ASSERT_TRUE(deleted.ok()) << deleted.status().ToString();
  EXPECT_EQ(*deleted, 6u);  // 5-9 and 200
  EXPECT_EQ(store->Stats()->chunks, 9u);
  EXPECT_EQ(*store->FileChunkIds("doc.md"), Ids(now));
  EXPECT_EQ(raw_->Scalar("SELECT chunk_count FROM " + Q("_sources") + " WHERE source_id='doc.md'"),
            "6");
  EXPECT_EQ(raw_->Scalar("SELECT count(*) FROM " + Q() + " WHERE source_id='other.md'"), "3");
  EXPECT_TRUE(Verify(*store).empty());

  // Every chunk gone: the sources row goes too.
  ASSERT_TRUE(store->CommitSources(std::vector<SourceManifest>{Manifest("doc.md", {})}).ok());
  EXPECT_EQ(raw_->Scalar("SELECT count(*) FROM " + Q("_sources") + " WHERE source_id='doc.md'"),
            "0");
  EXPECT_TRUE(Verify(*store).empty());
}

TEST_P(PostgresResumeTest, CleanupNoneKeepsOldChunksListedAndFactsOnlyKeepsIds) {
  auto store = Open();
  ASSERT_TRUE(store);
  const auto old_chunks = FileChunks("doc.md", 0, 4);
  Write(*store, old_chunks);
  ASSERT_TRUE(
      store->CommitSources(std::vector<SourceManifest>{Manifest("doc.md", Ids(old_chunks))}).ok());
  const auto new_chunks = FileChunks("doc.md", 2, 4);  // 2, 3 stay; 4, 5 are new
  Write(*store, new_chunks);
  SourceManifest keep = Manifest("doc.md", Ids(new_chunks));
  keep.delete_stale = false;
  auto deleted = store->CommitSources(std::vector<SourceManifest>{keep});
  ASSERT_TRUE(deleted.ok()) << deleted.status().ToString();
  EXPECT_EQ(*deleted, 0u);
  // The new ids first, then the recorded ones not among them.
  std::vector<std::string> want = Ids(new_chunks);
  want.push_back(old_chunks[0].chunk.id);
  want.push_back(old_chunks[1].chunk.id);
  EXPECT_EQ(*store->FileChunkIds("doc.md"), want);
  EXPECT_TRUE(Verify(*store).empty());

  SourceManifest touched = Manifest("doc.md", {"ignored"});
  touched.facts_only = true;
  touched.fingerprint.mtime_ns = 42;
  ASSERT_TRUE(store->CommitSources(std::vector<SourceManifest>{touched}).ok());
  EXPECT_EQ(*store->FileChunkIds("doc.md"), want);
  auto loaded = store->LoadFingerprints();
  ASSERT_TRUE(loaded.ok());
  ASSERT_EQ(loaded->size(), 1u);
  EXPECT_EQ((*loaded)[0].mtime_ns, 42);
  EXPECT_EQ((*loaded)[0].chunk_count, 6u);
  EXPECT_TRUE(Verify(*store).empty());
}

TEST_P(PostgresResumeTest, DeleteSourcesRemovesChunksFingerprintsAndSourceRows) {
  auto store = Open();
  ASSERT_TRUE(store);
  Write(*store, FileChunks("a.md", 0, 3));
  Write(*store, FileChunks("b.md", 10, 4));
  ASSERT_TRUE(store
                  ->CommitSources(
                      std::vector<SourceManifest>{Manifest("a.md", Ids(FileChunks("a.md", 0, 3))),
                                                  Manifest("b.md", Ids(FileChunks("b.md", 10, 4)))})
                  .ok());
  auto deleted = store->DeleteSources(std::vector<std::string>{"b.md", "never-seen.md"});
  ASSERT_TRUE(deleted.ok()) << deleted.status().ToString();
  EXPECT_EQ(*deleted, 4u);
  EXPECT_EQ(store->Stats()->chunks, 3u);
  EXPECT_EQ(store->Stats()->sources, 1u);
  EXPECT_TRUE(store->FileChunkIds("b.md")->empty());
  EXPECT_EQ(store->LoadFingerprints()->size(), 1u);
  EXPECT_TRUE(Verify(*store).empty());
}

TEST_P(PostgresResumeTest, ManyFilesCommitInOneCall) {
  auto store = Open();
  ASSERT_TRUE(store);
  const size_t files = pglite_ ? 200 : 2000;
  std::vector<EmbeddedChunk> chunks;
  std::vector<SourceManifest> manifests;
  for (size_t i = 0; i < files; ++i) {
    const std::string file = "f" + std::to_string(i) + ".md";
    chunks.push_back(TestChunk(i, kDims, file));
    manifests.push_back(Manifest(file, {chunks.back().chunk.id}));
  }
  Write(*store, chunks);
  auto deleted = store->CommitSources(manifests);
  ASSERT_TRUE(deleted.ok()) << deleted.status().ToString();
  EXPECT_EQ(*deleted, 0u);
  EXPECT_EQ(store->LoadFingerprints()->size(), files);
  EXPECT_TRUE(Verify(*store).empty());
}

TEST_P(PostgresResumeTest, EmbeddingCacheAnswersBitExactlyPerNamespace) {
  auto writer = Open("test-model:8");
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
  auto store = Open();
  ASSERT_TRUE(store);
  const auto a = FileChunks("a.md", 0, 4);
  const auto b = FileChunks("b.md", 10, 4);
  Write(*store, a);
  Write(*store, b);
  ASSERT_TRUE(store
                  ->CommitSources(std::vector<SourceManifest>{Manifest("a.md", Ids(a)),
                                                              Manifest("b.md", Ids(b))})
                  .ok());
  ASSERT_TRUE(Verify(*store).empty());
  const std::string cols =
      "source_id, ordinal, byte_begin, byte_end, text, domain, category, metadata, model, dims, "
      "embedding, token_estimate";
  // A listed chunk deleted (missing, and b.md's sources row now miscounts);
  // a chunk of no source; an unlisted stale chunk of a.md; a fingerprint
  // that miscounts; a chunk whose dims column disagrees.
  raw_->Command("DELETE FROM " + Q() + " WHERE id = '" + b[0].chunk.id + "'");
  raw_->Command("INSERT INTO " + Q() + " (id, " + cols + ") SELECT 'orphan1', 'gone.md', " +
                cols.substr(cols.find("ordinal")) + " FROM " + Q() + " WHERE id = '" +
                a[0].chunk.id + "'");
  raw_->Command("INSERT INTO " + Q() + " (id, " + cols + ") SELECT 'stale1', " + cols + " FROM " +
                Q() + " WHERE id = '" + a[1].chunk.id + "'");
  raw_->Command("UPDATE " + Q("_files") + " SET chunk_count = 9 WHERE file_id = 'a.md'");
  raw_->Command("UPDATE " + Q() + " SET dims = 3 WHERE id = '" + a[2].chunk.id + "'");
  std::set<std::string> kinds;
  std::set<std::string> subjects;
  for (const VerifyProblem& p : Verify(*store)) {
    kinds.insert(p.kind);
    subjects.insert(p.subject);
  }
  EXPECT_EQ(kinds, (std::set<std::string>{"missing_chunk", "orphan_chunk", "wrong_dimensions",
                                          "count_mismatch"}));
  for (const std::string& s : {b[0].chunk.id, std::string("orphan1"), std::string("stale1"),
                               std::string("a.md"), std::string("b.md"), a[2].chunk.id}) {
    EXPECT_TRUE(subjects.count(s)) << s;
  }
  std::vector<VerifyProblem> capped;
  ASSERT_TRUE(store->Verify(capped, 2).ok());
  EXPECT_EQ(capped.size(), 2u);
}

// PostgreSQL only: PGlite has one backend, and terminating it ends the server.
class PostgresOnlyResumeTest : public PostgresResumeTest {};

TEST_P(PostgresOnlyResumeTest, LostConnectionsAreReplayed) {
  auto store = Open("test-model:8");
  ASSERT_TRUE(store);
  const auto chunks = FileChunks("doc.md", 0, 4);
  Write(*store, chunks);
  const std::string kill_ours =
      "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE application_name = "
      "'sluice' AND pid <> pg_backend_pid()";
  raw_->Scalar(kill_ours);
  auto deleted = store->CommitSources(std::vector<SourceManifest>{Manifest("doc.md", Ids(chunks))});
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
