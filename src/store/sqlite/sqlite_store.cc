#include "store/sqlite/sqlite_store.h"

#include <sqlite3.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <bit>
#include <chrono>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <queue>
#include <unordered_map>
#include <utility>

#include <fmt/format.h>

namespace sluice {

namespace {

// A statement finalised on scope exit, for one-off queries.
class ScopedStmt {
 public:
  ScopedStmt() = default;
  ~ScopedStmt() { sqlite3_finalize(stmt_); }
  ScopedStmt(const ScopedStmt&) = delete;
  ScopedStmt& operator=(const ScopedStmt&) = delete;
  sqlite3_stmt** out() { return &stmt_; }
  sqlite3_stmt* get() const { return stmt_; }

 private:
  sqlite3_stmt* stmt_ = nullptr;
};

std::string Quote(std::string_view identifier) {
  // Names are validated to [A-Za-z0-9_], so quoting is for keywords only.
  return "\"" + std::string(identifier) + "\"";
}

std::string ColumnText(sqlite3_stmt* stmt, int col) {
  const unsigned char* text = sqlite3_column_text(stmt, col);
  if (text == nullptr) return {};
  return std::string(reinterpret_cast<const char*>(text),
                     static_cast<size_t>(sqlite3_column_bytes(stmt, col)));
}

// Bytes of a float vector as float32 little-endian, the BLOB format.
// On little-endian hosts (all supported ones) this is the vector's memory.
const void* EmbeddingBytes(std::span<const float> v, std::vector<uint8_t>& scratch) {
  if constexpr (std::endian::native == std::endian::little) {
    return v.data();
  } else {
    scratch.resize(v.size() * 4);
    for (size_t i = 0; i < v.size(); ++i) {
      const uint32_t bits = std::bit_cast<uint32_t>(v[i]);
      for (int b = 0; b < 4; ++b) scratch[i * 4 + b] = static_cast<uint8_t>(bits >> (8 * b));
    }
    return scratch.data();
  }
}

float FloatAt(const uint8_t* bytes, size_t i) {
  uint32_t bits;
  if constexpr (std::endian::native == std::endian::little) {
    std::memcpy(&bits, bytes + i * 4, 4);
  } else {
    bits = uint32_t{bytes[i * 4]} | uint32_t{bytes[i * 4 + 1]} << 8 |
           uint32_t{bytes[i * 4 + 2]} << 16 | uint32_t{bytes[i * 4 + 3]} << 24;
  }
  return std::bit_cast<float>(bits);
}

int64_t SystemNowMs() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

}  // namespace

bool IsValidSqliteTableName(std::string_view name) {
  if (name.empty() || name.size() > 48) return false;
  const auto alpha = [](char c) {
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || c == '_';
  };
  if (!alpha(name[0])) return false;
  for (char c : name) {
    if (!alpha(c) && !(c >= '0' && c <= '9')) return false;
  }
  // Names SQLite reserves for itself.
  std::string lower(name);
  std::transform(lower.begin(), lower.end(), lower.begin(), [](char c) { return std::tolower(c); });
  return lower.rfind("sqlite_", 0) != 0;
}

SqliteStore::SqliteStore(std::string path, SqliteStoreOptions options)
    : path_(std::move(path)), options_(std::move(options)) {
  chunks_table_ = options_.store.table;
  // The default chunks table keeps the plain names the docs promise.
  if (chunks_table_ == "chunks") {
    sources_table_ = "sources";
    meta_table_ = "meta";
  } else {
    sources_table_ = chunks_table_ + "_sources";
    meta_table_ = chunks_table_ + "_meta";
  }
}

SqliteStore::~SqliteStore() { Close(); }

int64_t SqliteStore::NowMs() const {
  return options_.now_unix_ms ? options_.now_unix_ms() : SystemNowMs();
}

Status SqliteStore::ErrorStatus(int rc, std::string_view what) const {
  const std::string detail = fmt::format("sqlite '{}': {}: {}", path_, what,
                                         db_ != nullptr ? sqlite3_errmsg(db_) : sqlite3_errstr(rc));
  switch (rc & 0xff) {
    case SQLITE_BUSY:
    case SQLITE_LOCKED:
      return Status::Unavailable(detail + " (locked by another connection; retry)");
    case SQLITE_FULL:
    case SQLITE_IOERR:
    case SQLITE_CANTOPEN:
    case SQLITE_NOLFS:
      return Status::IOError(detail);
    case SQLITE_READONLY:
    case SQLITE_PERM:
    case SQLITE_AUTH:
      return Status::PermissionDenied(detail);
    case SQLITE_NOTADB:
    case SQLITE_CORRUPT:
      return Status::Corrupt(detail);
    default:
      return Status::Internal(detail);
  }
}

Status SqliteStore::Exec(const char* sql) {
  const int rc = sqlite3_exec(db_, sql, nullptr, nullptr, nullptr);
  return rc == SQLITE_OK ? Status::OK() : ErrorStatus(rc, sql);
}

Status SqliteStore::Prepare(const std::string& sql, sqlite3_stmt** stmt) {
  const int rc = sqlite3_prepare_v3(db_, sql.c_str(), static_cast<int>(sql.size()),
                                    SQLITE_PREPARE_PERSISTENT, stmt, nullptr);
  return rc == SQLITE_OK ? Status::OK() : ErrorStatus(rc, "prepare");
}

void SqliteStore::Rollback() {
  if (db_ != nullptr && sqlite3_get_autocommit(db_) == 0) {
    sqlite3_exec(db_, "ROLLBACK", nullptr, nullptr, nullptr);
  }
}

Result<std::unique_ptr<SqliteStore>> SqliteStore::Open(const std::string& path,
                                                       const SqliteStoreOptions& options) {
  if (!IsValidSqliteTableName(options.store.table)) {
    return Status::InvalidArgument(
        fmt::format("invalid store table name '{}': use letters, digits and '_' (at most 48)",
                    options.store.table));
  }
  if (options.store.dimensions < 0) {
    return Status::InvalidArgument("store dimensions must be >= 0");
  }
  if (path.empty()) return Status::InvalidArgument("sqlite store path is empty");
  if (path != ":memory:") {
    std::string dir = std::filesystem::path(path).parent_path().string();
    if (dir.empty()) dir = ".";
    struct stat st {};
    if (::stat(dir.c_str(), &st) != 0) {
      return Status::NotFound(fmt::format("store directory '{}' does not exist", dir));
    }
    if (!S_ISDIR(st.st_mode)) {
      return Status::InvalidArgument(fmt::format("store directory '{}' is not a directory", dir));
    }
    if (::access(dir.c_str(), W_OK | X_OK) != 0) {
      return Status::PermissionDenied(fmt::format("store directory '{}' is not writable", dir));
    }
    if (::stat(path.c_str(), &st) == 0) {
      if (S_ISDIR(st.st_mode)) {
        return Status::InvalidArgument(
            fmt::format("store path '{}' is a directory, not a database file", path));
      }
      if (::access(path.c_str(), R_OK | W_OK) != 0) {
        return Status::PermissionDenied(fmt::format("store file '{}' is not writable", path));
      }
    }
  }
  std::unique_ptr<SqliteStore> store(new SqliteStore(path, options));
  Status s = store->Init();
  if (!s.ok()) return s;
  return store;
}

Status SqliteStore::Init() {
  const int rc =
      sqlite3_open_v2(path_.c_str(), &db_,
                      SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX, nullptr);
  if (rc != SQLITE_OK) {
    Status s = ErrorStatus(rc, "open");
    Close();
    return s;
  }
  sqlite3_extended_result_codes(db_, 1);
  sqlite3_busy_timeout(db_, options_.busy_timeout_ms);

  // 16 KiB pages for a new file (a no-op for an existing one): a row of 384
  // floats and ~1 KB of text is ~2.7 KB, one per 4 KiB page; 16 KiB pages
  // hold five and measured ~1.6x the insert rate and 2/3 of the file size
  // (docs/STORE_SCHEMA.md).
  sqlite3_exec(db_, "PRAGMA page_size=16384", nullptr, nullptr, nullptr);
  // The first statement reads the header: a non-database file fails here.
  Status s;
  {
    ScopedStmt stmt;
    int prc = sqlite3_prepare_v2(db_, "PRAGMA journal_mode=WAL", -1, stmt.out(), nullptr);
    if (prc == SQLITE_OK) prc = sqlite3_step(stmt.get());
    if (prc != SQLITE_ROW) {
      if ((prc & 0xff) == SQLITE_NOTADB) {
        s = Status::Corrupt(fmt::format("'{}' is not a SQLite database file", path_));
      } else if ((prc & 0xff) == SQLITE_BUSY || (prc & 0xff) == SQLITE_LOCKED) {
        s = Status::Unavailable(
            fmt::format("sqlite database '{}' is locked by another process", path_));
      } else {
        s = ErrorStatus(prc, "enable WAL");
      }
    }
  }
  if (!s.ok()) {
    Close();
    return s;
  }
  s = Exec("PRAGMA synchronous=NORMAL");
  // No foreign keys: chunks and sources are linked by source_id only, so a
  // chunk may be written before its source row (same transaction anyway).
  if (s.ok()) s = CreateSchema();
  if (s.ok()) s = LoadMeta();
  if (s.ok()) {
    const std::string cols =
        "id, source_id, ordinal, byte_begin, byte_end, text, domain, category, metadata, model, "
        "dims, embedding, token_estimate, updated_at";
    const std::string t = Quote(chunks_table_);
    std::string differs;
    for (const char* c : {"source_id", "ordinal", "byte_begin", "byte_end", "text", "domain",
                          "category", "metadata", "model", "dims", "embedding", "token_estimate"}) {
      if (!differs.empty()) differs += " OR ";
      differs += fmt::format("{}.{} IS NOT excluded.{}", t, c, c);
    }
    std::string sets;
    for (const char* c :
         {"source_id", "ordinal", "byte_begin", "byte_end", "text", "domain", "category",
          "metadata", "model", "dims", "embedding", "token_estimate", "updated_at"}) {
      if (!sets.empty()) sets += ", ";
      sets += fmt::format("{} = excluded.{}", c, c);
    }
    s = Prepare(fmt::format("INSERT INTO {} ({}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, "
                            "?11, ?12, ?13, ?14) ON CONFLICT(id) DO UPDATE SET {} WHERE {}",
                            t, cols, sets, differs),
                &upsert_chunk_);
  }
  if (s.ok()) {
    const std::string st = Quote(sources_table_);
    s = Prepare(
        fmt::format("INSERT INTO {0} (source_id, domain, category, chunk_count, updated_at) "
                    "VALUES (?1, ?2, ?3, (SELECT count(*) FROM {1} WHERE source_id = ?1), ?4) "
                    "ON CONFLICT(source_id) DO UPDATE SET domain = excluded.domain, "
                    "category = excluded.category, chunk_count = excluded.chunk_count, "
                    "updated_at = excluded.updated_at WHERE {0}.domain IS NOT excluded.domain "
                    "OR {0}.category IS NOT excluded.category "
                    "OR {0}.chunk_count IS NOT excluded.chunk_count",
                    st, Quote(chunks_table_)),
        &upsert_source_counts_);
  }
  if (s.ok()) {
    s = Prepare(fmt::format("INSERT INTO {} (key, value) VALUES (?1, ?2) "
                            "ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                            Quote(meta_table_)),
                &put_meta_);
  }
  if (!s.ok()) Close();
  return s;
}

Status SqliteStore::CreateSchema() {
  int version = 0;
  int existing = 0;
  {
    ScopedStmt stmt;
    int rc = sqlite3_prepare_v2(db_, "PRAGMA user_version", -1, stmt.out(), nullptr);
    if (rc == SQLITE_OK) rc = sqlite3_step(stmt.get());
    if (rc != SQLITE_ROW) return ErrorStatus(rc, "read schema version");
    version = sqlite3_column_int(stmt.get(), 0);
  }
  if (version > kSqliteSchemaVersion) {
    return Status::InvalidArgument(fmt::format(
        "sqlite '{}' has schema version {}, newer than this sluice ({}); upgrade sluice", path_,
        version, kSqliteSchemaVersion));
  }
  {
    ScopedStmt stmt;
    int rc = sqlite3_prepare_v2(
        db_, "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name IN (?1, ?2, ?3)", -1,
        stmt.out(), nullptr);
    if (rc == SQLITE_OK) {
      sqlite3_bind_text(stmt.get(), 1, chunks_table_.c_str(), -1, SQLITE_TRANSIENT);
      sqlite3_bind_text(stmt.get(), 2, sources_table_.c_str(), -1, SQLITE_TRANSIENT);
      sqlite3_bind_text(stmt.get(), 3, meta_table_.c_str(), -1, SQLITE_TRANSIENT);
      rc = sqlite3_step(stmt.get());
    }
    if (rc != SQLITE_ROW) return ErrorStatus(rc, "read schema");
    existing = sqlite3_column_int(stmt.get(), 0);
  }
  // Opening an up-to-date database takes no write lock, so readers and a
  // second store can open while a writer is busy.
  if (version == kSqliteSchemaVersion && existing == 3) return Status::OK();

  Status s = Exec("BEGIN IMMEDIATE");
  if (!s.ok()) return s;
  const std::string ddl = fmt::format(
      "CREATE TABLE IF NOT EXISTS {0} (id TEXT PRIMARY KEY, source_id TEXT NOT NULL, "
      "ordinal INTEGER, byte_begin INTEGER, byte_end INTEGER, text TEXT, domain TEXT, "
      "category TEXT, metadata TEXT, model TEXT, dims INTEGER, embedding BLOB, "
      "token_estimate INTEGER, updated_at INTEGER);"
      "CREATE INDEX IF NOT EXISTS {3} ON {0} (source_id);"
      "CREATE TABLE IF NOT EXISTS {1} (source_id TEXT PRIMARY KEY, path TEXT, domain TEXT, "
      "category TEXT, chunk_count INTEGER, size_bytes INTEGER, mtime_ns INTEGER, "
      "content_hash TEXT, updated_at INTEGER);"
      "CREATE TABLE IF NOT EXISTS {2} (key TEXT PRIMARY KEY, value TEXT);"
      "PRAGMA user_version = {4};",
      Quote(chunks_table_), Quote(sources_table_), Quote(meta_table_),
      Quote(chunks_table_ + "_source_idx"), kSqliteSchemaVersion);
  s = Exec(ddl.c_str());
  if (s.ok()) s = Exec("COMMIT");
  if (!s.ok()) Rollback();
  return s;
}

Status SqliteStore::LoadMeta() {
  ScopedStmt stmt;
  int rc =
      sqlite3_prepare_v2(db_, fmt::format("SELECT key, value FROM {}", Quote(meta_table_)).c_str(),
                         -1, stmt.out(), nullptr);
  if (rc != SQLITE_OK) return ErrorStatus(rc, "read meta");
  int stored_dims = 0;
  while ((rc = sqlite3_step(stmt.get())) == SQLITE_ROW) {
    const std::string key = ColumnText(stmt.get(), 0);
    if (key == "dimensions") stored_dims = sqlite3_column_int(stmt.get(), 1);
    if (key == "model") model_ = ColumnText(stmt.get(), 1);
  }
  if (rc != SQLITE_DONE) return ErrorStatus(rc, "read meta");
  if (stored_dims > 0) {
    meta_persisted_ = true;
    if (options_.store.dimensions > 0 && options_.store.dimensions != stored_dims) {
      return Status::InvalidArgument(
          fmt::format("sqlite '{}' holds {}-dimension vectors but {} dimensions were asked for",
                      path_, stored_dims, options_.store.dimensions));
    }
    dims_ = stored_dims;
  } else {
    dims_ = options_.store.dimensions;
  }
  return Status::OK();
}

WriteResult SqliteStore::Write(std::span<const EmbeddedChunk> batch) {
  WriteResult result;
  if (db_ == nullptr) {
    result.status = Status::InvalidArgument("sqlite store is closed");
    return result;
  }
  if (batch.empty()) return result;
  int dims = dims_;
  if (dims == 0) {
    for (const EmbeddedChunk& row : batch) {
      if (!row.embedding.empty()) {
        dims = static_cast<int>(row.embedding.size());
        break;
      }
    }
  }
  result.status = Exec("BEGIN IMMEDIATE");
  if (!result.status.ok()) return result;

  const auto fail = [&](Status s) {
    sqlite3_reset(upsert_chunk_);
    sqlite3_reset(upsert_source_counts_);
    sqlite3_reset(put_meta_);
    Rollback();
    result.status = std::move(s);
    result.rejected.clear();
    return result;
  };

  const int64_t now = NowMs();
  std::vector<uint8_t> scratch;
  std::string first_model;
  bool any_accepted = false;
  // source_id -> last accepted row of that source in this batch.
  std::unordered_map<std::string_view, size_t> sources;
  std::vector<std::string_view> source_order;
  for (size_t i = 0; i < batch.size(); ++i) {
    const EmbeddedChunk& row = batch[i];
    const Chunk& c = row.chunk;
    if (static_cast<int>(row.embedding.size()) != dims || dims == 0) {
      result.rejected.push_back(
          {i, Status::Rejected(fmt::format("chunk {}: embedding has {} dimensions, store has {}",
                                           c.id, row.embedding.size(), dims))});
      continue;
    }
    if (c.id.empty()) {
      result.rejected.push_back({i, Status::Rejected("chunk with an empty id")});
      continue;
    }
    if (!any_accepted) first_model = row.model;
    any_accepted = true;
    sqlite3_stmt* st = upsert_chunk_;
    sqlite3_bind_text(st, 1, c.id.data(), static_cast<int>(c.id.size()), SQLITE_STATIC);
    sqlite3_bind_text(st, 2, c.source_id.data(), static_cast<int>(c.source_id.size()),
                      SQLITE_STATIC);
    sqlite3_bind_int64(st, 3, c.ordinal);
    sqlite3_bind_int64(st, 4, static_cast<int64_t>(c.byte_begin));
    sqlite3_bind_int64(st, 5, static_cast<int64_t>(c.byte_end));
    sqlite3_bind_text(st, 6, c.text.data(), static_cast<int>(c.text.size()), SQLITE_STATIC);
    sqlite3_bind_text(st, 7, c.domain.data(), static_cast<int>(c.domain.size()), SQLITE_STATIC);
    sqlite3_bind_text(st, 8, c.category.data(), static_cast<int>(c.category.size()), SQLITE_STATIC);
    std::string_view meta = c.metadata_json;
    if (meta.empty()) meta = "{}";
    sqlite3_bind_text(st, 9, meta.data(), static_cast<int>(meta.size()), SQLITE_STATIC);
    sqlite3_bind_text(st, 10, row.model.data(), static_cast<int>(row.model.size()), SQLITE_STATIC);
    sqlite3_bind_int(st, 11, dims);
    sqlite3_bind_blob(st, 12, EmbeddingBytes(row.embedding, scratch), dims * 4, SQLITE_STATIC);
    sqlite3_bind_int64(st, 13, c.token_estimate);
    sqlite3_bind_int64(st, 14, now);
    const int rc = sqlite3_step(st);
    sqlite3_reset(st);
    if (rc != SQLITE_DONE) return fail(ErrorStatus(rc, "write chunk " + c.id));
    auto [it, inserted] = sources.try_emplace(c.source_id, i);
    if (inserted) {
      source_order.push_back(c.source_id);
    } else {
      it->second = i;
    }
  }
  sqlite3_clear_bindings(upsert_chunk_);

  for (std::string_view source_id : source_order) {
    const Chunk& c = batch[sources[source_id]].chunk;
    sqlite3_stmt* st = upsert_source_counts_;
    sqlite3_bind_text(st, 1, source_id.data(), static_cast<int>(source_id.size()), SQLITE_STATIC);
    sqlite3_bind_text(st, 2, c.domain.data(), static_cast<int>(c.domain.size()), SQLITE_STATIC);
    sqlite3_bind_text(st, 3, c.category.data(), static_cast<int>(c.category.size()), SQLITE_STATIC);
    sqlite3_bind_int64(st, 4, now);
    const int rc = sqlite3_step(st);
    sqlite3_reset(st);
    if (rc != SQLITE_DONE) return fail(ErrorStatus(rc, "update source " + std::string(source_id)));
  }
  sqlite3_clear_bindings(upsert_source_counts_);

  if (any_accepted && !meta_persisted_) {
    const std::string dims_text = std::to_string(dims);
    for (auto [key, value] : {std::pair<const char*, std::string_view>{"dimensions", dims_text},
                              {"model", first_model}}) {
      sqlite3_bind_text(put_meta_, 1, key, -1, SQLITE_STATIC);
      sqlite3_bind_text(put_meta_, 2, value.data(), static_cast<int>(value.size()), SQLITE_STATIC);
      const int rc = sqlite3_step(put_meta_);
      sqlite3_reset(put_meta_);
      if (rc != SQLITE_DONE) return fail(ErrorStatus(rc, "write meta"));
    }
    sqlite3_clear_bindings(put_meta_);
  }

  Status commit = Exec("COMMIT");
  if (!commit.ok()) return fail(std::move(commit));
  if (any_accepted && !meta_persisted_) {
    meta_persisted_ = true;
    model_ = first_model;
  }
  if (any_accepted) dims_ = dims;
  return result;
}

Status SqliteStore::Flush() {
  if (db_ == nullptr) return Status::InvalidArgument("sqlite store is closed");
  const int rc =
      sqlite3_wal_checkpoint_v2(db_, nullptr, SQLITE_CHECKPOINT_PASSIVE, nullptr, nullptr);
  return rc == SQLITE_OK ? Status::OK() : ErrorStatus(rc, "checkpoint");
}

Status SqliteStore::Close() {
  if (db_ == nullptr) return Status::OK();
  Rollback();
  for (sqlite3_stmt** st : {&upsert_chunk_, &upsert_source_counts_, &put_meta_}) {
    sqlite3_finalize(*st);
    *st = nullptr;
  }
  const int rc = sqlite3_close(db_);
  Status s = rc == SQLITE_OK ? Status::OK() : ErrorStatus(rc, "close");
  if (rc != SQLITE_OK) sqlite3_close_v2(db_);  // closes once the last statement is gone
  db_ = nullptr;
  return s;
}

Result<std::vector<SearchHit>> SqliteStore::Search(std::span<const float> query, int k) {
  if (db_ == nullptr) return Status::InvalidArgument("sqlite store is closed");
  if (k <= 0) return Status::InvalidArgument("search k must be positive");
  if (dims_ == 0) return std::vector<SearchHit>{};  // nothing written yet
  if (static_cast<int>(query.size()) != dims_) {
    return Status::InvalidArgument(
        fmt::format("query has {} dimensions, store '{}' has {}", query.size(), path_, dims_));
  }
  double query_norm = 0;
  for (float x : query) query_norm += double{x} * x;
  query_norm = std::sqrt(query_norm);
  if (query_norm == 0) return Status::InvalidArgument("query vector has zero length");

  // Stream (rowid, embedding) and keep the k best in a min-heap: memory is
  // O(k) whatever the table size. Ties keep the lower rowid (older row).
  using Entry = std::pair<double, int64_t>;
  // better(a, b): a ranks before b. As the heap's "less", it keeps the
  // worst kept entry on top.
  const auto better = [](const Entry& a, const Entry& b) {
    return a.first != b.first ? a.first > b.first : a.second < b.second;
  };
  std::priority_queue<Entry, std::vector<Entry>, decltype(better)> heap(better);
  {
    ScopedStmt stmt;
    int rc = sqlite3_prepare_v2(
        db_, fmt::format("SELECT rowid, embedding FROM {}", Quote(chunks_table_)).c_str(), -1,
        stmt.out(), nullptr);
    if (rc != SQLITE_OK) return ErrorStatus(rc, "search");
    const size_t want_bytes = query.size() * 4;
    while ((rc = sqlite3_step(stmt.get())) == SQLITE_ROW) {
      const auto* blob = static_cast<const uint8_t*>(sqlite3_column_blob(stmt.get(), 1));
      if (blob == nullptr || static_cast<size_t>(sqlite3_column_bytes(stmt.get(), 1)) != want_bytes)
        continue;
      double dot = 0, norm = 0;
      for (size_t i = 0; i < query.size(); ++i) {
        const double v = FloatAt(blob, i);
        dot += v * query[i];
        norm += v * v;
      }
      const double score = norm > 0 ? dot / (std::sqrt(norm) * query_norm) : 0.0;
      const Entry e{score, sqlite3_column_int64(stmt.get(), 0)};
      if (heap.size() < static_cast<size_t>(k)) {
        heap.push(e);
      } else if (better(e, heap.top())) {
        heap.pop();
        heap.push(e);
      }
    }
    if (rc != SQLITE_DONE) return ErrorStatus(rc, "search");
  }
  std::vector<Entry> best;
  while (!heap.empty()) {
    best.push_back(heap.top());
    heap.pop();
  }
  std::reverse(best.begin(), best.end());
  ScopedStmt stmt;
  int rc = sqlite3_prepare_v2(
      db_,
      fmt::format("SELECT id, source_id, ordinal, text, domain, category, metadata FROM {} "
                  "WHERE rowid = ?1",
                  Quote(chunks_table_))
          .c_str(),
      -1, stmt.out(), nullptr);
  if (rc != SQLITE_OK) return ErrorStatus(rc, "search");
  std::vector<SearchHit> hits;
  hits.reserve(best.size());
  for (const Entry& e : best) {
    sqlite3_bind_int64(stmt.get(), 1, e.second);
    rc = sqlite3_step(stmt.get());
    if (rc == SQLITE_ROW) {
      SearchHit hit;
      hit.chunk_id = ColumnText(stmt.get(), 0);
      hit.source_id = ColumnText(stmt.get(), 1);
      hit.ordinal = static_cast<uint32_t>(sqlite3_column_int64(stmt.get(), 2));
      hit.text = ColumnText(stmt.get(), 3);
      hit.domain = ColumnText(stmt.get(), 4);
      hit.category = ColumnText(stmt.get(), 5);
      hit.metadata_json = ColumnText(stmt.get(), 6);
      hit.score = e.first;
      hits.push_back(std::move(hit));
    } else if (rc != SQLITE_DONE) {
      return ErrorStatus(rc, "search");
    }
    sqlite3_reset(stmt.get());
  }
  return hits;
}

Result<StoreStats> SqliteStore::Stats() {
  if (db_ == nullptr) return Status::InvalidArgument("sqlite store is closed");
  StoreStats stats;
  ScopedStmt stmt;
  int rc =
      sqlite3_prepare_v2(db_,
                         fmt::format("SELECT (SELECT count(*) FROM {}), (SELECT count(*) FROM {})",
                                     Quote(chunks_table_), Quote(sources_table_))
                             .c_str(),
                         -1, stmt.out(), nullptr);
  if (rc == SQLITE_OK) rc = sqlite3_step(stmt.get());
  if (rc != SQLITE_ROW) return ErrorStatus(rc, "stats");
  stats.chunks = static_cast<uint64_t>(sqlite3_column_int64(stmt.get(), 0));
  stats.sources = static_cast<uint64_t>(sqlite3_column_int64(stmt.get(), 1));
  return stats;
}

Result<StoredChunk> SqliteStore::ReadChunk(std::string_view chunk_id) {
  if (db_ == nullptr) return Status::InvalidArgument("sqlite store is closed");
  ScopedStmt stmt;
  int rc = sqlite3_prepare_v2(
      db_,
      fmt::format("SELECT id, source_id, ordinal, byte_begin, byte_end, text, domain, category, "
                  "metadata, model, dims, embedding, token_estimate, updated_at FROM {} "
                  "WHERE id = ?1",
                  Quote(chunks_table_))
          .c_str(),
      -1, stmt.out(), nullptr);
  if (rc != SQLITE_OK) return ErrorStatus(rc, "read chunk");
  sqlite3_bind_text(stmt.get(), 1, chunk_id.data(), static_cast<int>(chunk_id.size()),
                    SQLITE_STATIC);
  rc = sqlite3_step(stmt.get());
  if (rc == SQLITE_DONE) {
    return Status::NotFound(fmt::format("no chunk '{}' in '{}'", chunk_id, path_));
  }
  if (rc != SQLITE_ROW) return ErrorStatus(rc, "read chunk");
  sqlite3_stmt* st = stmt.get();
  StoredChunk c;
  c.id = ColumnText(st, 0);
  c.source_id = ColumnText(st, 1);
  c.ordinal = static_cast<uint32_t>(sqlite3_column_int64(st, 2));
  c.byte_begin = static_cast<uint64_t>(sqlite3_column_int64(st, 3));
  c.byte_end = static_cast<uint64_t>(sqlite3_column_int64(st, 4));
  c.text = ColumnText(st, 5);
  c.domain = ColumnText(st, 6);
  c.category = ColumnText(st, 7);
  c.metadata_json = ColumnText(st, 8);
  c.model = ColumnText(st, 9);
  c.dims = sqlite3_column_int(st, 10);
  const auto* blob = static_cast<const uint8_t*>(sqlite3_column_blob(st, 11));
  const size_t bytes = static_cast<size_t>(sqlite3_column_bytes(st, 11));
  if (blob != nullptr) {
    c.embedding_bytes.assign(blob, blob + bytes);
    c.embedding.resize(bytes / 4);
    for (size_t i = 0; i < c.embedding.size(); ++i) c.embedding[i] = FloatAt(blob, i);
  }
  c.token_estimate = static_cast<uint32_t>(sqlite3_column_int64(st, 12));
  c.updated_at_ms = sqlite3_column_int64(st, 13);
  return c;
}

Result<std::vector<float>> SqliteStore::ReadEmbedding(std::string_view chunk_id) {
  Result<StoredChunk> c = ReadChunk(chunk_id);
  if (!c.ok()) return c.status();
  return std::move(c->embedding);
}

Result<SourceRecord> SqliteStore::ReadSource(std::string_view source_id) {
  if (db_ == nullptr) return Status::InvalidArgument("sqlite store is closed");
  ScopedStmt stmt;
  int rc = sqlite3_prepare_v2(
      db_,
      fmt::format("SELECT source_id, path, domain, category, chunk_count, size_bytes, mtime_ns, "
                  "content_hash, updated_at FROM {} WHERE source_id = ?1",
                  Quote(sources_table_))
          .c_str(),
      -1, stmt.out(), nullptr);
  if (rc != SQLITE_OK) return ErrorStatus(rc, "read source");
  sqlite3_bind_text(stmt.get(), 1, source_id.data(), static_cast<int>(source_id.size()),
                    SQLITE_STATIC);
  rc = sqlite3_step(stmt.get());
  if (rc == SQLITE_DONE) {
    return Status::NotFound(fmt::format("no source '{}' in '{}'", source_id, path_));
  }
  if (rc != SQLITE_ROW) return ErrorStatus(rc, "read source");
  sqlite3_stmt* st = stmt.get();
  SourceRecord r;
  r.source_id = ColumnText(st, 0);
  r.path = ColumnText(st, 1);
  r.domain = ColumnText(st, 2);
  r.category = ColumnText(st, 3);
  r.chunk_count = static_cast<uint64_t>(sqlite3_column_int64(st, 4));
  if (sqlite3_column_type(st, 5) != SQLITE_NULL) {
    r.size_bytes = static_cast<uint64_t>(sqlite3_column_int64(st, 5));
  }
  if (sqlite3_column_type(st, 6) != SQLITE_NULL) r.mtime_ns = sqlite3_column_int64(st, 6);
  if (sqlite3_column_type(st, 7) != SQLITE_NULL) r.content_hash = ColumnText(st, 7);
  r.updated_at_ms = sqlite3_column_int64(st, 8);
  return r;
}

Result<std::vector<std::string>> SqliteStore::ChunkIdsForSource(std::string_view source_id) {
  if (db_ == nullptr) return Status::InvalidArgument("sqlite store is closed");
  ScopedStmt stmt;
  int rc =
      sqlite3_prepare_v2(db_,
                         fmt::format("SELECT id FROM {} WHERE source_id = ?1 ORDER BY ordinal, id",
                                     Quote(chunks_table_))
                             .c_str(),
                         -1, stmt.out(), nullptr);
  if (rc != SQLITE_OK) return ErrorStatus(rc, "list chunks");
  sqlite3_bind_text(stmt.get(), 1, source_id.data(), static_cast<int>(source_id.size()),
                    SQLITE_STATIC);
  std::vector<std::string> ids;
  while ((rc = sqlite3_step(stmt.get())) == SQLITE_ROW) ids.push_back(ColumnText(stmt.get(), 0));
  if (rc != SQLITE_DONE) return ErrorStatus(rc, "list chunks");
  return ids;
}

Status SqliteStore::UpsertSource(const SourceRecord& source) {
  if (db_ == nullptr) return Status::InvalidArgument("sqlite store is closed");
  ScopedStmt stmt;
  int rc = sqlite3_prepare_v2(
      db_,
      fmt::format("INSERT INTO {0} (source_id, path, domain, category, chunk_count, size_bytes, "
                  "mtime_ns, content_hash, updated_at) VALUES (?1, ?2, ?3, ?4, "
                  "(SELECT count(*) FROM {1} WHERE source_id = ?1), ?5, ?6, ?7, ?8) "
                  "ON CONFLICT(source_id) DO UPDATE SET path = excluded.path, "
                  "domain = excluded.domain, category = excluded.category, "
                  "chunk_count = excluded.chunk_count, size_bytes = excluded.size_bytes, "
                  "mtime_ns = excluded.mtime_ns, content_hash = excluded.content_hash, "
                  "updated_at = excluded.updated_at",
                  Quote(sources_table_), Quote(chunks_table_))
          .c_str(),
      -1, stmt.out(), nullptr);
  if (rc != SQLITE_OK) return ErrorStatus(rc, "upsert source");
  sqlite3_stmt* st = stmt.get();
  sqlite3_bind_text(st, 1, source.source_id.c_str(), -1, SQLITE_STATIC);
  sqlite3_bind_text(st, 2, source.path.c_str(), -1, SQLITE_STATIC);
  sqlite3_bind_text(st, 3, source.domain.c_str(), -1, SQLITE_STATIC);
  sqlite3_bind_text(st, 4, source.category.c_str(), -1, SQLITE_STATIC);
  if (source.size_bytes) sqlite3_bind_int64(st, 5, static_cast<int64_t>(*source.size_bytes));
  if (source.mtime_ns) sqlite3_bind_int64(st, 6, *source.mtime_ns);
  if (source.content_hash)
    sqlite3_bind_text(st, 7, source.content_hash->c_str(), -1, SQLITE_STATIC);
  sqlite3_bind_int64(st, 8, NowMs());
  rc = sqlite3_step(st);
  return rc == SQLITE_DONE ? Status::OK() : ErrorStatus(rc, "upsert source");
}

Result<std::unique_ptr<Store>> OpenSqliteStore(const std::string& path,
                                               const StoreOptions& options) {
  SqliteStoreOptions sqlite_options;
  sqlite_options.store = options;
  auto store = SqliteStore::Open(path, sqlite_options);
  if (!store.ok()) return store.status();
  return std::unique_ptr<Store>(std::move(store).value());
}

}  // namespace sluice
