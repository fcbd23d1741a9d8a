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

#include <fcntl.h>
#include <xxhash.h>

#include <algorithm>
#include <cerrno>
#include <cinttypes>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <optional>
#include <random>
#include <thread>
#include <unordered_map>
#include <unordered_set>

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include "common/private_file.h"
#include "pipeline/control_wiring.h"
#include "pipeline/dead_letter_file.h"
#include "pipeline/inflight_texts.h"
#include "pipeline/progress.h"
#include "pipeline/source_enumerator.h"
#include "pipeline/source_tracker.h"
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
// Unique per run (not ordered): random, never 0 (0 means "no run").
uint64_t NewRunId() {
  std::random_device entropy;
  uint64_t id = 0;
  while (id == 0) id = (uint64_t{entropy()} << 32) ^ entropy();
  return id;
}

// `finish_records`: stdin, where every record already received must be
// chunked (then stored or counted abandoned) rather than cut off mid-record;
// its parser stops at the next read instead.
class ReaderSink final : public DocumentSink {
 public:
  ReaderSink(Chunker& chunker, const std::atomic<bool>& stopping, bool finish_records)
      : chunker_(chunker), stopping_(stopping), finish_records_(finish_records) {}
  Status BeginDocument(const SourceInfo& info) override {
    ++documents_;
    return chunker_.BeginDocument(info);
  }
  Status AddBlock(const TextBlock& block) override {
    if (!finish_records_ && StopRequested()) return Status::Cancelled("stopping");
    return chunker_.AddBlock(block);
  }
  bool StopRequested() const override { return stopping_.load(std::memory_order_relaxed); }
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
  const bool finish_records_;
  uint64_t documents_ = 0;
  uint64_t chunks_ = 0;
};

}  // namespace

std::string DeadLetterPathFor(const IngestOptions& options) {
  if (!options.dead_letter_path.empty()) return options.dead_letter_path;
  return (std::filesystem::path(options.aggregate.out_dir) / ".dead-letter.jsonl").string();
}

namespace {

// HashFileContents that gives up (Cancelled) between reads once `stop` is
// set, so a stop does not wait for a huge file to be hashed.
Result<std::string> HashFileContentsUnlessStopped(const std::string& path,
                                                  const std::atomic<bool>& stop) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0 && errno == ENOENT) return Status::NotFound(path + " was deleted since the scan");
  if (fd < 0) return Status::IOError("cannot open " + path + ": " + std::strerror(errno));
  XXH3_state_t* state = XXH3_createState();
  XXH3_128bits_reset(state);
  std::vector<char> buf(256 * 1024);
  Status s;
  while (true) {
    const ssize_t n = ::read(fd, buf.data(), buf.size());
    if (n < 0) {
      if (errno == EINTR) continue;
      s = Status::IOError("cannot read " + path + ": " + std::strerror(errno));
      break;
    }
    if (n == 0) break;
    XXH3_128bits_update(state, buf.data(), static_cast<size_t>(n));
    if (stop.load(std::memory_order_relaxed)) {
      s = Status::Cancelled("stopping: " + path + " not hashed to its end");
      break;
    }
  }
  ::close(fd);
  const XXH128_hash_t h = XXH3_128bits_digest(state);
  XXH3_freeState(state);
  if (!s.ok()) return s;
  return fmt::format("{:016x}{:016x}", h.high64, h.low64);
}

}  // namespace

Result<std::string> HashFileContents(const std::string& path) {
  static const std::atomic<bool> never{false};
  return HashFileContentsUnlessStopped(path, never);
}

namespace {

// The dead-letter sink the stages see: chunks cancelled by a stop are
// "abandoned" (counted, not written: the rerun redoes them); real failures go
// to the file. Either way the chunk's file learns the outcome.
class TrackingDeadLetters final : public DeadLetterSink {
 public:
  TrackingDeadLetters(DeadLetterFile& file, SourceTracker& tracker, InflightTexts& inflight,
                      std::atomic<uint64_t>& abandoned)
      : file_(file), tracker_(tracker), inflight_(inflight), abandoned_(abandoned) {}
  void ChunkFailed(const Chunk& chunk, const Status& why) override {
    if (why.code() == StatusCode::kCancelled) {
      abandoned_.fetch_add(1, std::memory_order_relaxed);
      tracker_.Resolved(chunk, /*abandoned=*/true);
    } else {
      file_.ChunkFailed(chunk, why);
      tracker_.Resolved(chunk, /*abandoned=*/false);
    }
    // Copies of the same text parked behind this chunk share its fate.
    for (const Chunk& copy : inflight_.Release(chunk.id)) ChunkFailed(copy, why);
  }
  void SourceFailed(const std::string& source_id, const std::string& path,
                    const Status& why) override {
    file_.SourceFailed(source_id, path, why);
  }

