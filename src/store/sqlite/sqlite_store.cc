#include "store/sqlite/sqlite_store.h"

#include <fcntl.h>
#include <sqlite3.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>

#include <algorithm>
#include <bit>
#include <chrono>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <limits>
#include <queue>
#include <unordered_map>
#include <utility>

#include <fmt/format.h>

#include "common/hashing.h"

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
  // (Appended piecewise: GCC 12 -O2 warns on "\"" + std::string, PR105329.)
  std::string out;
  out.reserve(identifier.size() + 2);
  out.push_back('"');
  out.append(identifier);
  out.push_back('"');
  return out;
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
    files_table_ = "files";
    cache_table_ = "embedding_cache";
    run_table_ = "run_chunks";
  } else {
    sources_table_ = chunks_table_ + "_sources";
    meta_table_ = chunks_table_ + "_meta";
    files_table_ = chunks_table_ + "_files";
    cache_table_ = chunks_table_ + "_embedding_cache";
    run_table_ = chunks_table_ + "_run_chunks";
  }
}

SqliteStore::~SqliteStore() { Close(); }

int64_t SqliteStore::NowMs() const {
  return options_.now_unix_ms ? options_.now_unix_ms() : SystemNowMs();
}

Status SqliteStore::ErrorStatus(int rc, std::string_view what) const {
  std::string detail = fmt::format("sqlite '{}': {}: {}", path_, what,
                                   db_ != nullptr ? sqlite3_errmsg(db_) : sqlite3_errstr(rc));
  // "disk I/O error" alone does not tell a full disk from a failing one: the
  // system call's errno does ("No space left on device", "File too large").
  const int os_errno = db_ != nullptr ? sqlite3_system_errno(db_) : 0;
  if (os_errno != 0 && ((rc & 0xff) == SQLITE_IOERR || (rc & 0xff) == SQLITE_FULL ||
                        (rc & 0xff) == SQLITE_CANTOPEN)) {
    detail += fmt::format(" ({})", std::strerror(os_errno));
  }
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
    if (options.store.read_only) {
      // Reading never creates: a mistyped path is an error, not a new,
      // empty database.
      if (::stat(path.c_str(), &st) != 0) {
        return Status::NotFound(fmt::format("store 'sqlite:{}' does not exist", path));
      }
    } else if (::access(dir.c_str(), W_OK | X_OK) != 0) {
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
    } else {
      // A new store holds document text: create it 0600 whatever the umask
      // (an empty file is an empty database). SQLite gives its -wal, -shm
      // and journal files the database file's mode.
      const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
      if (fd >= 0) ::close(fd);
    }
  }
  std::unique_ptr<SqliteStore> store(new SqliteStore(path, options));
  Status s = store->Init();
  if (!s.ok()) return s;
  return store;
}

Status SqliteStore::AcquireWriterLock() {
  // A sidecar file rather than the database itself: SQLite's own locks are
  // fcntl locks, which any close() of the database file by this process
  // would drop; flock locks are separate on Linux and live as long as this
  // descriptor (a killed run releases its lock with its descriptors).
  const std::string lock_path = path_ + ".lock";
  const int fd = ::open(lock_path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600);
  if (fd < 0) {
    return Status::IOError(
        fmt::format("cannot open the store's lock file '{}': {}", lock_path, std::strerror(errno)));
  }
  if (::flock(fd, LOCK_EX | LOCK_NB) != 0) {
    const int err = errno;
    std::string holder;
    if (err == EWOULDBLOCK) {
      char buf[32] = {};
      const ssize_t n = ::pread(fd, buf, sizeof buf - 1, 0);
      for (ssize_t i = 0; i < n && buf[i] >= '0' && buf[i] <= '9'; ++i) holder.push_back(buf[i]);
    }
    ::close(fd);
    if (err != EWOULDBLOCK) {
      return Status::IOError(
          fmt::format("cannot lock the store's lock file '{}': {}", lock_path, std::strerror(err)));
    }
    return Status::Busy(fmt::format(
        "store 'sqlite:{}' is in use by another sluice run{}: wait for it to finish, or use "
        "another --store",
        path_, holder.empty() ? std::string() : " (pid " + holder + ")"));
  }
  // The holder's pid, for the message above (best effort: a reader that
  // finds it half-written just omits it).
  const std::string pid = std::to_string(::getpid()) + "\n";
  if (::ftruncate(fd, 0) != 0 || ::pwrite(fd, pid.data(), pid.size(), 0) < 0) {
    // The lock is held all the same; only the message loses the pid.
  }
  writer_lock_fd_ = fd;
  return Status::OK();
}

Status SqliteStore::DeleteEverything() {
  Status s = Exec("BEGIN IMMEDIATE");
  if (!s.ok()) return s;
  for (const std::string* table :
       {&chunks_table_, &sources_table_, &files_table_, &cache_table_, &run_table_, &meta_table_}) {
    const std::string sql = "DELETE FROM " + Quote(*table);
    s = Exec(sql.c_str());
    if (!s.ok()) break;
  }
  if (s.ok()) s = Exec("COMMIT");
  if (!s.ok()) Rollback();
  return s.WithContext("--reembed: empty the store");
}

Result<StoreModel> SqliteStore::StoredModel() {
  if (db_ == nullptr) return Status::InvalidArgument("sqlite store is closed");
  if (!meta_persisted_) return StoreModel{};
  return StoreModel{model_, dims_};
}

