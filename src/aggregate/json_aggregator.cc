// The JSON aggregator: opening (output folder, probe, spool, removing what
// dead processes left), groups, Add, spilling buffers to the spool, Finish
// and moved sources. Its other parts: aggregate_index.cc (the scratch chunk
// index), aggregate_import.cc (an earlier run's group file),
// group_writer.cc (the atomic rewrite of a group file), aggregate_retain.cc
// (retention), aggregate_util.{h,cc} (shared helpers).
#include "aggregate/json_aggregator.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <functional>
#include <limits>
#include <unordered_set>
#include <utility>

#include <fmt/format.h>
#include <simdjson.h>
#include <sqlite3.h>

#include "aggregate/aggregate_util.h"
#include "common/json_writer.h"
#include "common/private_file.h"

namespace sluice {

namespace fs = std::filesystem;
using namespace aggregate;  // the folder's shared helpers (aggregate_util.h)

namespace {

std::atomic<int> g_instance_counter{0};

// The writability probe each Open creates and unlinks in the output folder.
constexpr std::string_view kProbePrefix = ".sluice-probe-";

// True when `pid` names no running process: whatever it left behind (a crash
// or kill -9 between create and unlink) belongs to nobody.
bool OwnerIsGone(long pid) {
  return pid > 0 && ::kill(static_cast<pid_t>(pid), 0) != 0 && errno == ESRCH;
}

// Removes spool folders ("<pid>-<n>") left by processes that no longer run
// (a crash or kill -9); live ones belong to another running aggregator.
void RemoveStaleSpools(const std::string& spool_root) {
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator(spool_root, ec)) {
    const std::string name = entry.path().filename().string();
    char* end = nullptr;
    const long pid = std::strtol(name.c_str(), &end, 10);
    if (end == name.c_str() || *end != '-') continue;
    if (OwnerIsGone(pid)) {
      std::error_code ignored;
      fs::remove_all(entry.path(), ignored);
    }
  }
}

// Removes probes ("<kProbePrefix><pid>") of processes that no longer run.
void RemoveStaleProbes(const std::string& dir) {
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator(dir, ec)) {
    const std::string name = entry.path().filename().string();
    if (name.rfind(kProbePrefix, 0) != 0) continue;
    const char* digits = name.c_str() + kProbePrefix.size();
    char* end = nullptr;
    const long pid = std::strtol(digits, &end, 10);
    if (end == digits || *end != '\0') continue;
    if (OwnerIsGone(pid)) {
      std::error_code ignored;
      fs::remove(entry.path(), ignored);
    }
  }
}

// The rewrite temp file of a group file: "<c>.json.tmp.<pid>.XXXXXX" beside
// it (AtomicFileWriter; "<c>.json.tmp.<pid>" from earlier versions).
constexpr std::string_view kTempInfix = ".json.tmp.";

// Removes rewrite temp files ("<d>/<c>.json.tmp.<pid>[.XXXXXX]") of
// processes that no longer run: a kill -9 between create and rename leaves
// one. A running process's temp file may be mid-write, so it stays. Best
// effort: a folder it cannot list is left alone.
void RemoveStaleTemps(const std::string& dir) {
  (void)ForEachDomainFolderEntry(dir, [](const fs::directory_entry& file) {
    const std::string name = file.path().filename().string();
    const size_t at = name.rfind(kTempInfix);
    if (at == std::string::npos) return;
    const char* digits = name.c_str() + at + kTempInfix.size();
    char* end = nullptr;
    const long pid = std::strtol(digits, &end, 10);
    if (end == digits || *digits == '-' || *digits == '+') return;
    if (*end != '\0' && (*end != '.' || std::strchr(end + 1, '.') != nullptr)) return;
    if (OwnerIsGone(pid)) {
      std::error_code ignored;
      fs::remove(file.path(), ignored);
    }
  });
}

}  // namespace

JsonAggregator::JsonAggregator(AggregatorOptions options, AggregatorLimits limits)
    : options_(std::move(options)),
      limits_(limits),
      parser_(std::make_unique<simdjson::dom::parser>()) {}

JsonAggregator::~JsonAggregator() { RemoveSpool(); }  // stops a background rewrite first

