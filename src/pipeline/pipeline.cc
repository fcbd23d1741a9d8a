// The ingest orchestrator: builds the stages from IngestOptions, runs each on
// its own thread(s) joined by bounded queues, and shuts them down in order.
//
// Threads: one walker (enumerates inputs into the file queue), N readers
// (parse + chunk, N = cores by default), one embed stage (async HTTP, many
// requests in flight), one store writer, one aggregator, and an optional
// progress printer. Shutdown: each stage closes its output queue when its
// input has ended, so the pipeline drains front to back. A fatal error stops
// intake at once; chunks already taken are stored or dead-lettered, never
// dropped, so the accounting invariant holds even then.
#include "sluice/pipeline.h"

#include <unistd.h>

#include <algorithm>
#include <cinttypes>
#include <cstdio>
#include <fstream>
#include <mutex>
#include <optional>
#include <random>
#include <thread>

#include <spdlog/spdlog.h>

#include "pipeline/control_wiring.h"
#include "pipeline/dead_letter_file.h"
#include "pipeline/source_enumerator.h"
#include "sluice/queue.h"
#include "sluice/routing.h"
#include "sluice/sources.h"

namespace sluice {

namespace {

constexpr size_t kHeadBytes = 4096;

size_t ChunkBytes(const Chunk& c) { return c.text.size() + c.metadata_json.size() + 128; }
size_t EmbeddedBytes(const EmbeddedChunk& c) {
  return ChunkBytes(c.chunk) + c.embedding.size() * sizeof(float);
}

std::string ReadHead(const std::string& path) {
  std::string head;
  if (path == "-") return head;
  std::ifstream in(path, std::ios::binary);
  if (!in) return head;
  head.resize(kHeadBytes);
  in.read(head.data(), static_cast<std::streamsize>(head.size()));
  head.resize(static_cast<size_t>(in.gcount()));
  return head;
}

// Sink between a parser and the chunker: counts documents and chunks, and
// stops the parse when the pipeline is stopping.
class ReaderSink final : public DocumentSink {
 public:
  ReaderSink(Chunker& chunker, const std::atomic<bool>& stopping)
      : chunker_(chunker), stopping_(stopping) {}
  Status BeginDocument(const SourceInfo& info) override {
    ++documents_;
    return chunker_.BeginDocument(info);
  }
  Status AddBlock(const TextBlock& block) override {
    if (stopping_.load(std::memory_order_relaxed)) return Status::Cancelled("stopping");
    return chunker_.AddBlock(block);
  }
  Status EndDocument() override {
    Status s = chunker_.EndDocument();
    chunks_ += chunker_.ChunksInDocument();
    return s;
  }
  uint64_t documents() const { return documents_; }
  uint64_t chunks() const { return chunks_; }

 private:
  Chunker& chunker_;
  const std::atomic<bool>& stopping_;
  uint64_t documents_ = 0;
  uint64_t chunks_ = 0;
};

class RecordErrors final : public RecordErrorSink {
 public:
  RecordErrors(DeadLetterSink& dead, const std::string& path) : dead_(dead), path_(path) {}
  void RecordFailed(const std::string& source_id, const Status& why) override {
    dead_.SourceFailed(source_id, path_, why);
  }

 private:
  DeadLetterSink& dead_;
  const std::string& path_;
};

}  // namespace

struct Pipeline::Impl {
  explicit Impl(IngestOptions o) : options(std::move(o)) {}

  IngestOptions options;
  Metrics metrics;
  std::atomic<bool> stopping{false};  // no new sources; abandon parses
  std::mutex mu;
  Status fatal;                                     // GUARDED_BY(mu): the first fatal error
  std::map<std::string, uint64_t> skipped_reasons;  // GUARDED_BY(mu)
  EmbedStage* embed_stage = nullptr;

  void Fail(const Status& s) {
    std::lock_guard lock(mu);
    if (fatal.ok()) fatal = s;
    stopping = true;
    if (embed_stage != nullptr) embed_stage->RequestStop();
  }
  void Skip(const std::string& reason) {
    Add(metrics.sources_skipped);
    std::lock_guard lock(mu);
    ++skipped_reasons[reason];
  }
  Status FatalStatus() {
    std::lock_guard lock(mu);
    return fatal;
  }

