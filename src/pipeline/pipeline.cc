// The ingest orchestrator: opens what the run needs (run_resources.h), builds
// the stages, runs each on its own thread(s) joined by bounded queues, joins
// them and reconciles the counts. Each stage is a class in its own file:
//
//   walker (1 thread)  -> [file queue]   -> ReadStage (N threads)  -> [chunk queue]
//   -> CacheStage (1)  -> [embed queue]  -> EmbedStage (1, many requests in flight)
//   -> [vector queue]  -> StoreStage (1) -> [aggregate queue] -> AggregateStage (1)
//
// Shutdown: each stage closes its output queue when its input has ended, so
// the pipeline drains front to back. A fatal error stops intake at once
// (RunContext::Fail); chunks already taken are stored, dead-lettered or
// counted abandoned, never dropped, so the accounting invariant holds even then.
#include "sluice/pipeline.h"

#include <algorithm>
#include <filesystem>
#include <map>
#include <optional>
#include <thread>
#include <unordered_set>
#include <vector>

#include <spdlog/spdlog.h>

#include "common/thread_name.h"
#include "pipeline/aggregate_stage.h"
#include "pipeline/cache_stage.h"
#include "pipeline/control_wiring.h"
#include "pipeline/full_cleanup.h"
#include "pipeline/progress.h"
#include "pipeline/read_stage.h"
#include "pipeline/run_context.h"
#include "pipeline/run_resources.h"
#include "pipeline/store_stage.h"
#include "sluice/queue.h"

namespace sluice {

namespace {

size_t ChunkBytes(const Chunk& c) { return c.text.size() + c.metadata_json.size() + 128; }
size_t EmbeddedBytes(const EmbeddedChunk& c) {
  return ChunkBytes(c.chunk) + c.embedding.size() * sizeof(float);
}

Status Validate(const IngestOptions& o) {
  if (o.source_feed != nullptr) {
    if (!o.inputs.empty()) return Status::InvalidArgument("a source feed replaces the inputs");
    if (o.cleanup == CleanupMode::kFull) {
      return Status::InvalidArgument("--cleanup full needs the whole inputs, not a source feed");
    }
  } else if (o.inputs.empty() && o.replay_chunks.empty() && o.replay_files.empty()) {
    return Status::InvalidArgument("no input given: name files, folders or '-'");
  }
  if (o.chunker.chunk_tokens == 0) return Status::InvalidArgument("--chunk-tokens must be > 0");
  if (o.chunker.overlap_tokens >= o.chunker.chunk_tokens) {
    return Status::InvalidArgument("--chunk-overlap must be smaller than --chunk-tokens");
  }
  if (o.embed.batch_size == 0) return Status::InvalidArgument("--batch-size must be > 0");
  if (o.embed.batch_size > o.embed.max_inputs_per_request) {
    return Status::InvalidArgument("--batch-size exceeds the service's --max-inputs-per-request");
  }
  if (o.queue_capacity == 0) return Status::InvalidArgument("--queue-capacity must be > 0");
  if (o.concurrency < 0) return Status::InvalidArgument("--concurrency must be >= 0");
  if (o.on_progress && o.progress_callback_interval <= Duration::zero()) {
    return Status::InvalidArgument("progress_callback_interval must be > 0");
  }
  return Status::OK();
}

// The queues between the stages, bounded in items. The two on either side
// of the store stage also hold one store write (`store_rows`) beyond `cap`:
// the store takes a whole write's rows (4,000 with SQLite) before it writes
// and hands them all on after, so with `cap` alone the embed stage blocked on
// a full queue for most of each write, its HTTP loop with it (no request
// sent, the readers blocked behind it), and the store then waited for the
// pipeline to refill: sluice used ~1.3 of two cores in regime (d), the store
// thread busy 1.23 s and waiting on an empty queue 0.76 s of a ~2.9 s run
// (docs/PERFORMANCE.md). ~3 KB per row: ~25 MB more at most with SQLite.
struct RunQueues {
  RunQueues(size_t cap, size_t store_rows)
      : files(cap),
        chunks(cap, 0, ChunkBytes),
        embed(cap, 0, ChunkBytes),
        vectors(cap + store_rows, 0, EmbeddedBytes),
        aggregate(cap + store_rows, 0, EmbeddedBytes) {}
  BoundedQueue<SourceFile> files;
  BoundedQueue<Chunk> chunks;
  BoundedQueue<Chunk> embed;  // cache misses
  BoundedQueue<EmbeddedChunk> vectors;
  BoundedQueue<EmbeddedChunk> aggregate;