Result<std::unique_ptr<JsonAggregator>> JsonAggregator::Open(const AggregatorOptions& options,
                                                             const AggregatorLimits& limits) {
  if (options.out_dir.empty())
    return Status::InvalidArgument("aggregate output directory is empty");
  const std::string& dir = options.out_dir;
  std::error_code ec;
  const fs::file_status st = fs::status(dir, ec);
  if (fs::exists(st) && !fs::is_directory(st)) {
    return Status::InvalidArgument(fmt::format("output path '{}' is not a directory", dir));
  }
  if (!CreatePrivateDirectories(dir, ec))
    return DirError("cannot create output directory", dir, ec);

  // Prove the directory writable now rather than at the first flush. O_EXCL:
  // a symlink planted at the probe's name is never followed.
  const std::string probe =
      (fs::path(dir) / fmt::format("{}{}", kProbePrefix, ::getpid())).string();
  ::unlink(probe.c_str());
  const int fd = ::open(probe.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, kPrivateFileMode);
  if (fd < 0) {
    const int err = errno;
    const std::string msg =
        fmt::format("output directory '{}' is not writable: {}", dir, std::strerror(err));
    return err == EACCES || err == EROFS || err == EPERM ? Status::PermissionDenied(msg)
                                                         : Status::IOError(msg);
  }
  Status probe_status = WriteAll(fd, "probe");
  ::close(fd);
  ::unlink(probe.c_str());
  if (!probe_status.ok()) {
    return Status::IOError(
        fmt::format("output directory '{}' is not writable: {}", dir, probe_status.message()));
  }

  RemoveStaleProbes(dir);
  RemoveStaleTemps(dir);
  RemoveStaleSpools((fs::path(dir) / ".spool").string());
  std::unique_ptr<JsonAggregator> agg(new JsonAggregator(options, limits));
  agg->spool_dir_ =
      (fs::path(dir) / ".spool" / fmt::format("{}-{}", ::getpid(), g_instance_counter.fetch_add(1)))
          .string();
  agg->index_path_ = agg->spool_dir_ + ".index";
  if (!CreatePrivateDirectories(agg->spool_dir_, ec)) {
    return DirError("cannot create spool directory", agg->spool_dir_, ec);
  }
  Status s = agg->OpenIndex();
  if (!s.ok()) return s;
  return agg;
}

std::string JsonAggregator::GroupFilePath(std::string_view domain,
                                          std::string_view category) const {
  return (fs::path(options_.out_dir) / SafeFileComponent(domain) /
          (SafeFileComponent(category) + ".json"))
      .string();
}

Result<JsonAggregator::Group*> JsonAggregator::GetGroup(const Chunk& chunk) {
  const std::string key = GroupKey(chunk.domain, chunk.category);
  auto it = groups_.find(key);
  if (it != groups_.end()) return it->second.get();
  auto g = std::make_unique<Group>();
  // Never reused: a failed import must not leave rows or spool bytes that a
  // later attempt for the same group would pick up.
  g->index_id = next_group_id_++;
  g->domain = chunk.domain;
  g->category = chunk.category;
  g->file_path = GroupFilePath(chunk.domain, chunk.category);
  g->spool_path = (fs::path(spool_dir_) / fmt::format("g{}.jsonl", g->index_id)).string();
  g->next_flush =
      options_.flush_every > 0 ? options_.flush_every : std::numeric_limits<uint64_t>::max();
  std::error_code ec;
  if (fs::exists(g->file_path, ec)) {
    Status s = ImportExisting(*g);
    if (!s.ok()) {
      ClearGroup(*g);  // best effort: free the index rows and spool
      return s;
    }
  }
  Group* raw = g.get();
  groups_.emplace(key, std::move(g));
  return raw;
}

