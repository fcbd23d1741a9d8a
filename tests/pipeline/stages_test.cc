// Each stage driven alone: fake neighbours (queues filled and drained by the
// test, a Store that fails on cue, a recording dead-letter sink) and a
// ManualClock, so retries and backoffs run instantly and deterministically.
#include <gtest/gtest.h>

#include <time.h>

#include <chrono>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "pipeline/aggregate_stage.h"
#include "pipeline/cache_stage.h"
#include "pipeline/read_stage.h"
#include "pipeline/run_context.h"
#include "pipeline/store_stage.h"
#include "sluice/sources.h"
#include "sluice/store.h"
#include "testing/test_util.h"
#include "testing/wait.h"

namespace sluice {
namespace {

using testing::TempDir;

class RecordingDeadLetters final : public DeadLetterSink {
 public:
  void ChunkFailed(const Chunk& chunk, const Status& why) override {
    chunks.emplace_back(chunk.id, why);
  }
  void SourceFailed(const std::string& source_id, const std::string&, const Status& why) override {
    sources.emplace_back(source_id, why);
  }
  std::vector<std::pair<std::string, Status>> chunks, sources;
};

// A store that fails the next `fail_writes` writes with `failure`, refuses
// rows whose text is "reject me", and otherwise keeps what it is given.
class ScriptedStore final : public Store {
 public:
  WriteResult Write(std::span<const EmbeddedChunk> batch) override {
    ++write_calls;
    WriteResult r;
    if (fail_writes > 0) {
      --fail_writes;
      r.status = failure;
      return r;
    }
    for (size_t i = 0; i < batch.size(); ++i) {
      if (batch[i].chunk.text == "reject me") {
        r.rejected.push_back({i, Status::InvalidArgument("dimension mismatch")});
      } else {
        stored.push_back(batch[i].chunk.id);
      }
    }
    return r;
  }
  Status Flush() override { return Status::OK(); }
  Status Close() override { return Status::OK(); }
  Result<std::vector<SearchHit>> Search(std::span<const float>, int) override {
    return std::vector<SearchHit>{};
  }
  Result<StoreStats> Stats() override { return StoreStats{}; }
  std::string Describe() const override { return "scripted store"; }
  size_t RowsPerTransaction() const override { return rows_per_transaction; }

