// The PostgreSQL store's one class, declared for the files that implement
// it, one part each (docs/POSTGRES.md):
//   postgres_store.cc      opening (Init), Close, the public entry points;
//   pg_connection_pool.cc  connecting, the pool, the run's liveness lock;
//   pg_schema.cc           tables, migrations, pgvector, the stored model,
//                          the vector index;
//   pg_write.cc            COPY and upsert of chunks, sources, cache rows
//                          and run records;
//   pg_resume.cc           fingerprints, commit/delete of sources, the
//                          embedding cache lookup, reads and verify;
//   pg_search.cc           search and stats.
// The parts share the pool, the schema state and the options, so they stay
// members of one class rather than objects passing that state around.
//
// Thread safety: see postgres_store.h (Write, Search and Stats from several
// threads; Flush and Close must not race with writes).
#pragma once

#include <atomic>
#include <condition_variable>
#include <memory>
#include <mutex>
#include <span>
#include <string>
#include <vector>

#include "common/hashing.h"
#include "sluice/store.h"
#include "store/postgres/pg_binary.h"
#include "store/postgres/pg_conn.h"
#include "store/postgres/postgres_store.h"

namespace sluice::pg {

// The transactions a write of `rows` (indexes into `batch`) is split into:
// parts of about `rows_per_part` rows that hold whole sources. Every
// transaction takes an advisory lock per source it writes (BeginAndLock), so
// two parts sharing a source would take turns; cut at fixed row counts, two
// adjacent parts share the source at their boundary whenever it falls inside
// a file, and the pool's parallel transactions ran one after the other.
// A part closes once it holds `rows_per_part` rows or more (so there are no
// more parts than fixed cuts would give); a source larger than that is one
// part. Within a part the rows keep the order of `rows`; parts follow the
// order of their sources' first rows.
std::vector<std::vector<size_t>> SplitBySource(std::span<const EmbeddedChunk> batch,
                                               std::span<const size_t> rows, size_t rows_per_part);

class PostgresStore final : public Store {
 public:
  PostgresStore(std::string conninfo, const StoreOptions& options)
      : conninfo_(std::move(conninfo)), options_(options), described_(RedactUri(conninfo_)) {
    chunks_table_ = options_.table;
    sources_table_ = options_.table == "chunks" ? "sources" : options_.table + "_sources";
    q_chunks_ = QuoteIdent(chunks_table_);
    q_sources_ = QuoteIdent(sources_table_);
    table_hash_ = Hex64(Hash64(chunks_table_)).substr(0, 10);
    q_stage_ = QuoteIdent("sluice_stage_" + table_hash_);
    // Same names as the SQLite store's (docs/STORE_SCHEMA.md).
    files_table_ = options_.table == "chunks" ? "files" : options_.table + "_files";
    cache_table_ =
        options_.table == "chunks" ? "embedding_cache" : options_.table + "_embedding_cache";
    run_table_ = options_.table == "chunks" ? "run_chunks" : options_.table + "_run_chunks";
    q_files_ = QuoteIdent(files_table_);
    q_cache_ = QuoteIdent(cache_table_);
    q_run_ = QuoteIdent(run_table_);
  }
  ~PostgresStore() override { Close(); }

  Status Init();

  WriteResult Write(std::span<const EmbeddedChunk> batch) override;
  // Writes the deduplicated `rows` of `batch` in batch_rows transactions on
  // the pool.
  WriteResult WriteParts(std::span<const EmbeddedChunk> batch, std::span<const size_t> rows);
  Status Flush() override;
  Status Close() override;
  Result<std::vector<SearchHit>> Search(std::span<const float> query, int k) override;
  Result<StoreStats> Stats() override;
  std::string Describe() const override { return described_; }
  // Measured: 500-row transactions, one per pooled connection in parallel
  // (1.13x psql \copy with a pool of 2, 0.78x with one; docs/POSTGRES.md).
  size_t RowsPerTransaction() const override { return rows_per_tx_; }
  int ParallelWrites() const override { return pool_limit_; }
  Result<StoreModel> StoredModel() override;

  // Resume, incremental re-ingest and the embedding cache (docs/RESUME.md).
  Result<std::vector<SourceFingerprint>> LoadFingerprints() override;
  Result<uint64_t> CommitSources(std::span<const SourceManifest> completed) override;
  Result<uint64_t> DeleteSources(std::span<const std::string> file_ids) override;
  Status LookupEmbeddings(std::string_view cache_namespace, std::span<const std::string_view> texts,
                          std::vector<CachedEmbedding>& out) override;
  Result<bool> MayHoldCachedEmbeddings() override;
  Result<std::vector<std::string>> FileChunkIds(const std::string& file_id) override;
  Result<std::vector<EmbeddedChunk>> ReadChunks(std::span<const std::string> chunk_ids) override;
  Status Verify(std::vector<VerifyProblem>& problems, size_t limit) override;

