// --cleanup full and the aggregate JSON files, through the real pipeline
// (offline hash embedder, SQLite store): after the run, the output folder
// holds no chunk of a file gone from the roots and is byte for byte what a
// fresh ingest of the remaining corpus into an empty store and folder writes
// -- also when an earlier run died after deleting the store rows and before
// rewriting the aggregate (docs/AGGREGATE_FORMAT.md, "Removal").
#include <gtest/gtest.h>

#include <filesystem>
#include <map>
#include <string>
#include <vector>

#include "sluice/pipeline.h"
#include "sluice/store.h"
#include "testing/test_util.h"

namespace sluice {
namespace {

namespace fs = std::filesystem;
using testing::Paragraphs;
using testing::ReadFile;
using testing::TempDir;
using testing::WriteFile;

// A JSON Lines record whose text makes several chunks.
std::string Record(const std::string& id, const std::string& word) {
  std::string text;
  for (int i = 0; i < 3; ++i) {
    text += "Record " + id + " part " + std::to_string(i) + ".";
    for (int j = 0; j < 30; ++j) text += " " + word + std::to_string(j);
    text += "\\n\\n";
  }
  return R"({"id":")" + id + R"(","text":")" + text + "\"}\n";
}

// Every entry under an output folder: folders as "name/", files with their
// bytes.
std::map<std::string, std::string> Tree(const std::string& root) {
  std::map<std::string, std::string> out;
  for (const auto& e : fs::recursive_directory_iterator(root)) {
    const std::string name = fs::relative(e.path(), root).string();
    if (e.is_directory()) {
      out[name + "/"] = "";
    } else {
      out[name] = ReadFile(e.path().string());
    }
  }
  return out;
}

// How many chunks of `source_id` the aggregate files under `root` hold.
size_t ChunksOf(const std::string& root, const std::string& source_id) {
  size_t n = 0;
  const std::string needle = "\"source_id\":\"" + source_id + "\"";
  for (const auto& [name, content] : Tree(root)) {
    for (size_t at = content.find(needle); at != std::string::npos;
         at = content.find(needle, at + 1)) {
      ++n;
    }
  }
  return n;
}

class AggregateCleanupTest : public ::testing::Test {
 protected:
  IngestOptions Options(const std::string& db = "store", const std::string& out = "out") {
    IngestOptions o;
    o.inputs = {dir_ / "corpus"};
    o.embedder = EmbedderKind::kHash;
    o.hash.dimensions = 32;
    o.store_uri = "sqlite:" + (dir_ / (db + ".db"));
    o.aggregate.out_dir = dir_ / out;
    o.dead_letter_path = dir_ / (out + "-dead-letter.jsonl");  // outside the compared folder
    o.progress = false;
    o.chunker.chunk_tokens = 64;
    o.chunker.overlap_tokens = 0;
    o.reader_threads = 2;
    o.embed.batch_size = 4;
    return o;
  }
  static IngestReport Ingest(const IngestOptions& o) {
    Pipeline p(o);
    return p.Run();
  }
  static IngestOptions Full(IngestOptions o) {
    o.cleanup = CleanupMode::kFull;
    return o;
  }
  void MakeCorpus() {
    WriteFile(dir_ / "corpus/manuals/a.md", "# Pumps\n\n" + Paragraphs(6, "pump"));
    WriteFile(dir_ / "corpus/manuals/b.txt", Paragraphs(6, "valve"));
    WriteFile(dir_ / "corpus/notes/c.md", "# Notes\n\n" + Paragraphs(3, "note"));
  }
  // A fresh ingest of what corpus/ holds now, into an empty store and folder.
  std::map<std::string, std::string> FreshTree(const std::string& name) {
    const IngestReport r = Ingest(Options(name, name + "-out"));
    EXPECT_TRUE(r.status.ok()) << r.status.ToString();
    return Tree(dir_ / (name + "-out"));
  }
  // The store rows of `file_ids` deleted, nothing else: what a run that died
  // between DeleteSources and the aggregate rewrite leaves.
  void DeleteFromStoreOnly(const std::vector<std::string>& file_ids) {
    auto store = OpenStore(Options().store_uri, StoreOptions{});
    ASSERT_TRUE(store.ok()) << store.status().ToString();
    auto deleted = (*store)->DeleteSources(file_ids);
    ASSERT_TRUE(deleted.ok()) << deleted.status().ToString();
    EXPECT_GT(*deleted, 0u);
    ASSERT_TRUE((*store)->Close().ok());
  }

