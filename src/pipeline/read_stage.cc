#include "pipeline/read_stage.h"

#include "common/thread_name.h"

#include <unistd.h>

#include <fcntl.h>
#include <xxhash.h>
#include <memory>
#include <optional>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <fstream>
#include <thread>
#include <vector>

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include "common/hashing.h"
#include "pipeline/source_enumerator.h"

namespace sluice {

namespace {

constexpr size_t kHeadBytes = 4096;

// Files up to this size are read once, whole, before anything else: the
// format sniff, the fingerprint and the parse then share one open and one
// read (they were three opens and six reads of each small file, ~16 system
// calls, docs/PERFORMANCE.md), and the fingerprint is the hash of exactly
// the bytes parsed. The size of the text parsers' read block, so a reader
// holds no more memory than when it streams.
constexpr size_t kReadWholeBytes = 1 << 20;

// Reads the file at `path` into `buffer` (kReadWholeBytes + 1 bytes) when it
// holds at most kReadWholeBytes, and returns its bytes there; nullopt on any
// failure or when it is larger (it may have grown since the walk). The
// caller then reads it as before, and reports what went wrong the same way
// as before.
std::optional<std::string_view> ReadWholeSmallFile(const std::string& path, char* buffer) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return std::nullopt;
  // One byte beyond the limit tells a file that grew past it.
  constexpr size_t kCapacity = kReadWholeBytes + 1;
  size_t got = 0;
  bool ok = true;
  while (got < kCapacity) {
    const ssize_t n = ::read(fd, buffer + got, kCapacity - got);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) ok = false;
    if (n <= 0) break;
    got += static_cast<size_t>(n);
  }
  ::close(fd);
  if (!ok || got > kReadWholeBytes) return std::nullopt;
  return std::string_view(buffer, got);
}

std::string ReadHead(const std::string& path) {
  std::string head;
  if (path == kStdinPath) return head;
  std::ifstream in(path, std::ios::binary);
  if (!in) return head;
  head.resize(kHeadBytes);
  in.read(head.data(), static_cast<std::streamsize>(head.size()));
  head.resize(static_cast<size_t>(in.gcount()));
  return head;
}

// Between a parser and the chunker: counts chunks, and stops the parse when
// the run is stopping. `finish_records`: stdin, where every record already
// received must be chunked (then stored or counted abandoned) rather than
// cut off mid-record; its parser stops at the next read instead.
class ReaderSink final : public DocumentSink {
 public:
  ReaderSink(Chunker& chunker, const std::atomic<bool>& stopping, bool finish_records)
      : chunker_(chunker), stopping_(stopping), finish_records_(finish_records) {}
  Status BeginDocument(const SourceInfo& info) override { return chunker_.BeginDocument(info); }
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
  uint64_t chunks() const { return chunks_; }