 private:
  DeadLetterFile& file_;
  SourceTracker& tracker_;
  InflightTexts& inflight_;
  std::atomic<uint64_t>& abandoned_;
};

bool UnderRoot(const std::string& path, std::string root) {
  while (root.size() > 1 && root.back() == '/') root.pop_back();
  if (path == root) return true;
  return path.size() > root.size() && path.compare(0, root.size(), root) == 0 &&
         (path[root.size()] == '/' || root == "/");
}

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

Result<CleanupMode> ParseCleanupMode(std::string_view text) {
  if (text == "none") return CleanupMode::kNone;
  if (text == "incremental") return CleanupMode::kIncremental;
  if (text == "full") return CleanupMode::kFull;
  return Status::InvalidArgument("--cleanup must be none, incremental or full, not '" +
                                 std::string(text) + "'");
}

struct Pipeline::Impl {
  explicit Impl(IngestOptions o) : options(std::move(o)) {}

  IngestOptions options;
  Metrics metrics;
  std::atomic<bool> stopping{false};  // no new sources; abandon parses
  std::mutex mu;
  Status fatal;                                     // GUARDED_BY(mu): the first fatal error
  std::map<std::string, uint64_t> skipped_reasons;  // GUARDED_BY(mu)
  EmbedStage* embed_stage = nullptr;

  // Resume state (docs/RESUME.md).
  // This run, for the store's per-file records of the chunks it wrote.
  const uint64_t run_id = NewRunId();
  bool resume_enabled = false;                                      // the store keeps fingerprints
  std::string cache_namespace;                                      // empty: no embedding cache
  std::unordered_map<std::string, SourceFingerprint> fingerprints;  // read-only during the run
  SourceTracker tracker;
  // Later copies of a text whose first copy is being embedded (bounded).
  InflightTexts inflight{std::max<size_t>(256, options.queue_capacity)};
  Store* read_store = nullptr;    // second connection: cache lookups, aggregate replay
  std::mutex read_store_mu;       // one thread at a time on read_store
  bool replay_aggregate = false;  // the last run did not finish its aggregate files
  BoundedQueue<EmbeddedChunk>* aggregate_queue = nullptr;
  std::mutex seen_mu;
  std::unordered_set<std::string> seen_files;   // GUARDED_BY(seen_mu): file ids walked
  std::unordered_set<std::string> error_paths;  // GUARDED_BY(seen_mu): walk errors
  std::atomic<uint64_t> sources_unchanged{0}, sources_touched{0}, sources_completed{0};
  std::atomic<uint64_t> bytes_unchanged{0};  // of files skipped unopened (for progress)
  std::atomic<uint64_t> chunks_deleted_stale{0}, chunks_abandoned{0};
  std::atomic<uint64_t> cache_hits{0}, tokens_saved{0};
  std::atomic<bool> aggregate_failed{false};
  // Files fingerprinted by this run, by id and by path: their entries in the
  // dead-letter file from earlier runs are obsolete.
  std::mutex completed_mu;
  std::unordered_set<std::string> completed_files;  // GUARDED_BY(completed_mu)

