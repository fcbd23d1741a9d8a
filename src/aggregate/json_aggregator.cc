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

#include "common/json_writer.h"
#include "common/private_file.h"

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

Status DirError(const std::string& what, const std::string& dir, const std::error_code& ec) {
  const std::string msg = fmt::format("{} '{}': {}", what, dir, ec.message());
  if (ec == std::errc::permission_denied || ec == std::errc::read_only_file_system ||
      ec == std::errc::operation_not_permitted) {
    return Status::PermissionDenied(msg);
  }
  return Status::IOError(msg);
}

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

// Calls `each` for every entry of every domain folder of `out_dir` (group
// files are out_dir/<d>/<c>.json; folders whose names start with '.', such
// as the spool, are not domains). Returns the first listing error.
Status ForEachDomainFolderEntry(const std::string& out_dir,
                                const std::function<void(const fs::directory_entry&)>& each) {
  std::error_code ec;
  for (auto domain = fs::directory_iterator(out_dir, ec); !ec && domain != fs::directory_iterator();
       domain.increment(ec)) {
    const std::string domain_name = domain->path().filename().string();
    std::error_code dir_ec;
    if (domain_name.empty() || domain_name[0] == '.' || !domain->is_directory(dir_ec)) continue;
    for (auto file = fs::directory_iterator(domain->path(), dir_ec);
         !dir_ec && file != fs::directory_iterator(); file.increment(dir_ec)) {
      each(*file);
    }
    if (dir_ec) return DirError("cannot list aggregate directory", domain->path().string(), dir_ec);
  }
  if (ec) return DirError("cannot list output directory", out_dir, ec);
  return Status::OK();
}

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