  std::map<std::string, size_t> HighWater() const {
    return {{"files", files.HighWaterItems()},
            {"chunks", chunks.HighWaterItems()},
            {"embed", embed.HighWaterItems()},
            {"vectors", vectors.HighWaterItems()},
            {"aggregate", aggregate.HighWaterItems()}};
  }
};

// The walker: replayed files and chunks first (`sluice dead-letter retry`),
// then every input file; unreadable entries are dead-lettered and remembered
// (--cleanup full keeps their records).
void Walk(RunContext& run, SourceEnumerator& enumerator, RunQueues& q, DeadLetterSink& dead,
          std::unordered_set<std::string>& unreadable_paths) {
  const IngestOptions& options = run.options();
  for (const SourceFile& f : options.replay_files) {
    if (run.stopping() || !q.files.Push(SourceFile(f))) break;
  }
  // Replayed chunks belong to no file being tracked, so their outcome
  // changes no fingerprint.
  for (const Chunk& c : options.replay_chunks) {
    if (run.stopping() || !q.chunks.Push(Chunk(c))) break;
    Add(run.metrics().chunks_produced);
  }
  if (SourceFeed* feed = options.source_feed) {
    // A source the feed gave but the queue refused (a stop) is abandoned: no
    // outcome, so the feed's owner hands it out again later.
    SourceFile file;
    while (!run.stopping() && feed->Next(file, run.stopping_flag())) {
      if (!q.files.Push(std::move(file))) break;
      file = SourceFile();
    }
    q.files.Close();
    return;
  }
  Status s =
      enumerator.Run(q.files, run.stopping_flag(), [&](const std::string& path, const Status& why) {
        unreadable_paths.insert(path);
        dead.SourceFailed(path, path, why);
      });
  if (!s.ok()) run.Fail(s);
  q.files.Close();
}

}  // namespace

std::string DeadLetterPathFor(const IngestOptions& options) {
  if (!options.dead_letter_path.empty()) return options.dead_letter_path;
  return (std::filesystem::path(options.aggregate.out_dir) / ".dead-letter.jsonl").string();
}

bool UsesHttpEmbedder(const IngestOptions& options) {
  return options.embedder == EmbedderKind::kHttp ||
         (options.embedder == EmbedderKind::kAuto && !options.http.endpoint.empty());
}

bool EmbeddingCacheOn(const IngestOptions& options) {
  return options.embedding_cache.value_or(UsesHttpEmbedder(options));
}

Result<CleanupMode> ParseCleanupMode(std::string_view text) {
  if (text == "none") return CleanupMode::kNone;
  if (text == "incremental") return CleanupMode::kIncremental;
  if (text == "full") return CleanupMode::kFull;
  return Status::InvalidArgument("--cleanup must be none, incremental or full, not '" +
                                 std::string(text) + "'");
}

struct Pipeline::Impl {
  explicit Impl(IngestOptions o)
      : options(std::move(o)), run(options, metrics, SystemClock::Instance()) {}
  IngestReport Run();
  // Counts, reconciliation and the final status, for any run that ends.
  IngestReport Finish(IngestReport report, Status status, TimePoint start,
                      const RunResources* resources);