  IngestReport Run();
  Status Validate() const;
  void ReadSources(BoundedQueue<SourceFile>& files, BoundedQueue<Chunk>& chunks,
                   const ParserRegistry& registry, const Parser* forced_parser,
                   const Router& router, DeadLetterSink& dead);
  void WriteStore(Store& store, BoundedQueue<EmbeddedChunk>& in,
                  BoundedQueue<EmbeddedChunk>* aggregate_out, DeadLetterSink& dead);
  void Aggregate(Aggregator& aggregator, BoundedQueue<EmbeddedChunk>& in);
  void PrintProgress(const std::atomic<bool>& done, TimePoint start);
};

Status Pipeline::Impl::Validate() const {
  const IngestOptions& o = options;
  if (o.inputs.empty())
    return Status::InvalidArgument("no input given: name files, folders or '-'");
  if (o.chunker.chunk_tokens == 0) return Status::InvalidArgument("--chunk-tokens must be > 0");
  if (o.chunker.overlap_tokens >= o.chunker.chunk_tokens) {
    return Status::InvalidArgument("--chunk-overlap must be smaller than --chunk-tokens");
  }
  if (o.embed.batch_size == 0) return Status::InvalidArgument("--batch-size must be > 0");
  if (o.embed.batch_size > o.embed.max_inputs_per_request) {
    return Status::InvalidArgument("--batch-size exceeds the service's --max-inputs-per-request");
  }
  if (o.queue_capacity == 0) return Status::InvalidArgument("--queue-capacity must be > 0");
  if (o.store.batch_rows == 0) return Status::InvalidArgument("--store-batch must be > 0");
  if (o.concurrency < 0) return Status::InvalidArgument("--concurrency must be >= 0");
  return Status::OK();
}

void Pipeline::Impl::ReadSources(BoundedQueue<SourceFile>& files, BoundedQueue<Chunk>& chunks,
                                 const ParserRegistry& registry, const Parser* forced_parser,
                                 const Router& router, DeadLetterSink& dead) {
  Chunker chunker(options.chunker, [&](Chunk&& chunk) -> Status {
    if (!chunks.Push(std::move(chunk))) return Status::Cancelled("pipeline stopping");
    Add(metrics.chunks_produced);
    return Status::OK();
  });
  ParseLimits limits;
  while (auto file = files.Pop()) {
    if (stopping) {
      files.Cancel();  // unblocks the walker; unread files were never started
      break;
    }
    Add(metrics.sources_seen);
    Add(metrics.bytes_read, file->size_bytes);
    const Parser* parser = forced_parser;
    if (parser == nullptr && file->path == kStdinPath) parser = registry.FindByName("jsonl");
    if (parser == nullptr) {
      const std::string head = ReadHead(file->path);
      parser = registry.Find(file->path, head);
      if (parser == nullptr) {
        const auto dot = file->relative_path.rfind('.');
        Skip(dot == std::string::npos
                 ? "unsupported format (no extension)"
                 : "unsupported format (" + file->relative_path.substr(dot) + ")");
        continue;
      }
    }
    if (file->domain.empty()) {
      RouteDecision route = router.Route(*file);
      file->domain = std::move(route.domain);
      file->category = std::move(route.category);
    }
    ReaderSink sink(chunker, stopping);
    RecordErrors errors(dead, file->path);
    ParseStats stats;
    Status s = parser->Parse(*file, limits, sink, errors, stats);
    Add(metrics.invalid_utf8_replaced, stats.invalid_utf8_replaced);
    if (stats.latin1_fallback) Add(metrics.latin1_fallbacks);
    if (s.code() == StatusCode::kCancelled && stopping) {
      files.Cancel();
      break;
    }
    if (!s.ok()) {
      if (s.code() == StatusCode::kInvalidArgument &&
          s.message().find("binary") != std::string::npos) {
        Skip("binary file");
      } else {
        dead.SourceFailed(file->relative_path, file->path, s);
      }
      continue;
    }
    if (sink.chunks() == 0 && stats.records_skipped == 0) {
      Skip("empty");
    } else if (sink.chunks() > 0) {
      Add(metrics.sources_ok);
    }
  }
}

void Pipeline::Impl::WriteStore(Store& store, BoundedQueue<EmbeddedChunk>& in,
                                BoundedQueue<EmbeddedChunk>* aggregate_out, DeadLetterSink& dead) {
  const size_t batch_rows = options.store.batch_rows;
  std::vector<EmbeddedChunk> batch;
  batch.reserve(batch_rows);
  std::mt19937_64 rng(std::random_device{}());
  bool failed = false;

  auto dead_letter_batch = [&](const Status& why) {
    for (const auto& e : batch) dead.ChunkFailed(e.chunk, why);
    batch.clear();
  };
  auto flush = [&]() {
    if (batch.empty()) return;
    if (failed) {
      dead_letter_batch(Status::Cancelled("store stopped: " + FatalStatus().message()));
      return;
    }
    Duration backoff = std::chrono::milliseconds(200);
    for (int attempt = 1;; ++attempt) {
      const TimePoint start = SteadyClock::now();
      WriteResult r = store.Write(batch);
      metrics.store_latency.Record(SteadyClock::now() - start);
      Add(metrics.store_batches);
      if (r.status.ok()) {
        std::vector<bool> rejected(batch.size(), false);
        for (const auto& row : r.rejected) {
          if (row.index < batch.size() && !rejected[row.index]) {
            rejected[row.index] = true;
            dead.ChunkFailed(batch[row.index].chunk, row.why);
          }
        }
        const uint64_t stored = batch.size() - static_cast<uint64_t>(std::count(
                                                   rejected.begin(), rejected.end(), true));
        Add(metrics.chunks_stored, stored);
        Add(metrics.store.items_out, stored);
        for (size_t i = 0; i < batch.size(); ++i) {
          if (!rejected[i] && aggregate_out != nullptr) aggregate_out->Push(std::move(batch[i]));
        }
        batch.clear();
        return;
      }
      if (r.status.IsRetryable() && attempt < 10) {
        Add(metrics.store_retries);
        spdlog::warn("store write failed (attempt {}), retrying: {}", attempt, r.status.ToString());
        std::uniform_int_distribution<int64_t> jitter(0, backoff.count());
        std::this_thread::sleep_for(Duration(jitter(rng)) + backoff / 2);
        backoff = std::min<Duration>(backoff * 2, std::chrono::seconds(10));
        continue;
      }
      // Not retryable (or retries exhausted): these rows cannot be stored.
      // Every later batch would fail the same way, so stop the run.
      dead_letter_batch(r.status);
      failed = true;
      Fail(r.status.WithContext("store " + store.Describe()));
      return;
    }
  };

  while (true) {
    auto item = batch.empty() ? in.Pop() : in.PopFor(std::chrono::milliseconds(200));
    if (item) {
      Add(metrics.store.items_in);
      batch.push_back(std::move(*item));
      if (batch.size() >= batch_rows) flush();
      continue;
    }
    if (in.Ended()) break;
    flush();  // the queue went quiet: commit what we have so progress is visible
  }
  flush();
  if (Status s = store.Flush(); !s.ok()) Fail(s.WithContext("store flush"));
}

void Pipeline::Impl::Aggregate(Aggregator& aggregator, BoundedQueue<EmbeddedChunk>& in) {
  bool failed = false;
  while (auto item = in.Pop()) {
    if (failed) continue;  // keep draining so the store writer never blocks
    Add(metrics.aggregator.items_in);
    if (Status s = aggregator.Add(*item); !s.ok()) {
      failed = true;
      Fail(s.WithContext("aggregator"));
    }
  }
  if (!failed) {
    if (Status s = aggregator.Finish(); !s.ok()) Fail(s.WithContext("aggregator"));
  }
  Add(metrics.aggregate_files_written, aggregator.FilesWritten());
}

void Pipeline::Impl::PrintProgress(const std::atomic<bool>& done, TimePoint start) {
  uint64_t last_stored = 0;
  TimePoint last = start;
  double rate = 0;
  while (!done) {
    std::this_thread::sleep_for(std::chrono::milliseconds(500));
    if (done) break;
    const TimePoint now = SteadyClock::now();
    const uint64_t stored = Get(metrics.chunks_stored);
    const double dt = ToSeconds(now - last);
    if (dt > 0) rate = 0.7 * rate + 0.3 * (static_cast<double>(stored - last_stored) / dt);
    last_stored = stored;
    last = now;
    std::fprintf(stderr,
                 "\r\033[K[sluice] %5.0fs | sources %" PRIu64 " | chunks %" PRIu64
                 " produced, %" PRIu64 " stored, %" PRIu64
                 " dead | %.0f chunks/s | in flight %" PRId64 "/%" PRId64 " | 429s %" PRIu64,
                 ToSeconds(now - start), Get(metrics.sources_seen), Get(metrics.chunks_produced),
                 stored, Get(metrics.chunks_dead_lettered), rate, metrics.in_flight.load(),
                 metrics.concurrency_limit.load(), Get(metrics.rate_limited));
    std::fflush(stderr);
  }
  std::fprintf(stderr, "\r\033[K");
  std::fflush(stderr);
}

IngestReport Pipeline::Impl::Run() {
  IngestReport report;
  const TimePoint start = SteadyClock::now();
  auto finish = [&](Status s) {
    report.status = std::move(s);
    report.elapsed_s = ToSeconds(SteadyClock::now() - start);
    return report;
  };
  if (Status s = Validate(); !s.ok()) return finish(s);

  // Open everything that can fail before any work starts, so a bad path or an
  // unreachable store fails in a second with one clear message.
  auto dead_or = DeadLetterFile::Open(options.dead_letter_path, metrics);
  if (!dead_or.ok()) return finish(dead_or.status());
  DeadLetterFile& dead = **dead_or;

  Router router(options.routes);
  if (options.routes.empty() && !options.routes_file.empty()) {
    auto loaded = Router::LoadFile(options.routes_file);
    if (!loaded.ok()) return finish(loaded.status());
    router = std::move(*loaded);
  }

  ParserRegistry registry;
  RegisterTextParsers(registry);
  RegisterDocumentParsers(registry);
  std::unique_ptr<Parser> command_parser;
  if (!options.parser_cmd.empty())
    command_parser = MakeCommandParser(options.parser_cmd, options.parser_cmd_timeout);

  auto enumerator_or = SourceEnumerator::Open(options);
  if (!enumerator_or.ok()) return finish(enumerator_or.status());
  SourceEnumerator& enumerator = **enumerator_or;

  std::unique_ptr<EmbeddingTransport> transport;
  const bool use_http = options.embedder == EmbedderKind::kHttp ||
                        (options.embedder == EmbedderKind::kAuto && !options.http.endpoint.empty());
  if (use_http) {
    if (options.http.endpoint.empty()) {
      return finish(Status::InvalidArgument(
          "--embedder http needs an endpoint: --endpoint URL or OPENAI_BASE_URL"));
    }
    auto t = MakeHttpTransport(options.http);
    if (!t.ok()) return finish(t.status());
    transport = std::move(*t);
    report.embedder_description = "http " + options.http.endpoint + " model " + options.http.model;
  } else {
    transport = MakeHashTransport(options.hash);
    report.embedder_description = "offline hash embedder (lexical, not semantic), " +
                                  std::to_string(options.hash.dimensions) + " dims";
    if (options.embedder == EmbedderKind::kAuto) {
      spdlog::info(
          "no embedding endpoint configured: using the offline hash embedder "
          "(lexical, not semantic); set --endpoint or OPENAI_BASE_URL for a real model");
    }
  }

  StoreOptions store_options = options.store;
  auto store_or = OpenStore(options.store_uri, store_options);
  if (!store_or.ok()) return finish(store_or.status());
  Store& store = **store_or;
  report.store_description = store.Describe();

  std::unique_ptr<Aggregator> aggregator;
  if (options.aggregate_enabled) {
    auto a = OpenAggregator(options.aggregate);
    if (!a.ok()) return finish(a.status());
    aggregator = std::move(*a);
  }

  std::unique_ptr<ConcurrencyLimiter> limiter = MakeLimiter(options);
  std::unique_ptr<RatePacer> pacer = MakePacer(options);

  const size_t cap = options.queue_capacity;
  BoundedQueue<SourceFile> file_queue(cap);
  BoundedQueue<Chunk> chunk_queue(cap, 0, ChunkBytes);
  BoundedQueue<EmbeddedChunk> vector_queue(cap, 0, EmbeddedBytes);
  BoundedQueue<EmbeddedChunk> aggregate_queue(cap, 0, EmbeddedBytes);

  EmbedStage stage(options.embed, *transport, *limiter, *pacer, SystemClock::Instance(), metrics,
                   dead);
  {
    std::lock_guard lock(mu);
    embed_stage = &stage;
  }
  TraceHook trace = MakeTraceHook(options, stage, metrics);

  std::atomic<bool> done{false};
  std::thread progress;
  if (options.progress && ::isatty(STDERR_FILENO)) {
    progress = std::thread([&] { PrintProgress(done, start); });
  }

  std::thread walker([&] {
    Status s = enumerator.Run(
        file_queue, stopping,
        [&](const std::string& path, const Status& why) { dead.SourceFailed(path, path, why); });
    if (!s.ok()) Fail(s);
    file_queue.Close();
  });

  int readers = options.reader_threads > 0 ? options.reader_threads
                                           : static_cast<int>(std::thread::hardware_concurrency());
  readers = std::max(1, readers);
  std::vector<std::thread> reader_threads;
  std::atomic<int> readers_left{readers};
  for (int i = 0; i < readers; ++i) {
    reader_threads.emplace_back([&] {
      ReadSources(file_queue, chunk_queue, registry, command_parser.get(), router, dead);
      if (--readers_left == 0) chunk_queue.Close();
    });
  }

  std::thread embedder([&] {
    Status s = stage.Run(chunk_queue, vector_queue);
    if (!s.ok()) Fail(s);
    // The stage returns early only when stopping; whatever readers still push
    // (and unblocking them) is dead-lettered so nothing produced goes unaccounted.
    const Status why =
        s.ok() ? Status::Cancelled("stopped before embedding") : Status::Cancelled(s.message());
    while (auto c = chunk_queue.Pop()) dead.ChunkFailed(*c, why);
    vector_queue.Close();
  });

  std::thread writer([&] {
    WriteStore(store, vector_queue, aggregator ? &aggregate_queue : nullptr, dead);
    aggregate_queue.Close();
  });

  std::thread aggregate_thread;
  if (aggregator) aggregate_thread = std::thread([&] { Aggregate(*aggregator, aggregate_queue); });

  walker.join();
  for (auto& t : reader_threads) t.join();
  embedder.join();
  writer.join();
  if (aggregate_thread.joinable()) aggregate_thread.join();
  {
    std::lock_guard lock(mu);
    embed_stage = nullptr;
  }
  done = true;
  if (progress.joinable()) progress.join();
  trace.Finish(report);

  if (Status s = store.Close(); !s.ok()) Fail(s.WithContext("store close"));
  if (Status s = dead.Close(); !s.ok()) Fail(s);

  report.dead_letter_reasons = dead.ReasonCounts();
  {
    std::lock_guard lock(mu);
    report.skipped_reasons = skipped_reasons;
  }
  report.queue_high_water = {{"files", file_queue.HighWaterItems()},
                             {"chunks", chunk_queue.HighWaterItems()},
                             {"vectors", vector_queue.HighWaterItems()},
                             {"aggregate", aggregate_queue.HighWaterItems()}};
  report.reconciled = Get(metrics.chunks_produced) ==
                      Get(metrics.chunks_stored) + Get(metrics.chunks_dead_lettered);
  Status final_status = FatalStatus();
  if (final_status.ok() && !report.reconciled) {
    final_status = Status::Internal("chunk accounting does not reconcile");
  }
  if (final_status.ok() && stopping) final_status = Status::Cancelled("stopped by request");
  return finish(final_status);
}

Pipeline::Pipeline(IngestOptions options) : impl_(std::make_unique<Impl>(std::move(options))) {}
Pipeline::~Pipeline() = default;
IngestReport Pipeline::Run() { return impl_->Run(); }
const Metrics& Pipeline::metrics() const { return impl_->metrics; }

void Pipeline::RequestStop() {
  impl_->stopping = true;
  std::lock_guard lock(impl_->mu);
  if (impl_->embed_stage != nullptr) impl_->embed_stage->RequestStop();
}

}  // namespace sluice