// The groups_ key of (domain, category); length-prefixed so ("ab", "c") and
// ("a", "bc") differ.
std::string GroupKey(std::string_view domain, std::string_view category) {
  return fmt::format("{}:{}{}", domain.size(), domain, category);
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

Status JsonAggregator::IndexError(std::string_view what) const {
  return Status::IOError(fmt::format("aggregate index '{}': {}: {}", index_path_, what,
                                     db_ != nullptr ? sqlite3_errmsg(db_) : "out of memory"));
}

Status JsonAggregator::OpenIndex() {
  // Scratch space, rebuilt by rerunning: no journal, no fsync, one
  // exclusive connection (used by one thread at a time, so no mutex). The
  // page cache is the only part held in RAM.
  ::unlink(index_path_.c_str());
  if (sqlite3_open_v2(index_path_.c_str(), &db_,
                      SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX,
                      nullptr) != SQLITE_OK) {
    return IndexError("cannot open");
  }
  // A row per chunk id in the group's document order; (g, id) is unique so
  // INSERT OR REPLACE makes the latest copy win. Ids and sources are BLOBs:
  // compared byte-wise, never re-encoded.
  const std::string setup = fmt::format(
      "PRAGMA journal_mode=OFF; PRAGMA synchronous=OFF; PRAGMA locking_mode=EXCLUSIVE;"
      "PRAGMA temp_store=FILE; PRAGMA cache_size=-{};"
      "CREATE TABLE chunk(g INTEGER NOT NULL, src BLOB NOT NULL, ord INTEGER NOT NULL,"
      " id BLOB NOT NULL, off INTEGER NOT NULL, len INTEGER NOT NULL, imported INTEGER NOT NULL,"
      " PRIMARY KEY(g, src, ord, id)) WITHOUT ROWID;"
      "CREATE UNIQUE INDEX chunk_id ON chunk(g, id);"
      "CREATE TABLE seen(src BLOB PRIMARY KEY) WITHOUT ROWID;",
      std::max<size_t>(limits_.index_cache_bytes / 1024, 64));
  if (sqlite3_exec(db_, setup.c_str(), nullptr, nullptr, nullptr) != SQLITE_OK) {
    return IndexError("cannot create");
  }
  // Imported rows of a source that this run re-added, to this group or to
  // another one (its domain or category changed), are superseded.
  constexpr const char* kVisible =
      " FROM chunk c WHERE c.g=?1 AND (c.imported=0 OR NOT EXISTS"
      " (SELECT 1 FROM seen s WHERE s.src=c.src))";
  const std::pair<sqlite3_stmt**, std::string> statements[] = {
      {&insert_,
       "INSERT OR REPLACE INTO chunk(g, src, ord, id, off, len, imported)"
       " VALUES(?1, ?2, ?3, ?4, ?5, ?6, ?7)"},
      {&seen_, "INSERT OR IGNORE INTO seen(src) VALUES(?1)"},
      {&was_seen_, "SELECT 1 FROM seen WHERE src=?1"},
      {&count_, std::string("SELECT count(*)") + kVisible},
      {&sources_, std::string("SELECT DISTINCT c.src") + kVisible + " ORDER BY c.src"},
      {&all_sources_, "SELECT DISTINCT src FROM chunk WHERE g=?1 ORDER BY src"},
      {&chunks_, std::string("SELECT c.off, c.len") + kVisible + " ORDER BY c.src, c.ord, c.id"},
      {&clear_chunks_, "DELETE FROM chunk WHERE g=?1"},
      {&drop_source_, "DELETE FROM chunk WHERE g=?1 AND src=?2"},
      {&drop_id_, "DELETE FROM chunk WHERE g=?1 AND id=?2"},
      // Keyset pagination over the primary key (g, src, ord, id).
      {&page_ids_,
       "SELECT ord, id FROM chunk WHERE g=?1 AND src=?2 AND (ord, id) > (?3, ?4)"
       " ORDER BY ord, id LIMIT ?5"},
  };
  for (const auto& [stmt, sql] : statements) {
    if (sqlite3_prepare_v3(db_, sql.c_str(), -1, SQLITE_PREPARE_PERSISTENT, stmt, nullptr) !=
        SQLITE_OK) {
      return IndexError("cannot prepare");
    }
  }
  return Status::OK();
}

size_t JsonAggregator::IndexMemoryBytes() const {
  if (db_ == nullptr) return 0;
  size_t total = 0;
  for (int op :
       {SQLITE_DBSTATUS_CACHE_USED, SQLITE_DBSTATUS_SCHEMA_USED, SQLITE_DBSTATUS_STMT_USED}) {
    int current = 0, highwater = 0;
    if (sqlite3_db_status(db_, op, &current, &highwater, 0) == SQLITE_OK) {
      total += static_cast<size_t>(current);
    }
  }
  return total;
}

size_t JsonAggregator::HeldBytes() const {
  return buffered_bytes_ + IndexMemoryBytes() + parser_->capacity();
}

Status JsonAggregator::CommitBatch() {
  if (batch_rows_ == 0) return Status::OK();
  batch_rows_ = 0;
  if (sqlite3_exec(db_, "COMMIT", nullptr, nullptr, nullptr) != SQLITE_OK) {
    return IndexError("cannot commit");
  }
  return Status::OK();
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

Status JsonAggregator::ImportExisting(Group& g) {
  // The earlier run's chunks go to this run's spool like any other, marked
  // imported. A file this aggregator wrote is read one line at a time; any
  // other layout is read whole.
  auto streamed = ImportLines(g);
  if (!streamed.ok()) return streamed.status();
  if (*streamed) return Status::OK();
  Status s = ClearGroup(g);
  if (!s.ok()) return s;
  s = ImportWhole(g);
  // The parser grew to the whole file; give that memory back.
  parser_ = std::make_unique<simdjson::dom::parser>();
  return s;
}

Result<bool> JsonAggregator::ImportLines(Group& g) {
  std::FILE* f = std::fopen(g.file_path.c_str(), "rb");
  if (f == nullptr) return false;  // ImportWhole reports why
  char* buf = nullptr;
  size_t cap = 0;
  const auto finish = [&](Result<bool> r) {
    std::free(buf);
    std::fclose(f);
    return r;
  };
  const auto next_line = [&](std::string_view& line) {
    const ssize_t n = ::getline(&buf, &cap, f);
    if (n < 0) return false;
    line = std::string_view(buf, static_cast<size_t>(n));
    if (!line.empty() && line.back() == '\n') line.remove_suffix(1);
    return true;
  };

  // Line 1: {"domain":...,"chunks":[   then one chunk per line, then ]}
  std::string_view line;
  constexpr std::string_view kHeadStart = "{\"domain\":", kHeadEnd = ",\"chunks\":[";
  if (!next_line(line) || line.substr(0, kHeadStart.size()) != kHeadStart ||
      line.size() < kHeadEnd.size() || line.substr(line.size() - kHeadEnd.size()) != kHeadEnd) {
    return finish(false);
  }
  {
    std::string head(line);
    head += "]}";
    simdjson::dom::element doc;
    if (parser_->parse(head).get(doc) || !doc.is_object()) return finish(false);
  }
  bool closed = false;
  while (next_line(line)) {
    if (closed) {
      if (!line.empty()) return finish(false);  // bytes after the document
      continue;
    }
    if (line == "]}") {
      closed = true;
      continue;
    }
    if (!line.empty() && line.back() == ',') line.remove_suffix(1);
    simdjson::dom::element c;
    if (parser_->parse(line.data(), line.size(), true).get(c)) return finish(false);
    Status s = ImportChunk(g, c);
    if (s.code() == StatusCode::kCorrupt) return finish(false);
    if (!s.ok()) return finish(s);
  }
  return finish(closed);
}

Status JsonAggregator::ImportWhole(Group& g) {
  simdjson::dom::element doc;
  if (auto err = parser_->load(g.file_path).get(doc); err) {
    return CorruptExisting(g, simdjson::error_message(err));
  }
  simdjson::dom::array chunks;
  if (doc["chunks"].get_array().get(chunks)) return CorruptExisting(g, "no \"chunks\" array");
  for (simdjson::dom::element c : chunks) {
    Status s = ImportChunk(g, c);
    if (!s.ok()) return s;
  }
  return Status::OK();
}

Status JsonAggregator::CorruptExisting(const Group& g, std::string_view why) const {
  return Status::Corrupt(fmt::format(
      "existing aggregate '{}' cannot be merged ({}); move it away or use another output "
      "directory",
      g.file_path, why));
}

Status JsonAggregator::ImportChunk(Group& g, simdjson::dom::element c) {
  std::string_view id, source_id;
  uint64_t ordinal = 0;
  if (c["id"].get_string().get(id) || c["source_id"].get_string().get(source_id) ||
      c["ordinal"].get_uint64().get(ordinal)) {
    return CorruptExisting(g, "a chunk lacks id, source_id or ordinal");
  }
  const std::string line = simdjson::minify(c);
  g.has_imports = true;
  Status s = AddLine(g, id, source_id, static_cast<uint32_t>(ordinal), line, /*imported=*/true);
  if (!s.ok()) return s;
  if (g.buffer.size() >= limits_.group_buffer_bytes) return Spill(g);
  return Status::OK();
}

Status JsonAggregator::ClearGroup(Group& g) {
  {
    sqlite3_bind_int64(clear_chunks_, 1, g.index_id);
    const int rc = sqlite3_step(clear_chunks_);
    sqlite3_reset(clear_chunks_);
    if (rc != SQLITE_DONE) return IndexError("cannot clear a group");
  }
  buffered_bytes_ -= g.buffer.size();
  std::string().swap(g.buffer);
  ::unlink(g.spool_path.c_str());
  g.spool_bytes = 0;
  g.has_imports = false;
  return Status::OK();
}

namespace {
// sqlite3_bind_blob binds NULL for a null pointer; an empty id or source is
// an empty blob.
void BindBytes(sqlite3_stmt* stmt, int index, std::string_view bytes) {
  sqlite3_bind_blob(stmt, index, bytes.empty() ? "" : bytes.data(), static_cast<int>(bytes.size()),
                    SQLITE_STATIC);
}

std::string_view ColumnBytes(sqlite3_stmt* stmt, int index) {
  const void* p = sqlite3_column_blob(stmt, index);
  const int n = sqlite3_column_bytes(stmt, index);
  return p == nullptr ? std::string_view() : std::string_view(static_cast<const char*>(p), n);
}

// Resets a statement on every path out of a scope.
class StatementScope {
 public:
  explicit StatementScope(sqlite3_stmt* stmt) : stmt_(stmt) {}
  ~StatementScope() {
    sqlite3_reset(stmt_);
    sqlite3_clear_bindings(stmt_);
  }
  StatementScope(const StatementScope&) = delete;
  StatementScope& operator=(const StatementScope&) = delete;

 private:
  sqlite3_stmt* stmt_;
};
}  // namespace

Status JsonAggregator::AddLine(Group& g, std::string_view id, std::string_view source_id,
                               uint32_t ordinal, std::string_view line, bool imported) {
  if (batch_rows_ == 0 && sqlite3_exec(db_, "BEGIN", nullptr, nullptr, nullptr) != SQLITE_OK) {
    return IndexError("cannot begin");
  }
  ++batch_rows_;
  if (!imported) {
    Status s = MarkSourceSeen(source_id);
    if (!s.ok()) return s;
  }
  {
    StatementScope scope(insert_);
    sqlite3_bind_int64(insert_, 1, g.index_id);
    BindBytes(insert_, 2, source_id);
    sqlite3_bind_int64(insert_, 3, ordinal);
    BindBytes(insert_, 4, id);
    sqlite3_bind_int64(insert_, 5, static_cast<int64_t>(g.spool_bytes + g.buffer.size()));
    sqlite3_bind_int64(insert_, 6, static_cast<int64_t>(line.size()));
    sqlite3_bind_int(insert_, 7, imported ? 1 : 0);
    // The latest copy of an id wins; the old line becomes dead spool.
    if (sqlite3_step(insert_) != SQLITE_DONE) return IndexError("cannot add a chunk");
  }
  g.buffer.append(line);
  g.buffer.push_back('\n');
  buffered_bytes_ += line.size() + 1;
  if (batch_rows_ >= limits_.index_batch_rows) return CommitBatch();
  return Status::OK();
}

Status JsonAggregator::MarkSourceSeen(std::string_view source_id) {
  // Chunks arrive grouped by source, so one row per run of a source is
  // enough. Every group consults it (a source may have moved groups).
  if (source_id == last_seen_source_) return Status::OK();
  StatementScope scope(seen_);
  BindBytes(seen_, 1, source_id);
  if (sqlite3_step(seen_) != SQLITE_DONE) return IndexError("cannot record a source");
  last_seen_source_.assign(source_id);
  any_seen_ = true;
  return Status::OK();
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

  // The index streams the group in document order; nothing is sorted or
  // collected in memory here.
  uint64_t chunk_count = 0;
  {
    StatementScope scope(count_);
    sqlite3_bind_int64(count_, 1, g.index_id);
    if (sqlite3_step(count_) != SQLITE_ROW) return IndexError("cannot count a group");
    chunk_count = static_cast<uint64_t>(sqlite3_column_int64(count_, 0));
  }

  const fs::path final_path(g.file_path);
  std::error_code ec;
  if (!CreatePrivateDirectories(final_path.parent_path().string(), ec)) {
    return DirError("cannot create aggregate directory", final_path.parent_path(), ec);
  }
  // A private temp file (or the mode of the file it replaces) made with
  // mkstemp beside the group file; the destructor removes it on failure.
  auto writer_or = AtomicFileWriter::Create(g.file_path);
  if (!writer_or.ok()) return writer_or.status();
  std::unique_ptr<AtomicFileWriter> writer = std::move(*writer_or);
  const int fd = writer->fd();
  int spool_fd = -1;
  const auto abandon = [&] {
    if (spool_fd >= 0) ::close(spool_fd);
    writer.reset();
  };
  const auto fail = [&](const std::string& why) {
    abandon();
    return Status::IOError(fmt::format("cannot write aggregate '{}': {}", g.file_path, why));
  };
  if (g.spool_bytes > 0) {
    spool_fd = ::open(g.spool_path.c_str(), O_RDONLY | O_CLOEXEC);
    if (spool_fd < 0) return fail("cannot read spool: " + Errno());
  }

  std::string out;
  out.reserve(kWriteChunkBytes + 4096);
  const auto flush_out = [&]() -> Status {
    if (out.size() < kWriteChunkBytes) return Status::OK();
    Status w = WriteAll(fd, out);
    out.clear();
    return w;
  };
  out += "{\"domain\":";
  AppendJsonString(g.domain, out);
  out += ",\"category\":";
  AppendJsonString(g.category, out);
  out += fmt::format(",\"chunk_count\":{},\"sources\":[", chunk_count);
  {
    StatementScope scope(sources_);
    sqlite3_bind_int64(sources_, 1, g.index_id);
    bool first = true;
    int rc;
    while ((rc = sqlite3_step(sources_)) == SQLITE_ROW) {
      if (!first) out.push_back(',');
      first = false;
      AppendJsonString(ColumnBytes(sources_, 0), out);
      s = flush_out();
      if (!s.ok()) return fail(s.message());
    }
    if (rc != SQLITE_DONE) {
      s = IndexError("cannot list sources");
      abandon();
      return s;
    }
  }
  out += "],\"chunks\":[";
  {
    StatementScope scope(chunks_);
    sqlite3_bind_int64(chunks_, 1, g.index_id);
    uint64_t written = 0;
    int rc;
    while ((rc = sqlite3_step(chunks_)) == SQLITE_ROW) {
      const auto offset = static_cast<uint64_t>(sqlite3_column_int64(chunks_, 0));
      const auto length = static_cast<size_t>(sqlite3_column_int64(chunks_, 1));
      out += written++ == 0 ? "\n" : ",\n";
      const size_t at = out.size();
      out.resize(at + length);
      s = PreadAll(spool_fd, out.data() + at, length, offset);
      if (!s.ok()) return fail(s.message());
      s = flush_out();
      if (!s.ok()) return fail(s.message());
    }
    if (rc != SQLITE_DONE || written != chunk_count) {
      s = rc != SQLITE_DONE ? IndexError("cannot list chunks")
                            : Status::Internal("aggregate index changed during a rewrite");
      abandon();
      return s;
    }
  }
  out += "\n]}\n";
  s = WriteAll(fd, out);
  if (!s.ok()) return fail(s.message());
  if (spool_fd >= 0) ::close(spool_fd);
  spool_fd = -1;
  s = writer->Commit();  // fsync, rename into place, fsync the folder
  if (!s.ok()) {
    return Status::IOError(
        fmt::format("cannot write aggregate '{}': {}", g.file_path, s.message()));
  }
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

// ---------------------------------------------------------------- Retain

Result<RetainStats> JsonAggregator::Retain(const RetentionPolicy& policy) {
  if (!finished_) return Status::InvalidArgument("Retain needs a finished aggregator");
  if (!policy.source || !policy.chunks) {
    return Status::InvalidArgument("retention policy needs both a source and a chunks answer");
  }
  // Group files are out_dir/<d>/<c>.json; SafeFileComponent never starts a
  // name with '.', so .spool, probes and markers are not groups. The list is
  // bounded by the number of groups.
  std::vector<std::string> files;
  Status listed = ForEachDomainFolderEntry(options_.out_dir, [&](const fs::directory_entry& file) {
    const std::string name = file.path().filename().string();
    std::error_code file_ec;
    if (name.empty() || name[0] == '.' || !name.ends_with(".json") ||
        !file.is_regular_file(file_ec)) {
      return;
    }
    files.push_back(file.path().string());
  });
  if (!listed.ok()) return listed;
  std::sort(files.begin(), files.end());
  std::error_code ec;

  // The rewrite goes through the spool and index like a run's, so they come
  // back for the duration (Finish removed them).
  if (!CreatePrivateDirectories(spool_dir_, ec)) {
    return DirError("cannot create spool directory", spool_dir_, ec);
  }
  RetainStats stats;
  Status s = OpenIndex();
  for (const std::string& path : files) {
    if (!s.ok()) break;
    s = RetainFile(path, policy, stats);
  }
  RemoveSpool();
  if (!s.ok()) return s;
  return stats;
}

namespace {

// The group and sources of a file in the layout WriteGroup writes, from its
// first line alone. False when the file has another layout.
bool ReadGroupHead(const std::string& path, simdjson::dom::parser& parser, std::string& domain,
                   std::string& category, std::vector<std::string>& sources) {
  std::FILE* f = std::fopen(path.c_str(), "rb");
  if (f == nullptr) return false;
  char* buf = nullptr;
  size_t cap = 0;
  const ssize_t n = ::getline(&buf, &cap, f);
  std::fclose(f);
  std::string head = n > 0 ? std::string(buf, static_cast<size_t>(n)) : std::string();
  std::free(buf);
  if (!head.empty() && head.back() == '\n') head.pop_back();
  constexpr std::string_view kHeadStart = "{\"domain\":", kHeadEnd = ",\"chunks\":[";
  if (!head.starts_with(kHeadStart) || !head.ends_with(kHeadEnd)) return false;
  head += "]}";
  simdjson::dom::element doc;
  std::string_view d, c;
  simdjson::dom::array list;
  if (parser.parse(head).get(doc) || doc["domain"].get_string().get(d) ||
      doc["category"].get_string().get(c) || doc["sources"].get_array().get(list)) {
    return false;
  }
  domain = d;
  category = c;
  sources.clear();
  for (simdjson::dom::element e : list) {
    std::string_view src;
    if (e.get_string().get(src)) return false;
    sources.emplace_back(src);
  }
  return true;
}

}  // namespace

Status JsonAggregator::StepDelete(sqlite3_stmt* stmt, int64_t group, std::string_view key,
                                  uint64_t& dropped) {
  StatementScope scope(stmt);
  sqlite3_bind_int64(stmt, 1, group);
  BindBytes(stmt, 2, key);
  if (sqlite3_step(stmt) != SQLITE_DONE) return IndexError("cannot drop chunks");
  dropped += static_cast<uint64_t>(sqlite3_changes(db_));
  return Status::OK();
}

Status JsonAggregator::RetainChunksOf(Group& g, std::string_view source_id,
                                      const RetentionPolicy& policy, uint64_t& dropped) {
  int64_t after_ordinal = -1;  // below every ordinal
  std::string after_id;
  std::vector<std::string> ids;
  std::vector<bool> keep;
  for (;;) {
    ids.clear();
    int64_t last_ordinal = after_ordinal;
    {
      StatementScope scope(page_ids_);
      sqlite3_bind_int64(page_ids_, 1, g.index_id);
      BindBytes(page_ids_, 2, source_id);
      sqlite3_bind_int64(page_ids_, 3, after_ordinal);
      BindBytes(page_ids_, 4, after_id);
      sqlite3_bind_int64(page_ids_, 5, static_cast<int64_t>(kRetainBatch));
      int rc;
      while ((rc = sqlite3_step(page_ids_)) == SQLITE_ROW) {
        last_ordinal = sqlite3_column_int64(page_ids_, 0);
        ids.emplace_back(ColumnBytes(page_ids_, 1));
      }
      if (rc != SQLITE_DONE) return IndexError("cannot list a source's chunks");
    }
    if (ids.empty()) return Status::OK();
    after_ordinal = last_ordinal;
    after_id = ids.back();
    keep.assign(ids.size(), false);
    Status s = policy.chunks(g.domain, g.category, ids, keep);
    if (!s.ok()) return s;
    for (size_t i = 0; i < ids.size(); ++i) {
      if (i < keep.size() && keep[i]) continue;
      s = StepDelete(drop_id_, g.index_id, ids[i], dropped);
      if (!s.ok()) return s;
    }
    if (ids.size() < kRetainBatch) return Status::OK();
  }
}

Status JsonAggregator::RetainFile(const std::string& path, const RetentionPolicy& policy,
                                  RetainStats& stats) {
  std::string domain, category;
  std::vector<std::string> sources;
  if (ReadGroupHead(path, *parser_, domain, category, sources)) {
    // Fast path: the first line lists the sources; a file whose sources all
    // stay is not read any further.
    bool all_kept = true;
    for (const std::string& src : sources) {
      auto verdict = policy.source(src);
      if (!verdict.ok()) return verdict.status();
      if (*verdict != SourceRetention::kKeep) {
        all_kept = false;
        break;
      }
    }
    if (all_kept) return Status::OK();
  } else {
    // Another layout (formatted by hand or by another tool): the whole file.
    simdjson::dom::element doc;
    std::string_view d, c;
    simdjson::dom::array chunks;
    const bool is_aggregate = !parser_->load(path).get(doc) && !doc["domain"].get_string().get(d) &&
                              !doc["category"].get_string().get(c) &&
                              !doc["chunks"].get_array().get(chunks);
    if (is_aggregate) {
      domain = d;
      category = c;
    }
    parser_ = std::make_unique<simdjson::dom::parser>();  // give the file's memory back
    if (!is_aggregate) {
      ++stats.files_skipped;
      return Status::OK();
    }
  }

  Group g;
  g.index_id = next_group_id_++;
  g.domain = std::move(domain);
  g.category = std::move(category);
  g.file_path = path;
  g.spool_path = (fs::path(spool_dir_) / fmt::format("g{}.jsonl", g.index_id)).string();
  g.next_flush = std::numeric_limits<uint64_t>::max();
  const auto fail = [&](Status why) {
    ClearGroup(g);  // best effort: the group's rows and spool are scratch
    return why;
  };
  Status s = ImportExisting(g);
  if (!s.ok()) return fail(s);

  // The sources as imported (the header may list fewer in a hand-made file),
  // including those this run superseded (DropMovedSources drops them).
  sources.clear();
  {
    StatementScope scope(all_sources_);
    sqlite3_bind_int64(all_sources_, 1, g.index_id);
    int rc;
    while ((rc = sqlite3_step(all_sources_)) == SQLITE_ROW) {
      sources.emplace_back(ColumnBytes(all_sources_, 0));
    }
    if (rc != SQLITE_DONE) return fail(IndexError("cannot list sources"));
  }
  uint64_t dropped = 0;
  for (const std::string& src : sources) {
    auto verdict = policy.source(src);
    if (!verdict.ok()) return fail(verdict.status());
    if (*verdict == SourceRetention::kDrop) {
      s = StepDelete(drop_source_, g.index_id, src, dropped);
    } else if (*verdict == SourceRetention::kCheckChunks) {
      s = RetainChunksOf(g, src, policy, dropped);
    }
    if (!s.ok()) return fail(s);
  }
  if (dropped == 0) return ClearGroup(g);

  uint64_t left = 0;
  {
    StatementScope scope(count_);
    sqlite3_bind_int64(count_, 1, g.index_id);
    if (sqlite3_step(count_) != SQLITE_ROW) return fail(IndexError("cannot count a group"));
    left = static_cast<uint64_t>(sqlite3_column_int64(count_, 0));
  }
  if (left == 0) {
    // A run adding none of these chunks would not have created the file.
    if (::unlink(path.c_str()) != 0 && errno != ENOENT) {
      return fail(Status::IOError(fmt::format("cannot remove aggregate '{}': {}", path, Errno())));
    }
    const fs::path folder = fs::path(path).parent_path();
    SyncDirectory(folder.string());
    std::error_code ec;
    if (fs::remove(folder, ec)) SyncDirectory(options_.out_dir);  // only when empty
    ++stats.files_removed;
  } else {
    // FilesWritten counts distinct files: one this run already wrote is not new.
    auto it = groups_.find(GroupKey(g.domain, g.category));
    if (it != groups_.end() && it->second->file_path == path) g.written = it->second->written;
    s = WriteGroup(g);
    if (!s.ok()) return fail(s);
    ++stats.files_rewritten;
  }
  stats.chunks_dropped += dropped;
  return ClearGroup(g);
}

void JsonAggregator::CloseIndex() {
  for (sqlite3_stmt** stmt : {&insert_, &seen_, &was_seen_, &count_, &sources_, &all_sources_,
                              &chunks_, &clear_chunks_, &drop_source_, &drop_id_, &page_ids_}) {
    sqlite3_finalize(*stmt);
    *stmt = nullptr;
  }
  if (db_ != nullptr) sqlite3_close(db_);
  db_ = nullptr;
  batch_rows_ = 0;
}

void JsonAggregator::RemoveSpool() {
  if (spool_dir_.empty()) return;
  CloseIndex();  // scratch: nothing in it needs committing
  ::unlink(index_path_.c_str());
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
