#include "aggregate/json_aggregator.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <limits>
#include <utility>

#include <fmt/format.h>
#include <simdjson.h>

#include "common/json_writer.h"

namespace sluice {

namespace fs = std::filesystem;

namespace {

constexpr size_t kWriteChunkBytes = 1 << 20;

std::string Errno() { return std::strerror(errno); }

Status WriteAll(int fd, std::string_view data) {
  while (!data.empty()) {
    const ssize_t n = ::write(fd, data.data(), data.size());
    if (n < 0) {
      if (errno == EINTR) continue;
      return Status::IOError(Errno());
    }
    data.remove_prefix(static_cast<size_t>(n));
  }
  return Status::OK();
}

Status PreadAll(int fd, char* out, size_t length, uint64_t offset) {
  while (length > 0) {
    const ssize_t n = ::pread(fd, out, length, static_cast<off_t>(offset));
    if (n < 0) {
      if (errno == EINTR) continue;
      return Status::IOError(Errno());
    }
    if (n == 0) return Status::IOError("spool file shorter than its index");
    out += n;
    length -= static_cast<size_t>(n);
    offset += static_cast<uint64_t>(n);
  }
  return Status::OK();
}

// Makes a completed rename durable.
void SyncDirectory(const std::string& dir) {
  const int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd >= 0) {
    ::fsync(fd);
    ::close(fd);
  }
}

Status DirError(const std::string& what, const std::string& dir, const std::error_code& ec) {
  const std::string msg = fmt::format("{} '{}': {}", what, dir, ec.message());
  if (ec == std::errc::permission_denied || ec == std::errc::read_only_file_system ||
      ec == std::errc::operation_not_permitted) {
    return Status::PermissionDenied(msg);
  }
  return Status::IOError(msg);
}

std::atomic<int> g_instance_counter{0};

// Removes spool folders ("<pid>-<n>") left by processes that no longer run
// (a crash or kill -9); live ones belong to another running aggregator.
void RemoveStaleSpools(const std::string& spool_root) {
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator(spool_root, ec)) {
    const std::string name = entry.path().filename().string();
    char* end = nullptr;
    const long pid = std::strtol(name.c_str(), &end, 10);
    if (end == name.c_str() || *end != '-' || pid <= 0) continue;
    if (::kill(static_cast<pid_t>(pid), 0) != 0 && errno == ESRCH) {
      std::error_code ignored;
      fs::remove_all(entry.path(), ignored);
    }
  }
}

}  // namespace

JsonAggregator::JsonAggregator(AggregatorOptions options, AggregatorLimits limits)
    : options_(std::move(options)),
      limits_(limits),
      parser_(std::make_unique<simdjson::dom::parser>()) {}

JsonAggregator::~JsonAggregator() { RemoveSpool(); }

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
  fs::create_directories(dir, ec);
  if (ec) return DirError("cannot create output directory", dir, ec);

  // Prove the directory writable now rather than at the first flush.
  const std::string probe = (fs::path(dir) / fmt::format(".sluice-probe-{}", ::getpid())).string();
  const int fd = ::open(probe.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
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

  RemoveStaleSpools((fs::path(dir) / ".spool").string());
  std::unique_ptr<JsonAggregator> agg(new JsonAggregator(options, limits));
  agg->spool_dir_ =
      (fs::path(dir) / ".spool" / fmt::format("{}-{}", ::getpid(), g_instance_counter.fetch_add(1)))
          .string();
  fs::create_directories(agg->spool_dir_, ec);
  if (ec) return DirError("cannot create spool directory", agg->spool_dir_, ec);
  return agg;
}

std::string JsonAggregator::GroupFilePath(std::string_view domain,
                                          std::string_view category) const {
  return (fs::path(options_.out_dir) / SafeFileComponent(domain) /
          (SafeFileComponent(category) + ".json"))
      .string();
}