  int fail_writes = 0;
  Status failure = Status::Unavailable("server closed the connection");
  size_t rows_per_transaction = 4;
  int write_calls = 0;
  std::vector<std::string> stored;
};

EmbeddedChunk Embedded(const std::string& id, const std::string& text = "some text") {
  EmbeddedChunk e;
  e.chunk.id = id;
  e.chunk.source_id = "doc";
  e.chunk.text = text;
  e.embedding = {1.0f, 0.0f};
  e.model = "m";
  return e;
}

struct StageFixture {
  IngestOptions options;
  Metrics metrics;
  ManualClock clock;
  RunContext run{options, metrics, clock};
  RecordingDeadLetters dead;
};

// A stage's busy time leaves out what its pushes waited on a full queue
// downstream (counted as blocked), so the report's bottleneck is the stage
// that was working, not one held back.
TEST(BusyTimerTest, TimeBlockedHandingOnIsNotBusy) {
  ManualClock clock;
  StageMetrics stage;
  std::chrono::nanoseconds waited{std::chrono::seconds(1)};  // before the scope: not this one's
  {
    BusyTimer busy(clock, stage, &waited);
    clock.Advance(std::chrono::seconds(10));
    waited += std::chrono::seconds(4);
  }
  EXPECT_EQ(Get(stage.busy_ns), 6'000'000'000u);
  EXPECT_EQ(Get(stage.blocked_ns), 4'000'000'000u);
  {
    BusyTimer busy(clock, stage);  // a scope that hands nothing on
    clock.Advance(std::chrono::seconds(2));
  }
  EXPECT_EQ(Get(stage.busy_ns), 8'000'000'000u);
  EXPECT_EQ(Get(stage.blocked_ns), 4'000'000'000u);
  {
    // The queue's wait is measured on the steady clock, the scope on the run's
    // (a ManualClock here): blocked never exceeds the scope.
    BusyTimer busy(clock, stage, &waited);
    clock.Advance(std::chrono::seconds(1));
    waited += std::chrono::seconds(3);
  }
  EXPECT_EQ(Get(stage.busy_ns), 8'000'000'000u);
  EXPECT_EQ(Get(stage.blocked_ns), 5'000'000'000u);
}

// On a machine the run kept busy, every stage waits for a core and its busy
// time swells alike: the bottleneck is then the stage that used the most
// CPU. Otherwise, the stage busy the largest share of the run.
TEST(BottleneckStageTest, TheMostCpuWhenTheCoresWereBusyElseTheBusiestStage) {
  Metrics m;
  Add(m.reader.busy_ns, 7'000'000'000);  // two readers, 3.5 s each in a 4 s run
  Add(m.store.busy_ns, 2'000'000'000);
  Add(m.embedder.busy_ns, 2'200'000'000);
  Add(m.reader.cpu_ns, 900'000'000);
  Add(m.store.cpu_ns, 1'500'000'000);
  Add(m.embedder.cpu_ns, 1'900'000'000);
  bool cpu_bound = true;
  // 6.4 CPU-s in 4 s on 2 cores: 80% busy.
  EXPECT_EQ(BottleneckStage(m, 4.0, 2, 6.4, 2, &cpu_bound), "embed");
  EXPECT_TRUE(cpu_bound);
  // 5.6 CPU-s on 2 cores (70%): the busiest share decides.
  EXPECT_EQ(BottleneckStage(m, 4.0, 2, 5.6, 2, &cpu_bound), "read");
  EXPECT_FALSE(cpu_bound);
  // No stage CPU recorded (a run stopped before its threads ended): busy.
  Metrics none;
  Add(none.store.busy_ns, 1'000'000'000);
  EXPECT_EQ(BottleneckStage(none, 2.0, 1, 3.9, 2, &cpu_bound), "store");
  EXPECT_FALSE(cpu_bound);
  EXPECT_EQ(BottleneckStage(none, 0.0, 1, 0.0, 2, &cpu_bound), "");
}

// A stage thread's CPU time is added to its stage as it ends.
TEST(BottleneckStageTest, AThreadAddsItsCpuTimeToItsStage) {
  StageMetrics stage;
  std::thread worker([&] {
    // Work until the thread's own CPU clock has moved (not a wall-clock guess).
    timespec start{}, now{};
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &start);
    volatile uint64_t sink = 0;
    do {
      for (int i = 0; i < 100000; ++i) sink = sink + static_cast<uint64_t>(i);
      clock_gettime(CLOCK_THREAD_CPUTIME_ID, &now);
    } while ((now.tv_sec - start.tv_sec) * 1'000'000'000 + (now.tv_nsec - start.tv_nsec) <
             20'000'000);
    AddThreadCpuTime(stage);
  });
  worker.join();
  EXPECT_GE(Get(stage.cpu_ns), 10'000'000u);  // rusage counts in microseconds or ticks
  EXPECT_GE(UsableCores(), 1);
}

TEST(StoreStageTest, RetriesARetryableWriteOnTheRunClockAndStoresEverything) {
  StageFixture f;
  ScriptedStore store;
  store.fail_writes = 3;
  StoreStage stage(StoreStageOptions{.seed = 7}, f.run, store, f.dead);
  BoundedQueue<EmbeddedChunk> in(16), out(16);
  for (int i = 0; i < 4; ++i) ASSERT_TRUE(in.Push(Embedded("c" + std::to_string(i))));
  in.Close();
  const TimePoint before = f.clock.Now();
  stage.Run(in, &out);
  EXPECT_EQ(store.stored.size(), 4u);
  EXPECT_EQ(store.write_calls, 4);  // three failures, then the batch
  EXPECT_EQ(Get(f.metrics.store_retries), 3u);
  EXPECT_EQ(Get(f.metrics.chunks_stored), 4u);
  // Every backoff went through the clock: three waits, no real sleep.
  EXPECT_EQ(f.clock.sleeps(), 3);
  EXPECT_GT(f.clock.Now(), before);
  EXPECT_TRUE(f.run.FatalStatus().ok());
  size_t passed_on = 0;
  while (out.Pop()) ++passed_on;
  EXPECT_EQ(passed_on, 4u);  // and the output queue was closed
}

TEST(StoreStageTest, AWholeBatchFailureAbandonsInsteadOfDeadLetteringAndStopsTheRun) {
  StageFixture f;
  ScriptedStore store;
  store.fail_writes = 1;
  store.failure = Status::IOError("disk full");
  StoreStage stage(StoreStageOptions{}, f.run, store, f.dead);
  BoundedQueue<EmbeddedChunk> in(16);
  for (int i = 0; i < 6; ++i) ASSERT_TRUE(in.Push(Embedded("c" + std::to_string(i))));
  in.Close();
  stage.Run(in, nullptr);
  EXPECT_TRUE(store.stored.empty());
  EXPECT_TRUE(f.dead.chunks.empty());  // the store's fault, not the input's
  EXPECT_EQ(f.run.chunks_abandoned(), 6u);
  EXPECT_EQ(f.run.FatalStatus().code(), StatusCode::kIOError);
  EXPECT_NE(f.run.FatalStatus().message().find("scripted store"), std::string::npos);
  EXPECT_EQ(f.clock.sleeps(), 0);  // not retryable: no backoff
}

TEST(StoreStageTest, RetriesAreBoundedThenTheRunStops) {
  StageFixture f;
  ScriptedStore store;
  store.fail_writes = 1000;
  StoreStageOptions options;
  options.retry.max_attempts = 5;
  StoreStage stage(options, f.run, store, f.dead);
  BoundedQueue<EmbeddedChunk> in(16);
  ASSERT_TRUE(in.Push(Embedded("only")));
  in.Close();
  stage.Run(in, nullptr);
  EXPECT_EQ(store.write_calls, 5);
  EXPECT_EQ(f.clock.sleeps(), 4);
  EXPECT_EQ(f.run.FatalStatus().code(), StatusCode::kUnavailable);
  EXPECT_EQ(f.run.chunks_abandoned(), 1u);
}

TEST(StoreStageTest, RowsTheStoreRefusesOneByOneAreDeadLetteredTheRestStored) {
  StageFixture f;
  ScriptedStore store;
  StoreStage stage(StoreStageOptions{}, f.run, store, f.dead);
  BoundedQueue<EmbeddedChunk> in(16);
  ASSERT_TRUE(in.Push(Embedded("good1")));
  ASSERT_TRUE(in.Push(Embedded("bad", "reject me")));
  ASSERT_TRUE(in.Push(Embedded("good2")));
  in.Close();
  BoundedQueue<EmbeddedChunk> aggregate(16);
  stage.Run(in, &aggregate);
  EXPECT_EQ(store.stored, (std::vector<std::string>{"good1", "good2"}));
  // The aggregator gets the stored rows, in order, and not the refused one.
  std::vector<std::string> aggregated;
  while (auto e = aggregate.Pop()) aggregated.push_back(e->chunk.id);
  EXPECT_EQ(aggregated, (std::vector<std::string>{"good1", "good2"}));
  ASSERT_EQ(f.dead.chunks.size(), 1u);
  EXPECT_EQ(f.dead.chunks[0].first, "bad");
  EXPECT_EQ(Get(f.metrics.store.dead_lettered), 1u);
  EXPECT_TRUE(f.run.FatalStatus().ok());
}

TEST(StoreStageTest, BatchesFollowTheStoresPreferredRowsPerTransaction) {
  StageFixture f;
  ScriptedStore store;
  store.rows_per_transaction = 3;
  StoreStage stage(StoreStageOptions{}, f.run, store, f.dead);
  BoundedQueue<EmbeddedChunk> in(16);
  for (int i = 0; i < 9; ++i) ASSERT_TRUE(in.Push(Embedded("c" + std::to_string(i))));
  in.Close();
  stage.Run(in, nullptr);
  EXPECT_EQ(store.write_calls, 3);
  EXPECT_EQ(Get(f.metrics.store.items_in), 9u);
  EXPECT_EQ(Get(f.metrics.store.items_out), 9u);
}

// Rows that keep coming, too slowly to fill a batch and too often for the
// queue to go quiet, are still written once the oldest is max_batch_age old
// on the run's clock. Each row is pushed, seen taken by the stage, and only
// then is the clock moved on 400 ms: rows 0-3 span 1.2 s, so they are written
// before the end; without the rule the one write came at the end.
TEST(StoreStageTest, ABatchIsWrittenOnceItsOldestRowReachesTheMaximumAge) {
  StageFixture f;
  ScriptedStore store;
  store.rows_per_transaction = 1000;  // never full here
  StoreStageOptions options;
  options.linger = std::chrono::hours(1);  // never quiet here
  options.max_batch_age = std::chrono::seconds(1);
  StoreStage stage(options, f.run, store, f.dead);
  BoundedQueue<EmbeddedChunk> in(16);
  std::thread runner([&] { stage.Run(in, nullptr); });
  for (uint64_t i = 0; i < 6; ++i) {
    ASSERT_TRUE(in.Push(Embedded("c" + std::to_string(i))));
    ASSERT_TRUE(testing::WaitUntil([&] { return Get(f.metrics.store.items_in) == i + 1; }));
    f.clock.Advance(std::chrono::milliseconds(400));
  }
  in.Close();
  runner.join();
  EXPECT_EQ(store.stored.size(), 6u);
  EXPECT_GE(store.write_calls, 2);
  EXPECT_EQ(Get(f.metrics.chunks_stored), 6u);
}

Chunk TextChunk(const std::string& id, const std::string& text) {
  Chunk c;
  c.id = id;
  c.source_id = "doc";
  c.text = text;
  c.token_estimate = 3;
  return c;
}

TEST(CacheStageTest, WithoutACacheEveryChunkGoesToTheEmbedStage) {
  StageFixture f;
  SharedReadStore no_store(nullptr);
  CacheStage stage(CacheStageOptions{.lookup_batch = 4, .cache_namespace = "m:0"}, f.run, no_store);
  BoundedQueue<Chunk> in(16), to_embed(16);
  BoundedQueue<EmbeddedChunk> out(16);
  for (int i = 0; i < 5; ++i) ASSERT_TRUE(in.Push(TextChunk("c" + std::to_string(i), "same")));
  in.Close();
  stage.Run(in, to_embed, out);
  size_t sent = 0;
  while (to_embed.Pop()) ++sent;  // closed by the stage
  EXPECT_EQ(sent, 5u);            // no cache, so no parking of copies either
  EXPECT_EQ(stage.cache_hits(), 0u);
  EXPECT_EQ(Get(f.metrics.cache.items_in), 5u);
  EXPECT_EQ(Get(f.metrics.cache.items_out), 5u);
}

// A real SQLite store (the cache stage's second connection) that counts the
// texts it is asked to look up.
class CountingLookups final : public Store {
 public:
  explicit CountingLookups(std::unique_ptr<Store> inner) : inner_(std::move(inner)) {}
  Status LookupEmbeddings(std::string_view cache_namespace, std::span<const std::string_view> texts,
                          std::vector<CachedEmbedding>& out) override {
    for (std::string_view t : texts) looked_up.emplace_back(t);
    return inner_->LookupEmbeddings(cache_namespace, texts, out);
  }
  Result<bool> MayHoldCachedEmbeddings() override { return inner_->MayHoldCachedEmbeddings(); }
  WriteResult Write(std::span<const EmbeddedChunk> batch) override { return inner_->Write(batch); }
  Status Flush() override { return inner_->Flush(); }
  Status Close() override { return inner_->Close(); }
  Result<std::vector<SearchHit>> Search(std::span<const float> q, int k) override {
    return inner_->Search(q, k);
  }
  Result<StoreStats> Stats() override { return inner_->Stats(); }
  std::string Describe() const override { return inner_->Describe(); }

  std::vector<std::string> looked_up;

 private:
  std::unique_ptr<Store> inner_;
};

struct CacheFixture {
  TempDir dir;
  std::unique_ptr<Store> writer;
  CountingLookups* counting = nullptr;  // owned by `shared`
  std::unique_ptr<SharedReadStore> shared;

  CacheFixture() {
    StoreOptions o;
    o.embedding_cache_namespace = "m:2";
    auto w = OpenStore("sqlite:" + (dir / "store.db"), o);
    EXPECT_TRUE(w.ok()) << w.status().ToString();
    writer = std::move(*w);
    auto r = OpenStore("sqlite:" + (dir / "store.db"), StoreOptions{});
    EXPECT_TRUE(r.ok()) << r.status().ToString();
    auto wrapped = std::make_unique<CountingLookups>(std::move(*r));
    counting = wrapped.get();
    shared = std::make_unique<SharedReadStore>(std::move(wrapped));
  }
  void Put(const std::string& id, const std::string& text, std::vector<float> vector) {
    EmbeddedChunk e = Embedded(id, text);
    e.embedding = std::move(vector);
    std::vector<EmbeddedChunk> rows = {e};
    WriteResult w = writer->Write(rows);
    ASSERT_TRUE(w.status.ok()) << w.status.ToString();
    ASSERT_TRUE(w.rejected.empty());
  }
};

TEST(CacheStageTest, AnEmptyStoreIsAskedOnlyForTextsTheRunAlreadySentOn) {
  StageFixture f;
  CacheFixture cache;
  CacheStage stage(CacheStageOptions{.lookup_batch = 4, .cache_namespace = "m:2"}, f.run,
                   *cache.shared);
  BoundedQueue<Chunk> in(16), to_embed(16);
  BoundedQueue<EmbeddedChunk> out(16);
  std::thread runner([&] { stage.Run(in, to_embed, out); });
  ASSERT_TRUE(in.Push(TextChunk("c0", "alpha")));
  ASSERT_TRUE(in.Push(TextChunk("c1", "beta")));
  std::vector<std::string> sent;
  for (int i = 0; i < 2; ++i) sent.push_back(to_embed.Pop()->id);
  // New texts: nothing was looked up. The first one's vector is now stored.
  EXPECT_TRUE(cache.counting->looked_up.empty());
  cache.Put("c0", "alpha", {0.5f, 0.25f});
  ASSERT_TRUE(in.Push(TextChunk("c2", "alpha")));  // seen: looked up, and found
  ASSERT_TRUE(in.Push(TextChunk("c3", "gamma")));  // new: not looked up
  in.Close();
  std::optional<EmbeddedChunk> hit = out.Pop();
  while (auto c = to_embed.Pop()) sent.push_back(c->id);
  runner.join();
  ASSERT_TRUE(hit.has_value());
  EXPECT_EQ(hit->chunk.id, "c2");
  EXPECT_EQ(hit->embedding, (std::vector<float>{0.5f, 0.25f}));
  EXPECT_EQ(sent, (std::vector<std::string>{"c0", "c1", "c3"}));
  EXPECT_EQ(cache.counting->looked_up, (std::vector<std::string>{"alpha"}));
  EXPECT_EQ(stage.cache_hits(), 1u);
}

TEST(CacheStageTest, AStoreHoldingVectorsIsAskedForEveryText) {
  StageFixture f;
  CacheFixture cache;
  cache.Put("old", "alpha", {1.0f, 0.0f});
  CacheStage stage(CacheStageOptions{.lookup_batch = 4, .cache_namespace = "m:2"}, f.run,
                   *cache.shared);
  BoundedQueue<Chunk> in(16), to_embed(16);
  BoundedQueue<EmbeddedChunk> out(16);
  ASSERT_TRUE(in.Push(TextChunk("c0", "beta")));
  ASSERT_TRUE(in.Push(TextChunk("c1", "alpha")));
  ASSERT_TRUE(in.Push(TextChunk("c2", "beta")));  // parked behind c0
  in.Close();
  stage.Run(in, to_embed, out);
  EXPECT_EQ(cache.counting->looked_up, (std::vector<std::string>{"beta", "alpha", "beta"}));
  std::optional<EmbeddedChunk> hit = out.Pop();
  ASSERT_TRUE(hit.has_value());
  EXPECT_EQ(hit->chunk.id, "c1");
  EXPECT_EQ(to_embed.Pop()->id, "c0");
  EXPECT_FALSE(to_embed.Pop().has_value());
  EXPECT_EQ(stage.cache_hits(), 2u);  // the hit and the parked copy
  EXPECT_EQ(f.run.inflight().parked(), 1u);
}

TEST(CacheStageTest, AStopAbandonsWhatItTakesInsteadOfPassingItOn) {
  StageFixture f;
  SharedReadStore no_store(nullptr);
  CacheStage stage(CacheStageOptions{}, f.run, no_store);
  BoundedQueue<Chunk> in(16), to_embed(16);
  BoundedQueue<EmbeddedChunk> out(16);
  for (int i = 0; i < 3; ++i) ASSERT_TRUE(in.Push(TextChunk("c" + std::to_string(i), "t")));
  in.Close();
  f.run.RequestStop();
  stage.Run(in, to_embed, out);
  EXPECT_FALSE(to_embed.Pop().has_value());
  EXPECT_EQ(f.run.chunks_abandoned(), 3u);
}

TEST(ReadStageTest, ParsesAndChunksEachFileAndSkipsUnsupportedOnes) {
  TempDir dir;
  testing::WriteFile(dir / "a.md", "# Title\n\nSome words about a topic.\n");
  testing::WriteFile(dir / "b.bin", std::string(256, '\0'));
  StageFixture f;
  ParserRegistry registry;
  RegisterTextParsers(registry);
  Router router;
  std::unordered_map<std::string, SourceFingerprint> none;
  ReadStage stage(ReadStageOptions{}, f.run, f.dead, registry, nullptr, router, none, nullptr);
  BoundedQueue<SourceFile> files(4);
  BoundedQueue<Chunk> chunks(64);
  for (const char* name : {"a.md", "b.bin"}) {
    SourceFile file;
    file.path = dir / name;
    file.relative_path = name;
    file.size_bytes = std::filesystem::file_size(file.path);
    ASSERT_TRUE(files.Push(std::move(file)));
  }
  files.Close();
  stage.Run(files, chunks);
  std::vector<Chunk> out;
  while (auto c = chunks.Pop()) out.push_back(std::move(*c));
  ASSERT_FALSE(out.empty());
  EXPECT_EQ(out[0].source_id, "a.md");
  EXPECT_EQ(Get(f.metrics.chunks_produced), out.size());
  EXPECT_EQ(Get(f.metrics.reader.items_in), 2u);
  EXPECT_EQ(Get(f.metrics.reader.items_out), out.size());
  const auto formats = f.metrics.parse_times.Snapshot();
  ASSERT_EQ(formats.size(), 1u);  // the binary file never reached a parser
  EXPECT_EQ(formats.begin()->second.files, 1u);
  EXPECT_GT(formats.begin()->second.bytes, 0u);
  // The binary file is left out with a reason, never parsed into chunks.
  EXPECT_EQ(Get(f.metrics.sources_skipped), 1u) << f.dead.sources.size() << " dead-lettered";
  EXPECT_EQ(f.run.SkippedReasons().size(), 1u);
}

TEST(ReadStageTest, AnUnchangedFileIsNotOpenedAndIsOfferedForReplay) {
  TempDir dir;
  testing::WriteFile(dir / "a.txt", "hello there\n");
  StageFixture f;
  ParserRegistry registry;
  RegisterTextParsers(registry);
  Router router;
  SourceFile file;
  file.path = dir / "a.txt";
  file.relative_path = "a.txt";
  file.size_bytes = 12;
  file.mtime_ns = 42;
  std::unordered_map<std::string, SourceFingerprint> known;
  known["a.txt"].file_id = "a.txt";
  known["a.txt"].size_bytes = 12;
  known["a.txt"].mtime_ns = 42;
  std::vector<std::string> replayed;
  ReadStage stage(ReadStageOptions{.resume = true}, f.run, f.dead, registry, nullptr, router, known,
                  [&](const std::string& id) { replayed.push_back(id); });
  BoundedQueue<SourceFile> files(4);
  BoundedQueue<Chunk> chunks(64);
  ASSERT_TRUE(files.Push(std::move(file)));
  files.Close();
  stage.Run(files, chunks);
  EXPECT_FALSE(chunks.Pop().has_value());
  EXPECT_EQ(stage.sources_unchanged(), 1u);
  EXPECT_EQ(stage.bytes_unchanged(), 12u);
  EXPECT_EQ(replayed, (std::vector<std::string>{"a.txt"}));
  EXPECT_TRUE(stage.Saw("a.txt"));
}

TEST(AggregateStageTest, WritesOneFilePerDomainAndCategoryAndDrainsAfterAFailure) {
  TempDir dir;
  StageFixture f;
  AggregatorOptions options;
  options.out_dir = dir / "out";
  auto aggregator = OpenAggregator(options);
  ASSERT_TRUE(aggregator.ok()) << aggregator.status().ToString();
  SharedReadStore no_store(nullptr);
  BoundedQueue<EmbeddedChunk> in(16);
  AggregateStage stage(f.run, **aggregator, in, no_store, /*replay=*/false);
  for (int i = 0; i < 3; ++i) {
    EmbeddedChunk e = Embedded("c" + std::to_string(i));
    e.chunk.domain = "manuals";
    e.chunk.category = "pumps";
    ASSERT_TRUE(in.Push(std::move(e)));
  }
  in.Close();
  stage.Run();
  EXPECT_FALSE(stage.failed());
  EXPECT_EQ(Get(f.metrics.aggregator.items_in), 3u);
  EXPECT_EQ(Get(f.metrics.aggregate_files_written), 1u);
  EXPECT_TRUE(std::filesystem::exists(dir / "out/manuals/pumps.json"));
}

TEST(RunContextTest, TheFirstFailureWinsAndReachesTheStopListener) {
  IngestOptions options;
  Metrics metrics;
  ManualClock clock;
  RunContext run(options, metrics, clock);
  int stops = 0;
  run.SetStopListener([&] { ++stops; });
  run.Fail(Status::Unavailable("first"));
  run.Fail(Status::IOError("second"));
  EXPECT_TRUE(run.stopping());
  EXPECT_EQ(run.FatalStatus().message(), "first");
  EXPECT_EQ(stops, 2);
  run.SetStopListener({});
  run.RequestStop();  // no listener any more: nothing called
  EXPECT_EQ(stops, 2);
}

}  // namespace
}  // namespace sluice
