// The SQLite store: opening (the writer lock, pragmas, schema creation and
// upgrades, the stored model), errors, Flush and Close. Writes are in
// sqlite_write.cc, reads and search in sqlite_read.cc, resume in
// sqlite_resume.cc (docs/STORE_SCHEMA.md).
#include "store/sqlite/sqlite_store.h"

#include <fcntl.h>
#include <sqlite3.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <utility>

#include <fmt/format.h>

#include "common/hashing.h"
#include "common/sqlite_process.h"
#include "store/sqlite/sqlite_transaction.h"
#include "store/sqlite/sqlite_util.h"

namespace sluice {

using namespace sqlite;  // the folder's shared helpers (sqlite_util.h)

namespace {

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
    text_keys_table_ = "text_keys";
    recent_text_keys_table_ = "text_keys_recent";
  } else {
    sources_table_ = chunks_table_ + "_sources";
    meta_table_ = chunks_table_ + "_meta";
    files_table_ = chunks_table_ + "_files";
    cache_table_ = chunks_table_ + "_embedding_cache";
    run_table_ = chunks_table_ + "_run_chunks";
    text_keys_table_ = chunks_table_ + "_text_keys";
    recent_text_keys_table_ = chunks_table_ + "_text_keys_recent";
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
  Transaction txn(*this);
  Status s = txn.Begin();
  if (!s.ok()) return s;
  for (const std::string* table :
       {&chunks_table_, &sources_table_, &files_table_, &cache_table_, &run_table_, &meta_table_,
        &text_keys_table_, &recent_text_keys_table_}) {
    if (!has_key_tables_ && (table == &text_keys_table_ || table == &recent_text_keys_table_)) {
      continue;
    }
    const std::string sql = "DELETE FROM " + Quote(*table);
    s = Exec(sql.c_str());
    if (!s.ok()) break;
  }
  if (s.ok()) s = txn.Commit();
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
  ConfigureSqliteForProcess();
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
  // A 32 MiB page cache by default (SQLite's own is 2 MiB). The chunk-id and cache-key
  // indexes take random keys, so once they outgrow the cache every insert
  // re-reads a leaf with pread; on 132k chunks this cut the store's system
  // time by a third and the offline run's CPU by ~15% (docs/PERFORMANCE.md).
  // Pages are allocated as they are touched: a small store costs no more.
  if (s.ok()) {
    s = Exec(
        fmt::format("PRAGMA cache_size=-{}", std::max<size_t>(options_.page_cache_bytes / 1024, 64))
            .c_str());
  }
  // No foreign keys: chunks and sources are linked by source_id only, so a
  // chunk may be written before its source row (same transaction anyway).
  if (s.ok()) s = CreateSchema();
  if (s.ok()) {
    Result<bool> has = HasColumn(chunks_table_, "text_key");
    if (has.ok()) {
      has_text_key_ = *has;
    } else {
      s = has.status();
    }
  }
  if (s.ok() && has_text_key_) {
    Result<bool> has = HasTable(recent_text_keys_table_);
    if (has.ok()) {
      has_key_tables_ = *has;
    } else {
      s = has.status();
    }
  }
  if (s.ok()) s = LoadMeta();
  if (s.ok()) {
    std::string cols =
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
    std::string text_key_value;
    if (has_text_key_) {
      // (Without the column: a store opened read-only that could not be
      // upgraded; it never writes.) Written without a cache namespace
      // (--no-cache), an unchanged row keeps its text key: same text, same
      // vector, so the key still answers for it. (SET reads the old row.)
      cols += ", text_key";
      text_key_value = ", ?16";
      differs += fmt::format(
          " OR (excluded.text_key IS NOT NULL AND {0}.text_key IS NOT "
          "excluded.text_key)",
          t);
      sets += fmt::format(
          ", text_key = CASE WHEN excluded.text_key IS NULL AND {0}.text IS excluded.text AND "
          "{0}.embedding IS excluded.embedding THEN {0}.text_key ELSE excluded.text_key END",
          t);
    }
    s = Prepare(fmt::format("INSERT INTO {} ({}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, "
                            "?11, ?12, ?13, ?14, ?15{}) ON CONFLICT(id) DO UPDATE SET {} "
                            "WHERE {}",
                            t, cols, text_key_value, sets, differs),
                &upsert_chunk_);
  }
  if (s.ok() && has_key_tables_) {
    s = Prepare(fmt::format("INSERT OR IGNORE INTO {} (key, chunk_rowid) VALUES (?1, ?2)",
                            Quote(recent_text_keys_table_)),
                &add_recent_text_key_);
    // The rowid of a chunk the upsert updated (an inserted one's is
    // sqlite3_last_insert_rowid). Not RETURNING: SQLite runs that as a
    // trigger, and the statement journal it brings spilled to a temp file
    // per statement, halving the write rate (measured).
    if (s.ok()) {
      s = Prepare(fmt::format("SELECT rowid FROM {} WHERE id = ?1", Quote(chunks_table_)),
                  &rowid_of_chunk_);
    }
    if (s.ok()) {
      ScopedStmt count;
      const std::string sql =
          fmt::format("SELECT count(*) FROM {}", Quote(recent_text_keys_table_));
      int rc = sqlite3_prepare_v2(db_, sql.c_str(), -1, count.out(), nullptr);
      if (rc == SQLITE_OK) rc = sqlite3_step(count.get());
      if (rc == SQLITE_ROW) {
        recent_text_keys_ = sqlite3_column_int64(count.get(), 0);
      } else {
        s = ErrorStatus(rc, "count recent text keys");
      }
    }
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
    s = Prepare(
        fmt::format("INSERT OR IGNORE INTO {} (file_id, run_id, chunk_id) VALUES (?1, ?2, ?3)",
                    Quote(run_table_)),
        &put_run_);
  }
  if (s.ok() && has_text_key_) {
    // ?2: the new row's text key (NULL without a cache namespace), ?3 its text.
    s = Prepare(fmt::format("INSERT OR IGNORE INTO {1} (key, model, embedding) SELECT text_key, "
                            "model, embedding FROM {0} WHERE id = ?1 AND text_key IS NOT NULL AND "
                            "embedding IS NOT NULL AND CASE WHEN ?2 IS NULL THEN text IS NOT ?3 "
                            "ELSE text_key IS NOT ?2 END",
                            Quote(chunks_table_), Quote(cache_table_)),
                &keep_replaced_vector_);
  }
  if (s.ok()) {
    // Either of the sets DeleteFileChunksInTxn deletes from.
    s = Prepare(fmt::format("SELECT EXISTS (SELECT 1 FROM {0} c WHERE {1}) OR EXISTS "
                            "(SELECT 1 FROM {0} c WHERE {2})",
                            Quote(chunks_table_), kFileBranches[0], kFileBranches[1]),
                &file_has_chunks_);
  }
  // Per connection (temp schema, no lock on the file): the sources whose
  // chunks CommitSources/DeleteSources deleted, recounted once per call.
  if (s.ok()) {
    s = Exec(
        "CREATE TEMP TABLE IF NOT EXISTS sluice_touched_sources (source_id TEXT PRIMARY KEY) "
        "WITHOUT ROWID");
  }
  if (s.ok()) s = StartCheckpointer();
  if (!s.ok()) Close();
  return s;
}

Status SqliteStore::StartCheckpointer() {
  if (options_.store.read_only || path_ == ":memory:" || options_.checkpoint_pages <= 0) {
    return Status::OK();  // SQLite's own automatic checkpoint, if any
  }
  auto started = WalCheckpointer::Start(path_, options_.busy_timeout_ms);
  if (!started.ok()) return started.status();
  checkpointer_ = std::move(started).value();
  // Replaces the automatic checkpoint (sqlite3_wal_autocheckpoint installs
  // the same hook).
  sqlite3_wal_hook(db_, &SqliteStore::OnWalCommit, this);
  return Status::OK();
}

// Called by SQLite after each commit of this connection, its write lock
// released, with the pages now in the log.
int SqliteStore::OnWalCommit(void* self_arg, sqlite3*, const char*, int log_pages) {
  auto* self = static_cast<SqliteStore*>(self_arg);
  const int limit = std::max(self->options_.wal_limit_pages, self->options_.checkpoint_pages);
  if (log_pages >= limit) {
    // The background checkpoints have not caught up with the end of the log
    // (the writer kept appending, and SQLite starts the log over only at a
    // write that finds it wholly copied): copy the rest here, between this
    // commit and the next, as SQLite's automatic checkpoint does. PASSIVE,
    // as that one: a reader holding an old snapshot (a long search) must not
    // stall the writer; the log then grows until it lets go. That is Flush
    // (which waits for the background one first). A failure loses nothing:
    // the next commit tries again.
    (void)self->Flush();
  } else if (log_pages >= self->options_.checkpoint_pages) {
    self->checkpointer_->Request();
  }
  return SQLITE_OK;
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
        "SELECT (SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name IN (?1, ?2, ?3, "
        "?4, ?5, ?6, ?8, ?9)) - (SELECT count(*) FROM sqlite_master WHERE type = 'index' AND "
        "name = ?7)",
        -1, stmt.out(), nullptr);
    if (rc == SQLITE_OK) {
      sqlite3_bind_text(stmt.get(), 1, chunks_table_.c_str(), -1, SQLITE_TRANSIENT);
      sqlite3_bind_text(stmt.get(), 2, sources_table_.c_str(), -1, SQLITE_TRANSIENT);
      sqlite3_bind_text(stmt.get(), 3, meta_table_.c_str(), -1, SQLITE_TRANSIENT);
      sqlite3_bind_text(stmt.get(), 4, files_table_.c_str(), -1, SQLITE_TRANSIENT);
      sqlite3_bind_text(stmt.get(), 5, cache_table_.c_str(), -1, SQLITE_TRANSIENT);
      sqlite3_bind_text(stmt.get(), 6, run_table_.c_str(), -1, SQLITE_TRANSIENT);
      const std::string text_key_index = chunks_table_ + "_text_key_idx";
      sqlite3_bind_text(stmt.get(), 7, text_key_index.c_str(), -1, SQLITE_TRANSIENT);
      sqlite3_bind_text(stmt.get(), 8, text_keys_table_.c_str(), -1, SQLITE_TRANSIENT);
      sqlite3_bind_text(stmt.get(), 9, recent_text_keys_table_.c_str(), -1, SQLITE_TRANSIENT);
      rc = sqlite3_step(stmt.get());
    }
    if (rc != SQLITE_ROW) return ErrorStatus(rc, "read schema");
    existing = sqlite3_column_int(stmt.get(), 0);
  }
  // Opening an up-to-date database takes no write lock, so readers and a
  // second store can open while a writer is busy. (The key tables are
  // created last, and version 4's text_key index dropped with them, so all
  // eight tables and no such index mean this store's tables are current.)
  if (version == kSqliteSchemaVersion && existing == 8) return Status::OK();

  Transaction txn(*this);
  Status s = txn.Begin();
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
      // Hash128Hex(namespace \n text). The cache is a rowid table (rows
      // appended, the random key in its own small index): as a WITHOUT ROWID
      // table keyed by a hash, every insert landed on a random 16 KiB leaf
      // holding ~1 KB vectors, so a 200-row commit rewrote ~200 leaves and the
      // write path ran at 0.16 of raw SQLite (BENCHMARKS.md, "Stage
      // ceilings"). A store created before keeps its WITHOUT ROWID table; the
      // same statements work on both.
      "CREATE TABLE IF NOT EXISTS {5} (file_id TEXT PRIMARY KEY, path TEXT, size_bytes INTEGER, "
      "mtime_ns INTEGER, content_hash TEXT, chunk_count INTEGER, updated_at INTEGER);"
      "CREATE TABLE IF NOT EXISTS {6} (key TEXT PRIMARY KEY, model TEXT, embedding BLOB);",
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
  // Version 4: each chunk carries its embedding-cache key (text_key, added
  // by UpgradeTables), so a stored chunk is the cache entry for its text and
  // its vector is written once; the cache table receives a vector only when
  // its chunk is deleted or its text replaced (DeleteFileChunksInTxn, Write),
  // so identical text is still never embedded twice. Writing every vector
  // twice was ~35% of the store's time (issue 15). (Not triggers: a
  // statement that may fire one gets a statement journal, and with 16 KiB
  // pages those spilled to disk: 8x the write calls, measured.)
  if (s.ok()) s = CreateTextKeyTables();
  if (s.ok()) s = txn.Commit();
  return s;
}