Result<JsonAggregator::Group*> JsonAggregator::GetGroup(const Chunk& chunk) {
  // Length-prefixed so ("ab", "c") and ("a", "bc") differ.
  const std::string key = fmt::format("{}:{}{}", chunk.domain.size(), chunk.domain, chunk.category);
  auto it = groups_.find(key);
  if (it != groups_.end()) return it->second.get();
  auto g = std::make_unique<Group>();
  g->domain = chunk.domain;
  g->category = chunk.category;
  g->file_path = GroupFilePath(chunk.domain, chunk.category);
  g->spool_path = (fs::path(spool_dir_) / fmt::format("g{}.jsonl", groups_.size())).string();
  g->next_flush =
      options_.flush_every > 0 ? options_.flush_every : std::numeric_limits<uint64_t>::max();
  std::error_code ec;
  if (fs::exists(g->file_path, ec)) {
    Status s = ImportExisting(*g);
    if (!s.ok()) return s;
  }
  Group* raw = g.get();
  groups_.emplace(key, std::move(g));
  return raw;
}

Status JsonAggregator::ImportExisting(Group& g) {
  // The earlier run's file is read whole once (simdjson DOM); its chunks go
  // to this run's spool like any other, marked imported.
  simdjson::dom::element doc;
  const auto corrupt = [&](std::string_view why) {
    return Status::Corrupt(fmt::format(
        "existing aggregate '{}' cannot be merged ({}); move it away or use another output "
        "directory",
        g.file_path, why));
  };
  if (auto err = parser_->load(g.file_path).get(doc); err) {
    return corrupt(simdjson::error_message(err));
  }
  simdjson::dom::array chunks;
  if (doc["chunks"].get_array().get(chunks)) return corrupt("no \"chunks\" array");
  for (simdjson::dom::element c : chunks) {
    std::string_view id, source_id;
    uint64_t ordinal = 0;
    if (c["id"].get_string().get(id) || c["source_id"].get_string().get(source_id) ||
        c["ordinal"].get_uint64().get(ordinal)) {
      return corrupt("a chunk lacks id, source_id or ordinal");
    }
    const std::string line = simdjson::minify(c);
    AddLine(g, id, source_id, static_cast<uint32_t>(ordinal), line, /*imported=*/true);
    if (g.buffer.size() >= limits_.group_buffer_bytes) {
      Status s = Spill(g);
      if (!s.ok()) return s;
    }
  }
  return Status::OK();
}

void JsonAggregator::AddLine(Group& g, std::string_view id, std::string_view source_id,
                             uint32_t ordinal, std::string_view line, bool imported) {
  auto [src_it, new_source] =
      g.source_index.try_emplace(std::string(source_id), static_cast<uint32_t>(g.sources.size()));
  if (new_source) g.sources.push_back({std::string(source_id), false});
  if (!imported) g.sources[src_it->second].seen_this_run = true;

  Entry e;
  e.source = src_it->second;
  e.ordinal = ordinal;
  e.offset = g.spool_bytes + g.buffer.size();
  e.length = static_cast<uint32_t>(line.size());
  e.imported = imported;
  auto [id_it, new_id] = g.by_id.try_emplace(std::string(id), g.entries.size());
  e.id = &id_it->first;
  if (new_id) {
    g.entries.push_back(e);
  } else {
    g.entries[id_it->second] = e;  // the latest copy wins; the old line is dead spool
  }
  g.buffer.append(line);
  g.buffer.push_back('\n');
  buffered_bytes_ += line.size() + 1;
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
  AddLine(g, chunk.id, chunk.source_id, chunk.ordinal, line_, /*imported=*/false);
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
  if (g.added >= g.next_flush) {
    // Geometric cadence (N, 2N, 4N, ...): each rewrite streams the whole
    // group, so doubling keeps the total rewrite work linear in its size.
    g.next_flush = g.next_flush > std::numeric_limits<uint64_t>::max() / 2
                       ? std::numeric_limits<uint64_t>::max()
                       : g.next_flush * 2;
    return WriteGroup(g);
  }
  return Status::OK();
}