Status SqliteStore::Init() {
  if (options_.store.exclusive_run && !options_.store.read_only && path_ != ":memory:") {
    if (Status s = AcquireWriterLock(); !s.ok()) return s;
  }
  const int open_flags = SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX |
                         (options_.store.read_only ? 0 : SQLITE_OPEN_CREATE);
  const int rc = sqlite3_open_v2(path_.c_str(), &db_, open_flags, nullptr);
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
        "dims, embedding, token_estimate, updated_at, file_id";
    const std::string t = Quote(chunks_table_);
    std::string differs;
    // file_id never changes for a chunk id (the id hashes the source id, and
    // a source belongs to one file) except from NULL on a row stored before
    // chunks had one: that row is then completed.
    for (const char* c :
         {"source_id", "ordinal", "byte_begin", "byte_end", "text", "domain", "category",
          "metadata", "model", "dims", "embedding", "token_estimate", "file_id"}) {
      if (!differs.empty()) differs += " OR ";
      differs += fmt::format("{}.{} IS NOT excluded.{}", t, c, c);
    }
    std::string sets;
    for (const char* c :
         {"source_id", "ordinal", "byte_begin", "byte_end", "text", "domain", "category",
          "metadata", "model", "dims", "embedding", "token_estimate", "updated_at", "file_id"}) {
      if (!sets.empty()) sets += ", ";
      sets += fmt::format("{} = excluded.{}", c, c);
    }
    s = Prepare(fmt::format("INSERT INTO {} ({}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, "
                            "?11, ?12, ?13, ?14, ?15) ON CONFLICT(id) DO UPDATE SET {} WHERE {}",
                            t, cols, sets, differs),
                &upsert_chunk_);
  }
  if (s.ok()) {
    const std::string st = Quote(sources_table_);
    s = Prepare(
        // A new row takes its file facts from the fingerprint, if the file
        // was fingerprinted before any chunk of it was stored (dead-letter
        // retry); an existing row keeps its own.
        fmt::format("INSERT INTO {0} (source_id, domain, category, chunk_count, updated_at, "
                    "path, size_bytes, mtime_ns, content_hash) "
                    "SELECT ?1, ?2, ?3, (SELECT count(*) FROM {1} WHERE source_id = ?1), ?4, "
                    "f.path, f.size_bytes, f.mtime_ns, f.content_hash FROM (SELECT 1) "
                    "LEFT JOIN {2} f ON f.file_id = ?1 WHERE true "
                    "ON CONFLICT(source_id) DO UPDATE SET domain = excluded.domain, "
                    "category = excluded.category, chunk_count = excluded.chunk_count, "
                    "updated_at = excluded.updated_at WHERE {0}.domain IS NOT excluded.domain "
                    "OR {0}.category IS NOT excluded.category "
                    "OR {0}.chunk_count IS NOT excluded.chunk_count",
                    st, Quote(chunks_table_), Quote(files_table_)),
        &upsert_source_counts_);
  }
  if (s.ok()) {
    s = Prepare(fmt::format("INSERT INTO {} (key, value) VALUES (?1, ?2) "
                            "ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                            Quote(meta_table_)),
                &put_meta_);
  }
  if (s.ok()) {
    s = Prepare(fmt::format("INSERT OR IGNORE INTO {} (key, model, embedding) VALUES (?1, ?2, ?3)",
                            Quote(cache_table_)),
                &put_cache_);
  }
  if (s.ok()) {
    s = Prepare(
        fmt::format("INSERT OR IGNORE INTO {} (file_id, run_id, chunk_id) VALUES (?1, ?2, ?3)",
                    Quote(run_table_)),
        &put_run_);
  }
  // Per connection (temp schema, no lock on the file): the sources whose
  // chunks CommitSources/DeleteSources deleted, recounted once per call.
  if (s.ok()) {
    s = Exec(
        "CREATE TEMP TABLE IF NOT EXISTS sluice_touched_sources (source_id TEXT PRIMARY KEY) "
        "WITHOUT ROWID");
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
        db_,
        "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name IN (?1, ?2, ?3, ?4, ?5, "
        "?6)",
        -1, stmt.out(), nullptr);
    if (rc == SQLITE_OK) {
      sqlite3_bind_text(stmt.get(), 1, chunks_table_.c_str(), -1, SQLITE_TRANSIENT);
      sqlite3_bind_text(stmt.get(), 2, sources_table_.c_str(), -1, SQLITE_TRANSIENT);
      sqlite3_bind_text(stmt.get(), 3, meta_table_.c_str(), -1, SQLITE_TRANSIENT);
      sqlite3_bind_text(stmt.get(), 4, files_table_.c_str(), -1, SQLITE_TRANSIENT);
      sqlite3_bind_text(stmt.get(), 5, cache_table_.c_str(), -1, SQLITE_TRANSIENT);
      sqlite3_bind_text(stmt.get(), 6, run_table_.c_str(), -1, SQLITE_TRANSIENT);
      rc = sqlite3_step(stmt.get());
    }
    if (rc != SQLITE_ROW) return ErrorStatus(rc, "read schema");
    existing = sqlite3_column_int(stmt.get(), 0);
  }
  // Opening an up-to-date database takes no write lock, so readers and a
  // second store can open while a writer is busy.
  // (The run records table is created last, with the version 3 columns, so
  // its presence means this store's tables are current.)
  if (version == kSqliteSchemaVersion && existing == 6) return Status::OK();

  Status s = Exec("BEGIN IMMEDIATE");
  if (!s.ok()) return s;
  const std::string ddl = fmt::format(
      "CREATE TABLE IF NOT EXISTS {0} (id TEXT PRIMARY KEY, source_id TEXT NOT NULL, "
      "ordinal INTEGER, byte_begin INTEGER, byte_end INTEGER, text TEXT, domain TEXT, "
      "category TEXT, metadata TEXT, model TEXT, dims INTEGER, embedding BLOB, "
      "token_estimate INTEGER, updated_at INTEGER, file_id TEXT);"
      "CREATE INDEX IF NOT EXISTS {3} ON {0} (source_id);"
      "CREATE TABLE IF NOT EXISTS {1} (source_id TEXT PRIMARY KEY, path TEXT, domain TEXT, "
      "category TEXT, chunk_count INTEGER, size_bytes INTEGER, mtime_ns INTEGER, "
      "content_hash TEXT, updated_at INTEGER);"
      "CREATE TABLE IF NOT EXISTS {2} (key TEXT PRIMARY KEY, value TEXT);"
      // Version 2: file fingerprints, and the embedding cache keyed by
      // Hash128Hex(namespace \n text).
      "CREATE TABLE IF NOT EXISTS {5} (file_id TEXT PRIMARY KEY, path TEXT, size_bytes INTEGER, "
      "mtime_ns INTEGER, content_hash TEXT, chunk_count INTEGER, updated_at INTEGER);"
      "CREATE TABLE IF NOT EXISTS {6} (key TEXT PRIMARY KEY, model TEXT, embedding BLOB) "
      "WITHOUT ROWID;",
      Quote(chunks_table_), Quote(sources_table_), Quote(meta_table_),
      Quote(chunks_table_ + "_source_idx"), kSqliteSchemaVersion, Quote(files_table_),
      Quote(cache_table_));
  s = Exec(ddl.c_str());
  if (s.ok()) s = UpgradeTables();
  if (s.ok()) {
    // Version 3: which file produced each chunk, and which run recorded it.
    const std::string v3 = fmt::format(
        "CREATE INDEX IF NOT EXISTS {1} ON {0} (file_id);"
        "CREATE TABLE IF NOT EXISTS {2} (file_id TEXT NOT NULL, run_id INTEGER NOT NULL, "
        "chunk_id TEXT NOT NULL, PRIMARY KEY (file_id, run_id, chunk_id)) WITHOUT ROWID;"
        "PRAGMA user_version = {3};",
        Quote(chunks_table_), Quote(chunks_table_ + "_file_idx"), Quote(run_table_),
        kSqliteSchemaVersion);
    s = Exec(v3.c_str());
  }
  if (s.ok()) s = Exec("COMMIT");
  if (!s.ok()) Rollback();
  return s;
}