// Version 5. Version 4 found a text key through an index on chunks.text_key.
// Text keys are hashes, so each insert lands on a random leaf of that index,
// and once the index has more leaves than a commit has rows, every row
// rewrites a whole 16 KiB page into the log (and the checkpoint copies it
// again). Growing a store to 400,000 rows on disk, the last quarter went in
// at 23-25k rows/s against 36-39k for the whole load; with the key tables
// at 33-37k (BM_StoreWriteGrowing, docs/PERFORMANCE.md). (The chunk-id
// primary key is random too and still costs that way: the upsert needs it.)
// Now a chunk's key goes into a small "recent" table, (64-bit key prefix,
// chunk rowid) as a WITHOUT ROWID primary key, whose few leaves every commit
// rewrites anyway; every recent_text_keys_limit rows they move into the main
// table in key order, so each of its leaves is rewritten once per move
// instead of once per row. A lookup probes both tables and checks the whole
// text key on the chunk row, so a shared prefix, or an entry left by a
// deleted or rewritten chunk (entries are never deleted one by one), never
// answers for another text.
Status SqliteStore::CreateTextKeyTables() {
  Result<bool> had = HasTable(recent_text_keys_table_);
  if (!had.ok()) return had.status();
  if (*had) return Status::OK();
  const std::string ddl = fmt::format(
      "CREATE TABLE IF NOT EXISTS {0} (key INTEGER NOT NULL, chunk_rowid INTEGER NOT NULL, "
      "PRIMARY KEY (key, chunk_rowid)) WITHOUT ROWID;",
      Quote(text_keys_table_));
  if (Status s = Exec(ddl.c_str()); !s.ok()) return s;
  // An older store's keys, in key order (one pass over the chunks).
  const auto prefix = [](sqlite3_context* ctx, int, sqlite3_value** argv) {
    const auto* text = reinterpret_cast<const char*>(sqlite3_value_text(argv[0]));
    const int bytes = sqlite3_value_bytes(argv[0]);
    if (text == nullptr) {
      sqlite3_result_null(ctx);
      return;
    }
    sqlite3_result_int64(ctx, TextKeyPrefix(std::string_view(text, static_cast<size_t>(bytes))));
  };
  if (sqlite3_create_function_v2(db_, "sluice_text_key_prefix", 1,
                                 SQLITE_UTF8 | SQLITE_DETERMINISTIC | SQLITE_INNOCUOUS, nullptr,
                                 prefix, nullptr, nullptr, nullptr) != SQLITE_OK) {
    return ErrorStatus(sqlite3_errcode(db_), "register sluice_text_key_prefix");
  }
  const std::string fill = fmt::format(
      "INSERT OR IGNORE INTO {1} (key, chunk_rowid) SELECT sluice_text_key_prefix(text_key), "
      "rowid FROM {0} WHERE text_key IS NOT NULL ORDER BY 1, 2;"
      "DROP INDEX IF EXISTS {2};"
      "CREATE TABLE {3} (key INTEGER NOT NULL, chunk_rowid INTEGER NOT NULL, "
      "PRIMARY KEY (key, chunk_rowid)) WITHOUT ROWID;",
      Quote(chunks_table_), Quote(text_keys_table_), Quote(chunks_table_ + "_text_key_idx"),
      Quote(recent_text_keys_table_));
  return Exec(fill.c_str());
}