  TempDir dir_;
};

TEST_F(AggregateCleanupTest, DeletedFileLeavesTheAggregateAsAFreshIngestWritesIt) {
  // b.txt shares its group with a.md (the file is rewritten); c.md is alone
  // in its group (the file and its folder go).
  MakeCorpus();
  ASSERT_TRUE(Ingest(Options()).status.ok());
  ASSERT_GT(ChunksOf(dir_ / "out", "manuals/b.txt"), 0u);
  ASSERT_TRUE(fs::exists(dir_ / "out/notes/general.json"));
  fs::remove(dir_ / "corpus/manuals/b.txt");
  fs::remove(dir_ / "corpus/notes/c.md");

  // incremental (the default) keeps a deleted file's chunks, in the store
  // and in the aggregate alike.
  ASSERT_TRUE(Ingest(Options()).status.ok());
  EXPECT_GT(ChunksOf(dir_ / "out", "manuals/b.txt"), 0u);

  const IngestReport r = Ingest(Full(Options()));
  ASSERT_TRUE(r.status.ok()) << r.status.ToString();
  EXPECT_EQ(r.sources_deleted, 2u);
  EXPECT_EQ(ChunksOf(dir_ / "out", "manuals/b.txt"), 0u);
  EXPECT_EQ(ChunksOf(dir_ / "out", "notes/c.md"), 0u);
  EXPECT_GT(ChunksOf(dir_ / "out", "manuals/a.md"), 0u);
  EXPECT_FALSE(fs::exists(dir_ / "out/notes"));
  EXPECT_EQ(Tree(dir_ / "out"), FreshTree("fresh"));

  // A second full run has nothing left to do and changes nothing.
  const auto before = Tree(dir_ / "out");
  const IngestReport again = Ingest(Full(Options()));
  ASSERT_TRUE(again.status.ok());
  EXPECT_EQ(again.sources_deleted, 0u);
  EXPECT_EQ(Tree(dir_ / "out"), before);
}

// A file whose front matter moves it to another domain: with the default
// cleanup its chunks leave the old group's file (no duplicate across groups),
// and the output folder is what a fresh ingest writes.
TEST_F(AggregateCleanupTest, FileMovedToAnotherDomainLeavesItsOldGroup) {
  MakeCorpus();
  WriteFile(dir_ / "corpus/notes/d.md",
            "---\ndomain: alpha\ncategory: one\n---\n# D\n\n" + Paragraphs(2, "delta"));
  ASSERT_TRUE(Ingest(Options()).status.ok());
  ASSERT_TRUE(fs::exists(dir_ / "out/alpha/one.json"));
  WriteFile(dir_ / "corpus/notes/d.md",
            "---\ndomain: beta\ncategory: one\n---\n# D\n\n" + Paragraphs(2, "delta"));
  const IngestReport r = Ingest(Options());
  ASSERT_TRUE(r.status.ok()) << r.status.ToString();
  EXPECT_EQ(r.sources_unchanged, 3u);
  EXPECT_FALSE(fs::exists(dir_ / "out/alpha"));
  EXPECT_GT(ChunksOf(dir_ / "out", "notes/d.md"), 0u);
  EXPECT_EQ(Tree(dir_ / "out"), FreshTree("fresh"));
}

TEST_F(AggregateCleanupTest, RunThatDiedBetweenStoreDeletionAndAggregateRewriteIsCompleted) {
  // The store no longer lists c.md, so the next run's DeleteSources does not
  // name it; the aggregate still holds its chunks. With the marker such a
  // death leaves (the next run replays unchanged files) and without it.
  for (const bool marker : {true, false}) {
    SCOPED_TRACE(marker ? "with .sluice-incomplete" : "without marker");
    fs::remove_all(dir_.path());
    fs::create_directories(dir_.path());
    MakeCorpus();
    ASSERT_TRUE(Ingest(Options()).status.ok());
    fs::remove(dir_ / "corpus/notes/c.md");
    DeleteFromStoreOnly({"notes/c.md"});
    if (marker) WriteFile(dir_ / "out/.sluice-incomplete", "");
    ASSERT_GT(ChunksOf(dir_ / "out", "notes/c.md"), 0u);

    const IngestReport r = Ingest(Full(Options()));
    ASSERT_TRUE(r.status.ok()) << r.status.ToString();
    EXPECT_EQ(r.sources_deleted, 0u);  // the store had nothing left to delete
    EXPECT_EQ(ChunksOf(dir_ / "out", "notes/c.md"), 0u);
    EXPECT_FALSE(fs::exists(dir_ / "out/.sluice-incomplete"));
    EXPECT_EQ(Tree(dir_ / "out"), FreshTree("fresh"));
  }
}

TEST_F(AggregateCleanupTest, JsonlRecordsOfADeletedOrEditedFileGoToo) {
  // Records have source ids "<file>#<id>".
  MakeCorpus();
  WriteFile(dir_ / "corpus/feed/records.jsonl",
            Record("r-1", "alpha") + Record("r-2", "beta") + Record("r-3", "gamma"));
  WriteFile(dir_ / "corpus/feed/more.jsonl", Record("m-1", "delta") + Record("m-2", "omega"));
  ASSERT_TRUE(Ingest(Options()).status.ok());
  ASSERT_GT(ChunksOf(dir_ / "out", "feed/records.jsonl#r-2"), 0u);
  ASSERT_GT(ChunksOf(dir_ / "out", "feed/more.jsonl#m-1"), 0u);

  // records.jsonl loses a record (an edit; its stale chunks leave the store
  // but not the aggregate before the full run); more.jsonl is deleted.
  WriteFile(dir_ / "corpus/feed/records.jsonl", Record("r-1", "alpha") + Record("r-3", "gamma"));
  fs::remove(dir_ / "corpus/feed/more.jsonl");
  const IngestReport r = Ingest(Full(Options()));
  ASSERT_TRUE(r.status.ok()) << r.status.ToString();
  EXPECT_EQ(r.sources_deleted, 1u);
  EXPECT_EQ(ChunksOf(dir_ / "out", "feed/records.jsonl#r-2"), 0u);
  EXPECT_EQ(ChunksOf(dir_ / "out", "feed/more.jsonl#m-1"), 0u);
  EXPECT_EQ(ChunksOf(dir_ / "out", "feed/more.jsonl#m-2"), 0u);
  EXPECT_GT(ChunksOf(dir_ / "out", "feed/records.jsonl#r-1"), 0u);
  EXPECT_EQ(Tree(dir_ / "out"), FreshTree("fresh"));

  // A JSONL file whose store rows a dead run deleted.
  fs::remove(dir_ / "corpus/feed/records.jsonl");
  DeleteFromStoreOnly({"feed/records.jsonl"});
  const IngestReport after_death = Ingest(Full(Options()));
  ASSERT_TRUE(after_death.status.ok()) << after_death.status.ToString();
  EXPECT_EQ(ChunksOf(dir_ / "out", "feed/records.jsonl#r-1"), 0u);
  EXPECT_EQ(ChunksOf(dir_ / "out", "feed/records.jsonl#r-3"), 0u);
  EXPECT_EQ(Tree(dir_ / "out"), FreshTree("fresh2"));
}

TEST_F(AggregateCleanupTest, FilesOutsideTheGivenRootsKeepTheirChunks) {
  // Like the store: --cleanup full never deletes outside the given roots.
  MakeCorpus();
  WriteFile(dir_ / "other/x.md", "# Other\n\n" + Paragraphs(2, "other"));
  IngestOptions both = Options();
  both.inputs = {dir_ / "corpus", dir_ / "other"};
  ASSERT_TRUE(Ingest(both).status.ok());
  const auto before = Tree(dir_ / "out");
  ASSERT_GT(ChunksOf(dir_ / "out", "x.md"), 0u);

  const IngestReport r = Ingest(Full(Options()));  // corpus/ only
  ASSERT_TRUE(r.status.ok()) << r.status.ToString();
  EXPECT_EQ(r.sources_deleted, 0u);
  EXPECT_EQ(Tree(dir_ / "out"), before);
}

TEST_F(AggregateCleanupTest, StoppedRunDropsNothing) {
  // A stop means an incomplete walk: nothing is deleted, from the store or
  // from the aggregate.
  MakeCorpus();
  ASSERT_TRUE(Ingest(Options()).status.ok());
  fs::remove(dir_ / "corpus/notes/c.md");
  const auto before = Tree(dir_ / "out");
  IngestOptions o = Full(Options());
  Pipeline p(o);
  p.RequestStop();
  const IngestReport r = p.Run();
  EXPECT_EQ(r.status.code(), StatusCode::kCancelled) << r.status.ToString();
  EXPECT_EQ(r.sources_deleted, 0u);
  EXPECT_GT(ChunksOf(dir_ / "out", "notes/c.md"), 0u);
  auto after = Tree(dir_ / "out");
  after.erase(".sluice-incomplete");  // a stopped run may leave its marker
  EXPECT_EQ(after, before);
}

}  // namespace
}  // namespace sluice
