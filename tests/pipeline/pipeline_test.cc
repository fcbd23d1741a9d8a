// Pipeline tests with the offline hash embedder and a real SQLite store:
// accounting, idempotent reruns, skipped/failed sources, backpressure with
// tiny queues, fatal errors, stop requests. Also built under TSan.
#include "sluice/pipeline.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <mutex>
#include <set>
#include <thread>

#include "pipeline/dead_letter_file.h"
#include "sluice/mock_api.h"
#include "store/sqlite/sqlite_store.h"
#include "testing/test_util.h"
#include "testing/wait.h"

namespace sluice {
namespace {

using testing::Paragraphs;
using testing::ReadFile;
using testing::TempDir;
using testing::WriteFile;

IngestOptions BaseOptions(const TempDir& dir) {
  IngestOptions o;
  o.inputs = {dir / "corpus"};
  o.embedder = EmbedderKind::kHash;
  o.hash.dimensions = 64;
  o.store_uri = "sqlite:" + (dir / "store.db");
  o.aggregate.out_dir = dir / "out";
  o.dead_letter_path = dir / "out/dead-letter.jsonl";
  o.progress = false;
  o.chunker.chunk_tokens = 64;
  o.chunker.overlap_tokens = 8;
  o.reader_threads = 2;
  return o;
}

void MakeCorpus(const TempDir& dir) {
  WriteFile(dir / "corpus/manuals/pumps/a.md", "# Pumps\n\n" + Paragraphs(10, "pump"));
  WriteFile(dir / "corpus/manuals/valves/b.txt", Paragraphs(8, "valve"));
  WriteFile(dir / "corpus/notes/c.md",
            "---\ntitle: Notes\n---\n# Notes\n\n" + Paragraphs(3, "note"));
  WriteFile(dir / "corpus/notes/empty.txt", "");
  WriteFile(dir / "corpus/notes/blob.bin", std::string("\x00\x01\x02binary\x00", 10));
  WriteFile(dir / "corpus/notes/image.png", std::string("\x89PNG\r\n\x1a\n\x00\x00", 10));
}

uint64_t StoredChunks(const std::string& db) {
  auto store = SqliteStore::Open(db, SqliteStoreOptions{});
  EXPECT_TRUE(store.ok()) << store.status().ToString();
  if (!store.ok()) return 0;
  auto stats = (*store)->Stats();
  return stats.ok() ? stats->chunks : 0;
}

TEST(PipelineTest, IngestsCorpusAndReconciles) {
  TempDir dir;
  MakeCorpus(dir);
  Pipeline pipeline(BaseOptions(dir));
  IngestReport report = pipeline.Run();
  ASSERT_TRUE(report.status.ok()) << report.status.ToString();
  const Metrics& m = pipeline.metrics();
  EXPECT_TRUE(report.reconciled);
  EXPECT_EQ(Get(m.sources_ok), 3u);
  EXPECT_GE(Get(m.sources_skipped), 2u);  // empty + binary/unsupported
  EXPECT_GT(Get(m.chunks_produced), 10u);
  EXPECT_EQ(Get(m.chunks_stored), Get(m.chunks_produced));
  EXPECT_EQ(Get(m.chunks_dead_lettered), 0u);
  EXPECT_EQ(StoredChunks(dir / "store.db"), Get(m.chunks_stored));
  // Default routing: domain = first folder, category = second (or "general").
  EXPECT_TRUE(std::filesystem::exists(dir / "out/manuals/pumps.json"));
  EXPECT_TRUE(std::filesystem::exists(dir / "out/notes/general.json"));
  // A clean run leaves no dead-letter file.
  EXPECT_FALSE(std::filesystem::exists(dir / "out/dead-letter.jsonl"));

  const std::string json = FormatReportJson(report, m);
  for (const char* key :
       {"sources_ok", "sources_skipped", "chunks_produced", "chunks_stored", "chunks_dead_lettered",
        "requests", "retries", "rate_limited", "elapsed_s", "chunks_per_s"}) {
    EXPECT_NE(json.find(std::string("\"") + key + "\":"), std::string::npos) << key;
  }
}

// Issue 13: the library's callbacks. on_progress runs on the pipeline's
// progress thread and ends with one final call holding the final counts;
// on_complete runs once on the caller's thread with the report Run() returns.
TEST(PipelineTest, ProgressAndCompletionCallbacks) {
  TempDir dir;
  MakeCorpus(dir);
  IngestOptions o = BaseOptions(dir);
  std::mutex mu;
  std::vector<IngestProgress> calls;
  std::set<std::thread::id> progress_threads;
  o.progress_callback_interval = std::chrono::milliseconds(1);
  o.on_progress = [&](const IngestProgress& p) {
    std::lock_guard lock(mu);
    calls.push_back(p);
    progress_threads.insert(std::this_thread::get_id());
  };
  int completions = 0;
  std::thread::id completion_thread;
  uint64_t completed_stored = 0;
  Pipeline* running = nullptr;
  o.on_complete = [&](const IngestReport& report) {
    ++completions;
    completion_thread = std::this_thread::get_id();
    EXPECT_TRUE(report.status.ok());
    completed_stored = Get(running->metrics().chunks_stored);  // final when it is called
  };
  Pipeline pipeline(o);
  running = &pipeline;
  IngestReport report = pipeline.Run();
  ASSERT_TRUE(report.status.ok()) << report.status.ToString();
  const uint64_t stored = Get(pipeline.metrics().chunks_stored);
  EXPECT_EQ(completions, 1);
  EXPECT_EQ(completion_thread, std::this_thread::get_id());
  EXPECT_EQ(completed_stored, stored);
  std::lock_guard lock(mu);
  ASSERT_FALSE(calls.empty());
  EXPECT_TRUE(calls.back().final);
  EXPECT_EQ(calls.back().chunks_stored, stored);
  EXPECT_EQ(calls.back().chunks_produced, Get(pipeline.metrics().chunks_produced));
  EXPECT_EQ(std::count_if(calls.begin(), calls.end(), [](const auto& c) { return c.final; }), 1);
  for (size_t i = 1; i < calls.size(); ++i) {
    EXPECT_GE(calls[i].chunks_stored, calls[i - 1].chunks_stored);  // counts only grow
  }
  EXPECT_EQ(progress_threads.count(std::this_thread::get_id()), 0u);
}

TEST(PipelineTest, CompletionCallbackRunsAfterAFailedRunToo) {
  TempDir dir;
  MakeCorpus(dir);
  IngestOptions o = BaseOptions(dir);
  o.store_uri = "sqlite:" + (dir / "no/such/dir/store.db");
  std::vector<StatusCode> seen;
  o.on_complete = [&](const IngestReport& report) { seen.push_back(report.status.code()); };
  Pipeline pipeline(o);
  const IngestReport report = pipeline.Run();
  ASSERT_FALSE(report.status.ok());
  EXPECT_EQ(seen, std::vector<StatusCode>{report.status.code()});
  o = BaseOptions(dir);
  o.on_progress = [](const IngestProgress&) {};
  o.progress_callback_interval = Duration::zero();
  EXPECT_EQ(Pipeline(o).Run().status.code(), StatusCode::kInvalidArgument);
}

TEST(PipelineTest, RerunDoesNotDuplicate) {
  TempDir dir;
  MakeCorpus(dir);
  uint64_t first = 0;
  {
    Pipeline pipeline(BaseOptions(dir));
    ASSERT_TRUE(pipeline.Run().status.ok());
    first = Get(pipeline.metrics().chunks_stored);
  }
  Pipeline again(BaseOptions(dir));
  ASSERT_TRUE(again.Run().status.ok());
  EXPECT_EQ(StoredChunks(dir / "store.db"), first);
}

TEST(PipelineTest, TinyQueuesStillDrainEverything) {
  TempDir dir;
  MakeCorpus(dir);
  IngestOptions o = BaseOptions(dir);
  o.queue_capacity = 1;
  o.store.batch_rows = 3;
  o.embed.batch_size = 2;
  Pipeline pipeline(o);
  IngestReport report = pipeline.Run();
  ASSERT_TRUE(report.status.ok()) << report.status.ToString();
  EXPECT_TRUE(report.reconciled);
  // The queues on either side of the store also hold one store write (3 rows).
  for (const auto& [queue, high] : report.queue_high_water) {
    EXPECT_LE(high, queue == "vectors" || queue == "aggregate" ? 1u + 3u : 1u) << queue;
  }
  EXPECT_EQ(StoredChunks(dir / "store.db"), Get(pipeline.metrics().chunks_produced));
}

TEST(PipelineTest, StoreInMissingDirectoryFailsFastWithClearMessage) {
  TempDir dir;
  MakeCorpus(dir);
  IngestOptions o = BaseOptions(dir);
  o.store_uri = "sqlite:" + (dir / "no/such/dir/store.db");
  Pipeline pipeline(o);
  IngestReport report = pipeline.Run();
  EXPECT_FALSE(report.status.ok());
  EXPECT_NE(report.status.message().find("does not exist"), std::string::npos)
      << report.status.message();
  EXPECT_EQ(Get(pipeline.metrics().chunks_produced), 0u);
}

TEST(PipelineTest, MissingInputAndBadOptionsAreClearErrors) {
  TempDir dir;
  IngestOptions o = BaseOptions(dir);
  o.inputs = {dir / "nope"};
  EXPECT_NE(Pipeline(o).Run().status.message().find("does not exist"), std::string::npos);
  o = BaseOptions(dir);
  o.chunker.overlap_tokens = o.chunker.chunk_tokens;
  EXPECT_EQ(Pipeline(o).Run().status.code(), StatusCode::kInvalidArgument);
}

TEST(PipelineTest, UnwritableOutputFolderFailsFast) {
  TempDir dir;
  MakeCorpus(dir);
  WriteFile(dir / "a-file", "x");
  IngestOptions o = BaseOptions(dir);
  o.aggregate.out_dir = dir / "a-file/sub";  // a folder under a regular file cannot exist
  Pipeline pipeline(o);
  IngestReport report = pipeline.Run();
  EXPECT_FALSE(report.status.ok());
  EXPECT_EQ(Get(pipeline.metrics().chunks_produced), 0u);
}

TEST(PipelineTest, MalformedJsonlRecordsAreDeadLetteredAndTheRestStored) {
  TempDir dir;
  WriteFile(dir / "corpus/records.jsonl",
            "{\"id\":\"r1\",\"text\":\"first record text\",\"domain\":\"d\",\"category\":\"c\"}\n"
            "{not json\n"
            "{\"id\":\"r2\",\"text\":\"second record text\"}\n");
  Pipeline pipeline(BaseOptions(dir));
  IngestReport report = pipeline.Run();
  EXPECT_TRUE(report.reconciled);
  EXPECT_EQ(Get(pipeline.metrics().chunks_stored), 2u);
  const std::string dead = ReadFile(dir / "out/dead-letter.jsonl");
  EXPECT_NE(dead.find("\"kind\":\"source\""), std::string::npos) << dead;
  EXPECT_NE(dead.find("corrupt"), std::string::npos) << dead;
}

TEST(PipelineTest, RequestStopEndsPromptlyAndReconciles) {
  TempDir dir;
  constexpr int kFiles = 200;
  for (int i = 0; i < kFiles; ++i) {
    WriteFile(dir / ("corpus/bulk/f" + std::to_string(i) + ".txt"), Paragraphs(20, "bulk"));
  }
  // A slow service (one 20 ms request at a time) makes the whole run take
  // many seconds, so a stop that does nothing cannot pass: the run would
  // complete every file.
  MockApiOptions mock;
  mock.dimensions = 16;
  mock.base_latency = std::chrono::milliseconds(20);
  auto server = MockApiServer::Start(mock);
  ASSERT_TRUE(server.ok()) << server.status().ToString();
  IngestOptions o = BaseOptions(dir);
  o.embedder = EmbedderKind::kHttp;
  o.http.endpoint = (*server)->BaseUrl();
  o.http.model = "mock";
  o.concurrency = 1;
  o.embed.batch_size = 4;
  o.queue_capacity = 4;
  Pipeline pipeline(o);
  std::atomic<bool> run_returned{false};
  std::thread stopper([&] {
    // Stop once the run is provably under way: a chunk has been stored.
    // (Polled, not spun: a spinning thread takes a core from the run.)
    testing::WaitUntil(
        [&] { return Get(pipeline.metrics().chunks_stored) > 0 || run_returned.load(); });
    pipeline.RequestStop();
  });
  IngestReport report = pipeline.Run();
  run_returned = true;
  stopper.join();
  EXPECT_TRUE(report.reconciled);
  EXPECT_GT(Get(pipeline.metrics().chunks_stored), 0u);
  EXPECT_LT(report.sources_completed, static_cast<uint64_t>(kFiles));  // it really stopped
  EXPECT_LT((*server)->Stats().requests, 200u);
  EXPECT_EQ(StoredChunks(dir / "store.db"), Get(pipeline.metrics().chunks_stored));
}

TEST(DeadLetterFileTest, WritesJsonLinesAndCountsReasons) {
  TempDir dir;
  Metrics metrics;
  auto dead = DeadLetterFile::Open(dir / "dl/dead.jsonl", metrics);
  ASSERT_TRUE(dead.ok()) << dead.status().ToString();
  Chunk c;
  c.id = "abc";
  c.source_id = "s.md";
  c.text = "line \"quoted\"\n";
  (*dead)->ChunkFailed(c, Status::RateLimited("429 after 8 attempts"));
  (*dead)->SourceFailed("bad.pdf", "/x/bad.pdf", Status::Corrupt("not a PDF"));
  ASSERT_TRUE((*dead)->Close().ok());
  const std::string text = ReadFile(dir / "dl/dead.jsonl");
  EXPECT_NE(text.find("\"reason\":\"rate_limited\""), std::string::npos);
  EXPECT_NE(text.find("\"text\":\"line \\\"quoted\\\"\\n\""), std::string::npos);
  EXPECT_NE(text.find("\"kind\":\"source\",\"reason\":\"corrupt\""), std::string::npos);
  EXPECT_EQ(Get(metrics.chunks_dead_lettered), 1u);
  EXPECT_EQ(Get(metrics.sources_failed), 1u);
  EXPECT_EQ((*dead)->ReasonCounts().at("rate_limited"), 1u);
}

TEST(DeadLetterFileTest, UnwritablePathFailsAtOpen) {
  TempDir dir;
  WriteFile(dir / "file", "x");
  Metrics metrics;
  EXPECT_FALSE(DeadLetterFile::Open(dir / "file/dead.jsonl", metrics).ok());
}

}  // namespace
}  // namespace sluice
