// The SQLite store: embedded chunks in one SQLite database file (WAL mode),
// upserted by chunk id, with an exact cosine-similarity Search. Schema and
// measured throughput: docs/STORE_SCHEMA.md.
//
// This header adds, beside the Store interface, the read-back helpers that
// tests and the verify/resume work use (one chunk by id, a source's record).
//
// Thread safety: one thread at a time per SqliteStore (the connection is
// opened SQLITE_OPEN_NOMUTEX). Several SqliteStore objects, in one process or
// several, may open the same file: WAL lets readers run beside one writer, and
// a second writer waits busy_timeout_ms and then gets a retryable
// Status::Unavailable with nothing committed. A store opened with
// StoreOptions::exclusive_run holds a flock(2) on "<path>.lock" until Close:
// a second such open (another ingest run) fails at once with kBusy, while
// read-only opens (search, verify) and plain opens are not affected.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "sluice/status.h"
#include "sluice/store.h"
#include "store/sqlite/wal_checkpointer.h"

struct sqlite3;
struct sqlite3_stmt;

namespace sluice {

// The schema version this code writes into PRAGMA user_version.
// Version 2 added the files (fingerprints) and embedding cache tables.
// Version 3 added chunks.file_id and the run records table and dropped the
// files table's chunk_ids lists (their ids became the chunks' file_id). A
// version 1 or 2 database is upgraded in place, in one transaction, when
// opened.
// Version 4 added chunks.text_key (each chunk is the cache entry for its
// text). Version 5 moved the lookup by text key from an index on that column
// to two key tables (sqlite_store.cc, "Version 5").
inline constexpr int kSqliteSchemaVersion = 5;

struct SqliteStoreOptions {
  StoreOptions store;
  // How long a statement waits for another connection's lock before the
  // operation fails with a retryable Status::Unavailable. Default: 5000.
  int busy_timeout_ms = 5000;
  // SQLite's page cache per connection (PRAGMA cache_size), allocated as
  // pages are touched. Default: 32 MiB (sqlite_store.cc says why).
  size_t page_cache_bytes = 32 * 1024 * 1024;
  // Write-ahead log checkpoints run on a thread of their own (a second
  // connection) once the log holds this many pages, instead of inside the
  // commit that crossed SQLite's 1,000-page threshold on the writer's thread
  // (store/sqlite/wal_checkpointer.h says why). 0: SQLite's automatic
  // checkpoint in the commit. Default: 1000 (16 MiB of 16 KiB pages).
  int checkpoint_pages = 1000;
  // When the log reaches this many pages (the background checkpoints did not
  // catch up with the writer), the committing writer checkpoints it itself
  // and starts it over: the log's bound on disk. Default: 8000 (125 MiB).
  int wal_limit_pages = 8000;
  // Text keys are first written to the small "recent" key table and moved
  // into the main one in key order once it holds this many (sqlite_store.cc,
  // "Version 5", says why). Default: 65,536.
  int recent_text_keys_limit = 65536;
  // Wall-clock source for updated_at (milliseconds since the Unix epoch).
  // Default (empty): the system clock. Tests inject a fixed counter.
  std::function<int64_t()> now_unix_ms;
};

// One chunk row as stored.
struct StoredChunk {
  std::string id;
  std::string source_id;
  std::string file_id;  // "" when stored without one (stdin, or before version 3)
  uint32_t ordinal = 0;
  uint64_t byte_begin = 0;
  uint64_t byte_end = 0;
  std::string text;
  std::string domain;
  std::string category;
  std::string metadata_json;
  std::string model;
  int dims = 0;
  std::vector<float> embedding;
  std::vector<uint8_t> embedding_bytes;  // the BLOB exactly as stored (float32 LE)
  uint32_t token_estimate = 0;
  int64_t updated_at_ms = 0;
};

// One sources row. size_bytes, mtime_ns and content_hash are filled by
// UpsertSource (the re-ingest work); Write keeps them and only maintains
// domain, category and chunk_count.
struct SourceRecord {
  std::string source_id;
  std::string path;
  std::string domain;
  std::string category;
  uint64_t chunk_count = 0;
  std::optional<uint64_t> size_bytes;
  std::optional<int64_t> mtime_ns;
  std::optional<std::string> content_hash;
  int64_t updated_at_ms = 0;
};

class SqliteStore final : public Store {
 public:
  // Opens or creates the database at `path`. Errors, one line each:
  // InvalidArgument for a bad table name or a dimension that contradicts the
  // stored one; NotFound when the directory does not exist; PermissionDenied
  // when it or the file is not writable; Corrupt when the file is not a SQLite
  // database; Unavailable (retryable) when another connection holds a lock
  // longer than busy_timeout_ms; NotFound for a missing file when read_only;
  // Busy when exclusive_run and another run holds the writer lock;
  // InvalidArgument when the store holds another model's vectors (unless
  // reembed, which empties it).
  static Result<std::unique_ptr<SqliteStore>> Open(const std::string& path,
                                                   const SqliteStoreOptions& options);