  PostgresSchemaInfo Info() {
    std::lock_guard<std::mutex> lock(schema_mu_);
    return {pgvector_, copy_path_, schema_ready_ ? dims_ : 0, chunks_table_, sources_table_};
  }

 private:
  Result<std::unique_ptr<PgConn>> Connect();
  Result<std::unique_ptr<PgConn>> Checkout();
  // Checkout, with a broken pooled connection replaced by a new one (for the
  // one-statement reads: search, stats, the stored model, the index build).
  Result<std::unique_ptr<PgConn>> CheckoutUsable();
  void Return(std::unique_ptr<PgConn> conn);

  Status EnsureSchema(PgConn& conn, int dims);
  // Refuses an existing table of another model or dimension than the
  // options' (StoreOptions::model). REQUIRES: schema_mu_, the table exists.
  Status CheckStoredModelLocked(PgConn& conn);
  // --reembed: drops the chunks, sources, files, cache and run records
  // tables. REQUIRES: schema_mu_.
  Status DropEverythingLocked(PgConn& conn);
  Status EnsureResumeTables(PgConn& conn);
  // Takes this run's liveness lock on a connection of its own, then forgets
  // the run records of runs that hold none (crashed or finished).
  Status HoldRunLiveness(PgConn& conn);
  // (Re)connects liveness_ and takes the lock. REQUIRES: liveness_mu_.
  Status TakeRunLockLocked();
  // Before a commit: the lock is still held, or is taken again (a lost
  // session, e.g. a server restart, would let another run forget this
  // run's records).
  Status KeepRunAlive();
  Status ResumeSupported() const;
  // Whether the chunks (and sources) table exists: it is created by the first
  // write, when the dimension is known, possibly by another process.
  Result<bool> ChunksTableExists(PgConn& conn);
  // The same inside a Retrying attempt: a probe that fails is a connection
  // fault, so the attempt is replayed on a new connection.
  PgError ProbeChunksTable(PgConn& conn, bool& exists);
  // ANALYZEs the key columns of the chunks table and the files, run and
  // sources tables when this store has written more rows than the planner's
  // statistics say the chunks table holds (a table filled from empty by this
  // run: autovacuum analyzes at most once a minute). Checked at 10,000 rows
  // written, then at each doubling. Without it, CommitSources joined by
  // sequential scans of the whole chunks table (the planner's default
  // selectivity guessed ~0.5% of the rows per file), once per commit:
  // quadratic in the table's size (docs/PERFORMANCE.md). Only a lost
  // connection is an error; a refused or skipped ANALYZE is not.
  PgError RefreshStaleStatistics(PgConn& conn);
  // What replays wait on: StoreOptions::clock, or the system clock.
  const Clock& RetryClock() const {
    return options_.clock != nullptr ? *options_.clock : SystemClock::Instance();
  }
  // Runs `attempt` on a pooled connection; a lost connection or a transient
  // error reconnects and runs it again (see ReplayBackoff). `attempt` must be
  // idempotent; when it fails, its open transaction is rolled back here.
  template <typename Attempt>
  Status Retrying(const std::string& what, Attempt&& attempt);
  // Recounts (or deletes, at zero) the sources rows of `source_ids` inside
  // the caller's transaction.
  PgError RecountSources(PgConn& c, const std::vector<std::string>& source_ids);
  // Deletes chunks by a CTE ending in "SELECT source_id, count(*) FROM del
  // GROUP BY source_id", recounts their sources and commits; adds the number
  // deleted to `deleted`.
  PgError DeleteAndCommit(PgConn& c, const std::string& sql, std::span<const std::string> params,
                          uint64_t& deleted);
  PgError PutCache(PgConn& c, std::span<const EmbeddedChunk> batch, std::span<const size_t> rows);
  // The batch's embedding-cache rows and sources rows, then COMMIT.
  PgError FinishBatch(PgConn& c, std::span<const EmbeddedChunk> batch,
                      std::span<const size_t> rows);
  Status CreateSchemaLocked(PgConn& conn, int dims);
  Status ProbeExistingLocked(PgConn& conn, bool* exists);
  // Adds chunks.file_id and its index to a table created before they
  // existed. REQUIRES: schema_mu_, the chunks table exists.
  Status EnsureFileIdLocked(PgConn& conn);
  // Sets chunks.file_id from a files table's chunk_ids lists (written before
  // chunks had a file_id), then drops the column. Inside the caller's
  // transaction, under the creation lock.
  PgError MigrateChunkIdLists(PgConn& conn);
  // The batch's run records (StoreOptions::run_id), inside its transaction.
  PgError PutRunRecords(PgConn& c, std::span<const EmbeddedChunk> batch,
                        std::span<const size_t> rows);