Status JsonAggregator::Spill(Group& g) {
  if (g.buffer.empty()) return Status::OK();
  const int fd = ::open(g.spool_path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
  if (fd < 0) {
    return Status::IOError(fmt::format("cannot open spool '{}': {}", g.spool_path, Errno()));
  }
  Status s = WriteAll(fd, g.buffer);
  ::close(fd);
  if (!s.ok()) {
    return Status::IOError(fmt::format("cannot write spool '{}': {}", g.spool_path, s.message()));
  }
  g.spool_bytes += g.buffer.size();
  buffered_bytes_ -= g.buffer.size();
  std::string().swap(g.buffer);  // give the memory back; many groups may be idle
  return Status::OK();
}

Status JsonAggregator::SpillAll() {
  for (auto& [key, g] : groups_) {
    Status s = Spill(*g);
    if (!s.ok()) return s;
  }
  return Status::OK();
}

Status JsonAggregator::Add(const EmbeddedChunk& embedded) {
  if (finished_) return Status::InvalidArgument("aggregator already finished");
  if (Status s = ReapBackgroundRewrite(/*wait=*/false); !s.ok()) return s;
  const Chunk& chunk = embedded.chunk;
  if (chunk.id.empty()) return Status::Rejected("chunk without an id cannot be aggregated");
  std::string_view metadata = chunk.metadata_json;
  if (metadata.empty()) metadata = "{}";
  simdjson::dom::element meta;
  if (parser_->parse(metadata.data(), metadata.size()).get(meta) || !meta.is_object()) {
    return Status::Rejected(fmt::format("chunk {}: metadata is not a JSON object", chunk.id));
  }

  auto group = GetGroup(chunk);
  if (!group.ok()) return group.status();
  Group& g = **group;

  line_.clear();
  JsonWriter w(line_);
  w.BeginObject();
  w.Key("id").String(chunk.id);
  w.Key("source_id").String(chunk.source_id);
  w.Key("ordinal").Uint(chunk.ordinal);
  w.Key("text").String(chunk.text);
  w.Key("metadata").Raw(metadata);
  if (options_.include_embeddings) {
    w.Key("embedding").BeginArray();
    for (float x : embedded.embedding) w.Float(x);
    w.EndArray();
  }
  w.EndObject();
  Status added = AddLine(g, chunk.id, chunk.source_id, chunk.ordinal, line_, /*imported=*/false);
  if (!added.ok()) return added;
  g.dirty = true;
  ++g.added;

  if (g.buffer.size() >= limits_.group_buffer_bytes) {
    Status s = Spill(g);
    if (!s.ok()) return s;
  }
  if (buffered_bytes_ > limits_.total_buffer_bytes) {
    Status s = SpillAll();
    if (!s.ok()) return s;
  }
  if (g.added < g.next_flush) return Status::OK();
  // Not again before min_flush_interval, nor while a background rewrite runs
  // (of this group or another: one at a time): a due rewrite waits (and is
  // checked at each later Add of the group) rather than being dropped.
  if (g.written && options_.min_flush_interval > Duration::zero() &&
      Now() - g.last_write < options_.min_flush_interval) {
    return Status::OK();
  }
  const bool large = g.spool_bytes + g.buffer.size() >= limits_.background_rewrite_bytes;
  if (large && background_ != nullptr) return Status::OK();
  // Geometric cadence (N, 2N, 4N, ...): each rewrite streams the whole group,
  // so doubling keeps the total rewrite work linear in its size. From the
  // size now: a rewrite the interval held back comes later than its mark.
  g.next_flush = g.added > std::numeric_limits<uint64_t>::max() / 2
                     ? std::numeric_limits<uint64_t>::max()
                     : g.added * 2;
  return large ? StartBackgroundRewrite(g) : WriteGroup(g);
}

Status JsonAggregator::Finish() {
  if (finished_) return Status::OK();
  if (Status s = ReapBackgroundRewrite(/*wait=*/true); !s.ok()) return s;
  for (auto& [key, g] : groups_) {
    if (!g->dirty) continue;
    Status s = WriteGroup(*g);
    if (!s.ok()) return s;
  }
  // A source added this run whose domain or category changed is still in its
  // old group's file; a group this run touched dropped it above, an untouched
  // one is rewritten here.
  Status s = DropMovedSources();
  if (!s.ok()) return s;
  finished_ = true;
  RemoveSpool();
  return Status::OK();
}

Status JsonAggregator::DropMovedSources() {
  if (!any_seen_) return Status::OK();
  std::unordered_set<std::string> touched;
  for (const auto& [key, g] : groups_) touched.insert(g->file_path);
  std::vector<std::string> files;
  Status listed = ForEachDomainFolderEntry(options_.out_dir, [&](const fs::directory_entry& file) {
    const std::string name = file.path().filename().string();
    std::error_code file_ec;
    if (name.empty() || name[0] == '.' || !name.ends_with(".json") ||
        !file.is_regular_file(file_ec) || touched.count(file.path().string())) {
      return;
    }
    files.push_back(file.path().string());
  });
  if (!listed.ok()) return listed;
  std::sort(files.begin(), files.end());
  RetentionPolicy moved;
  moved.source = [&](std::string_view source_id) -> Result<SourceRetention> {
    StatementScope scope(was_seen_);
    BindBytes(was_seen_, 1, source_id);
    const int rc = sqlite3_step(was_seen_);
    if (rc == SQLITE_ROW) return SourceRetention::kDrop;
    if (rc != SQLITE_DONE) return IndexError("cannot look a source up");
    return SourceRetention::kKeep;
  };
  moved.chunks = [](std::string_view, std::string_view, std::span<const std::string>,
                    std::vector<bool>& keep) {
    keep.assign(keep.size(), true);
    return Status::OK();
  };
  RetainStats stats;
  for (const std::string& path : files) {
    Status s = RetainFile(path, moved, stats);
    if (!s.ok()) return s;
  }
  return Status::OK();
}

void JsonAggregator::RemoveSpool() {
  if (spool_dir_.empty()) return;
  CloseIndex();  // scratch: nothing in it needs committing
  for (const char* suffix : {"", "-wal", "-shm"}) ::unlink((index_path_ + suffix).c_str());
  std::error_code ec;
  fs::remove_all(spool_dir_, ec);
  fs::remove(fs::path(spool_dir_).parent_path(), ec);  // only when empty
}

Result<std::unique_ptr<Aggregator>> OpenAggregator(const AggregatorOptions& options) {
  auto agg = JsonAggregator::Open(options);
  if (!agg.ok()) return agg.status();
  return std::unique_ptr<Aggregator>(std::move(agg).value());
}

}  // namespace sluice