  ~SqliteStore() override;
  SqliteStore(const SqliteStore&) = delete;
  SqliteStore& operator=(const SqliteStore&) = delete;

  // Store. Write rejects (per row, Status::Rejected) vectors whose length
  // differs from the store's dimension; the dimension is options.dimensions,
  // else the stored one, else the first row's, and is persisted in the meta
  // table with the model name.
  WriteResult Write(std::span<const EmbeddedChunk> batch) override;
  Status Flush() override;  // wal_checkpoint(PASSIVE), after a background one running
  Status Close() override;  // idempotent
  Result<std::vector<SearchHit>> Search(std::span<const float> query, int k) override;
  Result<StoreStats> Stats() override;
  std::string Describe() const override { return "sqlite:" + path_; }
  // One transaction per Write, of whatever size it is given. 4,000 rows by
  // default: each commit rewrites the touched leaves of the two random-key
  // indexes (chunk id, text key), and larger commits touch each leaf once
  // for more rows. 1,000-row commits wrote ~1.9x the rows/s of 200-row ones;
  // on 132k chunks against a 5 ms API, 4,000-row commits took the store's
  // Write from ~31 to ~14 ms per 1,000 rows and the run's CPU down 17-30%
  // (BENCHMARKS.md), for ~14 MB held by the store stage. The store stage
  // still commits whatever it holds once its queue goes quiet (linger).
  static constexpr size_t kSqliteRowsPerTransaction = 4000;
  size_t RowsPerTransaction() const override {
    return options_.store.batch_rows > 0 ? options_.store.batch_rows : kSqliteRowsPerTransaction;
  }
  Result<StoreModel> StoredModel() override;
  Result<std::vector<SourceFingerprint>> LoadFingerprints() override;
  Result<uint64_t> CommitSources(std::span<const SourceManifest> completed) override;
  Result<uint64_t> DeleteSources(std::span<const std::string> file_ids) override;
  Status LookupEmbeddings(std::string_view cache_namespace, std::span<const std::string_view> texts,
                          std::vector<CachedEmbedding>& out) override;
  Result<bool> MayHoldCachedEmbeddings() override;
  Result<std::vector<EmbeddedChunk>> ReadChunks(std::span<const std::string> chunk_ids) override;
  Result<std::vector<std::string>> FileChunkIds(const std::string& file_id) override;
  Status Verify(std::vector<VerifyProblem>& problems, size_t limit) override;

  // Read-back helpers. NotFound when there is no such row.
  Result<StoredChunk> ReadChunk(std::string_view chunk_id);
  Result<std::vector<float>> ReadEmbedding(std::string_view chunk_id);
  Result<SourceRecord> ReadSource(std::string_view source_id);
  // Chunk ids of one source ordered by ordinal (for verify/resume).
  Result<std::vector<std::string>> ChunkIdsForSource(std::string_view source_id);
  // Inserts or replaces the file facts of a source (size, mtime, hash, path)
  // without touching chunk_count; for the incremental re-ingest work.
  Status UpsertSource(const SourceRecord& source);

  int dimensions() const { return dims_; }  // 0 until fixed
  // Checkpoints the background thread completed (0 without one).
  uint64_t background_checkpoints() const {
    return checkpointer_ != nullptr ? checkpointer_->completed() : 0;
  }
  const std::string& model() const { return model_; }  // "" until the first write
  const std::string& chunks_table() const { return chunks_table_; }
  const std::string& sources_table() const { return sources_table_; }
  const std::string& meta_table() const { return meta_table_; }
  const std::string& files_table() const { return files_table_; }
  const std::string& cache_table() const { return cache_table_; }
  const std::string& run_table() const { return run_table_; }
  const std::string& text_keys_table() const { return text_keys_table_; }
  const std::string& recent_text_keys_table() const { return recent_text_keys_table_; }
  // The raw connection, for tests (e.g. holding a write lock) and diagnostics.
  sqlite3* handle() { return db_; }