  void Abandon(const Chunk& c) {
    chunks_abandoned.fetch_add(1, std::memory_order_relaxed);
    tracker.Resolved(c, /*abandoned=*/true);
    for (const Chunk& copy : inflight.Release(c.id)) Abandon(copy);
  }
  // A chunk known only by id (moved into a queue that refused it).
  void AbandonId(const std::string& id) {
    chunks_abandoned.fetch_add(1, std::memory_order_relaxed);
    tracker.ResolvedId(id, /*abandoned=*/true);
    for (const Chunk& copy : inflight.Release(id)) Abandon(copy);
  }
  void ReplayToAggregate(const std::string& file_id);
  // Hashes the file; true when the hash matches `fp` (then its new facts are
  // recorded and nothing else is done). `failed`: unreadable (dead-lettered).
  bool HashUnchanged(const SourceFile& file, const std::string& file_id,
                     const SourceFingerprint* fp, std::string& hash, DeadLetterSink& dead,
                     bool& failed);
  void CacheStage(BoundedQueue<Chunk>& in, BoundedQueue<Chunk>& to_embed,
                  BoundedQueue<EmbeddedChunk>& out);
  bool CommitCompleted(Store& store);

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
};

Status Pipeline::Impl::Validate() const {
  const IngestOptions& o = options;
  if (o.inputs.empty() && o.replay_chunks.empty() && o.replay_files.empty())
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
  if (o.concurrency < 0) return Status::InvalidArgument("--concurrency must be >= 0");
  return Status::OK();
}

void Pipeline::Impl::ReadSources(BoundedQueue<SourceFile>& files, BoundedQueue<Chunk>& chunks,
                                 const ParserRegistry& registry, const Parser* forced_parser,
                                 const Router& router, DeadLetterSink& dead) {
  SourceTracker::Token token = 0;  // the file being parsed; 0: untracked (stdin)
  std::string token_file_id;       // its file id
  Chunker chunker(options.chunker, [&](Chunk&& chunk) -> Status {
    if (token != 0) {
      // The store records this run's chunks per file (docs/RESUME.md).
      chunk.file_id = token_file_id;
      tracker.ChunkProduced(token, chunk);
    }
    const std::string id = token != 0 ? chunk.id : std::string();
    if (!chunks.Push(std::move(chunk))) {
      if (token != 0) tracker.ResolvedId(id, /*abandoned=*/true);
      return Status::Cancelled("pipeline stopping");
    }
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
    token = 0;
    bool tracked = resume_enabled && file->path != kStdinPath;
    const std::string file_id = file->relative_path.empty() ? file->path : file->relative_path;
    if (tracked) {
      std::lock_guard lock(seen_mu);
      if (!seen_files.insert(file_id).second) {
        // Two roots hold the same relative path: their chunks share source
        // ids, so only the first is fingerprinted (docs/RESUME.md).
        spdlog::warn(
            "'{}' appears under two inputs with the same relative path '{}'; it is "
            "not fingerprinted a second time",
            file->path, file_id);
        tracked = false;
      }
    }
    const SourceFingerprint* known = nullptr;
    if (tracked) {
      auto it = fingerprints.find(file_id);
      if (it != fingerprints.end()) known = &it->second;
      if (known != nullptr && options.skip_unchanged && known->size_bytes == file->size_bytes &&
          known->mtime_ns == file->mtime_ns) {
        // Unchanged by size and mtime: not even opened.
        sources_unchanged.fetch_add(1, std::memory_order_relaxed);
        bytes_unchanged.fetch_add(file->size_bytes, std::memory_order_relaxed);
        ReplayToAggregate(file_id);
        continue;
      }
    }
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
    std::string content_hash;
    if (tracked) {
      bool failed = false;
      if (HashUnchanged(*file, file_id, known, content_hash, dead, failed) || failed) continue;
    }
    if (tracked) {
      SourceFingerprint fp;
      fp.file_id = file_id;
      fp.path = file->path;
      fp.size_bytes = file->size_bytes;
      fp.mtime_ns = file->mtime_ns;
      fp.content_hash = content_hash;
      token = tracker.Begin(std::move(fp), options.cleanup != CleanupMode::kNone, run_id);
      token_file_id = file_id;
    }
    if (file->domain.empty()) {
      RouteDecision route = router.Route(*file);
      file->domain = std::move(route.domain);
      file->category = std::move(route.category);
    }
    ReaderSink sink(chunker, stopping, /*finish_records=*/file->path == kStdinPath);
    RecordErrors errors(dead, file->path);
    ParseStats stats;
    Status s = parser->Parse(*file, limits, sink, errors, stats);
    Add(metrics.invalid_utf8_replaced, stats.invalid_utf8_replaced);
    if (stats.latin1_fallback) Add(metrics.latin1_fallbacks);
    if (token != 0) tracker.ParseFinished(token, s.ok());
    token = 0;
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

bool Pipeline::Impl::HashUnchanged(const SourceFile& file, const std::string& file_id,
                                   const SourceFingerprint* fp, std::string& hash,
                                   DeadLetterSink& dead, bool& failed) {
  Result<std::string> h = HashFileContentsUnlessStopped(file.path, stopping);
  if (!h.ok()) {
    failed = true;  // not parsed; a stop abandons it (no fingerprint, no dead letter)
    if (h.status().code() == StatusCode::kCancelled) return false;
    if (h.status().code() == StatusCode::kNotFound) {
      // Gone between the walk and its reading: nothing to ingest and nothing
      // wrong with an input (not a dead letter); not fingerprinted.
      spdlog::warn("'{}' was deleted since the scan; skipped", file.path);
      Skip("deleted since the scan");
      return false;
    }
    dead.SourceFailed(file_id, file.path, h.status());
    return false;
  }
  hash = std::move(*h);
  if (fp != nullptr && options.skip_unchanged && fp->content_hash == hash) {
    // Touched but not changed (a copy, a checkout): record the new facts only.
    SourceFingerprint facts = *fp;
    facts.path = file.path;
    facts.size_bytes = file.size_bytes;
    facts.mtime_ns = file.mtime_ns;
    tracker.Touch(std::move(facts));
    sources_unchanged.fetch_add(1, std::memory_order_relaxed);
    sources_touched.fetch_add(1, std::memory_order_relaxed);
    ReplayToAggregate(file_id);
    return true;
  }
  return false;
}

void Pipeline::Impl::ReplayToAggregate(const std::string& file_id) {
  if (!replay_aggregate || aggregate_queue == nullptr || read_store == nullptr) return;
  Result<std::vector<EmbeddedChunk>> chunks = Status::OK();
  {
    std::lock_guard lock(read_store_mu);
    auto ids = read_store->FileChunkIds(file_id);
    if (!ids.ok()) {
      Fail(ids.status().WithContext("aggregate replay"));
      return;
    }
    chunks = read_store->ReadChunks(*ids);
  }
  if (!chunks.ok()) {
    Fail(chunks.status().WithContext("aggregate replay"));
    return;
  }
  for (EmbeddedChunk& c : *chunks) aggregate_queue->Push(std::move(c));
}

void Pipeline::Impl::CacheStage(BoundedQueue<Chunk>& in, BoundedQueue<Chunk>& to_embed,
                                BoundedQueue<EmbeddedChunk>& out) {
  const size_t lookup_batch = std::max<size_t>(1, options.embed.batch_size);
  std::vector<Chunk> batch;
  std::vector<std::string_view> texts;
  std::vector<CachedEmbedding> found;
  bool cache_ok = read_store != nullptr && !cache_namespace.empty();
  while (auto first = in.Pop()) {
    batch.clear();
    batch.push_back(std::move(*first));
    while (batch.size() < lookup_batch) {
      auto more = in.TryPop();
      if (!more) break;
      batch.push_back(std::move(*more));
    }
    if (stopping) {
      for (const Chunk& c : batch) Abandon(c);
      continue;
    }
    found.clear();
    if (cache_ok) {
      texts.clear();
      for (const Chunk& c : batch) texts.push_back(c.text);
      Status s;
      {
        std::lock_guard lock(read_store_mu);
        s = read_store->LookupEmbeddings(cache_namespace, texts, found);
      }
      if (!s.ok()) {
        spdlog::warn("embedding cache lookup failed, embedding without it: {}", s.ToString());
        found.clear();
        if (!s.IsRetryable()) cache_ok = false;
      }
    }
    for (size_t i = 0; i < batch.size(); ++i) {
      if (i < found.size() && !found[i].embedding.empty()) {
        cache_hits.fetch_add(1, std::memory_order_relaxed);
        tokens_saved.fetch_add(batch[i].token_estimate, std::memory_order_relaxed);
        const std::string id = batch[i].id;
        EmbeddedChunk e{std::move(batch[i]), std::move(found[i].embedding),
                        std::move(found[i].model)};
        if (!out.Push(std::move(e))) AbandonId(id);
        continue;
      }
      Chunk& c = batch[i];
      // A text already on its way to the API waits for that answer instead.
      // Only texts that cannot be over the per-input limit (a token is at
      // least a byte): a piece the embed stage splits never answers for the
      // whole text.
      const uint32_t tokens = c.token_estimate;
      if (cache_ok && c.text.size() <= options.embed.max_tokens_per_input &&
          inflight.ParkOrOwn(c)) {
        cache_hits.fetch_add(1, std::memory_order_relaxed);
        tokens_saved.fetch_add(tokens, std::memory_order_relaxed);
        continue;
      }
      const std::string id = c.id;
      if (!to_embed.Push(std::move(c))) AbandonId(id);
    }
  }
}

bool Pipeline::Impl::CommitCompleted(Store& store) {
  if (!resume_enabled) return true;
  std::vector<SourceManifest> done = tracker.TakeCompleted();
  if (done.empty()) return true;
  Duration backoff = std::chrono::milliseconds(200);
  for (int attempt = 1;; ++attempt) {
    Result<uint64_t> r = store.CommitSources(done);
    if (r.ok()) {
      chunks_deleted_stale.fetch_add(*r, std::memory_order_relaxed);
      uint64_t fingerprints_written = 0;
      for (const SourceManifest& m : done) fingerprints_written += m.facts_only ? 0 : 1;
      {
        std::lock_guard lock(completed_mu);
        for (const SourceManifest& m : done) {
          if (m.facts_only) continue;
          completed_files.insert(m.fingerprint.file_id);
          completed_files.insert(m.fingerprint.path);
        }
      }
      sources_completed.fetch_add(fingerprints_written, std::memory_order_relaxed);
      return true;
    }
    if (r.status().IsRetryable() && attempt < 10) {
      spdlog::warn("committing fingerprints failed (attempt {}), retrying: {}", attempt,
                   r.status().ToString());
      std::this_thread::sleep_for(backoff);
      backoff = std::min<Duration>(backoff * 2, std::chrono::seconds(10));
      continue;
    }
    // The chunks are stored; without fingerprints the rerun redoes these
    // files (from the cache), so nothing is lost.
    Fail(r.status().WithContext("commit fingerprints in " + store.Describe()));
    return false;
  }
}

void Pipeline::Impl::WriteStore(Store& store, BoundedQueue<EmbeddedChunk>& in,
                                BoundedQueue<EmbeddedChunk>* aggregate_out, DeadLetterSink& dead) {
  // As many rows per call as the store writes at once (Store::ParallelWrites
  // transactions of RowsPerTransaction rows).
  const size_t batch_rows = std::max<size_t>(1, store.RowsPerTransaction()) *
                            static_cast<size_t>(std::max(1, store.ParallelWrites()));
  std::vector<EmbeddedChunk> batch;
  batch.reserve(batch_rows);
  std::mt19937_64 rng(std::random_device{}());
  bool failed = false;

  // A store that fails a whole batch (disk full, I/O error, lost server,
  // permissions) says nothing about its chunks: they are abandoned for the
  // next run, never dead-lettered. Only rows the store refuses one by one
  // (WriteResult::rejected) are the input's fault.
  auto abandon_batch = [&]() {
    for (const auto& e : batch) Abandon(e.chunk);
    batch.clear();
  };
  std::vector<EmbeddedChunk> carry;  // parked copies of texts just stored
  auto flush_once = [&]() {
    if (batch.empty()) return;
    if (failed) {
      abandon_batch();
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
          if (rejected[i]) continue;
          tracker.Resolved(batch[i].chunk, /*abandoned=*/false);
          for (Chunk& copy : inflight.Release(batch[i].chunk.id)) {
            carry.push_back(EmbeddedChunk{std::move(copy), batch[i].embedding, batch[i].model});
          }
          if (aggregate_out != nullptr) aggregate_out->Push(std::move(batch[i]));
        }
        batch.clear();
        if (!CommitCompleted(store)) failed = true;
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
      // Not retryable (or retries exhausted): every later batch would fail
      // the same way, so stop the run.
      abandon_batch();
      failed = true;
      Fail(r.status.WithContext("store " + store.Describe()));
      return;
    }
  };
  auto flush = [&]() {
    flush_once();
    while (!carry.empty()) {  // the copies take their owner's vector
      batch.swap(carry);
      carry.clear();
      flush_once();
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
    if (!failed && !CommitCompleted(store)) failed = true;
  }
  flush();
  if (!failed) CommitCompleted(store);
  if (Status s = store.Flush(); !s.ok()) Fail(s.WithContext("store flush"));
}

void Pipeline::Impl::Aggregate(Aggregator& aggregator, BoundedQueue<EmbeddedChunk>& in) {
  bool failed = false;
  while (auto item = in.Pop()) {
    if (failed) continue;  // keep draining so the store writer never blocks
    Add(metrics.aggregator.items_in);
    if (Status s = aggregator.Add(*item); !s.ok()) {
      failed = true;
      aggregate_failed = true;
      Fail(s.WithContext("aggregator"));
    }
  }
  if (!failed) {
    if (Status s = aggregator.Finish(); !s.ok()) {
      aggregate_failed = true;
      Fail(s.WithContext("aggregator"));
    }
  }
  Add(metrics.aggregate_files_written, aggregator.FilesWritten());
}

IngestReport Pipeline::Impl::Run() {
  IngestReport report;
  const TimePoint start = SteadyClock::now();
  std::optional<double> price;  // USD per 1M tokens, once the embedder is known
  auto finish = [&](Status s) {
    if (price)
      report.estimated_cost_usd = static_cast<double>(Get(metrics.prompt_tokens)) / 1e6 * *price;
    // Also for a run that fails before any stage starts: nothing produced,
    // so nothing can fail to reconcile.
    report.chunks_abandoned = chunks_abandoned;
    report.reconciled = Get(metrics.chunks_produced) == Get(metrics.chunks_stored) +
                                                            Get(metrics.chunks_dead_lettered) +
                                                            report.chunks_abandoned;
    report.status = std::move(s);
    report.elapsed_s = ToSeconds(SteadyClock::now() - start);
    return report;
  };
  if (Status s = Validate(); !s.ok()) return finish(s);

  // Open everything that can fail before any work starts, so a bad path or an
  // unreachable store fails in a second with one clear message.
  auto dead_or = DeadLetterFile::Open(DeadLetterPathFor(options), metrics);
  if (!dead_or.ok()) return finish(dead_or.status());
  DeadLetterFile& dead_file = **dead_or;
  TrackingDeadLetters dead(dead_file, tracker, inflight, chunks_abandoned);

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
    report.embedder_description =
        "http " + RedactEndpoint(options.http.endpoint) + " model " + options.http.model;
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

  if (use_http) {  // the offline embedder costs nothing
    price = options.price_per_mtok >= 0 ? std::optional<double>(options.price_per_mtok)
                                        : BuiltInPricePerMillionTokens(transport->ModelName());
  }

  // The cache key names what produced a vector: the model and the requested
  // dimensions (0: the model's default). Vectors of another model never match.
  if (options.embedding_cache) {
    cache_namespace = transport->ModelName() + ":" +
                      std::to_string(use_http ? options.http.dimensions : options.hash.dimensions);
  }
  StoreOptions store_options = options.store;
  store_options.embedding_cache_namespace = cache_namespace;
  store_options.run_id = run_id;
  // A store belongs to one (model, dimensions): opening refuses another
  // model's store (unless --reembed), and the run holds the store's writer
  // lock so that a second run cannot interleave with it (docs/RESUME.md).
  store_options.model = transport->ModelName();
  if (!use_http) {
    store_options.dimensions = options.hash.dimensions;
  } else if (options.http.dimensions > 0) {
    store_options.dimensions = options.http.dimensions;
  }
  store_options.exclusive_run = true;
  store_options.read_only = false;
  auto store_or = OpenStore(options.store_uri, store_options);
  if (!store_or.ok()) return finish(store_or.status());
  Store& store = **store_or;
  report.store_description = store.Describe();
  // No --dimensions: the vectors must match the store's, when it has any,
  // instead of whatever length the first response brings.
  if (use_http && options.http.dimensions == 0 && !store_options.reembed) {
    if (auto stored = store.StoredModel(); stored.ok() && stored->dimensions > 0) {
      HttpEmbedderOptions http = options.http;
      http.expected_dimensions = stored->dimensions;
      auto t = MakeHttpTransport(http);
      if (!t.ok()) return finish(t.status());
      transport = std::move(*t);
    }
  }

  // Fingerprints, loaded once (bounded by the number of input files), and a
  // second connection for cache lookups while the writer commits.
  std::unique_ptr<Store> reader_store;
  {
    auto loaded = store.LoadFingerprints();
    if (loaded.ok()) {
      resume_enabled = true;
      for (SourceFingerprint& f : *loaded) {
        std::string id = f.file_id;
        fingerprints.emplace(std::move(id), std::move(f));
      }
      // Reads only: no lock (this run holds it), no second --reembed.
      StoreOptions reader_options = store_options;
      reader_options.exclusive_run = false;
      reader_options.read_only = true;
      reader_options.reembed = false;
      auto second = OpenStore(options.store_uri, reader_options);
      if (!second.ok()) return finish(second.status());
      reader_store = std::move(*second);
      read_store = reader_store.get();
    } else if (loaded.status().code() == StatusCode::kInvalidArgument) {
      report.resume_supported = false;
      cache_namespace.clear();
      spdlog::warn("{} keeps no fingerprints: every file is re-read and re-embedded",
                   store.Describe());
    } else {
      return finish(loaded.status().WithContext("load fingerprints"));
    }
  }

  std::unique_ptr<Aggregator> aggregator;
  std::string aggregate_marker;
  if (options.aggregate_enabled) {
    auto a = OpenAggregator(options.aggregate);
    if (!a.ok()) return finish(a.status());
    aggregator = std::move(*a);
    // The marker exists while a run may have stored chunks that the aggregate
    // files do not show yet. Found at start: the last run died, so files
    // skipped as unchanged are replayed from the store into the aggregator.
    aggregate_marker =
        (std::filesystem::path(options.aggregate.out_dir) / ".sluice-incomplete").string();
    std::error_code ec;
    replay_aggregate = resume_enabled && std::filesystem::exists(aggregate_marker, ec);
    if (resume_enabled) {
      Result<int> fd = OpenPrivateFileForAppend(aggregate_marker);
      if (!fd.ok()) return finish(fd.status());
      const bool synced = ::fsync(*fd) == 0;
      ::close(*fd);
      if (!synced) return finish(Status::IOError("cannot write " + aggregate_marker));
    }
  }

  std::unique_ptr<ConcurrencyLimiter> limiter = MakeLimiter(options);
  std::unique_ptr<RatePacer> pacer = MakePacer(options);

  const size_t cap = options.queue_capacity;
  BoundedQueue<SourceFile> file_queue(cap);
  BoundedQueue<Chunk> chunk_queue(cap, 0, ChunkBytes);
  BoundedQueue<Chunk> embed_queue(cap, 0, ChunkBytes);  // cache misses
  BoundedQueue<EmbeddedChunk> vector_queue(cap, 0, EmbeddedBytes);
  BoundedQueue<EmbeddedChunk> aggregate_queue(cap, 0, EmbeddedBytes);
  if (aggregator) this->aggregate_queue = &aggregate_queue;

  EmbedStage stage(options.embed, *transport, *limiter, *pacer, SystemClock::Instance(), metrics,
                   dead);
  {
    std::lock_guard lock(mu);
    embed_stage = &stage;
  }
  stage.SetStopNotice([](const std::string& notice) { spdlog::warn("{}", notice); });
  TraceHook trace = MakeTraceHook(options, stage, metrics);
  trace.SetQueueProbe([&] {  // queue depths for the trace (stages may keep them instead)
    metrics.reader.queue_depth = static_cast<int64_t>(file_queue.Size());
    metrics.cache.queue_depth = static_cast<int64_t>(chunk_queue.Size());
    metrics.embedder.queue_depth = static_cast<int64_t>(embed_queue.Size());
    metrics.store.queue_depth = static_cast<int64_t>(vector_queue.Size());
    metrics.aggregator.queue_depth = static_cast<int64_t>(aggregate_queue.Size());
  });

  // Progress (src/pipeline/progress.h): totals from a size scan of the same
  // files on a thread of its own, so the ETA does not wait for the walk.
  std::atomic<bool> totals_known{false};
  std::atomic<uint64_t> total_files{0}, total_bytes{0};
  std::thread scan;
  std::thread progress;
  std::unique_ptr<ProgressReporter> reporter;
  if (options.progress) {
    scan = std::thread([&] {
      uint64_t files = 0, bytes = 0;
      if (enumerator.Scan(stopping, files, bytes)) {
        total_files = files;
        total_bytes = bytes;
        totals_known = true;
      }
    });
    const bool terminal = ::isatty(STDERR_FILENO) != 0;
    reporter = std::make_unique<ProgressReporter>(
        [&, price] {
          ProgressSnapshot s;
          s.elapsed_s = ToSeconds(SteadyClock::now() - start);
          s.sources_done = Get(metrics.sources_seen);
          s.bytes_done = Get(metrics.bytes_read) + bytes_unchanged.load();
          s.totals_known = totals_known;
          s.sources_total = total_files;
          s.bytes_total = total_bytes;
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
        [to_logger = options.progress_through_logger](const std::string& line, bool on_terminal) {
          if (on_terminal) {
            std::fprintf(stderr, "\r\033[K[sluice] %s", line.c_str());
          } else if (to_logger) {
            spdlog::info("progress: {}", line);
          } else {
            std::fprintf(stderr, "[sluice] progress: %s\n", line.c_str());
          }
          std::fflush(stderr);
        },
        terminal, options.progress_interval);
    progress = std::thread([&reporter, terminal] {
      reporter->Run();
      if (terminal) {
        std::fprintf(stderr, "\r\033[K");
        std::fflush(stderr);
      }
    });
  }

  std::thread walker([&] {
    for (const SourceFile& f : options.replay_files) {
      if (stopping || !file_queue.Push(SourceFile(f))) break;
    }
    // Replayed chunks belong to no file being tracked, so their outcome
    // changes no fingerprint.
    for (const Chunk& c : options.replay_chunks) {
      if (stopping || !chunk_queue.Push(Chunk(c))) break;
      Add(metrics.chunks_produced);
    }
    Status s =
        enumerator.Run(file_queue, stopping, [&](const std::string& path, const Status& why) {
          {
            std::lock_guard lock(seen_mu);
            error_paths.insert(path);
          }
          dead.SourceFailed(path, path, why);
        });
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

  std::thread cache([&] {
    CacheStage(chunk_queue, embed_queue, vector_queue);
    embed_queue.Close();
  });

  std::thread embedder([&] {
    Status s = stage.Run(embed_queue, vector_queue);
    if (!s.ok()) Fail(s);
    // The stage returns early only when stopping; whatever is still queued
    // (and unblocking the cache stage) is abandoned, to be redone by a rerun.
    while (auto c = embed_queue.Pop()) Abandon(*c);
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
  cache.join();
  embedder.join();
  writer.join();
  if (aggregate_thread.joinable()) aggregate_thread.join();
  {
    std::lock_guard lock(mu);
    embed_stage = nullptr;
  }
  this->aggregate_queue = nullptr;
  // Every owner resolved, so nothing should be parked; if something is, it
  // is abandoned (counted, its file not fingerprinted) rather than lost.
  if (std::vector<Chunk> left = inflight.TakeAll(); !left.empty()) {
    spdlog::warn("{} chunks waited for a text that never came back; rerun to redo them",
                 left.size());
    for (const Chunk& c : left) Abandon(c);
  }
  if (reporter) reporter->Stop();
  if (progress.joinable()) progress.join();
  if (scan.joinable()) scan.join();
  trace.Finish(report);

  // --cleanup full: the files under the roots that this complete walk did
  // not see are gone; delete them. Never after a stop or a failure (an
  // incomplete walk would delete files that still exist).
  if (options.cleanup == CleanupMode::kFull && resume_enabled && !stopping && FatalStatus().ok()) {
    std::vector<std::string> gone;
    {
      std::lock_guard lock(seen_mu);
      for (const auto& [id, fp] : fingerprints) {
        if (seen_files.count(id) || error_paths.count(fp.path)) continue;
        for (const std::string& root : options.inputs) {
          if (root != kStdinPath && UnderRoot(fp.path, root)) {
            gone.push_back(id);
            break;
          }
        }
      }
    }
    if (!gone.empty()) {
      std::sort(gone.begin(), gone.end());
      Result<uint64_t> r = store.DeleteSources(gone);
      if (r.ok()) {
        report.sources_deleted = gone.size();
        chunks_deleted_stale.fetch_add(*r, std::memory_order_relaxed);
      } else {
        Fail(r.status().WithContext("--cleanup full"));
      }
    }
    // The aggregate files follow (docs/AGGREGATE_FORMAT.md, "Removal"): a
    // source this walk did not see keeps its chunks only while the store holds
    // them, which also drops the files that a run dying between DeleteSources
    // and this point removed from the store alone.
    if (aggregator && FatalStatus().ok()) {
      const std::unordered_set<std::string> deleted(gone.begin(), gone.end());
      RetentionPolicy policy;
      policy.source = [&](std::string_view source_id) -> Result<SourceRetention> {
        const std::string id(source_id);
        if (deleted.count(id)) return SourceRetention::kDrop;
        std::lock_guard lock(seen_mu);
        if (seen_files.count(id) || fingerprints.count(id)) return SourceRetention::kKeep;
        return SourceRetention::kCheckChunks;  // a JSONL record, stdin, or no file any more
      };
      policy.chunks = [&](std::string_view domain, std::string_view category,
                          std::span<const std::string> ids, std::vector<bool>& keep) -> Status {
        Result<std::vector<EmbeddedChunk>> stored = store.ReadChunks(ids);
        if (!stored.ok()) return stored.status();
        std::unordered_map<std::string_view, size_t> at;
        for (size_t i = 0; i < ids.size(); ++i) at.emplace(ids[i], i);
        for (const EmbeddedChunk& c : *stored) {
          auto it = at.find(c.chunk.id);
          if (it != at.end() && c.chunk.domain == domain && c.chunk.category == category)
            keep[it->second] = true;
        }
        return Status::OK();
      };
      if (auto pruned = aggregator->Retain(policy); !pruned.ok()) {
        aggregate_failed = true;  // keeps the marker: the files may still hold them
        Fail(pruned.status().WithContext("--cleanup full: aggregate"));
      } else if (pruned->chunks_dropped > 0 || pruned->files_skipped > 0) {
        spdlog::info(
            "--cleanup full: {} chunks dropped from the aggregate files ({} rewritten, {} "
            "removed; {} *.json that are no aggregate files left alone)",
            pruned->chunks_dropped, pruned->files_rewritten, pruned->files_removed,
            pruned->files_skipped);
      }
    }
  }

  if (reader_store) {
    std::lock_guard lock(read_store_mu);
    read_store = nullptr;
    reader_store->Close();
  }
  if (Status s = store.Close(); !s.ok()) Fail(s.WithContext("store close"));
  if (Status s = dead_file.Close(); !s.ok()) {
    Fail(s);
  } else {
    std::lock_guard lock(completed_mu);
    Result<uint64_t> dropped = dead_file.DropEarlierEntriesOf(completed_files);
    if (!dropped.ok()) {
      spdlog::warn("dead-letter file keeps entries now stored: {}", dropped.status().message());
    } else if (*dropped > 0) {
      spdlog::info("{} earlier entries of files completed by this run removed from {}", *dropped,
                   options.dead_letter_path);
    }
  }
  // The aggregate files are complete when the aggregator finished and, if
  // this run had to replay, the walk saw every file.
  if (!aggregate_marker.empty() && !aggregate_failed &&
      (!replay_aggregate || (!stopping && FatalStatus().ok()))) {
    std::error_code ec;
    std::filesystem::remove(aggregate_marker, ec);
  }

  report.sources_unchanged = sources_unchanged;
  report.sources_touched = sources_touched;
  report.sources_completed = sources_completed;
  report.chunks_deleted_stale = chunks_deleted_stale;
  report.chunks_abandoned = chunks_abandoned;
  report.cache_hits = cache_hits;
  report.api_tokens_saved = tokens_saved;
  const uint64_t per_request = std::max<uint64_t>(1, options.embed.batch_size);
  report.api_requests_saved = (report.cache_hits + per_request - 1) / per_request;
  report.dead_letter_reasons = dead_file.ReasonCounts();
  {
    std::lock_guard lock(mu);
    report.skipped_reasons = skipped_reasons;
  }
  report.queue_high_water = {{"files", file_queue.HighWaterItems()},
                             {"chunks", chunk_queue.HighWaterItems()},
                             {"embed", embed_queue.HighWaterItems()},
                             {"vectors", vector_queue.HighWaterItems()},
                             {"aggregate", aggregate_queue.HighWaterItems()}};
  report.reconciled = Get(metrics.chunks_produced) == Get(metrics.chunks_stored) +
                                                          Get(metrics.chunks_dead_lettered) +
                                                          report.chunks_abandoned;
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