Status JsonAggregator::WriteGroup(Group& g) {
  Status s = Spill(g);
  if (!s.ok()) return s;

  std::vector<const Entry*> order;
  order.reserve(g.entries.size());
  for (const Entry& e : g.entries) {
    // This run re-ingested the source: its chunks from the earlier run are
    // superseded (an edited file must not keep stale chunks).
    if (e.imported && g.sources[e.source].seen_this_run) continue;
    order.push_back(&e);
  }
  std::sort(order.begin(), order.end(), [&](const Entry* a, const Entry* b) {
    const std::string& sa = g.sources[a->source].id;
    const std::string& sb = g.sources[b->source].id;
    if (sa != sb) return sa < sb;
    if (a->ordinal != b->ordinal) return a->ordinal < b->ordinal;
    return *a->id < *b->id;
  });

  const fs::path final_path(g.file_path);
  std::error_code ec;
  fs::create_directories(final_path.parent_path(), ec);
  if (ec) return DirError("cannot create aggregate directory", final_path.parent_path(), ec);
  const std::string tmp = fmt::format("{}.tmp.{}", g.file_path, ::getpid());
  const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) return Status::IOError(fmt::format("cannot create '{}': {}", tmp, Errno()));
  int spool_fd = -1;
  const auto fail = [&](const std::string& why) {
    if (spool_fd >= 0) ::close(spool_fd);
    ::close(fd);
    ::unlink(tmp.c_str());
    return Status::IOError(fmt::format("cannot write aggregate '{}': {}", g.file_path, why));
  };
  if (g.spool_bytes > 0) {
    spool_fd = ::open(g.spool_path.c_str(), O_RDONLY | O_CLOEXEC);
    if (spool_fd < 0) return fail("cannot read spool: " + Errno());
  }

  std::string out;
  out.reserve(kWriteChunkBytes + 4096);
  out += "{\"domain\":";
  AppendJsonString(g.domain, out);
  out += ",\"category\":";
  AppendJsonString(g.category, out);
  out += fmt::format(",\"chunk_count\":{},\"sources\":[", order.size());
  const std::string* last_source = nullptr;
  for (const Entry* e : order) {
    const std::string& src = g.sources[e->source].id;
    if (last_source != nullptr && *last_source == src) continue;
    if (last_source != nullptr) out.push_back(',');
    AppendJsonString(src, out);
    last_source = &src;
  }
  out += "],\"chunks\":[";
  for (size_t i = 0; i < order.size(); ++i) {
    out += i == 0 ? "\n" : ",\n";
    const size_t at = out.size();
    out.resize(at + order[i]->length);
    s = PreadAll(spool_fd, out.data() + at, order[i]->length, order[i]->offset);
    if (!s.ok()) return fail(s.message());
    if (out.size() >= kWriteChunkBytes) {
      s = WriteAll(fd, out);
      if (!s.ok()) return fail(s.message());
      out.clear();
    }
  }
  out += "\n]}\n";
  s = WriteAll(fd, out);
  if (!s.ok()) return fail(s.message());
  if (::fsync(fd) != 0) return fail(Errno());
  if (spool_fd >= 0) ::close(spool_fd);
  spool_fd = -1;
  if (::close(fd) != 0) {
    ::unlink(tmp.c_str());
    return Status::IOError(fmt::format("cannot write aggregate '{}': {}", g.file_path, Errno()));
  }
  if (::rename(tmp.c_str(), g.file_path.c_str()) != 0) {
    const std::string why = Errno();
    ::unlink(tmp.c_str());
    return Status::IOError(fmt::format("cannot rename '{}' into place: {}", tmp, why));
  }
  SyncDirectory(final_path.parent_path().string());
  g.dirty = false;
  if (!g.written) ++files_written_;
  g.written = true;
  ++rewrites_;
  return Status::OK();
}

Status JsonAggregator::Finish() {
  if (finished_) return Status::OK();
  for (auto& [key, g] : groups_) {
    if (!g->dirty) continue;
    Status s = WriteGroup(*g);
    if (!s.ok()) return s;
  }
  finished_ = true;
  RemoveSpool();
  return Status::OK();
}

void JsonAggregator::RemoveSpool() {
  if (spool_dir_.empty()) return;
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