  IngestOptions options;
  Metrics metrics;
  RunContext run;
};

IngestReport Pipeline::Impl::Finish(IngestReport report, Status status, TimePoint start,
                                    const RunResources* resources) {
  if (resources != nullptr && resources->price_per_mtok) {
    report.estimated_cost_usd =
        static_cast<double>(Get(metrics.prompt_tokens)) / 1e6 * *resources->price_per_mtok;
  }
  report.chunks_abandoned = run.chunks_abandoned();
  report.skipped_reasons = run.SkippedReasons();
  // Also for a run that fails before any stage starts: nothing produced, so
  // nothing can fail to reconcile.
  report.reconciled = Get(metrics.chunks_produced) == Get(metrics.chunks_stored) +
                                                          Get(metrics.chunks_dead_lettered) +
                                                          report.chunks_abandoned;
  if (status.ok() && !report.reconciled) {
    status = Status::Internal("chunk accounting does not reconcile");
  }
  if (status.ok() && run.stopping()) status = Status::Cancelled("stopped by request");
  report.status = std::move(status);
  report.elapsed_s = ToSeconds(SteadyClock::now() - start);
  return report;
}

IngestReport Pipeline::Impl::Run() {
  IngestReport report;
  const TimePoint start = SteadyClock::now();
  const double cpu_at_start = ProcessCpuSeconds();
  if (Status s = Validate(options); !s.ok()) return Finish(report, s, start, nullptr);
  auto opened = OpenRunResources(options, run.run_id(), run.clock(), metrics, report);
  if (!opened.ok()) return Finish(report, opened.status(), start, nullptr);
  RunResources& res = **opened;
  if (options.source_feed != nullptr && !res.resume) {
    // Without fingerprints no source would ever be known complete.
    return Finish(report,
                  Status::InvalidArgument("a source feed needs a store that records fingerprints"),
                  start, &res);
  }
  RunDeadLetters dead(*res.dead_letters, run);
  if (res.price_per_mtok)
    metrics.price_per_mtok_usd.store(*res.price_per_mtok, std::memory_order_relaxed);

  RunQueues q(options.queue_capacity, StoreStage::RowsPerWrite(*res.store));
  std::unique_ptr<ConcurrencyLimiter> limiter = MakeLimiter(options);
  std::unique_ptr<RatePacer> pacer = MakePacer(options);
  EmbedStage embed(options.embed, *res.transport, *limiter, *pacer, run.clock(), metrics, dead);
  run.SetStopListener([&embed] { embed.RequestStop(); });
  if (run.stopping()) embed.RequestStop();  // a stop requested before the stage existed
  embed.SetStopNotice([](const std::string& notice) { spdlog::warn("{}", notice); });
  embed.SetReplacementHook([&tracker = run.tracker()](const std::string& original_id,
                                                      const std::vector<std::string>& ids) {
    tracker.Replaced(original_id, ids);
  });
  TraceHook trace = MakeTraceHook(options, embed, metrics);
  trace.SetQueueProbe([&] {  // the stages' queue_depth gauges, 4 times a second
    metrics.reader.queue_depth = static_cast<int64_t>(q.files.Size());
    metrics.cache.queue_depth = static_cast<int64_t>(q.chunks.Size());
    metrics.embedder.queue_depth = static_cast<int64_t>(q.embed.Size());
    metrics.store.queue_depth = static_cast<int64_t>(q.vectors.Size());
    metrics.aggregator.queue_depth = static_cast<int64_t>(q.aggregate.Size());
  });

  std::optional<AggregateStage> aggregate;
  if (res.aggregator)
    aggregate.emplace(run, *res.aggregator, q.aggregate, *res.read_store, res.replay_aggregate);
  const int readers = std::max(1, options.reader_threads > 0
                                      ? options.reader_threads
                                      : static_cast<int>(std::thread::hardware_concurrency()));
  ReadStage read(ReadStageOptions{readers, res.resume, options.skip_unchanged,
                                  options.cleanup != CleanupMode::kNone,
                                  /*track_once_per_path=*/options.source_feed == nullptr},
                 run, dead, res.registry, res.command_parser.get(), res.router, res.fingerprints,
                 [&](const std::string& file_id) {
                   if (aggregate) aggregate->ReplayFile(file_id);
                 });
  CacheStage cache(CacheStageOptions{options.embed.batch_size, options.embed.max_tokens_per_input,
                                     res.cache_namespace},
                   run, *res.read_store);
  StoreStage store(StoreStageOptions{.resume = res.resume}, run, *res.store, dead);

  std::unique_ptr<RunProgress> progress;
  if (options.progress || options.on_progress) {
    RunProgressOptions shown{.print_lines = options.progress,
                             .interval = options.progress_interval,
                             .through_logger = options.progress_through_logger,
                             .observer = {},
                             .observer_interval = options.progress_callback_interval};
    if (options.on_progress) {
      shown.observer = [&callback = options.on_progress](const ProgressSnapshot& s, bool final) {
        callback(IngestProgress{.elapsed_s = s.elapsed_s,
                                .sources_done = s.sources_done,
                                .sources_total = s.sources_total,
                                .bytes_done = s.bytes_done,
                                .bytes_total = s.bytes_total,
                                .totals_known = s.totals_known,
                                .chunks_produced = s.chunks_produced,
                                .chunks_stored = s.chunks_stored,
                                .chunks_dead_lettered = s.chunks_dead_lettered,
                                .tokens = s.tokens,
                                .chunks_per_s = s.chunks_per_s,
                                .final = final});
      };
    }
    progress = std::make_unique<RunProgress>(
        *res.enumerator, run.stopping_flag(),
        [&, price = res.price_per_mtok, use_http = res.use_http] {
          ProgressSnapshot s;
          s.elapsed_s = ToSeconds(SteadyClock::now() - start);
          s.sources_done = Get(metrics.sources_seen);
          s.bytes_done = Get(metrics.bytes_read) + read.bytes_unchanged();
          s.chunks_produced = Get(metrics.chunks_produced);
          s.chunks_stored = Get(metrics.chunks_stored);
          s.chunks_dead_lettered = Get(metrics.chunks_dead_lettered);
          s.tokens = Get(metrics.prompt_tokens);
          s.in_flight = metrics.in_flight.load();
          s.concurrency_limit = use_http ? metrics.concurrency_limit.load() : 0;
          s.rate_limited = Get(metrics.rate_limited);
          s.price_per_mtok = price;
          return s;
        },
        std::move(shown));
  }

  std::unordered_set<std::string> unreadable_paths;  // written by the walker only
  // Walk, read, cache, embed, store and aggregate, in slots made up front:
  // growing a vector of std::thread by emplace_back trips GCC 12's
  // -Warray-bounds false positive in the Release build. A slot left empty
  // (no aggregator) holds a thread that is not joinable.
  std::vector<std::thread> threads(6);
  size_t started = 0;
  const auto start_thread = [&](auto&& fn) { threads[started++] = std::thread(fn); };
  start_thread([&] {
    SetThreadName("sluice-walk");
    Walk(run, *res.enumerator, q, dead, unreadable_paths);
  });
  start_thread([&] { read.Run(q.files, q.chunks); });
  start_thread([&] {
    SetThreadName("sluice-cache");
    cache.Run(q.chunks, q.embed, q.vectors);
    AddThreadCpuTime(metrics.cache);
  });
  start_thread([&] {
    SetThreadName("sluice-embed");
    if (Status s = embed.Run(q.embed, q.vectors); !s.ok()) run.Fail(s);
    // The stage returns early only when stopping; whatever is still queued
    // (and unblocking the cache stage) is abandoned, to be redone by a rerun.
    while (auto c = q.embed.Pop()) run.Abandon(*c);
    q.vectors.Close();
    AddThreadCpuTime(metrics.embedder);
  });
  // Unless a full cleanup still needs the store after the stages, it is
  // closed on the store's thread as its stage ends: the last checkpoint and
  // SQLite's removal of its log (67 ms for a ~100 MB log here) then overlap
  // the aggregator's final rewrite instead of following it
  // (docs/PERFORMANCE.md). Both closes are idempotent; the cache stage, the
  // only other user of the read connection, ended before the store's input
  // did.
  const bool close_store_with_stage = options.cleanup != CleanupMode::kFull;
  const auto close_stores = [&] {
    res.read_store->Close();
    if (Status s = res.store->Close(); !s.ok()) run.Fail(s.WithContext("store close"));
  };
  start_thread([&] {
    SetThreadName("sluice-store");
    store.Run(q.vectors, aggregate ? &q.aggregate : nullptr);
    if (close_store_with_stage) close_stores();
    AddThreadCpuTime(metrics.store);
  });
  if (aggregate) {
    start_thread([&] {
      SetThreadName("sluice-aggregate");
      aggregate->Run();
      AddThreadCpuTime(metrics.aggregator);
    });
  }
  for (std::thread& t : threads) {
    if (t.joinable()) t.join();
  }
  run.SetStopListener({});
  // Every owner resolved, so nothing should be parked; if something is, it
  // is abandoned (counted, its file not fingerprinted) rather than lost.
  if (std::vector<Chunk> left = run.inflight().TakeAll(); !left.empty()) {
    spdlog::warn("{} chunks waited for a text that never came back; rerun to redo them",
                 left.size());
    for (const Chunk& c : left) run.Abandon(c);
  }
  if (progress) progress->Stop();
  trace.Finish(report);

  bool aggregate_complete = aggregate && !aggregate->failed();
  uint64_t chunks_deleted = store.chunks_deleted_stale();
  if (options.cleanup == CleanupMode::kFull && res.resume && !run.stopping() &&
      run.FatalStatus().ok()) {
    FullCleanupResult cleanup = RunFullCleanup(
        FullCleanupInput{options.inputs, &res.fingerprints,
                         [&](const std::string& id) { return read.Saw(id); },
                         [&](const std::string& path) { return unreadable_paths.count(path) > 0; }},
        *res.store, res.aggregator.get());
    report.sources_deleted = cleanup.sources_deleted;
    chunks_deleted += cleanup.chunks_deleted;
    if (cleanup.aggregate_failed) aggregate_complete = false;
    if (!cleanup.status.ok()) run.Fail(cleanup.status);
  }

  if (!close_store_with_stage) close_stores();
  if (Status s = res.dead_letters->Close(); !s.ok()) {
    run.Fail(s);
  } else if (auto dropped = res.dead_letters->DropEarlierEntriesOf(store.CompletedFiles());
             !dropped.ok()) {
    spdlog::warn("dead-letter file keeps entries now stored: {}", dropped.status().message());
  } else if (*dropped > 0) {
    spdlog::info("{} earlier entries of files completed by this run removed from {}", *dropped,
                 DeadLetterPathFor(options));
  }
  // The aggregate files are complete when the aggregator finished and, if
  // this run had to replay, the walk saw every file.
  if (aggregate_complete &&
      (!res.replay_aggregate || (!run.stopping() && run.FatalStatus().ok()))) {
    std::error_code ec;
    std::filesystem::remove(res.aggregate_marker, ec);
  }

  report.sources_unchanged = read.sources_unchanged();
  report.sources_touched = read.sources_touched();
  report.sources_completed = store.sources_completed();
  report.chunks_deleted_stale = chunks_deleted;
  report.cache_hits = cache.cache_hits();
  report.api_tokens_saved = cache.tokens_saved();
  const uint64_t per_request = std::max<uint64_t>(1, options.embed.batch_size);
  report.api_requests_saved = (report.cache_hits + per_request - 1) / per_request;
  report.dead_letter_reasons = res.dead_letters->ReasonCounts();
  report.queue_high_water = q.HighWater();
  report.process_cpu_s = ProcessCpuSeconds() - cpu_at_start;
  report.cpu_cores = UsableCores();
  report.bottleneck_stage =
      BottleneckStage(metrics, ToSeconds(SteadyClock::now() - start), readers, report.process_cpu_s,
                      report.cpu_cores, &report.cpu_bound);
  return Finish(std::move(report), run.FatalStatus(), start, &res);
}

Pipeline::Pipeline(IngestOptions options) : impl_(std::make_unique<Impl>(std::move(options))) {}
Pipeline::~Pipeline() = default;
IngestReport Pipeline::Run() {
  IngestReport report = impl_->Run();
  if (impl_->options.on_complete) impl_->options.on_complete(report);
  return report;
}
const Metrics& Pipeline::metrics() const { return impl_->metrics; }
void Pipeline::RequestStop() { impl_->run.RequestStop(); }

}  // namespace sluice