 private:
  Chunker& chunker_;
  const std::atomic<bool>& stopping_;
  const bool finish_records_;
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

// HashFileContents that gives up (Cancelled) between reads once `stop` is
// set, so a stop does not wait for a huge file to be hashed.
Result<std::string> HashFileContentsUnlessStopped(const std::string& path,
                                                  const std::atomic<bool>& stop) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0 && errno == ENOENT) return Status::NotFound(path + " was deleted since the scan");
  if (fd < 0) return Status::IOError("cannot open " + path + ": " + std::strerror(errno));
  XXH3_state_t* state = XXH3_createState();
  XXH3_128bits_reset(state);
  // One uninitialised buffer per reader thread: a zero-filled 256 KiB
  // vector per file was a memset of 256 KiB for every small file.
  constexpr size_t kHashBufferBytes = 256 * 1024;
  thread_local const std::unique_ptr<char[]> buf(new char[kHashBufferBytes]);
  Status s;
  while (true) {
    const ssize_t n = ::read(fd, buf.get(), kHashBufferBytes);
    if (n < 0) {
      if (errno == EINTR) continue;
      s = Status::IOError("cannot read " + path + ": " + std::strerror(errno));
      break;
    }
    if (n == 0) break;
    XXH3_128bits_update(state, buf.get(), static_cast<size_t>(n));
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

ReadStage::ReadStage(ReadStageOptions options, RunContext& run, DeadLetterSink& dead,
                     const ParserRegistry& registry, const Parser* forced_parser,
                     const Router& router,
                     const std::unordered_map<std::string, SourceFingerprint>& fingerprints,
                     std::function<void(const std::string& file_id)> on_unchanged)
    : options_(options),
      run_(run),
      dead_(dead),
      registry_(registry),
      forced_parser_(forced_parser),
      router_(router),
      fingerprints_(fingerprints),
      on_unchanged_(std::move(on_unchanged)) {}

void ReadStage::Run(BoundedQueue<SourceFile>& files, BoundedQueue<Chunk>& chunks) {
  std::vector<std::thread> threads;
  for (int i = 0; i < std::max(1, options_.threads); ++i) {
    threads.emplace_back([&] {
      SetThreadName("sluice-read");
      ReadFiles(files, chunks);
      AddThreadCpuTime(run_.metrics().reader);
    });
  }
  for (std::thread& t : threads) t.join();
  chunks.Close();
}

bool ReadStage::Saw(const std::string& file_id) const {
  MutexLock lock(seen_mu_);
  return seen_files_.count(file_id) > 0;
}

void ReadStage::ReadFiles(BoundedQueue<SourceFile>& files, BoundedQueue<Chunk>& chunks) {
  Metrics& metrics = run_.metrics();
  SourceTracker& tracker = run_.tracker();
  SourceTracker::Token token = 0;  // the file being parsed; 0: untracked (stdin)
  std::string token_file_id;       // its file id
  bool token_is_range = false;     // a byte range: its chunks get no run records
  // This thread's time blocked handing chunks on (BusyTimer).
  std::chrono::nanoseconds push_waited{0};
  Chunker chunker(run_.options().chunker, [&](Chunk&& chunk) -> Status {
    if (token != 0) {
      // The store records this run's chunks per file (docs/RESUME.md).
      chunk.file_id = token_file_id;
      chunk.record_run = !token_is_range;
      tracker.ChunkProduced(token, chunk);
    }
    const std::string id = token != 0 ? chunk.id : std::string();
    if (!chunks.Push(std::move(chunk), &push_waited)) {
      if (token != 0) tracker.ResolvedId(id, /*abandoned=*/true);
      return Status::Cancelled("pipeline stopping");
    }
    Add(metrics.chunks_produced);
    Add(metrics.reader.items_out);
    return Status::OK();
  });
  ParseLimits limits;
  // This thread's buffer for files read whole, allocated once and never
  // zero-filled (a std::string resized to 1 MiB per file was a 1 MiB
  // memset per file: 3.5% of an offline run's CPU).
  const std::unique_ptr<char[]> whole(new char[kReadWholeBytes + 1]);
  while (auto file = files.Pop()) {
    if (run_.stopping()) {
      files.Cancel();  // unblocks the walker; unread files were never started
      break;
    }
    BusyTimer busy(run_.clock(), metrics.reader, &push_waited);
    Add(metrics.sources_seen);
    Add(metrics.reader.items_in);
    token = 0;
    token_is_range = false;
    bool tracked = options_.resume && file->path != kStdinPath;
    bool tracked_by_store = false;  // its outcome comes from the store writer's commit
    const std::string file_id = file->relative_path.empty() ? file->path : file->relative_path;
    // What on_source_done calls it: the file id, or for a byte range the
    // file id and the range (several ranges of a file may be in flight).
    const std::string done_id = SourceDoneId(*file);
    // Ranges come from a source feed only, and a pipeline refuses a feed
    // without fingerprints (pipeline.cc): a range is always tracked, so it is
    // acked once its chunks are stored.
    const bool range = file->IsRange();
    if (tracked && !range && options_.track_once_per_path) {
      MutexLock lock(seen_mu_);
      if (!seen_files_.insert(file_id).second) {
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
      auto it = fingerprints_.find(file_id);
      if (it != fingerprints_.end()) known = &it->second;
      if (known != nullptr && options_.skip_unchanged && known->size_bytes == file->size_bytes &&
          known->mtime_ns == file->mtime_ns) {
        // Unchanged by size and mtime: not even opened.
        // A range of it: its file was committed whole as it is now (by an
        // earlier job, or this one's whole-file pass); nothing to redo.
        sources_unchanged_.fetch_add(1, std::memory_order_relaxed);
        bytes_unchanged_.fetch_add(file->size_bytes, std::memory_order_relaxed);
        if (on_unchanged_ && !range) on_unchanged_(file_id);
        Done(done_id, SourceOutcome::kUnchanged);
        continue;
      }
    }
    const uint64_t bytes = range ? file->range_end - file->range_begin : file->size_bytes;
    Add(metrics.bytes_read, bytes);
    Add(metrics.reader.bytes, bytes);
    file->contents.reset();
    if (!range && file->path != kStdinPath && file->size_bytes <= kReadWholeBytes) {
      file->contents = ReadWholeSmallFile(file->path, whole.get());
    }
    const Parser* parser = forced_parser_;
    if (parser == nullptr && file->path == kStdinPath) parser = registry_.FindByName("jsonl");
    if (parser == nullptr) {
      std::string head_read;  // when the file was not read whole
      if (!file->contents) head_read = ReadHead(file->path);
      const std::string_view head =
          file->contents ? file->contents->substr(0, kHeadBytes) : std::string_view(head_read);
      parser = registry_.Find(file->path, head);
      if (parser == nullptr) {
        const auto dot = file->relative_path.rfind('.');
        run_.Skip(dot == std::string::npos
                      ? "unsupported format (no extension)"
                      : "unsupported format (" + file->relative_path.substr(dot) + ")");
        Done(done_id, SourceOutcome::kSkipped);
        continue;
      }
    }
    if (range && parser->Name() != "jsonl") {
      // Only JSONL records can be read a range at a time (enqueue splits no
      // other format); another parser would read the whole file per range.
      Status why = Status::InvalidArgument("a byte range of " + file->path +
                                           " cannot be parsed as " + std::string(parser->Name()) +
                                           ": only JSONL files are split into ranges");
      Add(metrics.reader.errors);
      dead_.SourceFailed(file_id, file->path, why);
      Done(done_id, SourceOutcome::kDeadLettered, why);
      continue;
    }
    std::string content_hash;
    if (range) {
      // No hash and no fingerprint: the file's whole-file pass commits it.
      tracked_by_store = true;
      token = tracker.BeginRange(done_id);
      token_file_id = file_id;
      token_is_range = true;
    } else if (tracked) {
      bool failed = false;
      if (HashUnchanged(*file, file_id, known, content_hash, failed) || failed) continue;
      tracked_by_store = true;
      SourceFingerprint fp;
      fp.file_id = file_id;
      fp.path = file->path;
      fp.size_bytes = file->size_bytes;
      fp.mtime_ns = file->mtime_ns;
      fp.content_hash = content_hash;
      token = tracker.Begin(std::move(fp), options_.delete_stale, run_.run_id());
      token_file_id = file_id;
    }
    if (file->domain.empty()) {
      RouteDecision route = router_.Route(*file);
      file->domain = std::move(route.domain);
      file->category = std::move(route.category);
    }
    ReaderSink sink(chunker, run_.stopping_flag(), /*finish_records=*/file->path == kStdinPath);
    RecordErrors errors(dead_, file->path);
    ParseStats stats;
    const TimePoint parse_start = run_.clock().Now();
    const std::chrono::nanoseconds waited_before_parse = push_waited;
    Status s = parser->Parse(*file, limits, sink, errors, stats);
    // The parse's own time: without the waits to hand its chunks on.
    const int64_t parse_ns =
        (run_.clock().Now() - parse_start).count() - (push_waited - waited_before_parse).count();
    metrics.parse_times.Record(std::string(parser->Name()), file->size_bytes,
                               static_cast<uint64_t>(std::max<int64_t>(0, parse_ns)));
    Add(metrics.invalid_utf8_replaced, stats.invalid_utf8_replaced);
    if (stats.latin1_fallback) Add(metrics.latin1_fallbacks);
    if (token != 0) tracker.ParseFinished(token, s.ok());
    token = 0;
    if (s.code() == StatusCode::kCancelled && run_.stopping()) {
      files.Cancel();
      break;
    }
    if (!s.ok()) {
      if (s.code() == StatusCode::kInvalidArgument &&
          s.message().find("binary") != std::string::npos) {
        run_.Skip("binary file");
        Done(done_id, SourceOutcome::kSkipped);
      } else {
        Add(metrics.reader.errors);
        dead_.SourceFailed(file->relative_path, file->path, s);
        Done(done_id, SourceOutcome::kDeadLettered, s);
      }
      continue;
    }
    if (sink.chunks() == 0 && stats.records_skipped == 0) {
      run_.Skip("empty");
    } else if (sink.chunks() > 0) {
      Add(metrics.sources_ok);
    }
    // Untracked (stdin, no fingerprints): nothing later would say so.
    if (!tracked_by_store) Done(done_id, SourceOutcome::kCommitted);
  }
}

void ReadStage::Done(const std::string& file_id, SourceOutcome outcome, const Status& why) {
  if (run_.options().on_source_done) run_.options().on_source_done(file_id, outcome, why, 0);
}

bool ReadStage::HashUnchanged(const SourceFile& file, const std::string& file_id,
                              const SourceFingerprint* known, std::string& hash, bool& failed) {
  // Hash128Hex is the one-shot form of the streaming hash below: the same
  // value for the same bytes.
  Result<std::string> h = file.contents
                              ? Result<std::string>(Hash128Hex(*file.contents))
                              : HashFileContentsUnlessStopped(file.path, run_.stopping_flag());
  if (!h.ok()) {
    failed = true;  // not parsed; a stop abandons it (no fingerprint, no dead letter)
    if (h.status().code() == StatusCode::kCancelled) return false;
    if (h.status().code() == StatusCode::kNotFound) {
      // Gone between the walk and its reading: nothing to ingest and nothing
      // wrong with an input (not a dead letter); not fingerprinted.
      spdlog::warn("'{}' was deleted since the scan; skipped", file.path);
      run_.Skip("deleted since the scan");
      Done(file_id, SourceOutcome::kSkipped);
      return false;
    }
    Add(run_.metrics().reader.errors);
    dead_.SourceFailed(file_id, file.path, h.status());
    Done(file_id, SourceOutcome::kDeadLettered, h.status());
    return false;
  }
  hash = std::move(*h);
  if (known != nullptr && options_.skip_unchanged && known->content_hash == hash) {
    // Touched but not changed (a copy, a checkout): record the new facts only.
    SourceFingerprint facts = *known;
    facts.path = file.path;
    facts.size_bytes = file.size_bytes;
    facts.mtime_ns = file.mtime_ns;
    run_.tracker().Touch(std::move(facts));
    sources_unchanged_.fetch_add(1, std::memory_order_relaxed);
    sources_touched_.fetch_add(1, std::memory_order_relaxed);
    if (on_unchanged_) on_unchanged_(file_id);
    Done(file_id, SourceOutcome::kUnchanged);
    return true;
  }
  return false;
}

}  // namespace sluice