Result<bool> SqliteStore::HasColumn(const std::string& table, const char* column) {
  ScopedStmt stmt;
  int rc = sqlite3_prepare_v2(db_, "SELECT count(*) FROM pragma_table_info(?1) WHERE name = ?2", -1,
                              stmt.out(), nullptr);
  if (rc == SQLITE_OK) {
    sqlite3_bind_text(stmt.get(), 1, table.c_str(), -1, SQLITE_STATIC);
    sqlite3_bind_text(stmt.get(), 2, column, -1, SQLITE_STATIC);
    rc = sqlite3_step(stmt.get());
  }
  if (rc != SQLITE_ROW) return ErrorStatus(rc, "read schema");
  return sqlite3_column_int(stmt.get(), 0) > 0;
}

Status SqliteStore::UpgradeTables() {
  // Columns are checked inside the transaction, so a second process that
  // waited for the lock finds the work done. (Versions are per file, tables
  // per store prefix: another prefix's tables may be older than the file's
  // user_version says.)
  Result<bool> has_file_id = HasColumn(chunks_table_, "file_id");
  if (!has_file_id.ok()) return has_file_id.status();
  if (!*has_file_id) {
    const std::string add =
        fmt::format("ALTER TABLE {} ADD COLUMN file_id TEXT", Quote(chunks_table_));
    if (Status s = Exec(add.c_str()); !s.ok()) return s;
  }
  Result<bool> has_lists = HasColumn(files_table_, "chunk_ids");
  if (!has_lists.ok()) return has_lists.status();
  if (!*has_lists) return Status::OK();
  // Version 2 listed each file's chunk ids, newline-separated; they become
  // the chunks' file_id. The list is turned into a JSON array and expanded by
  // json_each (linear in its length; ids are hex, and a list that would not
  // be valid JSON is skipped: its chunks keep NULL and the legacy
  // source_id rule). Rows already carrying a file_id keep it.
  // Through a temp table keyed by chunk id, so the update is driven by the
  // listed ids (a primary-key lookup each) whatever the planner thinks of
  // the tables' sizes.
  const std::string fill = fmt::format(
      "CREATE TEMP TABLE sluice_listed (id TEXT PRIMARY KEY, file_id TEXT) WITHOUT ROWID;"
      "INSERT OR IGNORE INTO temp.sluice_listed (id, file_id) SELECT j.value, l.file_id FROM "
      "(SELECT file_id, '[\"' || replace(rtrim(chunk_ids, char(10)), char(10), '\",\"') || "
      "'\"]' AS arr FROM {1} WHERE chunk_ids IS NOT NULL AND chunk_ids <> '') l, "
      "json_each(CASE WHEN json_valid(l.arr) THEN l.arr ELSE '[]' END) j;"
      "UPDATE {0} SET file_id = (SELECT l.file_id FROM temp.sluice_listed l WHERE l.id = {0}.id) "
      "WHERE id IN (SELECT id FROM temp.sluice_listed) AND file_id IS NULL;"
      "DROP TABLE temp.sluice_listed;"
      "ALTER TABLE {1} DROP COLUMN chunk_ids;",
      Quote(chunks_table_), Quote(files_table_));
  return Exec(fill.c_str());
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
  if (options_.store.reembed && !options_.store.read_only) {
    if (Status s = DeleteEverything(); !s.ok()) return s;
    model_.clear();
    stored_dims = 0;
  }
  if (stored_dims > 0) {
    meta_persisted_ = true;
    // (A store written without model names accepts any.)
    const bool other_model =
        !options_.store.model.empty() && !model_.empty() && options_.store.model != model_;
    const bool other_dims =
        options_.store.dimensions > 0 && options_.store.dimensions != stored_dims;
    if (other_model || other_dims) {
      return StoreModelMismatch(Describe(), StoreModel{model_, stored_dims}, options_.store.model,
                                options_.store.dimensions);
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
    sqlite3_reset(put_cache_);
    sqlite3_reset(put_run_);
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
    if (c.file_id.empty()) {
      sqlite3_bind_null(st, 15);
    } else {
      sqlite3_bind_text(st, 15, c.file_id.data(), static_cast<int>(c.file_id.size()),
                        SQLITE_STATIC);
    }
    const int rc = sqlite3_step(st);
    sqlite3_reset(st);
    if (rc != SQLITE_DONE) return fail(ErrorStatus(rc, "write chunk " + c.id));
    if (options_.store.run_id != 0 && !c.file_id.empty()) {
      sqlite3_stmt* rs = put_run_;
      sqlite3_bind_text(rs, 1, c.file_id.data(), static_cast<int>(c.file_id.size()), SQLITE_STATIC);
      sqlite3_bind_int64(rs, 2, static_cast<int64_t>(options_.store.run_id));
      sqlite3_bind_text(rs, 3, c.id.data(), static_cast<int>(c.id.size()), SQLITE_STATIC);
      const int rrc = sqlite3_step(rs);
      sqlite3_reset(rs);
      if (rrc != SQLITE_DONE) return fail(ErrorStatus(rrc, "record run chunk " + c.id));
    }
    if (!options_.store.embedding_cache_namespace.empty()) {
      const std::string key = EmbeddingCacheKey(options_.store.embedding_cache_namespace, c.text);
      sqlite3_stmt* cs = put_cache_;
      sqlite3_bind_text(cs, 1, key.data(), static_cast<int>(key.size()), SQLITE_STATIC);
      sqlite3_bind_text(cs, 2, row.model.data(), static_cast<int>(row.model.size()), SQLITE_STATIC);
      sqlite3_bind_blob(cs, 3, EmbeddingBytes(row.embedding, scratch), dims * 4, SQLITE_STATIC);
      const int crc = sqlite3_step(cs);
      sqlite3_reset(cs);
      if (crc != SQLITE_DONE) return fail(ErrorStatus(crc, "write embedding cache"));
    }
    auto [it, inserted] = sources.try_emplace(c.source_id, i);
    if (inserted) {
      source_order.push_back(c.source_id);
    } else {
      it->second = i;
    }
  }
  sqlite3_clear_bindings(upsert_chunk_);
  sqlite3_clear_bindings(put_run_);

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
  if (db_ == nullptr) {
    if (writer_lock_fd_ >= 0) ::close(writer_lock_fd_);  // the open failed after locking
    writer_lock_fd_ = -1;
    return Status::OK();
  }
  Rollback();
  for (sqlite3_stmt** st :
       {&upsert_chunk_, &upsert_source_counts_, &put_meta_, &put_cache_, &put_run_}) {
    sqlite3_finalize(*st);
    *st = nullptr;
  }
  const int rc = sqlite3_close(db_);
  Status s = rc == SQLITE_OK ? Status::OK() : ErrorStatus(rc, "close");
  if (rc != SQLITE_OK) sqlite3_close_v2(db_);  // closes once the last statement is gone
  db_ = nullptr;
  if (writer_lock_fd_ >= 0) {
    ::close(writer_lock_fd_);  // releases the run's lock
    writer_lock_fd_ = -1;
  }
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
                  "metadata, model, dims, embedding, token_estimate, updated_at, file_id FROM {} "
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
  c.file_id = ColumnText(st, 14);
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

namespace {

// A chunk stored without a file id: written before schema version 3 (NULL)
// or from stdin. Such a row counts as file F's when its source_id is F (a
// plain file's source id is its file id).
constexpr const char* kNoFileId = "(c.file_id IS NULL OR c.file_id = '')";

// A file's (?1) stored chunks are two disjoint sets, each found through an
// index (whose entries end in the rowid): the rows stored with its file id,
// and the legacy rows under its source id. Kept apart rather than OR-ed: an
// OR makes SQLite collect every matching rowid to de-duplicate them.
constexpr const char* kFileBranches[2] = {
    "c.file_id = ?1", "c.source_id = ?1 AND (c.file_id IS NULL OR c.file_id = '')"};

// Rows one DELETE statement removes at most. SQLite collects a DELETE's
// rowids before removing the rows, so one statement over a huge file would
// hold an entry per chunk; windows of rowids keep that bounded.
constexpr int kDeleteWindow = 4096;

// Per connection: the sources whose chunks a CommitSources/DeleteSources
// call deleted, recounted once before it commits.
constexpr const char* kTouched = "temp.sluice_touched_sources";

// Not recorded by run ?2 for file ?1 (run records table `run_table`).
std::string NotRecorded(const std::string& run_table) {
  return fmt::format(
      "NOT EXISTS (SELECT 1 FROM {} r WHERE r.file_id = ?1 AND r.run_id = ?2 AND "
      "r.chunk_id = c.id)",
      run_table);
}

}  // namespace

struct SqliteStore::FileChunkDelete {
  // Per branch of kFileBranches: the next window (row count, last rowid),
  // the sources of its rows to delete, and their deletion.
  ScopedStmt window[2], touch[2], del[2];
};

Result<std::vector<SourceFingerprint>> SqliteStore::LoadFingerprints() {
  if (db_ == nullptr) return Status::InvalidArgument("sqlite store is closed");
  ScopedStmt stmt;
  int rc = sqlite3_prepare_v2(
      db_,
      fmt::format("SELECT file_id, path, size_bytes, mtime_ns, content_hash, chunk_count FROM {}",
                  Quote(files_table_))
          .c_str(),
      -1, stmt.out(), nullptr);
  if (rc != SQLITE_OK) return ErrorStatus(rc, "load fingerprints");
  std::vector<SourceFingerprint> out;
  while ((rc = sqlite3_step(stmt.get())) == SQLITE_ROW) {
    SourceFingerprint f;
    f.file_id = ColumnText(stmt.get(), 0);
    f.path = ColumnText(stmt.get(), 1);
    f.size_bytes = static_cast<uint64_t>(sqlite3_column_int64(stmt.get(), 2));
    f.mtime_ns = sqlite3_column_int64(stmt.get(), 3);
    f.content_hash = ColumnText(stmt.get(), 4);
    f.chunk_count = static_cast<uint64_t>(sqlite3_column_int64(stmt.get(), 5));
    out.push_back(std::move(f));
  }
  if (rc != SQLITE_DONE) return ErrorStatus(rc, "load fingerprints");
  return out;
}

Status SqliteStore::RecountTouchedSourcesInTxn() {
  // As Write counts them: chunk_count is the number of the source's stored
  // chunks; a row left with none goes.
  const std::string sql = fmt::format(
      "UPDATE {0} SET chunk_count = (SELECT count(*) FROM {1} c WHERE c.source_id = "
      "{0}.source_id) WHERE source_id IN (SELECT source_id FROM {2});"
      "DELETE FROM {0} WHERE chunk_count = 0 AND source_id IN (SELECT source_id FROM {2});"
      "DELETE FROM {2};",
      Quote(sources_table_), Quote(chunks_table_), kTouched);
  return Exec(sql.c_str());
}

Status SqliteStore::PrepareFileChunkDelete(bool keep_run, FileChunkDelete& d) {
  const std::string c = Quote(chunks_table_);
  const std::string spare = keep_run ? " AND " + NotRecorded(Quote(run_table_)) : std::string();
  for (int b = 0; b < 2; ++b) {
    // ?3: the window starts after this rowid; ?4: its last rowid.
    const std::string window = fmt::format(
        "SELECT count(*), max(r) FROM (SELECT c.rowid AS r FROM {} c WHERE {} AND c.rowid > ?3 "
        "ORDER BY c.rowid LIMIT {})",
        c, kFileBranches[b], kDeleteWindow);
    const std::string in_window =
        fmt::format("{} AND c.rowid > ?3 AND c.rowid <= ?4{}", kFileBranches[b], spare);
    const std::string touch =
        fmt::format("INSERT OR IGNORE INTO {} (source_id) SELECT c.source_id FROM {} c WHERE {}",
                    kTouched, c, in_window);
    const std::string del = fmt::format("DELETE FROM {} AS c WHERE {}", c, in_window);
    for (auto [sql, stmt] : {std::pair{&window, &d.window[b]}, std::pair{&touch, &d.touch[b]},
                             std::pair{&del, &d.del[b]}}) {
      const int rc = sqlite3_prepare_v2(db_, sql->c_str(), static_cast<int>(sql->size()),
                                        stmt->out(), nullptr);
      if (rc != SQLITE_OK) return ErrorStatus(rc, "prepare chunk deletion");
    }
  }
  return Status::OK();
}

Status SqliteStore::DeleteFileChunksInTxn(FileChunkDelete& d, const std::string& file_id,
                                          uint64_t run_id, uint64_t& deleted) {
  // Binds ?1..?4 (a statement without some of them ignores those binds).
  const auto bind = [&](sqlite3_stmt* st, int64_t after, int64_t last) {
    sqlite3_reset(st);
    sqlite3_bind_text(st, 1, file_id.data(), static_cast<int>(file_id.size()), SQLITE_STATIC);
    sqlite3_bind_int64(st, 2, static_cast<int64_t>(run_id));
    sqlite3_bind_int64(st, 3, after);
    sqlite3_bind_int64(st, 4, last);
    return st;
  };
  const auto step = [&](sqlite3_stmt* st, int want) -> Status {
    const int rc = sqlite3_step(st);
    if (rc == want) return Status::OK();
    sqlite3_reset(st);
    return ErrorStatus(rc, "delete chunks of " + file_id);
  };
  for (int b = 0; b < 2; ++b) {
    int64_t after = std::numeric_limits<int64_t>::min();
    for (;;) {
      sqlite3_stmt* window = bind(d.window[b].get(), after, 0);
      if (Status s = step(window, SQLITE_ROW); !s.ok()) return s;
      const int64_t rows = sqlite3_column_int64(window, 0);
      const int64_t last = sqlite3_column_int64(window, 1);
      sqlite3_reset(window);
      if (rows == 0) break;
      sqlite3_stmt* touch = bind(d.touch[b].get(), after, last);
      if (Status s = step(touch, SQLITE_DONE); !s.ok()) return s;
      sqlite3_reset(touch);
      sqlite3_stmt* del = bind(d.del[b].get(), after, last);
      if (Status s = step(del, SQLITE_DONE); !s.ok()) return s;
      deleted += static_cast<uint64_t>(sqlite3_changes64(db_));
      sqlite3_reset(del);
      if (rows < kDeleteWindow) break;
      after = last;
    }
  }
  return Status::OK();
}

Result<uint64_t> SqliteStore::CommitSources(std::span<const SourceManifest> completed) {
  if (db_ == nullptr) return Status::InvalidArgument("sqlite store is closed");
  if (completed.empty()) return uint64_t{0};
  // Statements prepared once per call and reused for every manifest: a call
  // may carry thousands of small files.
  FileChunkDelete stale;
  if (Status s = PrepareFileChunkDelete(/*keep_run=*/true, stale); !s.ok()) return s;
  const std::string c = Quote(chunks_table_);
  const std::string not_recorded = NotRecorded(Quote(run_table_));
  ScopedStmt count_stale, upsert, facts, forget;
  const std::pair<ScopedStmt*, std::string> sqls[] = {
      {&count_stale, fmt::format("SELECT (SELECT count(*) FROM {0} c WHERE {1} AND {3}) + "
                                 "(SELECT count(*) FROM {0} c WHERE {2} AND {3})",
                                 c, kFileBranches[0], kFileBranches[1], not_recorded)},
      // ?8: facts only; the recorded chunk_count stays.
      {&upsert,
       fmt::format(
           "INSERT INTO {0} (file_id, path, size_bytes, mtime_ns, content_hash, "
           "chunk_count, updated_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7) "
           "ON CONFLICT(file_id) DO UPDATE SET path = excluded.path, "
           "size_bytes = excluded.size_bytes, mtime_ns = excluded.mtime_ns, "
           "content_hash = excluded.content_hash, chunk_count = CASE WHEN ?8 THEN "
           "{0}.chunk_count ELSE excluded.chunk_count END, updated_at = excluded.updated_at",
           Quote(files_table_))},
      {&facts, fmt::format("UPDATE {} SET path = ?2, size_bytes = ?3, mtime_ns = ?4, "
                           "content_hash = ?5 WHERE source_id = ?1",
                           Quote(sources_table_))},
      {&forget, fmt::format("DELETE FROM {} WHERE file_id = ?1", Quote(run_table_))},
  };
  for (const auto& [stmt, sql] : sqls) {
    if (Status s = Prepare(sql, stmt->out()); !s.ok()) return s.WithContext("commit sources");
  }
  if (Status s = Exec("BEGIN IMMEDIATE"); !s.ok()) return s;
  const auto fail = [&](Status s) -> Result<uint64_t> {
    for (const auto& q : sqls) sqlite3_reset(q.first->get());
    Rollback();
    return s;
  };
  // Binds the file id (?1) and the run id (?2).
  const auto bind_file = [](sqlite3_stmt* st, const SourceManifest& m) {
    sqlite3_reset(st);
    sqlite3_bind_text(st, 1, m.fingerprint.file_id.data(),
                      static_cast<int>(m.fingerprint.file_id.size()), SQLITE_STATIC);
    sqlite3_bind_int64(st, 2, static_cast<int64_t>(m.run_id));
    return st;
  };
  uint64_t deleted = 0;
  const int64_t now = NowMs();
  for (const SourceManifest& m : completed) {
    const SourceFingerprint& f = m.fingerprint;
    uint64_t chunk_count = f.chunk_count;
    if (!m.facts_only && m.delete_stale) {
      if (Status s = DeleteFileChunksInTxn(stale, f.file_id, m.run_id, deleted); !s.ok()) {
        return fail(s);
      }
    } else if (!m.facts_only) {
      // --cleanup none: the earlier chunks stay and are counted.
      sqlite3_stmt* st = bind_file(count_stale.get(), m);
      const int rc = sqlite3_step(st);
      if (rc != SQLITE_ROW) return fail(ErrorStatus(rc, "commit source " + f.file_id));
      chunk_count += static_cast<uint64_t>(sqlite3_column_int64(st, 0));
      sqlite3_reset(st);
    }
    sqlite3_stmt* st = bind_file(upsert.get(), m);
    sqlite3_bind_text(st, 2, f.path.data(), static_cast<int>(f.path.size()), SQLITE_STATIC);
    sqlite3_bind_int64(st, 3, static_cast<int64_t>(f.size_bytes));
    sqlite3_bind_int64(st, 4, f.mtime_ns);
    sqlite3_bind_text(st, 5, f.content_hash.data(), static_cast<int>(f.content_hash.size()),
                      SQLITE_STATIC);
    sqlite3_bind_int64(st, 6, static_cast<int64_t>(chunk_count));
    sqlite3_bind_int64(st, 7, now);
    sqlite3_bind_int(st, 8, m.facts_only ? 1 : 0);
    int rc = sqlite3_step(st);
    if (rc != SQLITE_DONE) return fail(ErrorStatus(rc, "commit source " + f.file_id));
    st = bind_file(facts.get(), m);
    sqlite3_bind_text(st, 2, f.path.data(), static_cast<int>(f.path.size()), SQLITE_STATIC);
    sqlite3_bind_int64(st, 3, static_cast<int64_t>(f.size_bytes));
    sqlite3_bind_int64(st, 4, f.mtime_ns);
    sqlite3_bind_text(st, 5, f.content_hash.data(), static_cast<int>(f.content_hash.size()),
                      SQLITE_STATIC);
    rc = sqlite3_step(st);
    if (rc != SQLITE_DONE) return fail(ErrorStatus(rc, "commit source " + f.file_id));
    // Every run's records of the file go, also a crashed earlier run's.
    rc = sqlite3_step(bind_file(forget.get(), m));
    if (rc != SQLITE_DONE) return fail(ErrorStatus(rc, "commit source " + f.file_id));
  }
  for (const auto& q : sqls) sqlite3_reset(q.first->get());
  if (deleted > 0) {
    if (Status s = RecountTouchedSourcesInTxn(); !s.ok()) return fail(s);
  }
  if (Status s = Exec("COMMIT"); !s.ok()) return fail(s);
  return deleted;
}

Result<std::vector<std::string>> SqliteStore::FileChunkIds(const std::string& file_id) {
  if (db_ == nullptr) return Status::InvalidArgument("sqlite store is closed");
  ScopedStmt stmt;
  const std::string c = Quote(chunks_table_);
  const std::string sql = fmt::format(
      "SELECT id FROM (SELECT c.id, c.source_id, c.ordinal FROM {0} c WHERE {1} UNION ALL "
      "SELECT c.id, c.source_id, c.ordinal FROM {0} c WHERE {2}) ORDER BY source_id, ordinal, id",
      c, kFileBranches[0], kFileBranches[1]);
  int rc = sqlite3_prepare_v2(db_, sql.c_str(), static_cast<int>(sql.size()), stmt.out(), nullptr);
  if (rc != SQLITE_OK) return ErrorStatus(rc, "read file chunks");
  sqlite3_bind_text(stmt.get(), 1, file_id.data(), static_cast<int>(file_id.size()), SQLITE_STATIC);
  std::vector<std::string> ids;
  while ((rc = sqlite3_step(stmt.get())) == SQLITE_ROW) ids.push_back(ColumnText(stmt.get(), 0));
  if (rc != SQLITE_DONE) return ErrorStatus(rc, "read file chunks");
  return ids;
}

Result<uint64_t> SqliteStore::DeleteSources(std::span<const std::string> file_ids) {
  if (db_ == nullptr) return Status::InvalidArgument("sqlite store is closed");
  if (file_ids.empty()) return uint64_t{0};
  FileChunkDelete all;
  if (Status s = PrepareFileChunkDelete(/*keep_run=*/false, all); !s.ok()) return s;
  ScopedStmt del_file, forget;
  const std::pair<ScopedStmt*, std::string> sqls[] = {
      {&del_file, fmt::format("DELETE FROM {} WHERE file_id = ?1", Quote(files_table_))},
      {&forget, fmt::format("DELETE FROM {} WHERE file_id = ?1", Quote(run_table_))},
  };
  for (const auto& [stmt, sql] : sqls) {
    if (Status s = Prepare(sql, stmt->out()); !s.ok()) return s.WithContext("delete sources");
  }
  if (Status s = Exec("BEGIN IMMEDIATE"); !s.ok()) return s;
  const auto fail = [&](Status s) -> Result<uint64_t> {
    for (const auto& q : sqls) sqlite3_reset(q.first->get());
    Rollback();
    return s;
  };
  uint64_t deleted = 0;
  for (const std::string& file_id : file_ids) {
    if (Status s = DeleteFileChunksInTxn(all, file_id, 0, deleted); !s.ok()) return fail(s);
    for (const auto& q : sqls) {
      sqlite3_stmt* st = q.first->get();
      sqlite3_reset(st);
      sqlite3_bind_text(st, 1, file_id.data(), static_cast<int>(file_id.size()), SQLITE_STATIC);
      const int rc = sqlite3_step(st);
      if (rc != SQLITE_DONE) return fail(ErrorStatus(rc, "delete source " + file_id));
    }
  }
  for (const auto& q : sqls) sqlite3_reset(q.first->get());
  if (deleted > 0) {
    if (Status s = RecountTouchedSourcesInTxn(); !s.ok()) return fail(s);
  }
  if (Status s = Exec("COMMIT"); !s.ok()) return fail(s);
  return deleted;
}

Status SqliteStore::LookupEmbeddings(std::string_view cache_namespace,
                                     std::span<const std::string_view> texts,
                                     std::vector<CachedEmbedding>& out) {
  if (db_ == nullptr) return Status::InvalidArgument("sqlite store is closed");
  out.assign(texts.size(), CachedEmbedding{});
  ScopedStmt stmt;
  int rc = sqlite3_prepare_v2(
      db_,
      fmt::format("SELECT model, embedding FROM {} WHERE key = ?1", Quote(cache_table_)).c_str(),
      -1, stmt.out(), nullptr);
  if (rc != SQLITE_OK) return ErrorStatus(rc, "embedding cache lookup");
  // One read transaction for the whole batch: a consistent snapshot, one lock.
  if (Status s = Exec("BEGIN"); !s.ok()) return s;
  for (size_t i = 0; i < texts.size(); ++i) {
    const std::string key = EmbeddingCacheKey(cache_namespace, texts[i]);
    sqlite3_reset(stmt.get());
    sqlite3_bind_text(stmt.get(), 1, key.c_str(), static_cast<int>(key.size()), SQLITE_STATIC);
    rc = sqlite3_step(stmt.get());
    if (rc == SQLITE_ROW) {
      out[i].model = ColumnText(stmt.get(), 0);
      const auto* blob = static_cast<const uint8_t*>(sqlite3_column_blob(stmt.get(), 1));
      const size_t bytes = static_cast<size_t>(sqlite3_column_bytes(stmt.get(), 1));
      if (blob != nullptr) {
        out[i].embedding.resize(bytes / 4);
        for (size_t d = 0; d < out[i].embedding.size(); ++d) out[i].embedding[d] = FloatAt(blob, d);
      }
    } else if (rc != SQLITE_DONE) {
      Status s = ErrorStatus(rc, "embedding cache lookup");
      Rollback();
      return s;
    }
  }
  sqlite3_reset(stmt.get());
  return Exec("COMMIT");
}

Result<std::vector<EmbeddedChunk>> SqliteStore::ReadChunks(std::span<const std::string> chunk_ids) {
  std::vector<EmbeddedChunk> out;
  out.reserve(chunk_ids.size());
  for (const std::string& id : chunk_ids) {
    Result<StoredChunk> c = ReadChunk(id);
    if (!c.ok()) {
      if (c.status().code() == StatusCode::kNotFound) continue;
      return c.status();
    }
    EmbeddedChunk e;
    e.chunk.id = std::move(c->id);
    e.chunk.source_id = std::move(c->source_id);
    e.chunk.file_id = std::move(c->file_id);
    e.chunk.ordinal = c->ordinal;
    e.chunk.byte_begin = c->byte_begin;
    e.chunk.byte_end = c->byte_end;
    e.chunk.text = std::move(c->text);
    e.chunk.domain = std::move(c->domain);
    e.chunk.category = std::move(c->category);
    e.chunk.metadata_json = std::move(c->metadata_json);
    e.chunk.token_estimate = c->token_estimate;
    e.embedding = std::move(c->embedding);
    e.model = std::move(c->model);
    out.push_back(std::move(e));
  }
  return out;
}

Status SqliteStore::Verify(std::vector<VerifyProblem>& problems, size_t limit) {
  if (db_ == nullptr) return Status::InvalidArgument("sqlite store is closed");
  // Each check is one query that returns only the rows in error.
  const auto run = [&](const std::string& sql, const std::function<void(sqlite3_stmt*)>& row,
                       int dims_param) -> Status {
    if (problems.size() >= limit) return Status::OK();
    ScopedStmt stmt;
    int rc =
        sqlite3_prepare_v2(db_, sql.c_str(), static_cast<int>(sql.size()), stmt.out(), nullptr);
    if (rc != SQLITE_OK) return ErrorStatus(rc, "verify");
    if (dims_param > 0) sqlite3_bind_int(stmt.get(), dims_param, dims_);
    while (problems.size() < limit && (rc = sqlite3_step(stmt.get())) == SQLITE_ROW) {
      row(stmt.get());
    }
    if (rc != SQLITE_ROW && rc != SQLITE_DONE) return ErrorStatus(rc, "verify");
    return Status::OK();
  };
  const auto add = [&](std::string kind, std::string subject, std::string detail) {
    if (problems.size() < limit) {
      problems.push_back({std::move(kind), std::move(subject), std::move(detail)});
    }
  };
  // Every fingerprinted file has as many chunks stored as it counts.
  Status s = run(
      fmt::format("SELECT file_id, chunk_count, stored FROM (SELECT f.file_id, f.chunk_count, "
                  "(SELECT count(*) FROM {1} c WHERE c.file_id = f.file_id) + (SELECT count(*) "
                  "FROM {1} c WHERE c.source_id = f.file_id AND {2}) AS stored FROM {0} f) "
                  "WHERE stored IS NOT chunk_count ORDER BY file_id",
                  Quote(files_table_), Quote(chunks_table_), kNoFileId),
      [&](sqlite3_stmt* st) {
        const int64_t count = sqlite3_column_int64(st, 1);
        const int64_t stored = sqlite3_column_int64(st, 2);
        if (stored < count) {
          add("missing_chunk", ColumnText(st, 0),
              fmt::format("fingerprint counts {} chunks, {} stored", count, stored));
        } else {
          add("count_mismatch", ColumnText(st, 0),
              fmt::format("fingerprint counts {} chunks, {} stored (stale ones)", count, stored));
        }
      },
      0);
  if (!s.ok()) return s;
  // Every chunk: a sources row and, once the store has a dimension, that one.
  s = run(
      fmt::format("SELECT c.id, c.source_id, c.dims, length(c.embedding), "
                  "s.source_id IS NULL FROM {} c LEFT JOIN {} s ON s.source_id = c.source_id "
                  "WHERE s.source_id IS NULL OR (?1 > 0 AND (c.dims IS NOT ?1 OR "
                  "length(c.embedding) IS NOT ?1 * 4))",
                  Quote(chunks_table_), Quote(sources_table_)),
      [&](sqlite3_stmt* st) {
        const std::string id = ColumnText(st, 0);
        const int dims = sqlite3_column_int(st, 2);
        const int64_t bytes = sqlite3_column_int64(st, 3);
        if (dims_ > 0 && (dims != dims_ || bytes != int64_t{dims_} * 4)) {
          add("wrong_dimensions", id,
              fmt::format("{} dimensions ({} bytes), store has {}", dims, bytes, dims_));
        }
        if (sqlite3_column_int(st, 4) != 0) {
          add("orphan_chunk", id,
              "its source '" + ColumnText(st, 1) + "' is not in the sources table");
        }
      },
      1);
  if (!s.ok()) return s;
  // Source rows count their chunks.
  return run(
      fmt::format("SELECT source_id, chunk_count, stored FROM (SELECT s.source_id, "
                  "s.chunk_count, (SELECT count(*) FROM {1} c WHERE c.source_id = "
                  "s.source_id) AS stored FROM {0} s) WHERE chunk_count IS NOT stored",
                  Quote(sources_table_), Quote(chunks_table_)),
      [&](sqlite3_stmt* st) {
        add("count_mismatch", ColumnText(st, 0),
            fmt::format("sources row says {} chunks, {} stored", sqlite3_column_int64(st, 1),
                        sqlite3_column_int64(st, 2)));
      },
      0);
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