Status SqliteStore::MergeRecentTextKeys() {
  const std::string sql = fmt::format(
      "INSERT OR IGNORE INTO {0} (key, chunk_rowid) SELECT key, chunk_rowid FROM {1};"
      "DELETE FROM {1};",
      Quote(text_keys_table_), Quote(recent_text_keys_table_));
  return Exec(sql.c_str());
}

Result<bool> SqliteStore::HasTable(const std::string& table) {
  ScopedStmt stmt;
  int rc = sqlite3_prepare_v2(
      db_, "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = ?1", -1, stmt.out(),
      nullptr);
  if (rc == SQLITE_OK) {
    sqlite3_bind_text(stmt.get(), 1, table.c_str(), -1, SQLITE_STATIC);
    rc = sqlite3_step(stmt.get());
  }
  if (rc != SQLITE_ROW) return ErrorStatus(rc, "read schema");
  return sqlite3_column_int(stmt.get(), 0) > 0;
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
  // Version 3's file_id and version 4's text_key.
  for (const char* column : {"file_id", "text_key"}) {
    Result<bool> has = HasColumn(chunks_table_, column);
    if (!has.ok()) return has.status();
    if (*has) continue;
    const std::string add =
        fmt::format("ALTER TABLE {} ADD COLUMN {} TEXT", Quote(chunks_table_), column);
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
Status SqliteStore::Flush() {
  if (db_ == nullptr) return Status::InvalidArgument("sqlite store is closed");
  // Two checkpoints never run at once: SQLite answers the second SQLITE_BUSY.
  if (checkpointer_ != nullptr) checkpointer_->WaitIdle();
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
       {&upsert_chunk_, &upsert_source_counts_, &put_meta_, &put_run_, &file_has_chunks_,
        &keep_replaced_vector_, &lookup_by_text_key_, &lookup_in_cache_, &cache_has_rows_,
        &add_recent_text_key_, &rowid_of_chunk_}) {
    sqlite3_finalize(*st);
    *st = nullptr;
  }
  fresh_files_.clear();
  // First: the last connection to close checkpoints the whole log and
  // removes it, and that must be this one.
  if (checkpointer_ != nullptr) {
    sqlite3_wal_hook(db_, nullptr, nullptr);
    checkpointer_.reset();
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

Result<std::unique_ptr<Store>> OpenSqliteStore(const std::string& path,
                                               const StoreOptions& options) {
  SqliteStoreOptions sqlite_options;
  sqlite_options.store = options;
  auto store = SqliteStore::Open(path, sqlite_options);
  if (!store.ok()) return store.status();
  return std::unique_ptr<Store>(std::move(store).value());
}

}  // namespace sluice
