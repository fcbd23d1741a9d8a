// The pipeline's source feed seam (IngestOptions::source_feed and
// on_source_done): with a fake feed, every fed source gets exactly one final
// outcome (committed, unchanged, skipped or dead-lettered), a source dropped
// by a stop gets none, and the same file may be fed twice.
#include <gtest/gtest.h>
#include <sys/stat.h>

#include <condition_variable>
#include <deque>
#include <filesystem>
#include <map>
#include <mutex>

#include "sluice/pipeline.h"
#include "testing/test_util.h"

namespace sluice {
namespace {

using testing::Paragraphs;
using testing::TempDir;
using testing::WriteFile;

// Hands out a fixed list; then, if `wait_for_stop`, blocks until the run stops.
class FakeFeed final : public SourceFeed {
 public:
  FakeFeed(std::vector<SourceFile> files, bool wait_for_stop)
      : files_(files.begin(), files.end()), wait_for_stop_(wait_for_stop) {}
  bool Next(SourceFile& file, const std::atomic<bool>& stopping) override {
    std::unique_lock lock(mu_);
    if (!files_.empty()) {
      file = files_.front();
      files_.pop_front();
      ++given_;
      return true;
    }
    while (wait_for_stop_ && !stopping) cv_.wait_for(lock, std::chrono::milliseconds(5));
    return false;
  }
  int given() const {
    std::lock_guard lock(mu_);
    return given_;
  }

 private:
  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::deque<SourceFile> files_;
  const bool wait_for_stop_;
  int given_ = 0;
};

class Outcomes {
 public:
  void Record(const std::string& id, SourceOutcome outcome, const Status& why) {
    std::lock_guard lock(mu_);
    by_id_[id].push_back(outcome);
    if (!why.ok()) errors_[id] = why.ToString();
  }
  std::map<std::string, std::vector<SourceOutcome>> by_id() const {
    std::lock_guard lock(mu_);
    return by_id_;
  }
  size_t total() const {
    std::lock_guard lock(mu_);
    size_t n = 0;
    for (const auto& [id, v] : by_id_) n += v.size();
    return n;
  }
  std::string error(const std::string& id) const {
    std::lock_guard lock(mu_);
    auto it = errors_.find(id);
    return it == errors_.end() ? "" : it->second;
  }