 private:
  SqliteStore(std::string path, SqliteStoreOptions options);
  Status Init();
  Status CreateSchema();
  // Inside CreateSchema's transaction: brings version 1/2 tables to version 3.
  Status UpgradeTables();
  Result<bool> HasColumn(const std::string& table, const char* column);
  Result<bool> HasTable(const std::string& table);
  // Inside CreateSchema's transaction: creates the version 5 key tables,
  // filling them from an older store's text_key column, and drops that
  // column's version 4 index.
  Status CreateTextKeyTables();
  // Inside a write transaction: moves the recent text keys into the main
  // key table, in key order.
  Status MergeRecentTextKeys();
  Status LoadMeta();
  Status StartCheckpointer();
  static int OnWalCommit(void* self, sqlite3* db, const char* schema, int log_pages);
  // Takes the run's writer lock (flock on "<path>.lock", which records the
  // holder's pid). REQUIRES: exclusive_run, a file path.
  Status AcquireWriterLock();
  // In one transaction: deletes every row of this store's tables (--reembed).
  Status DeleteEverything();
  Status Prepare(const std::string& sql, sqlite3_stmt** stmt);
  Status Exec(const char* sql);
  Status ErrorStatus(int rc, std::string_view what) const;
  int64_t NowMs() const;
  void Rollback();
  // RAII BEGIN ... COMMIT, rolling back on early exits (sqlite_transaction.h).
  class Transaction;
  // Statements that delete one file's stored chunks (sqlite_resume.cc).
  struct FileChunkDelete;
  // keep_run: spare the chunks the manifest's run recorded for the file.
  Status PrepareFileChunkDelete(bool keep_run, FileChunkDelete& d);
  // Inside an open transaction: deletes the file's stored chunks (sparing
  // run `run_id`'s when prepared so), noting their sources in the temp table
  // of touched sources; adds the count to `deleted`.
  Status DeleteFileChunksInTxn(FileChunkDelete& d, const std::string& file_id, uint64_t run_id,
                               uint64_t& deleted);
  // Inside an open transaction: recounts the sources rows named in the temp
  // table of touched sources (deleting those that reach 0) and empties it.
  Status RecountTouchedSourcesInTxn();

  std::string path_;
  SqliteStoreOptions options_;
  std::string chunks_table_, sources_table_, meta_table_, files_table_, cache_table_, run_table_;
  std::string text_keys_table_, recent_text_keys_table_;
  sqlite3* db_ = nullptr;
  int writer_lock_fd_ = -1;  // >= 0 while this store holds the run's writer lock
  std::unique_ptr<WalCheckpointer> checkpointer_;  // null: read-only, :memory: or turned off
  sqlite3_stmt* upsert_chunk_ = nullptr;
  sqlite3_stmt* upsert_source_counts_ = nullptr;
  sqlite3_stmt* put_meta_ = nullptr;
  sqlite3_stmt* put_run_ = nullptr;
  sqlite3_stmt* file_has_chunks_ = nullptr;
  // Files this store's run is writing and not yet committed, and whether the
  // store held none of their chunks when the run first wrote one ("fresh").
  // While this store holds the writer lock no other run writes, so every
  // chunk of a fresh file is this run's: its commit has nothing stale to
  // delete, and its chunks need no run records (three B-tree operations per
  // chunk saved: the record, its lookup at commit, its deletion). Only used
  // with the writer lock; a file not listed takes the recorded path.
  std::unordered_map<std::string, bool> fresh_files_;
  // Whether `file_id` is fresh (see fresh_files_), deciding it on first
  // sight, inside the caller's write transaction. `ranged`: the chunk comes
  // from a byte range of the file (Chunk::record_run false), whose rows a
  // later whole-file pass must be able to find stale: such a file is never
  // fresh.
  Result<bool> IsFreshFile(const std::string& file_id, bool ranged);
  // Copies the vector of chunk `id`'s stored row into the cache table when
  // the upsert about to run replaces its text (sqlite_write.cc).
  sqlite3_stmt* keep_replaced_vector_ = nullptr;
  // LookupEmbeddings' statements, prepared on its first call (a lookup of
  // 64 texts used to prepare three).
  sqlite3_stmt* lookup_by_text_key_ = nullptr;
  sqlite3_stmt* lookup_in_cache_ = nullptr;
  sqlite3_stmt* cache_has_rows_ = nullptr;
  // Whether the chunks table has the version 4 text_key column (an older
  // store opened where it could not be upgraded has not).
  bool has_text_key_ = false;
  // Whether the version 5 key tables exist (then lookups go through them).
  bool has_key_tables_ = false;
  // Adds (text key prefix, chunk rowid) to the recent key table.
  sqlite3_stmt* add_recent_text_key_ = nullptr;
  // The rowid of a chunk by id (sqlite_write.cc).
  sqlite3_stmt* rowid_of_chunk_ = nullptr;
  // Rows in the recent key table (counted at open, then kept by Write).
  int64_t recent_text_keys_ = 0;
  int dims_ = 0;
  std::string model_;
  bool meta_persisted_ = false;
};

// True when `name` is usable as a table name: [A-Za-z_][A-Za-z0-9_]*, at most
// 48 bytes (so "<name>_sources" stays short).
bool IsValidSqliteTableName(std::string_view name);

}  // namespace sluice