  // Writes rows [begin, end) of `batch` (already deduplicated order `rows`)
  // with reconnect-and-replay. Rejected indexes are positions in `batch`.
  WriteResult WriteTransaction(std::span<const EmbeddedChunk> batch, std::span<const size_t> rows);
  PgError TryCopy(PgConn& c, std::span<const EmbeddedChunk> batch, std::span<const size_t> rows);
  PgError TryInsert(PgConn& c, std::span<const EmbeddedChunk> batch, std::span<const size_t> rows);
  PgError TryRowByRow(PgConn& c, std::span<const EmbeddedChunk> batch, std::span<const size_t> rows,
                      std::vector<RejectedRow>* rejected);
  PgError UpsertSources(PgConn& c, std::span<const EmbeddedChunk> batch,
                        std::span<const size_t> rows, bool commit);
  PgError EnsureStaging(PgConn& c);
  PgError CopyRows(PgConn& c, const std::string& target, std::span<const EmbeddedChunk> batch,
                   std::span<const size_t> rows);
  std::string ExistingIdsSql(PgConn& c, std::span<const EmbeddedChunk> batch,
                             std::span<const size_t> rows) const;
  PgError BeginAndLock(PgConn& c, std::span<const std::string_view> source_ids,
                       const std::string& then_sql, PgResult* last);
  PgError BeginAndLock(PgConn& c, std::span<const std::string> source_ids,
                       const std::string& then_sql, PgResult* last);
  PgError BeginAndLockSources(PgConn& c, std::span<const EmbeddedChunk> batch,
                              std::span<const size_t> rows, const std::string& then_sql,
                              PgResult* last);
  Result<std::string> PrepareInsert(PgConn& c, size_t rows, PgError* err);
  PgError Exec(PgConn& c, const std::string& sql);
  void AppendEmbeddingParam(std::string& out, std::span<const float> v) const {
    if (pgvector_) {
      pg::AppendVectorBinary(out, v);
    } else {
      pg::AppendFloat4ArrayBinary(out, v);
    }
  }

  Result<std::vector<SearchHit>> SearchVector(PgConn& c, std::span<const float> query, int k);
  Result<std::vector<SearchHit>> SearchScan(PgConn& c, std::span<const float> query, int k);
  Status Fail(const PgError& e, const std::string& what) const;

  const std::string conninfo_;
  const StoreOptions options_;
  const std::string described_;
  std::string chunks_table_, sources_table_, q_chunks_, q_sources_, q_stage_, table_hash_;
  std::string files_table_, cache_table_, q_files_, q_cache_, run_table_, q_run_;
  bool resume_tables_ = false;  // set once by Init: the files, cache and run tables exist
  // Holds the session advisory lock that says "run options_.run_id is alive"
  // (HoldRunLiveness) for the life of the store; closed with it, or by the
  // server when the process dies.
  std::mutex liveness_mu_;
  std::unique_ptr<PgConn> liveness_;  // GUARDED_BY(liveness_mu_)
  std::string resume_error_;          // why they do not

  std::mutex schema_mu_;
  bool schema_ready_ = false;   // GUARDED_BY(schema_mu_)
  bool file_id_ready_ = false;  // GUARDED_BY(schema_mu_): chunks.file_id exists
  bool pgvector_ = false;       // set once by Init/EnsureSchema before any write
  bool copy_path_ = true;
  int dims_ = 0;
  bool index_built_ = false;

  std::mutex pool_mu_;
  std::condition_variable pool_cv_;
  std::vector<std::unique_ptr<PgConn>> idle_;  // GUARDED_BY(pool_mu_)
  int open_conns_ = 0;                         // GUARDED_BY(pool_mu_)
  int pool_limit_ = 1;                         // set once by Init
  size_t rows_per_tx_ = options_.batch_rows > 0 ? options_.batch_rows : 500;
  static constexpr uint64_t kFirstStatisticsCheckRows = 10000;
  std::atomic<uint64_t> rows_written_{0};  // chunk rows this store wrote
  std::atomic<uint64_t> next_statistics_check_{kFirstStatisticsCheckRows};
  bool closed_ = false;
};

}  // namespace sluice::pg