 private:
  mutable std::mutex mu_;
  std::map<std::string, std::vector<SourceOutcome>> by_id_;
  std::map<std::string, std::string> errors_;
};

SourceFile Fed(const TempDir& dir, const std::string& rel) {
  SourceFile f;
  f.path = dir / ("corpus/" + rel);
  f.relative_path = rel;
  f.root_name = "corpus";
  std::error_code ec;
  f.size_bytes = std::filesystem::file_size(f.path, ec);
  if (ec) f.size_bytes = 0;
  struct stat st {};
  if (::stat(f.path.c_str(), &st) == 0) {
    f.mtime_ns = static_cast<int64_t>(st.st_mtim.tv_sec) * 1000000000LL + st.st_mtim.tv_nsec;
  }
  return f;
}

IngestOptions FeedOptions(const TempDir& dir, SourceFeed& feed, Outcomes& outcomes) {
  IngestOptions o;
  o.source_feed = &feed;
  o.on_source_done = [&outcomes](const std::string& id, SourceOutcome outcome, const Status& why,
                                 uint64_t) { outcomes.Record(id, outcome, why); };
  o.embedder = EmbedderKind::kHash;
  o.hash.dimensions = 64;
  o.store_uri = "sqlite:" + (dir / "store.db");
  o.aggregate_enabled = false;
  o.dead_letter_path = dir / "out/dead-letter.jsonl";
  o.progress = false;
  o.chunker.chunk_tokens = 64;
  o.chunker.overlap_tokens = 8;
  o.reader_threads = 2;
  return o;
}

void MakeCorpus(const TempDir& dir) {
  WriteFile(dir / "corpus/manuals/a.md", "# Pumps\n\n" + Paragraphs(10, "pump"));
  WriteFile(dir / "corpus/manuals/b.txt", Paragraphs(8, "valve"));
  WriteFile(dir / "corpus/notes/empty.txt", "");
  WriteFile(dir / "corpus/notes/image.png", std::string("\x89PNG\r\n\x1a\n\x00\x00", 10));
  WriteFile(dir / "corpus/plans/broken.pdf", "%PDF-1.4\n1 0 obj << /Type /Catalog");  // truncated
}

const std::vector<std::string> kFiles = {"manuals/a.md",    "manuals/b.txt",    "notes/empty.txt",
                                         "notes/image.png", "plans/broken.pdf", "gone/vanished.md"};

std::vector<SourceFile> FeedAll(const TempDir& dir) {
  std::vector<SourceFile> files;
  for (const std::string& rel : kFiles) files.push_back(Fed(dir, rel));
  return files;
}

TEST(SourceFeedTest, EveryFedSourceGetsExactlyOneOutcome) {
  TempDir dir;
  MakeCorpus(dir);
  Outcomes first;
  FakeFeed feed(FeedAll(dir), /*wait_for_stop=*/false);
  Pipeline pipeline(FeedOptions(dir, feed, first));
  IngestReport report = pipeline.Run();
  ASSERT_TRUE(report.status.ok()) << report.status.ToString();
  EXPECT_TRUE(report.reconciled);
  EXPECT_GT(Get(pipeline.metrics().chunks_stored), 5u);
  auto got = first.by_id();
  ASSERT_EQ(got.size(), kFiles.size());
  for (const std::string& rel : kFiles) EXPECT_EQ(got[rel].size(), 1u) << rel;
  EXPECT_EQ(got["manuals/a.md"][0], SourceOutcome::kCommitted);
  EXPECT_EQ(got["manuals/b.txt"][0], SourceOutcome::kCommitted);
  EXPECT_EQ(got["notes/empty.txt"][0],
            SourceOutcome::kCommitted);  // nothing to store, fingerprinted
  EXPECT_EQ(got["notes/image.png"][0], SourceOutcome::kSkipped);
  EXPECT_EQ(got["gone/vanished.md"][0], SourceOutcome::kSkipped);
  EXPECT_EQ(got["plans/broken.pdf"][0], SourceOutcome::kDeadLettered);
  EXPECT_FALSE(first.error("plans/broken.pdf").empty());

  // Fed again: the committed ones are unchanged now; the broken one fails again.
  Outcomes second;
  FakeFeed again(FeedAll(dir), /*wait_for_stop=*/false);
  Pipeline rerun(FeedOptions(dir, again, second));
  report = rerun.Run();
  ASSERT_TRUE(report.status.ok()) << report.status.ToString();
  got = second.by_id();
  ASSERT_EQ(got.size(), kFiles.size());
  for (const std::string& rel : kFiles) EXPECT_EQ(got[rel].size(), 1u) << rel;
  EXPECT_EQ(got["manuals/a.md"][0], SourceOutcome::kUnchanged);
  EXPECT_EQ(got["notes/empty.txt"][0], SourceOutcome::kUnchanged);
  EXPECT_EQ(got["plans/broken.pdf"][0], SourceOutcome::kDeadLettered);
  EXPECT_EQ(Get(rerun.metrics().chunks_produced), 0u);
}

TEST(SourceFeedTest, TheSameFileFedTwiceGetsTwoOutcomes) {
  TempDir dir;
  MakeCorpus(dir);
  Outcomes outcomes;
  FakeFeed feed({Fed(dir, "manuals/a.md"), Fed(dir, "manuals/a.md")}, /*wait_for_stop=*/false);
  IngestOptions o = FeedOptions(dir, feed, outcomes);
  o.reader_threads = 1;  // the second is read after the first (committed or still in flight)
  Pipeline pipeline(o);
  IngestReport report = pipeline.Run();
  ASSERT_TRUE(report.status.ok()) << report.status.ToString();
  EXPECT_EQ(outcomes.by_id()["manuals/a.md"].size(), 2u);
}

TEST(SourceFeedTest, AStoppedRunReportsNoOutcomeForWhatItDidNotFinish) {
  TempDir dir;
  MakeCorpus(dir);
  for (int i = 0; i < 40; ++i) {
    WriteFile(dir / ("corpus/bulk/doc" + std::to_string(i) + ".md"),
              "# Doc\n\n" + Paragraphs(20, "bulk" + std::to_string(i)));
  }
  std::vector<SourceFile> files;
  for (int i = 0; i < 40; ++i) files.push_back(Fed(dir, "bulk/doc" + std::to_string(i) + ".md"));
  Outcomes outcomes;
  // The feed has no end: only a stop ends the run (as in a worker).
  FakeFeed feed(files, /*wait_for_stop=*/true);
  IngestOptions o = FeedOptions(dir, feed, outcomes);
  Pipeline* running = nullptr;
  o.on_source_done = [&](const std::string& id, SourceOutcome outcome, const Status& why,
                         uint64_t) {
    outcomes.Record(id, outcome, why);
    if (outcomes.total() == 3) running->RequestStop();
  };
  Pipeline pipeline(o);
  running = &pipeline;
  IngestReport report = pipeline.Run();
  EXPECT_EQ(report.status.code(), StatusCode::kCancelled) << report.status.ToString();
  EXPECT_TRUE(report.reconciled);
  auto got = outcomes.by_id();
  EXPECT_GE(got.size(), 3u);
  for (const auto& [id, v] : got) {
    EXPECT_EQ(v.size(), 1u) << id;
    EXPECT_EQ(v[0], SourceOutcome::kCommitted) << id;
  }
  EXPECT_LE(static_cast<int>(got.size()), feed.given());

  // Whatever got no outcome is redone by feeding it again.
  Outcomes rest;
  FakeFeed again(files, /*wait_for_stop=*/false);
  Pipeline rerun(FeedOptions(dir, again, rest));
  ASSERT_TRUE(rerun.Run().status.ok());
  size_t committed = 0;
  for (const auto& [id, v] : rest.by_id()) {
    ASSERT_EQ(v.size(), 1u) << id;
    if (v[0] == SourceOutcome::kCommitted) ++committed;
    if (got.count(id)) {
      EXPECT_EQ(v[0], SourceOutcome::kUnchanged) << id;
    }
  }
  EXPECT_EQ(committed + got.size(), files.size());
}

TEST(SourceFeedTest, AFeedRefusesInputsAndCleanupFull) {
  TempDir dir;
  Outcomes outcomes;
  FakeFeed feed({}, false);
  IngestOptions o = FeedOptions(dir, feed, outcomes);
  o.inputs = {dir.path()};
  EXPECT_EQ(Pipeline(o).Run().status.code(), StatusCode::kInvalidArgument);
  o.inputs.clear();
  o.cleanup = CleanupMode::kFull;
  EXPECT_EQ(Pipeline(o).Run().status.code(), StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace sluice
