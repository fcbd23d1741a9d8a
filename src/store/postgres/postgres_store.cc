#include "store/postgres/postgres_store.h"

#include <libpq-fe.h>

#include <unistd.h>
#include <algorithm>
#include <atomic>
#include <bit>
#include <chrono>
#include <cmath>
#include <condition_variable>
#include <cstdlib>
#include <map>
#include <mutex>
#include <queue>
#include <random>
#include <set>
#include <system_error>
#include <thread>
#include <unordered_map>
#include <unordered_set>

#include "common/hashing.h"
#include "common/json_canonical.h"
#include "store/postgres/pg_binary.h"

namespace sluice {

namespace {

using Clock = std::chrono::steady_clock;

struct PgResultDeleter {
  void operator()(PGresult* r) const { PQclear(r); }
};
using PgResult = std::unique_ptr<PGresult, PgResultDeleter>;

constexpr size_t kMaxTableNameBytes = 63 - 16;

std::string QuoteIdent(std::string_view name) {
  std::string out = "\"";
  for (char c : name) {
    if (c == '"') out += '"';
    out += c;
  }
  out += '"';
  return out;
}

std::string QuoteLiteral(std::string_view s) {
  std::string out = "'";
  for (char c : s) {
    if (c == '\'') out += '\'';
    out += c;
  }
  out += '\'';
  return out;
}

std::string Trim(std::string s) {
  while (!s.empty() && (s.back() == '\n' || s.back() == ' ' || s.back() == '\t')) s.pop_back();
  return s;
}

// How a failed statement should be handled.
enum class Fault {
  kNone,
  kConnection,  // connection lost / server restarting: reconnect and replay
  kTransient,   // deadlock, serialization failure, resources: replay
  kData,        // this data was refused (class 22, 23, 54): find the bad rows
  kFatal,       // a bug or a schema mismatch: give up
};

struct PgError {
  Fault fault = Fault::kNone;
  std::string sqlstate;
  std::string message;
};

PgError Classify(PGconn* conn, const PGresult* res) {
  PgError e;
  const char* state = res ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : nullptr;
  const char* primary = res ? PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY) : nullptr;
  e.sqlstate = state ? state : "";
  if (primary) {
    e.message = primary;
    if (const char* detail = PQresultErrorField(res, PG_DIAG_MESSAGE_DETAIL)) {
      e.message += std::string(" (") + detail + ")";
    }
  } else {
    e.message = Trim(PQerrorMessage(conn));
    if (e.message.empty()) e.message = "unknown libpq error";
  }
  const std::string& s = e.sqlstate;
  if (PQstatus(conn) != CONNECTION_OK || s.starts_with("08") || s == "57P01" || s == "57P02" ||
      s == "57P03" || (s.empty() && !res)) {
    e.fault = Fault::kConnection;
  } else if (s.starts_with("40") || s.starts_with("53") || s == "57014" || s == "55P03" ||
             s == "25P02") {
    // 25P02 (in failed transaction): on PGlite, whose connections share one
    // backend, another connection's failed statement can abort ours: replay.
    e.fault = Fault::kTransient;
  } else if (s.starts_with("22") || s.starts_with("23") || s.starts_with("54")) {
    e.fault = Fault::kData;
  } else if (s.empty()) {
    e.fault = Fault::kConnection;  // no SQLSTATE: a libpq-side (I/O) failure
  } else {
    e.fault = Fault::kFatal;
  }
  return e;
}

// Capped exponential backoff with jitter (half to full of the current step,
// 100 ms doubling to 5 s) for replaying work after a lost connection or a
// transient error, until a deadline.
class ReplayBackoff {
 public:
  ReplayBackoff(double timeout_s, uint64_t seed)
      : timeout_s_(std::max(0.0, timeout_s)),
        deadline_(Clock::now() + std::chrono::duration_cast<Clock::duration>(
                                     std::chrono::duration<double>(timeout_s_))),
        rng_(seed) {}
  // Sleeps before the next attempt; false (at once) when the deadline passed.
  bool Wait() {
    const auto now = Clock::now();
    if (now >= deadline_) return false;
    std::uniform_int_distribution<int64_t> jitter(step_.count() / 2, step_.count());
    auto sleep = std::min(std::chrono::milliseconds(jitter(rng_)),
                          std::chrono::duration_cast<std::chrono::milliseconds>(
                              deadline_ - now + std::chrono::milliseconds(1)));
    if (sleep.count() > 0) std::this_thread::sleep_for(sleep);
    step_ = std::min(step_ * 2, std::chrono::milliseconds(5000));
    return true;
  }
  Status GaveUp(const Status& last) const {
    return Status::Unavailable(last.message() + " (gave up after " + std::to_string(timeout_s_) +
                               " s)");
  }

 private:
  double timeout_s_;
  Clock::time_point deadline_;
  std::mt19937_64 rng_;
  std::chrono::milliseconds step_{100};
};

// One pooled connection and its per-session state.
struct PgConn {
  PGconn* pg = nullptr;
  uint64_t serial = 0;
  bool staging_ready = false;
  std::map<size_t, std::string> prepared;  // rows per statement -> statement name

  PgConn() = default;
  PgConn(const PgConn&) = delete;
  PgConn& operator=(const PgConn&) = delete;
  ~PgConn() { Drop(); }
  void Drop() {
    if (pg) PQfinish(pg);
    pg = nullptr;
    staging_ready = false;
    prepared.clear();
  }
  bool ok() const { return pg && PQstatus(pg) == CONNECTION_OK; }
};

std::atomic<uint64_t> g_conn_serial{0};

// Runs one statement (text format, no parameters) and drains every result so
// the connection is ready for the next command.
PgResult ExecDrain(PGconn* c, const std::string& sql) {
  PgResult first(PQexec(c, sql.c_str()));
  // PQexec already consumes all results; nothing more to drain.
  return first;
}

// PQexecParams with every parameter in binary format (arrays from
// pg_binary; a text value's binary form is its bytes). Results in
// `result_format` (0 text, 1 binary).
PgResult ExecParams(PGconn* pg, const std::string& sql, std::span<const std::string> params,
                    int result_format) {
  std::vector<const char*> values;
  std::vector<int> lengths;
  for (const std::string& p : params) {
    values.push_back(p.data());
    lengths.push_back(static_cast<int>(p.size()));
  }
  const std::vector<int> binary(params.size(), 1);
  return PgResult(PQexecParams(pg, sql.c_str(), static_cast<int>(params.size()), nullptr,
                               values.data(), lengths.data(), binary.data(), result_format));
}

bool ResultOk(const PGresult* r) {
  if (!r) return false;
  const auto st = PQresultStatus(r);
  return st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK || st == PGRES_COPY_IN;
}

// Column list shared by staging, COPY and INSERT (updated_at is defaulted).
// file_id is NULL for a chunk of no file (stdin) and in rows written before
// the column existed.
constexpr const char* kColumns[] = {
    "id",     "source_id", "file_id",  "ordinal", "byte_begin", "byte_end",  "text",
    "domain", "category",  "metadata", "model",   "dims",       "embedding", "token_estimate"};
constexpr int kNumColumns = 14;

std::string ColumnList(std::string_view prefix = "") {
  std::string out;
  for (int i = 0; i < kNumColumns; ++i) {
    if (i) out += ", ";
    out += prefix;
    out += kColumns[i];
  }
  return out;
}

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
  void Rollback(PgConn& c);
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
  bool closed_ = false;
};

Status PostgresStore::Fail(const PgError& e, const std::string& what) const {
  std::string msg = what + " on " + described_ + ": " + e.message;
  if (!e.sqlstate.empty()) msg += " [SQLSTATE " + e.sqlstate + "]";
  switch (e.fault) {
    case Fault::kConnection:
    case Fault::kTransient:
      return Status::Unavailable(msg);
    case Fault::kData:
      return Status::Rejected(msg);
    default:
      if (e.sqlstate == "42501" || e.sqlstate.starts_with("28"))
        return Status::PermissionDenied(msg);
      return Status::Internal(msg);
  }
}

Result<std::unique_ptr<PgConn>> PostgresStore::Connect() {
  // Defaults first: with expand_dbname the URI's own parameters (and PG*
  // environment variables, which libpq reads for anything unset) win.
  std::vector<const char*> keys, values;
  if (!std::getenv("PGCONNECT_TIMEOUT")) {
    keys.push_back("connect_timeout");
    values.push_back("5");
  }
  keys.push_back("application_name");
  values.push_back("sluice");
  keys.push_back("dbname");
  values.push_back(conninfo_.c_str());
  keys.push_back(nullptr);
  values.push_back(nullptr);
  auto conn = std::make_unique<PgConn>();
  conn->pg = PQconnectdbParams(keys.data(), values.data(), /*expand_dbname=*/1);
  conn->serial = ++g_conn_serial;
  if (!conn->pg) return Status::Internal("libpq: out of memory");
  if (PQstatus(conn->pg) != CONNECTION_OK) {
    const std::string err = Trim(PQerrorMessage(conn->pg));
    std::string msg = "cannot connect to PostgreSQL at " + described_ + ": " + err;
    if (err.find("password") != std::string::npos ||
        err.find("authentication") != std::string::npos) {
      return Status::PermissionDenied(msg);
    }
    if (err.find("does not exist") != std::string::npos) return Status::NotFound(msg);
    if (err.find("invalid") != std::string::npos) return Status::InvalidArgument(msg);
    return Status::Unavailable(msg);
  }
  // Quiet NOTICEs ("relation already exists, skipping") on stderr.
  PQsetNoticeProcessor(
      conn->pg, [](void*, const char*) {}, nullptr);
  return conn;
}

Result<std::unique_ptr<PgConn>> PostgresStore::Checkout() {
  std::unique_lock<std::mutex> lock(pool_mu_);
  pool_cv_.wait(lock, [&] { return !idle_.empty() || open_conns_ < pool_limit_ || closed_; });
  if (closed_) return Status::Cancelled("store closed");
  if (!idle_.empty()) {
    auto c = std::move(idle_.back());
    idle_.pop_back();
    return c;
  }
  ++open_conns_;
  lock.unlock();
  // A slot is reserved; connect lazily (the caller reconnects if this fails).
  return std::make_unique<PgConn>();
}

void PostgresStore::Return(std::unique_ptr<PgConn> conn) {
  std::lock_guard<std::mutex> lock(pool_mu_);
  idle_.push_back(std::move(conn));
  pool_cv_.notify_one();
}

PgError PostgresStore::Exec(PgConn& c, const std::string& sql) {
  PgResult r = ExecDrain(c.pg, sql);
  if (ResultOk(r.get())) return {};
  return Classify(c.pg, r.get());
}

void PostgresStore::Rollback(PgConn& c) {
  if (c.ok() && PQtransactionStatus(c.pg) != PQTRANS_IDLE) PgResult r(PQexec(c.pg, "ROLLBACK"));
}

Status PostgresStore::Init() {
  if (options_.pool_size < 1)
    return Status::InvalidArgument("postgres store: pool_size must be >= 1");
  if (options_.table.empty()) return Status::InvalidArgument("postgres store: empty table name");
  if (options_.table.size() > kMaxTableNameBytes) {
    // PostgreSQL cuts identifiers at 63 bytes without an error: the derived
    // names ("<table>_embedding_cache", 16 bytes more) must stay whole.
    return Status::InvalidArgument(
        "postgres store: table name longer than " + std::to_string(kMaxTableNameBytes) +
        " bytes (PostgreSQL cuts names at 63): '" + options_.table + "'");
  }
  if (!options_.create_index.empty() && options_.create_index != "hnsw" &&
      options_.create_index != "ivfflat") {
    return Status::InvalidArgument("postgres store: --create-index must be hnsw or ivfflat, not '" +
                                   options_.create_index + "'");
  }
  auto conn = Connect();
  if (!conn.ok()) return conn.status();
  PgConn& c = **conn;
  {
    PgResult r(PQexec(c.pg, "SELECT version()"));
    if (!ResultOk(r.get())) return Fail(Classify(c.pg, r.get()), "probe");
    const std::string version = PQgetvalue(r.get(), 0, 0);
    // PGlite: COPY FROM STDIN hangs the server and connections share one
    // backend, so write with prepared INSERTs on a single connection.
    copy_path_ = version.find("PGlite") == std::string::npos;
  }
  pool_limit_ = copy_path_ ? options_.pool_size : 1;
  {
    std::lock_guard<std::mutex> lock(schema_mu_);
    bool exists = false;
    Status s = ProbeExistingLocked(c, &exists);
    if (!s.ok()) return s;
    if (options_.reembed && !options_.read_only) {
      s = DropEverythingLocked(c);
      if (!s.ok()) return s;
      exists = false;
    } else if (exists) {
      s = CheckStoredModelLocked(c);
      if (!s.ok()) return s;
    }
    if (!exists) {
      // Probe pgvector: installed, or installable by us; never assumed.
      PgResult r(PQexec(c.pg, "SELECT 1 FROM pg_extension WHERE extname = 'vector'"));
      if (!ResultOk(r.get())) return Fail(Classify(c.pg, r.get()), "probe pgvector");
      pgvector_ = PQntuples(r.get()) > 0;
      if (!pgvector_) {
        PgResult a(PQexec(c.pg, "SELECT 1 FROM pg_available_extensions WHERE name = 'vector'"));
        if (ResultOk(a.get()) && PQntuples(a.get()) > 0) {
          PgResult cr(PQexec(c.pg, "CREATE EXTENSION IF NOT EXISTS vector"));
          pgvector_ = ResultOk(cr.get());  // e.g. not allowed to: fall back to real[]
        }
      }
      if (options_.dimensions > 0) {
        s = CreateSchemaLocked(c, options_.dimensions);
        if (!s.ok()) return s;
      }
    }
  }
  if (Status s = EnsureResumeTables(c); !s.ok()) return s;
  if (resume_tables_ && !options_.read_only && options_.run_id != 0) {
    if (Status s = HoldRunLiveness(c); !s.ok()) return s;
  }
  if (!options_.create_index.empty() && !pgvector_) {
    return Status::InvalidArgument("--create-index " + options_.create_index +
                                   " needs the pgvector extension, which " + described_ +
                                   " does not have");
  }
  std::lock_guard<std::mutex> lock(pool_mu_);
  ++open_conns_;
  idle_.push_back(std::move(*conn));
  return Status::OK();
}

namespace {

// A run is alive while a session holds the advisory lock (run_id's high 32
// bits, its low 32 bits) in this database: the two-key form, which pg_locks
// shows as classid, objid and objsubid 2 (the table-creation lock uses the
// one-key form, objsubid 1). A process that dies loses its session and so
// the lock: its run records can then go. (PGlite serves every connection
// from one backend that never ends, so there every run looks alive and the
// dead runs' records just stay: they are never read by another run.)
std::string RunIsDeadSql(const std::string& run_id) {
  return "NOT EXISTS (SELECT 1 FROM pg_locks l WHERE l.locktype = 'advisory' AND l.objsubid = 2 "
         "AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database()) "
         "AND l.classid = ((" +
         run_id + " >> 32) & 4294967295)::oid AND l.objid = (" + run_id + " & 4294967295)::oid)";
}

}  // namespace

Status PostgresStore::TakeRunLockLocked() {
  liveness_.reset();
  auto conn = Connect();
  if (!conn.ok()) return conn.status();
  const uint64_t id = options_.run_id;
  const std::string lock = "SELECT pg_try_advisory_lock(" +
                           std::to_string(static_cast<int32_t>(id >> 32)) + ", " +
                           std::to_string(static_cast<int32_t>(id & 0xffffffffu)) + ")";
  PgResult r(PQexec((*conn)->pg, lock.c_str()));
  if (!ResultOk(r.get())) return Fail(Classify((*conn)->pg, r.get()), "take the run's lock");
  liveness_ = std::move(*conn);
  return Status::OK();
}

Status PostgresStore::HoldRunLiveness(PgConn& c) {
  {
    std::lock_guard<std::mutex> lock(liveness_mu_);
    if (Status s = TakeRunLockLocked(); !s.ok()) return s;
  }
  // Records of runs that ended without forgetting them (killed, stopped, or
  // failed mid-file): only their own run would have read them.
  const std::string sweep = "DELETE FROM " + q_run_ + " r WHERE r.run_id <> " +
                            std::to_string(static_cast<int64_t>(options_.run_id)) + " AND " +
                            RunIsDeadSql("r.run_id");
  PgResult r(PQexec(c.pg, sweep.c_str()));
  if (!ResultOk(r.get())) return Fail(Classify(c.pg, r.get()), "forget dead runs' records");
  return Status::OK();
}

Status PostgresStore::KeepRunAlive() {
  std::lock_guard<std::mutex> lock(liveness_mu_);
  if (liveness_ == nullptr) return Status::OK();  // no run records kept (read-only, no run id)
  if (PQstatus(liveness_->pg) == CONNECTION_OK) {
    PgResult r(PQexec(liveness_->pg, "SELECT 1"));
    if (ResultOk(r.get())) return Status::OK();
  }
  return TakeRunLockLocked();
}

Status PostgresStore::CheckStoredModelLocked(PgConn& c) {
  // One row names the table's model: opening refuses another model, so a
  // table holds one (a table mixed by an older sluice shows its first row's).
  std::string model;
  {
    const std::string sql = "SELECT model FROM " + q_chunks_ + " LIMIT 1";
    PgResult r(PQexec(c.pg, sql.c_str()));
    if (!ResultOk(r.get())) return Fail(Classify(c.pg, r.get()), "read the stored model");
    if (PQntuples(r.get()) > 0) model = PQgetvalue(r.get(), 0, 0);
  }
  const bool other_model = !options_.model.empty() && !model.empty() && model != options_.model;
  const bool other_dims = options_.dimensions > 0 && dims_ > 0 && options_.dimensions != dims_;
  if (!other_model && !other_dims) return Status::OK();
  return StoreModelMismatch(described_ + " table " + chunks_table_, StoreModel{model, dims_},
                            options_.model, options_.dimensions);
}

Status PostgresStore::DropEverythingLocked(PgConn& c) {
  // The vector column's type fixes the dimension, so the tables go and are
  // made again for the new model (the first write, or Init when the
  // dimension is known). Same advisory lock as their creation.
  std::string sql = "BEGIN; SELECT pg_advisory_xact_lock(" +
                    std::to_string(static_cast<int64_t>(Hash64(chunks_table_, 0x5109ce))) + ");\n";
  sql += "DROP TABLE IF EXISTS " + q_chunks_ + ", " + q_sources_ + ", " + q_files_ + ", " +
         q_cache_ + ", " + q_run_ + ";\nCOMMIT;";
  PgResult r(PQexec(c.pg, sql.c_str()));
  if (!ResultOk(r.get())) {
    PgError e = Classify(c.pg, r.get());
    Rollback(c);
    return Fail(e, "--reembed: drop the store's tables");
  }
  dims_ = 0;
  schema_ready_ = false;
  file_id_ready_ = false;
  return Status::OK();
}

Result<std::unique_ptr<PgConn>> PostgresStore::CheckoutUsable() {
  auto checked_out = Checkout();
  if (!checked_out.ok()) return checked_out.status();
  std::unique_ptr<PgConn> conn = std::move(*checked_out);
  if (conn->ok()) return conn;
  auto fresh = Connect();
  if (!fresh.ok()) {
    Return(std::move(conn));
    return fresh.status();
  }
  return std::move(*fresh);
}

Result<StoreModel> PostgresStore::StoredModel() {
  int dims = 0;
  {
    std::lock_guard<std::mutex> lock(schema_mu_);
    if (!schema_ready_) return StoreModel{};
    dims = dims_;
  }
  auto usable = CheckoutUsable();
  if (!usable.ok()) return usable.status();
  std::unique_ptr<PgConn> conn = std::move(*usable);
  const std::string sql = "SELECT model FROM " + q_chunks_ + " LIMIT 1";
  PgResult r(PQexec(conn->pg, sql.c_str()));
  Result<StoreModel> out = StoreModel{};
  if (!ResultOk(r.get())) {
    out = Fail(Classify(conn->pg, r.get()), "read the stored model");
  } else if (PQntuples(r.get()) > 0) {
    out = StoreModel{PQgetvalue(r.get(), 0, 0), dims};
  }
  Return(std::move(conn));
  return out;
}

// Reads the embedding column of an existing chunks table. REQUIRES: schema_mu_.
Status PostgresStore::ProbeExistingLocked(PgConn& c, bool* exists) {
  const std::string sql =
      "SELECT format_type(a.atttypid, a.atttypmod) FROM pg_attribute a "
      "WHERE a.attrelid = to_regclass(" +
      QuoteLiteral(q_chunks_) + ") AND a.attname = 'embedding' AND NOT a.attisdropped";
  PgResult r(PQexec(c.pg, sql.c_str()));
  if (!ResultOk(r.get())) return Fail(Classify(c.pg, r.get()), "probe table");
  *exists = PQntuples(r.get()) > 0;
  if (!*exists) return Status::OK();
  if (Status s = EnsureFileIdLocked(c); !s.ok()) return s;
  const std::string type = PQgetvalue(r.get(), 0, 0);
  if (type.starts_with("vector")) {
    pgvector_ = true;
    const size_t open = type.find('(');
    dims_ = open == std::string::npos ? 0 : std::atoi(type.c_str() + open + 1);
  } else if (type == "real[]") {
    pgvector_ = false;
    // The dimension lives in the CHECK constraint; read it back from a row or
    // the constraint text.
    const std::string q =
        "SELECT pg_get_constraintdef(oid) FROM pg_constraint WHERE conrelid = to_regclass(" +
        QuoteLiteral(q_chunks_) + ") AND contype = 'c'";
    PgResult cr(PQexec(c.pg, q.c_str()));
    dims_ = 0;
    if (ResultOk(cr.get())) {
      for (int i = 0; i < PQntuples(cr.get()); ++i) {
        const std::string def = PQgetvalue(cr.get(), i, 0);
        const size_t eq = def.find("cardinality(embedding) = ");
        if (eq != std::string::npos) dims_ = std::atoi(def.c_str() + eq + 25);
      }
    }
  } else {
    return Status::InvalidArgument("table " + q_chunks_ + " exists with embedding type " + type +
                                   ", expected vector(N) or real[]");
  }
  schema_ready_ = dims_ > 0;
  return Status::OK();
}

Status PostgresStore::EnsureFileIdLocked(PgConn& c) {
  if (file_id_ready_) return Status::OK();
  // Probed first: a role that may not ALTER the table can still use it once
  // someone else has added the column.
  const std::string index = QuoteIdent(chunks_table_ + "_file_id_idx");
  const std::string probe =
      "SELECT EXISTS (SELECT 1 FROM pg_attribute WHERE attrelid = to_regclass(" +
      QuoteLiteral(q_chunks_) + ") AND attname = 'file_id' AND NOT attisdropped), to_regclass(" +
      QuoteLiteral(index) + ") IS NOT NULL";
  PgResult r(PQexec(c.pg, probe.c_str()));
  if (!ResultOk(r.get())) return Fail(Classify(c.pg, r.get()), "probe file_id column");
  const bool has_column = std::string_view(PQgetvalue(r.get(), 0, 0)) == "t";
  const bool has_index = std::string_view(PQgetvalue(r.get(), 0, 1)) == "t";
  if (has_column && has_index) {
    file_id_ready_ = true;
    return Status::OK();
  }
  const std::string sql = "BEGIN; SELECT pg_advisory_xact_lock(" +
                          std::to_string(static_cast<int64_t>(Hash64(chunks_table_, 0x5109ce))) +
                          ");\nALTER TABLE " + q_chunks_ +
                          " ADD COLUMN IF NOT EXISTS file_id text;\nCREATE INDEX IF NOT EXISTS " +
                          index + " ON " + q_chunks_ + " (file_id);\nCOMMIT;";
  PgResult a(PQexec(c.pg, sql.c_str()));
  if (!ResultOk(a.get())) {
    PgError e = Classify(c.pg, a.get());
    Rollback(c);
    // The column is there, only its index is not (and we may not build it):
    // correct, just slower to find a file's chunks.
    if (has_column && e.fault == Fault::kFatal) {
      file_id_ready_ = true;
      return Status::OK();
    }
    return Fail(e, "add column file_id to " + q_chunks_);
  }
  file_id_ready_ = true;
  return Status::OK();
}

Status PostgresStore::EnsureSchema(PgConn& c, int dims) {
  std::lock_guard<std::mutex> lock(schema_mu_);
  if (schema_ready_) return Status::OK();
  return CreateSchemaLocked(c, dims);
}

Status PostgresStore::CreateSchemaLocked(PgConn& c, int dims) {
  if (dims <= 0 || dims > 16000) {
    return Status::InvalidArgument("postgres store: bad embedding dimension " +
                                   std::to_string(dims));
  }
  const std::string n = std::to_string(dims);
  const std::string embedding_type = pgvector_ ? "vector(" + n + ")" : "real[]";
  const std::string dims_check = pgvector_ ? ""
                                           : ", CONSTRAINT " +
                                                 QuoteIdent(chunks_table_ + "_embedding_dims") +
                                                 " CHECK (cardinality(embedding) = " + n + ")";
  // One transaction under an advisory lock so two stores creating the same
  // table at once do not trip over each other's catalog rows.
  std::string sql = "BEGIN; SELECT pg_advisory_xact_lock(" +
                    std::to_string(static_cast<int64_t>(Hash64(chunks_table_, 0x5109ce))) + ");\n";
  sql += "CREATE TABLE IF NOT EXISTS " + q_sources_ +
         " (source_id text PRIMARY KEY, path text, domain text NOT NULL DEFAULT '', "
         "category text NOT NULL DEFAULT '', chunk_count integer NOT NULL DEFAULT 0, "
         "size_bytes bigint, mtime_ns bigint, content_hash text, "
         "updated_at timestamptz NOT NULL DEFAULT now());\n";
  sql += "CREATE TABLE IF NOT EXISTS " + q_chunks_ +
         " (id text PRIMARY KEY, source_id text NOT NULL, file_id text, ordinal integer NOT NULL, "
         "byte_begin bigint NOT NULL, byte_end bigint NOT NULL, text text NOT NULL, "
         "domain text NOT NULL DEFAULT '', category text NOT NULL DEFAULT '', "
         "metadata jsonb NOT NULL DEFAULT '{}', model text NOT NULL DEFAULT '', "
         "dims integer NOT NULL, embedding " +
         embedding_type +
         " NOT NULL, token_estimate integer NOT NULL DEFAULT 0, "
         "updated_at timestamptz NOT NULL DEFAULT now()" +
         dims_check + ");\n";
  if (!pgvector_) {
    // PostgreSQL otherwise spends most of its COPY time trying (and failing)
    // to compress random floats; pgvector's type is EXTERNAL already.
    sql += "ALTER TABLE " + q_chunks_ + " ALTER COLUMN embedding SET STORAGE EXTERNAL;\n";
  }
  sql += "CREATE INDEX IF NOT EXISTS " + QuoteIdent(chunks_table_ + "_source_id_idx") + " ON " +
         q_chunks_ + " (source_id);\n";
  sql += "CREATE INDEX IF NOT EXISTS " + QuoteIdent(chunks_table_ + "_file_id_idx") + " ON " +
         q_chunks_ + " (file_id);\nCOMMIT;";
  PgResult r(PQexec(c.pg, sql.c_str()));
  if (!ResultOk(r.get())) {
    PgError e = Classify(c.pg, r.get());
    Rollback(c);
    return Fail(e, "create schema");
  }
  bool exists = false;
  Status s = ProbeExistingLocked(c, &exists);  // another store may have won with other dims
  if (!s.ok()) return s;
  if (dims_ != dims) {
    return Status::InvalidArgument("table " + q_chunks_ + " holds " + std::to_string(dims_) +
                                   "-dimensional vectors, not " + n);
  }
  schema_ready_ = true;
  return Status::OK();
}

PgError PostgresStore::EnsureStaging(PgConn& c) {
  if (c.staging_ready) return {};
  // Per session; rows vanish at each commit. LIKE ... INCLUDING STORAGE keeps
  // the EXTERNAL embedding (fast COPY); typmods come along (vector(N) checks).
  PgError e = Exec(c, "CREATE TEMP TABLE IF NOT EXISTS " + q_stage_ + " (LIKE " + q_chunks_ +
                          " INCLUDING DEFAULTS INCLUDING STORAGE) ON COMMIT DELETE ROWS");
  if (e.fault == Fault::kNone) c.staging_ready = true;
  return e;
}

Result<std::string> PostgresStore::PrepareInsert(PgConn& c, size_t rows, PgError* err) {
  auto it = c.prepared.find(rows);
  if (it != c.prepared.end()) return it->second;
  // Unique per process and connection: on PGlite every connection shares one
  // backend, so names must not collide with another (or an earlier) client's.
  const std::string name = "sluice_ins_" + std::to_string(getpid()) + "_" +
                           std::to_string(c.serial) + "_" + table_hash_ + "_" +
                           std::to_string(rows);
  static constexpr const char* kCasts[kNumColumns] = {"text", "text", "text",  "int4", "int8",
                                                      "int8", "text", "text",  "text", "jsonb",
                                                      "text", "int4", nullptr, "int4"};
  const std::string emb_cast = pgvector_ ? "vector" : "real[]";
  std::string sql = "INSERT INTO " + q_chunks_ + " AS t (" + ColumnList() + ") VALUES ";
  int p = 1;
  for (size_t r = 0; r < rows; ++r) {
    sql += r ? ",(" : "(";
    for (int col = 0; col < kNumColumns; ++col) {
      if (col) sql += ',';
      // Appended piecewise: GCC 12 warns (-Wrestrict, a false positive) on
      // the operator+ chain here.
      sql += '$';
      sql += std::to_string(p++);
      sql += "::";
      sql += kCasts[col] ? std::string_view(kCasts[col]) : std::string_view(emb_cast);
    }
    sql += ')';
  }
  sql += " ON CONFLICT (id) DO UPDATE SET ";
  for (int col = 1; col < kNumColumns; ++col) {
    sql += std::string(kColumns[col]) + " = EXCLUDED." + kColumns[col] + ", ";
  }
  sql += "updated_at = now() WHERE (" + ColumnList("t.") + ") IS DISTINCT FROM (" +
         ColumnList("EXCLUDED.") + ")";
  PgResult r(PQprepare(c.pg, name.c_str(), sql.c_str(), 0, nullptr));
  if (!ResultOk(r.get())) {
    *err = Classify(c.pg, r.get());
    return Fail(*err, "prepare insert");
  }
  c.prepared[rows] = name;
  return name;
}

// Binary parameters of one row, in kColumns order, appended to `buf`;
// offsets/lengths recorded for PQexecPrepared (length -1: NULL).
void AppendRowParams(const EmbeddedChunk& e, bool pgvector, std::string& buf,
                     std::vector<std::pair<size_t, int>>& spans) {
  auto add = [&](auto&& fill) {
    const size_t at = buf.size();
    fill();
    spans.emplace_back(at, static_cast<int>(buf.size() - at));
  };
  const Chunk& c = e.chunk;
  add([&] { buf += c.id; });
  add([&] { buf += c.source_id; });
  if (c.file_id.empty()) {
    spans.emplace_back(buf.size(), -1);
  } else {
    add([&] { buf += c.file_id; });
  }
  add([&] { pg::AppendInt32(buf, static_cast<int32_t>(c.ordinal)); });
  add([&] { pg::AppendInt64(buf, static_cast<int64_t>(c.byte_begin)); });
  add([&] { pg::AppendInt64(buf, static_cast<int64_t>(c.byte_end)); });
  add([&] { buf += c.text; });
  add([&] { buf += c.domain; });
  add([&] { buf += c.category; });
  add([&] { pg::AppendJsonbBinary(buf, c.metadata_json.empty() ? "{}" : c.metadata_json); });
  add([&] { buf += e.model; });
  add([&] { pg::AppendInt32(buf, static_cast<int32_t>(e.embedding.size())); });
  add([&] {
    if (pgvector) {
      pg::AppendVectorBinary(buf, e.embedding);
    } else {
      pg::AppendFloat4ArrayBinary(buf, e.embedding);
    }
  });
  add([&] { pg::AppendInt32(buf, static_cast<int32_t>(c.token_estimate)); });
}

PgResult ExecRows(PGconn* pg, const std::string& stmt, std::span<const EmbeddedChunk> batch,
                  std::span<const size_t> rows, bool pgvector) {
  std::string buf;
  std::vector<std::pair<size_t, int>> spans;
  spans.reserve(rows.size() * kNumColumns);
  for (size_t i : rows) AppendRowParams(batch[i], pgvector, buf, spans);
  std::vector<const char*> values(spans.size());
  std::vector<int> lengths(spans.size());
  std::vector<int> formats(spans.size(), 1);
  for (size_t i = 0; i < spans.size(); ++i) {
    values[i] = spans[i].second < 0 ? nullptr : buf.data() + spans[i].first;
    lengths[i] = std::max(spans[i].second, 0);
  }
  return PgResult(PQexecPrepared(pg, stmt.c_str(), static_cast<int>(values.size()), values.data(),
                                 lengths.data(), formats.data(), 0));
}

std::string EscapeLiteral(PGconn* pg, std::string_view s) {
  char* q = PQescapeLiteral(pg, s.data(), s.size());
  if (!q) return "NULL";  // invalid encoding: the statement fails as a data error
  std::string out(q);
  PQfreemem(q);
  return out;
}

// Upserts the batch's distinct sources, sorted, with their chunk counts
// recomputed in this transaction; with `commit`, COMMITs in the same round
// trip (an error skips the COMMIT: the transaction stays aborted).
PgError PostgresStore::UpsertSources(PgConn& c, std::span<const EmbeddedChunk> batch,
                                     std::span<const size_t> rows, bool commit) {
  std::map<std::string_view, const Chunk*> sources;
  for (size_t i : rows) sources.emplace(batch[i].chunk.source_id, &batch[i].chunk);
  std::string sql;
  if (!sources.empty()) {
    // A new row takes its file facts from the fingerprint when the file was
    // fingerprinted before any chunk of it was stored (dead-letter retry);
    // an existing row keeps its own.
    const bool facts = resume_tables_;
    sql = "INSERT INTO " + q_sources_ + " AS s (source_id, domain, category, chunk_count" +
          (facts ? ", path, size_bytes, mtime_ns, content_hash" : "") +
          ") SELECT v.source_id, v.domain, v.category, (SELECT count(*) FROM " + q_chunks_ +
          " c WHERE c.source_id = v.source_id)" +
          (facts ? ", f.path, f.size_bytes, f.mtime_ns, f.content_hash" : "") + " FROM (VALUES ";
    bool first = true;
    for (const auto& [id, chunk] : sources) {
      sql += first ? "(" : ",(";
      first = false;
      sql += EscapeLiteral(c.pg, chunk->source_id);
      sql += "::text,";
      sql += EscapeLiteral(c.pg, chunk->domain);
      sql += "::text,";
      sql += EscapeLiteral(c.pg, chunk->category);
      sql += "::text)";
    }
    sql += ") AS v(source_id, domain, category) ";
    if (facts) sql += "LEFT JOIN " + q_files_ + " f ON f.file_id = v.source_id ";
    sql +=
        "ORDER BY v.source_id ON CONFLICT (source_id) DO "
        "UPDATE SET domain = EXCLUDED.domain, category = EXCLUDED.category, chunk_count = "
        "EXCLUDED.chunk_count, updated_at = now() WHERE (s.domain, s.category, s.chunk_count) IS "
        "DISTINCT FROM (EXCLUDED.domain, EXCLUDED.category, EXCLUDED.chunk_count);";
  }
  if (commit) sql += "COMMIT";
  if (sql.empty()) return {};
  return Exec(c, sql);
}

// Starts a transaction and takes a transaction-scoped advisory lock per
// source id, in sorted order. Writers of the same source thus take turns, so
// each one's chunk_count (counted after its own insert, in a later statement)
// sees every committed chunk: exact under concurrency. CommitSources and
// DeleteSources take the same locks for the files they change (a plain
// file's source id is its file id).
PgError PostgresStore::BeginAndLock(PgConn& c, std::span<const std::string_view> source_ids,
                                    const std::string& then_sql, PgResult* last) {
  std::vector<int64_t> keys;
  const uint64_t seed = Hash64(chunks_table_);
  for (std::string_view id : source_ids) keys.push_back(static_cast<int64_t>(Hash64(id, seed)));
  std::sort(keys.begin(), keys.end());
  keys.erase(std::unique(keys.begin(), keys.end()), keys.end());
  // One round trip: BEGIN, the locks (a sorted subquery fixes their order),
  // then whatever the caller needs next.
  std::string sql = "BEGIN; SELECT pg_advisory_xact_lock(k) FROM (SELECT unnest(ARRAY[";
  for (size_t i = 0; i < keys.size(); ++i) {
    if (i) sql += ',';
    sql += std::to_string(keys[i]);
  }
  sql += "]::bigint[]) AS k ORDER BY 1) AS s;";
  sql += then_sql;
  PgResult r(PQexec(c.pg, sql.c_str()));
  if (!ResultOk(r.get())) {
    PgError e = Classify(c.pg, r.get());
    Rollback(c);
    return e;
  }
  if (last) *last = std::move(r);
  return {};
}

PgError PostgresStore::BeginAndLock(PgConn& c, std::span<const std::string> source_ids,
                                    const std::string& then_sql, PgResult* last) {
  std::vector<std::string_view> views(source_ids.begin(), source_ids.end());
  return BeginAndLock(c, std::span<const std::string_view>(views), then_sql, last);
}

PgError PostgresStore::BeginAndLockSources(PgConn& c, std::span<const EmbeddedChunk> batch,
                                           std::span<const size_t> rows,
                                           const std::string& then_sql, PgResult* last) {
  std::vector<std::string_view> ids;
  ids.reserve(rows.size());
  for (size_t i : rows) ids.push_back(batch[i].chunk.source_id);
  return BeginAndLock(c, std::span<const std::string_view>(ids), then_sql, last);
}

// Sends rows as one binary COPY into `target` (inside the caller's
// transaction; no rollback here).
PgError PostgresStore::CopyRows(PgConn& c, const std::string& target,
                                std::span<const EmbeddedChunk> batch,
                                std::span<const size_t> rows) {
  {
    PgResult r(PQexec(
        c.pg, ("COPY " + target + " (" + ColumnList() + ") FROM STDIN (FORMAT binary)").c_str()));
    if (!r || PQresultStatus(r.get()) != PGRES_COPY_IN) return Classify(c.pg, r.get());
  }
  std::string buf;
  constexpr size_t kSendBytes = 1 << 20;
  buf.reserve(kSendBytes + (1 << 16));
  pg::CopyWriter::AppendHeader(buf);
  pg::CopyWriter w(buf);
  bool send_failed = false;
  for (size_t i : rows) {
    const EmbeddedChunk& ec = batch[i];
    const Chunk& ch = ec.chunk;
    w.BeginTuple(kNumColumns);
    w.Text(ch.id);
    w.Text(ch.source_id);
    if (ch.file_id.empty()) {
      w.Null();
    } else {
      w.Text(ch.file_id);
    }
    w.Int4(static_cast<int32_t>(ch.ordinal));
    w.Int8(static_cast<int64_t>(ch.byte_begin));
    w.Int8(static_cast<int64_t>(ch.byte_end));
    w.Text(ch.text);
    w.Text(ch.domain);
    w.Text(ch.category);
    w.Jsonb(ch.metadata_json.empty() ? "{}" : ch.metadata_json);
    w.Text(ec.model);
    w.Int4(static_cast<int32_t>(ec.embedding.size()));
    if (pgvector_) {
      w.Vector(ec.embedding);
    } else {
      w.Float4Array(ec.embedding);
    }
    w.Int4(static_cast<int32_t>(ch.token_estimate));
    if (buf.size() >= kSendBytes) {
      if (PQputCopyData(c.pg, buf.data(), static_cast<int>(buf.size())) != 1) {
        send_failed = true;
        break;
      }
      buf.clear();
    }
  }
  if (!send_failed) {
    pg::CopyWriter::AppendTrailer(buf);
    send_failed = PQputCopyData(c.pg, buf.data(), static_cast<int>(buf.size())) != 1;
  }
  if (PQputCopyEnd(c.pg, send_failed ? "sluice: send failed" : nullptr) != 1) send_failed = true;
  // Drain every result of the COPY.
  PgError copy_error;
  while (PGresult* raw = PQgetResult(c.pg)) {
    PgResult r(raw);
    if (!ResultOk(r.get()) && copy_error.fault == Fault::kNone) {
      copy_error = Classify(c.pg, r.get());
    }
    if (PQstatus(c.pg) != CONNECTION_OK) break;
  }
  if (copy_error.fault == Fault::kNone && (send_failed || !c.ok())) {
    copy_error = Classify(c.pg, nullptr);
    copy_error.fault = Fault::kConnection;
  }
  return copy_error;
}

// SELECT of the ids of `rows` already in the table.
std::string PostgresStore::ExistingIdsSql(PgConn& c, std::span<const EmbeddedChunk> batch,
                                          std::span<const size_t> rows) const {
  std::string ids = "{";
  for (size_t i : rows) {
    if (ids.size() > 1) ids += ',';
    ids += '"';
    for (char ch : batch[i].chunk.id) {
      if (ch == '"' || ch == '\\') ids += '\\';
      ids += ch;
    }
    ids += '"';
  }
  ids += '}';
  return "SELECT id FROM " + q_chunks_ + " WHERE id = ANY(" + EscapeLiteral(c.pg, ids) +
         "::text[])";
}

// New ids go straight into the table by binary COPY (as fast as a plain
// COPY); ids already there go through the staging table and an upsert that
// skips unchanged rows. A concurrent writer inserting one of the "new" ids
// first makes the direct COPY fail with a unique violation: it is rolled back
// to its savepoint and those rows take the upsert path too.
PgError PostgresStore::TryCopy(PgConn& c, std::span<const EmbeddedChunk> batch,
                               std::span<const size_t> rows) {
  PgError e = EnsureStaging(c);
  if (e.fault != Fault::kNone) return e;
  // BEGIN, locks, a savepoint for the direct COPY and the id lookup: one trip.
  PgResult ids;
  if ((e = BeginAndLockSources(c, batch, rows,
                               "SAVEPOINT sluice_direct;" + ExistingIdsSql(c, batch, rows), &ids))
          .fault != Fault::kNone) {
    return e;
  }
  std::set<std::string, std::less<>> existing;
  for (int i = 0; i < PQntuples(ids.get()); ++i) existing.emplace(PQgetvalue(ids.get(), i, 0));
  std::vector<size_t> fresh, known;
  for (size_t i : rows) (existing.count(batch[i].chunk.id) ? known : fresh).push_back(i);
  if (!fresh.empty()) {
    e = CopyRows(c, q_chunks_, batch, fresh);
    if (e.fault != Fault::kNone && e.sqlstate == "23505") {
      if ((e = Exec(c, "ROLLBACK TO SAVEPOINT sluice_direct")).fault != Fault::kNone) {
        Rollback(c);
        return e;
      }
      known.assign(rows.begin(), rows.end());
    } else if (e.fault != Fault::kNone) {
      Rollback(c);
      return e;
    }
  }
  if (!known.empty()) {
    if ((e = CopyRows(c, q_stage_, batch, known)).fault != Fault::kNone) {
      Rollback(c);
      return e;
    }
    const std::string upsert =
        "INSERT INTO " + q_chunks_ + " AS t (" + ColumnList() + ") SELECT " + ColumnList() +
        " FROM " + q_stage_ + " ORDER BY id ON CONFLICT (id) DO UPDATE SET " +
        [&] {
          std::string set;
          for (int col = 1; col < kNumColumns; ++col) {
            set += std::string(kColumns[col]) + " = EXCLUDED." + kColumns[col] + ", ";
          }
          return set;
        }() +
        "updated_at = now() WHERE (" + ColumnList("t.") + ") IS DISTINCT FROM (" +
        ColumnList("EXCLUDED.") + ")";
    if ((e = Exec(c, upsert)).fault != Fault::kNone) {
      Rollback(c);
      return e;
    }
  }
  if ((e = FinishBatch(c, batch, rows)).fault != Fault::kNone) {
    Rollback(c);
    return e;
  }
  return {};
}

PgError PostgresStore::TryInsert(PgConn& c, std::span<const EmbeddedChunk> batch,
                                 std::span<const size_t> rows) {
  constexpr size_t kRowsPerStatement = 64;
  PgError e;
  if ((e = BeginAndLockSources(c, batch, rows, "", nullptr)).fault != Fault::kNone) return e;
  for (size_t at = 0; at < rows.size(); at += kRowsPerStatement) {
    const auto part = rows.subspan(at, std::min(kRowsPerStatement, rows.size() - at));
    auto stmt = PrepareInsert(c, part.size(), &e);
    if (!stmt.ok()) {
      Rollback(c);
      return e;
    }
    PgResult r = ExecRows(c.pg, *stmt, batch, part, pgvector_);
    if (!ResultOk(r.get())) {
      e = Classify(c.pg, r.get());
      Rollback(c);
      return e;
    }
  }
  if ((e = FinishBatch(c, batch, rows)).fault != Fault::kNone) {
    Rollback(c);
    return e;
  }
  return {};
}

PgError PostgresStore::TryRowByRow(PgConn& c, std::span<const EmbeddedChunk> batch,
                                   std::span<const size_t> rows,
                                   std::vector<RejectedRow>* rejected) {
  rejected->clear();
  PgError e;
  if ((e = BeginAndLockSources(c, batch, rows, "", nullptr)).fault != Fault::kNone) return e;
  auto stmt = PrepareInsert(c, 1, &e);
  if (!stmt.ok()) {
    Rollback(c);
    return e;
  }
  std::vector<size_t> accepted;
  for (size_t i : rows) {
    if ((e = Exec(c, "SAVEPOINT sluice_row")).fault != Fault::kNone) {
      Rollback(c);
      return e;
    }
    const size_t one[1] = {i};
    PgResult r = ExecRows(c.pg, *stmt, batch, one, pgvector_);
    if (ResultOk(r.get())) {
      accepted.push_back(i);
      e = Exec(c, "RELEASE SAVEPOINT sluice_row");
    } else {
      PgError row_error = Classify(c.pg, r.get());
      if (row_error.fault != Fault::kData) {
        Rollback(c);
        return row_error;
      }
      std::string msg = row_error.message;
      if (!row_error.sqlstate.empty()) msg += " [SQLSTATE " + row_error.sqlstate + "]";
      rejected->push_back({i, Status::Rejected(msg)});
      e = Exec(c, "ROLLBACK TO SAVEPOINT sluice_row");
    }
    if (e.fault != Fault::kNone) {
      Rollback(c);
      return e;
    }
  }
  if ((e = FinishBatch(c, batch, accepted)).fault != Fault::kNone) {
    Rollback(c);
    return e;
  }
  return {};
}

WriteResult PostgresStore::WriteTransaction(std::span<const EmbeddedChunk> batch,
                                            std::span<const size_t> rows) {
  WriteResult result;
  auto checked_out = Checkout();
  if (!checked_out.ok()) return {checked_out.status(), {}};
  std::unique_ptr<PgConn> conn = std::move(*checked_out);
  ReplayBackoff backoff(options_.reconnect_timeout_s,
                        conn->serial * 0x9E3779B97F4A7C15ull + rows.size());
  bool row_by_row = false;
  Status last;
  for (;;) {
    PgError e;
    if (!conn->ok()) {
      conn->Drop();
      auto fresh = Connect();
      if (fresh.ok()) {
        conn = std::move(*fresh);
      } else {
        e.fault =
            fresh.status().code() == StatusCode::kUnavailable ? Fault::kConnection : Fault::kFatal;
        last = fresh.status();
      }
    }
    if (e.fault == Fault::kNone) {
      const int dims = options_.dimensions > 0 ? options_.dimensions
                                               : static_cast<int>(batch[rows[0]].embedding.size());
      Status s = EnsureSchema(*conn, dims);
      if (!s.ok() && conn->ok()) {
        result.status = s;
        break;
      }
      if (!s.ok()) {
        e.fault = Fault::kConnection;
        last = s;
      } else if (row_by_row) {
        e = TryRowByRow(*conn, batch, rows, &result.rejected);
      } else {
        e = copy_path_ ? TryCopy(*conn, batch, rows) : TryInsert(*conn, batch, rows);
      }
      if (e.fault != Fault::kNone && e.fault != Fault::kConnection) last = Fail(e, "write batch");
      if (e.fault == Fault::kConnection && conn->ok() == false) last = Fail(e, "write batch");
    }
    if (e.fault == Fault::kNone) {
      result.status = Status::OK();
      break;
    }
    if (e.fault == Fault::kData && !row_by_row) {
      row_by_row = true;  // find the bad rows; the rest commits
      continue;
    }
    if (e.fault == Fault::kData || e.fault == Fault::kFatal) {
      result.status = last;
      result.rejected.clear();
      break;
    }
    // Connection lost or transient: back off and replay.
    if (!conn->ok()) conn->Drop();
    if (!backoff.Wait()) {
      result.status = backoff.GaveUp(last);
      result.rejected.clear();
      break;
    }
  }
  Return(std::move(conn));
  std::sort(result.rejected.begin(), result.rejected.end(),
            [](const RejectedRow& a, const RejectedRow& b) { return a.index < b.index; });
  return result;
}

WriteResult PostgresStore::Write(std::span<const EmbeddedChunk> batch) {
  if (batch.empty()) return {};
  // Keep the last occurrence of each id (ON CONFLICT cannot touch one row
  // twice in a statement) and otherwise the caller's order: rows of one
  // source stay together, which measured ~1.3x faster to COPY than id order
  // (the source_id index and the heap fill sequentially). Lock order between
  // concurrent writers comes from the sorted per-source advisory locks and
  // the upsert's ORDER BY id, not from this order.
  std::unordered_map<std::string_view, size_t> last;
  last.reserve(batch.size());
  for (size_t i = 0; i < batch.size(); ++i) last[batch[i].chunk.id] = i;
  std::vector<size_t> rows;
  rows.reserve(last.size());
  std::vector<RejectedRow> no_id;
  for (size_t i = 0; i < batch.size(); ++i) {
    if (batch[i].chunk.id.empty()) {
      no_id.push_back({i, Status::Rejected("chunk has no id")});
    } else if (last[batch[i].chunk.id] == i) {
      rows.push_back(i);
    }
  }
  WriteResult merged = WriteParts(batch, rows);
  if (merged.status.ok() && !no_id.empty()) {
    merged.rejected.insert(merged.rejected.end(), no_id.begin(), no_id.end());
    std::sort(merged.rejected.begin(), merged.rejected.end(),
              [](const RejectedRow& a, const RejectedRow& b) { return a.index < b.index; });
  }
  return merged;
}

WriteResult PostgresStore::WriteParts(std::span<const EmbeddedChunk> batch,
                                      std::span<const size_t> rows) {
  if (rows.empty()) return {};
  const size_t per_tx = rows_per_tx_;
  const size_t parts = (rows.size() + per_tx - 1) / per_tx;
  if (parts <= 1) return WriteTransaction(batch, rows);

  // Several transactions: write them in parallel on the pool. A retryable
  // failure of one part makes the whole call retryable; replaying the parts
  // that did commit is a no-op (upsert, unchanged rows are skipped).
  std::vector<WriteResult> results(parts);
  std::atomic<size_t> next{0};
  auto worker = [&] {
    for (size_t p; (p = next++) < parts;) {
      const size_t begin = p * per_tx;
      results[p] = WriteTransaction(batch, std::span<const size_t>(rows).subspan(
                                               begin, std::min(per_tx, rows.size() - begin)));
    }
  };
  const size_t threads = std::min<size_t>(parts, static_cast<size_t>(pool_limit_));
  std::vector<std::thread> pool;
  for (size_t t = 1; t < threads; ++t) {
    try {
      pool.emplace_back(worker);
    } catch (const std::system_error&) {
      break;  // no thread to spare: fewer parts in parallel, same result
    }
  }
  worker();
  for (auto& t : pool) t.join();
  WriteResult merged;
  for (auto& r : results) {
    if (!r.status.ok() && merged.status.ok()) merged.status = r.status;
    for (auto& rej : r.rejected) merged.rejected.push_back(std::move(rej));
  }
  if (!merged.status.ok()) merged.rejected.clear();
  std::sort(merged.rejected.begin(), merged.rejected.end(),
            [](const RejectedRow& a, const RejectedRow& b) { return a.index < b.index; });
  return merged;
}

Status PostgresStore::Flush() {
  if (options_.create_index.empty() || index_built_) return Status::OK();
  {
    std::lock_guard<std::mutex> lock(schema_mu_);
    if (!schema_ready_) return Status::OK();  // nothing written yet
  }
  auto usable = CheckoutUsable();
  if (!usable.ok()) return usable.status();
  std::unique_ptr<PgConn> conn = std::move(*usable);
  std::string sql;
  if (options_.create_index == "hnsw") {
    sql = "CREATE INDEX IF NOT EXISTS " + QuoteIdent(chunks_table_ + "_embedding_hnsw_idx") +
          " ON " + q_chunks_ + " USING hnsw (embedding vector_cosine_ops)";
  } else {
    // ivfflat wants data first; lists ~ rows / 1000 as pgvector suggests.
    PgResult r(PQexec(conn->pg, ("SELECT count(*) FROM " + q_chunks_).c_str()));
    long long n = ResultOk(r.get()) ? std::atoll(PQgetvalue(r.get(), 0, 0)) : 0;
    sql = "CREATE INDEX IF NOT EXISTS " + QuoteIdent(chunks_table_ + "_embedding_ivfflat_idx") +
          " ON " + q_chunks_ + " USING ivfflat (embedding vector_cosine_ops) WITH (lists = " +
          std::to_string(std::max(1LL, n / 1000)) + ")";
  }
  PgError e = Exec(*conn, sql);
  Return(std::move(conn));
  if (e.fault != Fault::kNone) return Fail(e, "create index");
  index_built_ = true;
  return Status::OK();
}

Status PostgresStore::Close() {
  Status s;
  {
    std::lock_guard<std::mutex> lock(pool_mu_);
    if (closed_) return Status::OK();
  }
  s = Flush();
  std::vector<std::unique_ptr<PgConn>> conns;
  {
    std::lock_guard<std::mutex> lock(pool_mu_);
    closed_ = true;
    conns.swap(idle_);
    pool_cv_.notify_all();
  }
  for (auto& c : conns) {
    // PGlite shares one backend between connections: leave no statements.
    if (c->ok()) {
      for (const auto& [rows, name] : c->prepared) {
        PgResult r(PQexec(c->pg, ("DEALLOCATE " + QuoteIdent(name)).c_str()));
      }
    }
  }
  return s;
}

Result<std::vector<SearchHit>> PostgresStore::Search(std::span<const float> query, int k) {
  if (k <= 0) return std::vector<SearchHit>{};
  {
    std::lock_guard<std::mutex> lock(schema_mu_);
    if (!schema_ready_) return std::vector<SearchHit>{};
    if (static_cast<int>(query.size()) != dims_) {
      return Status::InvalidArgument("query has " + std::to_string(query.size()) +
                                     " dimensions, the table " + std::to_string(dims_));
    }
  }
  auto usable = CheckoutUsable();
  if (!usable.ok()) return usable.status();
  std::unique_ptr<PgConn> conn = std::move(*usable);
  auto hits = pgvector_ ? SearchVector(*conn, query, k) : SearchScan(*conn, query, k);
  Return(std::move(conn));
  return hits;
}

SearchHit HitFromRow(const PGresult* r, int row) {
  SearchHit h;
  h.chunk_id = PQgetvalue(r, row, 0);
  h.source_id = PQgetvalue(r, row, 1);
  h.ordinal = static_cast<uint32_t>(std::strtoul(PQgetvalue(r, row, 2), nullptr, 10));
  h.text = PQgetvalue(r, row, 3);
  h.domain = PQgetvalue(r, row, 4);
  h.category = PQgetvalue(r, row, 5);
  h.metadata_json = PQgetvalue(r, row, 6);
  return h;
}

Result<std::vector<SearchHit>> PostgresStore::SearchVector(PgConn& c, std::span<const float> query,
                                                           int k) {
  const std::string sql =
      "SELECT id, source_id, ordinal, text, domain, category, metadata::text, "
      "1 - (embedding <=> $1::vector) FROM " +
      q_chunks_ + " ORDER BY embedding <=> $1::vector LIMIT " + std::to_string(k);
  const std::string params[1] = {pg::EncodeVectorBinary(query)};
  PgResult r = ExecParams(c.pg, sql, params, 0);
  if (!ResultOk(r.get())) return Fail(Classify(c.pg, r.get()), "search");
  std::vector<SearchHit> hits;
  for (int i = 0; i < PQntuples(r.get()); ++i) {
    SearchHit h = HitFromRow(r.get(), i);
    h.score = std::strtod(PQgetvalue(r.get(), i, 7), nullptr);
    hits.push_back(std::move(h));
  }
  return hits;
}

// Exact cosine scan on the client for real[] tables: stream (id, embedding)
// through a cursor in binary, keep the k best, then fetch their rows.
Result<std::vector<SearchHit>> PostgresStore::SearchScan(PgConn& c, std::span<const float> query,
                                                         int k) {
  double qnorm = 0;
  for (float f : query) qnorm += double(f) * f;
  qnorm = std::sqrt(qnorm);
  using Scored = std::pair<double, std::string>;  // min-heap of the k best
  std::priority_queue<Scored, std::vector<Scored>, std::greater<>> best;
  PgError e;
  if ((e = Exec(c, "BEGIN")).fault != Fault::kNone) return Fail(e, "search");
  if ((e = Exec(c,
                "DECLARE sluice_scan NO SCROLL CURSOR FOR SELECT id, embedding FROM " + q_chunks_))
          .fault != Fault::kNone) {
    Rollback(c);
    return Fail(e, "search");
  }
  for (;;) {
    PgResult r(PQexecParams(c.pg, "FETCH 2000 FROM sluice_scan", 0, nullptr, nullptr, nullptr,
                            nullptr, 1));
    if (!ResultOk(r.get())) {
      e = Classify(c.pg, r.get());
      Rollback(c);
      return Fail(e, "search");
    }
    const int n = PQntuples(r.get());
    if (n == 0) break;
    for (int i = 0; i < n; ++i) {
      auto v = pg::DecodeFloat4ArrayBinary(
          std::string_view(PQgetvalue(r.get(), i, 1), PQgetlength(r.get(), i, 1)));
      if (!v || v->size() != query.size()) continue;
      double dot = 0, norm = 0;
      for (size_t j = 0; j < query.size(); ++j) {
        dot += double(query[j]) * (*v)[j];
        norm += double((*v)[j]) * (*v)[j];
      }
      const double denom = qnorm * std::sqrt(norm);
      const double score = denom > 0 ? dot / denom : 0;
      if (static_cast<int>(best.size()) < k) {
        best.emplace(score, std::string(PQgetvalue(r.get(), i, 0), PQgetlength(r.get(), i, 0)));
      } else if (score > best.top().first) {
        best.pop();
        best.emplace(score, std::string(PQgetvalue(r.get(), i, 0), PQgetlength(r.get(), i, 0)));
      }
    }
  }
  Exec(c, "CLOSE sluice_scan");
  Exec(c, "COMMIT");
  std::vector<Scored> top;
  while (!best.empty()) {
    top.push_back(best.top());
    best.pop();
  }
  std::reverse(top.begin(), top.end());
  std::vector<SearchHit> hits;
  if (top.empty()) return hits;
  std::string sql = "SELECT id, source_id, ordinal, text, domain, category, metadata::text FROM " +
                    q_chunks_ + " WHERE id IN (";
  std::vector<const char*> values;
  for (size_t i = 0; i < top.size(); ++i) {
    sql += (i ? ",$" : "$") + std::to_string(i + 1);
    values.push_back(top[i].second.c_str());
  }
  sql += ")";
  PgResult r(PQexecParams(c.pg, sql.c_str(), static_cast<int>(values.size()), nullptr,
                          values.data(), nullptr, nullptr, 0));
  if (!ResultOk(r.get())) return Fail(Classify(c.pg, r.get()), "search");
  std::map<std::string, SearchHit> by_id;
  for (int i = 0; i < PQntuples(r.get()); ++i) {
    SearchHit h = HitFromRow(r.get(), i);
    by_id[h.chunk_id] = std::move(h);
  }
  for (const auto& [score, id] : top) {
    auto it = by_id.find(id);
    if (it == by_id.end()) continue;  // deleted meanwhile
    it->second.score = score;
    hits.push_back(std::move(it->second));
  }
  return hits;
}

Result<StoreStats> PostgresStore::Stats() {
  {
    std::lock_guard<std::mutex> lock(schema_mu_);
    if (!schema_ready_) return StoreStats{};
  }
  auto usable = CheckoutUsable();
  if (!usable.ok()) return usable.status();
  std::unique_ptr<PgConn> conn = std::move(*usable);
  const std::string sql =
      "SELECT (SELECT count(*) FROM " + q_chunks_ + "), (SELECT count(*) FROM " + q_sources_ + ")";
  PgResult r(PQexec(conn->pg, sql.c_str()));
  Result<StoreStats> out = StoreStats{};
  if (!ResultOk(r.get())) {
    out = Fail(Classify(conn->pg, r.get()), "stats");
  } else {
    out->chunks = std::strtoull(PQgetvalue(r.get(), 0, 0), nullptr, 10);
    out->sources = std::strtoull(PQgetvalue(r.get(), 0, 1), nullptr, 10);
  }
  Return(std::move(conn));
  return out;
}

// ---- Resume, incremental re-ingest and the embedding cache ----

// Vectors in the embedding cache are little-endian float32 bytes, as in the
// SQLite store's cache, whatever the chunks table's vector type.
void AppendFloatsLE(std::string& out, std::span<const float> values) {
  for (float f : values) {
    const uint32_t u = std::bit_cast<uint32_t>(f);
    const char b[4] = {static_cast<char>(u), static_cast<char>(u >> 8), static_cast<char>(u >> 16),
                       static_cast<char>(u >> 24)};
    out.append(b, 4);
  }
}

std::vector<float> FloatsFromLE(std::string_view bytes) {
  std::vector<float> out(bytes.size() / 4);
  const auto* p = reinterpret_cast<const unsigned char*>(bytes.data());
  for (size_t i = 0; i < out.size(); ++i, p += 4) {
    out[i] = std::bit_cast<float>(uint32_t{p[0]} | (uint32_t{p[1]} << 8) | (uint32_t{p[2]} << 16) |
                                  (uint32_t{p[3]} << 24));
  }
  return out;
}

std::string_view Value(const PGresult* r, int row, int col) {
  return {PQgetvalue(r, row, col), static_cast<size_t>(PQgetlength(r, row, col))};
}

// The chunks of the file `file` (an SQL expression) in the chunks table
// (unqualified columns): its own (file_id), plus rows written before chunks
// had a file_id, which belong to the file whose id is their source id.
std::string FileChunksWhere(const std::string& file) {
  return "(file_id = " + file + " OR (source_id = " + file + " AND coalesce(file_id, '') = ''))";
}

// The same as a join: (file_id, id, source_id) of the stored chunks of every
// file in `files` (a relation with a file_id column, plus `extra` columns
// carried along), by the two indexes.
std::string FileChunksJoin(const std::string& q_chunks, const std::string& files,
                           const std::string& extra, const std::string& where) {
  const std::string cols = "SELECT m.file_id, c.id, c.source_id" + extra + " FROM " + files +
                           " m JOIN " + q_chunks + " c ON ";
  const std::string filter = where.empty() ? "" : " WHERE " + where;
  return cols + "c.file_id = m.file_id" + filter + " UNION ALL " + cols +
         "c.source_id = m.file_id AND coalesce(c.file_id, '') = ''" + filter;
}

Status PostgresStore::EnsureResumeTables(PgConn& c) {
  // Probed first: a role that may not create tables can still use them.
  const std::string probe =
      "SELECT to_regclass(" + QuoteLiteral(q_files_) + ") IS NOT NULL, to_regclass(" +
      QuoteLiteral(q_cache_) + ") IS NOT NULL, to_regclass(" + QuoteLiteral(q_run_) +
      ") IS NOT NULL, EXISTS (SELECT 1 FROM pg_attribute WHERE attrelid = to_regclass(" +
      QuoteLiteral(q_files_) + ") AND attname = 'chunk_ids' AND NOT attisdropped)";
  bool have_files = false, have_cache = false, have_run = false, have_lists = false;
  {
    PgResult r(PQexec(c.pg, probe.c_str()));
    if (!ResultOk(r.get())) return Fail(Classify(c.pg, r.get()), "probe resume tables");
    auto yes = [&](int col) { return std::string_view(PQgetvalue(r.get(), 0, col)) == "t"; };
    have_files = yes(0);
    have_cache = yes(1);
    have_run = yes(2);
    have_lists = yes(3);
    if (have_files && have_cache && have_run && !have_lists) {
      resume_tables_ = true;
      return Status::OK();
    }
  }
  // None depends on the vector dimension, so they exist from the start and
  // LoadFingerprints works before the first write. Same advisory lock as the
  // chunks table's creation. The cache's vectors are random floats: EXTERNAL
  // storage skips PostgreSQL's (futile) compression attempt. Only what is
  // missing is created, so a role that owns none of them can add the run
  // records table to tables someone else made.
  std::string sql = "BEGIN; SELECT pg_advisory_xact_lock(" +
                    std::to_string(static_cast<int64_t>(Hash64(chunks_table_, 0x5109ce))) + ");\n";
  if (!have_files) {
    sql += "CREATE TABLE IF NOT EXISTS " + q_files_ +
           " (file_id text PRIMARY KEY, path text NOT NULL DEFAULT '', "
           "size_bytes bigint NOT NULL DEFAULT 0, mtime_ns bigint NOT NULL DEFAULT 0, "
           "content_hash text NOT NULL DEFAULT '', chunk_count integer NOT NULL DEFAULT 0, "
           "updated_at timestamptz NOT NULL DEFAULT now());\n";
  }
  if (!have_cache) {
    sql += "CREATE TABLE IF NOT EXISTS " + q_cache_ +
           " (key text PRIMARY KEY, model text NOT NULL DEFAULT '', embedding bytea NOT NULL);\n"
           "ALTER TABLE " +
           q_cache_ + " ALTER COLUMN embedding SET STORAGE EXTERNAL;\n";
  }
  if (!have_run) {
    // Which chunks each run stored for each file (StoreOptions::run_id);
    // CommitSources reads a file's records by this key and then forgets them.
    sql += "CREATE TABLE IF NOT EXISTS " + q_run_ +
           " (file_id text NOT NULL, run_id bigint NOT NULL, chunk_id text NOT NULL, "
           "PRIMARY KEY (file_id, run_id, chunk_id));\n";
  }
  PgResult r(PQexec(c.pg, sql.c_str()));
  PgError e;
  if (!ResultOk(r.get())) e = Classify(c.pg, r.get());
  if (e.fault == Fault::kNone && have_lists) e = MigrateChunkIdLists(c);
  if (e.fault == Fault::kNone) e = Exec(c, "COMMIT");
  if (e.fault != Fault::kNone) {
    Rollback(c);
    if (e.sqlstate == "42501") {
      // Not allowed to create (or migrate) them: the store still works,
      // without resume.
      resume_error_ = "cannot create or migrate " + q_files_ + ", " + q_cache_ + " and " + q_run_ +
                      ": " + e.message;
      return Status::OK();
    }
    return Fail(e, "create resume tables");
  }
  resume_tables_ = true;
  return Status::OK();
}

PgError PostgresStore::MigrateChunkIdLists(PgConn& c) {
  // Re-probed under the lock: another store may have migrated meanwhile.
  const std::string probe =
      "SELECT EXISTS (SELECT 1 FROM pg_attribute WHERE attrelid = to_regclass(" +
      QuoteLiteral(q_files_) +
      ") AND attname = 'chunk_ids' AND NOT attisdropped), EXISTS (SELECT 1 FROM pg_attribute "
      "WHERE attrelid = to_regclass(" +
      QuoteLiteral(q_chunks_) + ") AND attname = 'file_id' AND NOT attisdropped)";
  PgResult r(PQexec(c.pg, probe.c_str()));
  if (!ResultOk(r.get())) return Classify(c.pg, r.get());
  if (std::string_view(PQgetvalue(r.get(), 0, 0)) != "t") return {};
  std::string sql;
  if (std::string_view(PQgetvalue(r.get(), 0, 1)) == "t") {
    // A listed chunk takes its file's id; rows listed nowhere keep NULL and
    // are found by the legacy rule (source_id = the file's id).
    sql = "UPDATE " + q_chunks_ + " c SET file_id = l.file_id FROM (SELECT f.file_id, u.id FROM " +
          q_files_ + " f CROSS JOIN LATERAL unnest(f.chunk_ids) AS u(id)) l WHERE c.id = l.id " +
          "AND c.file_id IS NULL;\n";
  }
  sql += "ALTER TABLE " + q_files_ + " DROP COLUMN chunk_ids;";
  return Exec(c, sql);
}

Status PostgresStore::ResumeSupported() const {
  if (resume_tables_) return Status::OK();
  return Status::InvalidArgument("not supported by this store: " + resume_error_);
}

Result<bool> PostgresStore::ChunksTableExists(PgConn& c) {
  std::lock_guard<std::mutex> lock(schema_mu_);
  if (schema_ready_) return true;
  bool exists = false;
  if (Status s = ProbeExistingLocked(c, &exists); !s.ok()) return s;
  return exists;
}

template <typename Attempt>
Status PostgresStore::Retrying(const std::string& what, Attempt&& attempt) {
  auto checked_out = Checkout();
  if (!checked_out.ok()) return checked_out.status();
  std::unique_ptr<PgConn> conn = std::move(*checked_out);
  ReplayBackoff backoff(options_.reconnect_timeout_s, conn->serial * 0x9E3779B97F4A7C15ull + 7);
  Status result;
  for (;;) {
    PgError e;
    Status last;
    if (!conn->ok()) {
      conn->Drop();
      auto fresh = Connect();
      if (fresh.ok()) {
        conn = std::move(*fresh);
      } else if (fresh.status().code() == StatusCode::kUnavailable) {
        e.fault = Fault::kConnection;
        last = fresh.status();
      } else {
        result = fresh.status();
        break;
      }
    }
    if (e.fault == Fault::kNone) {
      e = attempt(*conn);
      if (e.fault != Fault::kNone) {
        Rollback(*conn);
        last = Fail(e, what);
      }
    }
    if (e.fault == Fault::kNone) break;
    if (e.fault == Fault::kData || e.fault == Fault::kFatal) {
      result = last;
      break;
    }
    if (!conn->ok()) conn->Drop();
    if (!backoff.Wait()) {
      result = backoff.GaveUp(last);
      break;
    }
  }
  Return(std::move(conn));
  return result;
}

Result<std::vector<SourceFingerprint>> PostgresStore::LoadFingerprints() {
  if (Status s = ResumeSupported(); !s.ok()) return s;
  std::vector<SourceFingerprint> out;
  Status s = Retrying("load fingerprints", [&](PgConn& c) -> PgError {
    out.clear();
    PgResult r(PQexec(c.pg, ("SELECT file_id, path, size_bytes, mtime_ns, content_hash, "
                             "chunk_count FROM " +
                             q_files_)
                                .c_str()));
    if (!ResultOk(r.get())) return Classify(c.pg, r.get());
    out.reserve(PQntuples(r.get()));
    for (int i = 0; i < PQntuples(r.get()); ++i) {
      SourceFingerprint f;
      f.file_id = Value(r.get(), i, 0);
      f.path = Value(r.get(), i, 1);
      f.size_bytes = std::strtoull(PQgetvalue(r.get(), i, 2), nullptr, 10);
      f.mtime_ns = std::strtoll(PQgetvalue(r.get(), i, 3), nullptr, 10);
      f.content_hash = Value(r.get(), i, 4);
      f.chunk_count = std::strtoull(PQgetvalue(r.get(), i, 5), nullptr, 10);
      out.push_back(std::move(f));
    }
    return {};
  });
  if (!s.ok()) return s;
  return out;
}

Result<std::vector<std::string>> PostgresStore::FileChunkIds(const std::string& file_id) {
  if (Status s = ResumeSupported(); !s.ok()) return s;
  std::vector<std::string> ids;
  Status s = Retrying("read file chunks", [&](PgConn& c) -> PgError {
    ids.clear();
    auto has_chunks = ChunksTableExists(c);
    if (!has_chunks.ok()) {
      PgError e;
      e.fault = Fault::kConnection;  // the probe failed: replay
      e.message = has_chunks.status().message();
      return e;
    }
    if (!*has_chunks) return {};
    const std::string params[1] = {file_id};
    PgResult r = ExecParams(c.pg,
                            "SELECT id FROM " + q_chunks_ + " WHERE " + FileChunksWhere("$1") +
                                " ORDER BY source_id COLLATE \"C\", ordinal, id COLLATE \"C\"",
                            params, 0);
    if (!ResultOk(r.get())) return Classify(c.pg, r.get());
    for (int i = 0; i < PQntuples(r.get()); ++i) ids.emplace_back(Value(r.get(), i, 0));
    return {};
  });
  if (!s.ok()) return s;
  return ids;
}

PgError PostgresStore::RecountSources(PgConn& c, const std::vector<std::string>& source_ids) {
  if (source_ids.empty()) return {};
  const std::string params[1] = {pg::EncodeBytesArrayBinary(source_ids)};
  PgResult r =
      ExecParams(c.pg,
                 "WITH counted AS (SELECT s.source_id, (SELECT count(*) FROM " + q_chunks_ +
                     " c WHERE c.source_id = s.source_id) AS n FROM " + q_sources_ +
                     " s WHERE s.source_id = ANY($1::text[])), "
                     "gone AS (DELETE FROM " +
                     q_sources_ +
                     " s USING counted k WHERE s.source_id = k.source_id AND k.n = 0), "
                     "kept AS (UPDATE " +
                     q_sources_ +
                     " s SET chunk_count = k.n, updated_at = now() FROM counted k "
                     "WHERE s.source_id = k.source_id AND k.n > 0 AND s.chunk_count <> k.n) "
                     "SELECT count(*) FROM counted",
                 params, 0);
  if (!ResultOk(r.get())) return Classify(c.pg, r.get());
  return {};
}

PgError PostgresStore::DeleteAndCommit(PgConn& c, const std::string& sql,
                                       std::span<const std::string> params, uint64_t& deleted) {
  PgResult r = ExecParams(c.pg, sql, params, 0);
  if (!ResultOk(r.get())) return Classify(c.pg, r.get());
  std::vector<std::string> touched;
  for (int i = 0; i < PQntuples(r.get()); ++i) {
    if (PQgetisnull(r.get(), i, 0)) continue;
    touched.emplace_back(Value(r.get(), i, 0));
    deleted += std::strtoull(PQgetvalue(r.get(), i, 1), nullptr, 10);
  }
  if (PgError e = RecountSources(c, touched); e.fault != Fault::kNone) return e;
  return Exec(c, "COMMIT");
}

// One statement for all of a call's files (a data-modifying CTE per table):
// a commit after every store batch stays one round trip however many small
// files it completes. Modes per file: "replace" (delete its stored chunks
// that its run did not record), "keep" (--cleanup none: delete nothing,
// count them), "facts" (only path, size, mtime and hash changed). Every
// mode forgets the committing run's records of the file and any run's
// records of the chunks it deleted, and no others: another run ingesting the
// same file at the same time (distributed workers, two ingests) still needs
// its records of the chunks it wrote to tell them from stale ones when it
// commits. (Forgetting every run's records made that run delete every chunk
// of the file it had written before this commit, leaving the file
// fingerprinted but short of chunks.) A dead run's records (no session holds
// its liveness lock, RunIsDeadSql) go too, here and when a store opens: only
// their own run would have read them. All CTEs read one snapshot, so the stale set is
// computed from the run records before they are deleted.
Result<uint64_t> PostgresStore::CommitSources(std::span<const SourceManifest> completed) {
  if (Status s = ResumeSupported(); !s.ok()) return s;
  if (completed.empty()) return uint64_t{0};
  if (Status s = KeepRunAlive(); !s.ok()) return s;
  // The last manifest of a file wins: a statement may upsert a row once.
  std::map<std::string_view, const SourceManifest*> by_file;
  for (const SourceManifest& m : completed) by_file[m.fingerprint.file_id] = &m;
  std::vector<std::string> file_ids, paths, hashes, modes;
  std::vector<int64_t> sizes, mtimes, produced, run_ids;
  for (const auto& [id, m] : by_file) {
    const SourceFingerprint& f = m->fingerprint;
    file_ids.push_back(f.file_id);
    paths.push_back(f.path);
    sizes.push_back(static_cast<int64_t>(f.size_bytes));
    mtimes.push_back(f.mtime_ns);
    hashes.push_back(f.content_hash);
    modes.emplace_back(m->facts_only ? "facts" : m->delete_stale ? "replace" : "keep");
    produced.push_back(static_cast<int64_t>(f.chunk_count));
    run_ids.push_back(static_cast<int64_t>(m->run_id));
  }
  const std::string params[8] = {
      pg::EncodeBytesArrayBinary(file_ids), pg::EncodeBytesArrayBinary(paths),
      pg::EncodeInt8ArrayBinary(sizes),     pg::EncodeInt8ArrayBinary(mtimes),
      pg::EncodeBytesArrayBinary(hashes),   pg::EncodeBytesArrayBinary(modes),
      pg::EncodeInt8ArrayBinary(produced),  pg::EncodeInt8ArrayBinary(run_ids)};

  uint64_t deleted = 0;
  Status s = Retrying("commit sources", [&](PgConn& c) -> PgError {
    deleted = 0;
    auto has_chunks = ChunksTableExists(c);
    if (!has_chunks.ok()) {
      PgError e;
      e.fault = Fault::kConnection;  // the probe failed: replay
      e.message = has_chunks.status().message();
      return e;
    }
    PgError e = BeginAndLock(c, file_ids, "", nullptr);
    if (e.fault != Fault::kNone) return e;
    std::string sql =
        "WITH m AS (SELECT * FROM unnest($1::text[], $2::text[], $3::int8[], $4::int8[], "
        "$5::text[], $6::text[], $7::int8[], $8::int8[]) AS m(file_id, path, size_bytes, "
        "mtime_ns, content_hash, mode, produced, run_id)), ";
    if (*has_chunks) {
      // A file's stored chunks that its run did not record: stale.
      sql += "stored AS (" +
             FileChunksJoin(q_chunks_, "m", ", m.mode, m.run_id", "m.mode <> 'facts'") +
             "), stale AS (SELECT s.file_id, s.id, s.mode FROM stored s WHERE NOT EXISTS "
             "(SELECT 1 FROM " +
             q_run_ +
             " r WHERE r.file_id = s.file_id AND r.run_id = s.run_id AND r.chunk_id = s.id)), "
             "kept AS (SELECT file_id, count(*) AS n FROM stale WHERE mode = 'keep' GROUP BY "
             "file_id), "
             "del AS (DELETE FROM " +
             q_chunks_ +
             " c USING stale s WHERE c.id = s.id AND s.mode = 'replace' RETURNING c.source_id), "
             "src AS (UPDATE " +
             q_sources_ +
             " s SET path = m.path, size_bytes = m.size_bytes, mtime_ns = m.mtime_ns, "
             "content_hash = m.content_hash FROM m WHERE s.source_id = m.file_id), ";
    } else {
      sql += "kept AS (SELECT NULL::text AS file_id, 0::bigint AS n WHERE false), ";
    }
    sql += "put AS (INSERT INTO " + q_files_ +
           " AS f (file_id, path, size_bytes, mtime_ns, content_hash, chunk_count) "
           "SELECT m.file_id, m.path, m.size_bytes, m.mtime_ns, m.content_hash, "
           "m.produced + coalesce(k.n, 0) FROM m LEFT JOIN kept k ON k.file_id = m.file_id "
           "WHERE m.mode <> 'facts' ORDER BY m.file_id "
           "ON CONFLICT (file_id) DO UPDATE SET path = EXCLUDED.path, size_bytes = "
           "EXCLUDED.size_bytes, mtime_ns = EXCLUDED.mtime_ns, content_hash = "
           "EXCLUDED.content_hash, chunk_count = EXCLUDED.chunk_count, updated_at = now()), "
           "facts AS (INSERT INTO " +
           q_files_ +
           " AS f (file_id, path, size_bytes, mtime_ns, content_hash) SELECT m.file_id, m.path, "
           "m.size_bytes, m.mtime_ns, m.content_hash FROM m WHERE m.mode = 'facts' ORDER BY "
           "m.file_id ON CONFLICT (file_id) DO UPDATE SET path = EXCLUDED.path, size_bytes = "
           "EXCLUDED.size_bytes, mtime_ns = EXCLUDED.mtime_ns, content_hash = "
           "EXCLUDED.content_hash, updated_at = now()), "
           "forget AS (DELETE FROM " +
           q_run_ + " r USING m WHERE r.file_id = m.file_id AND (r.run_id = m.run_id OR " +
           RunIsDeadSql("r.run_id") +
           (*has_chunks ? std::string(" OR EXISTS (SELECT 1 FROM stale s WHERE s.mode = "
                                      "'replace' AND s.file_id = r.file_id AND s.id = "
                                      "r.chunk_id)")
                        : std::string()) +
           ")) ";
    sql += *has_chunks ? "SELECT source_id, count(*) FROM del GROUP BY source_id"
                       : "SELECT NULL::text, 0";
    return DeleteAndCommit(c, sql, params, deleted);
  });
  if (!s.ok()) return s;
  return deleted;
}

Result<uint64_t> PostgresStore::DeleteSources(std::span<const std::string> file_ids) {
  if (Status s = ResumeSupported(); !s.ok()) return s;
  if (file_ids.empty()) return uint64_t{0};
  std::vector<std::string> sorted(file_ids.begin(), file_ids.end());
  std::sort(sorted.begin(), sorted.end());
  sorted.erase(std::unique(sorted.begin(), sorted.end()), sorted.end());
  uint64_t deleted = 0;
  Status s = Retrying("delete sources", [&](PgConn& c) -> PgError {
    deleted = 0;
    auto has_chunks = ChunksTableExists(c);
    if (!has_chunks.ok()) {
      PgError e;
      e.fault = Fault::kConnection;
      e.message = has_chunks.status().message();
      return e;
    }
    PgError e = BeginAndLock(c, sorted, "", nullptr);
    if (e.fault != Fault::kNone) return e;
    std::string sql = "WITH m AS (SELECT unnest($1::text[]) AS file_id), gone AS (DELETE FROM " +
                      q_files_ +
                      " f USING m WHERE f.file_id = m.file_id), forget AS (DELETE FROM " + q_run_ +
                      " r USING m WHERE r.file_id = m.file_id)";
    if (*has_chunks) {
      sql += ", old AS (" + FileChunksJoin(q_chunks_, "m", "", "") + "), del AS (DELETE FROM " +
             q_chunks_ +
             " c USING old o WHERE c.id = o.id RETURNING c.source_id) "
             "SELECT source_id, count(*) FROM del GROUP BY source_id";
    } else {
      sql += " SELECT NULL::text, 0";
    }
    const std::string params[1] = {pg::EncodeBytesArrayBinary(sorted)};
    return DeleteAndCommit(c, sql, params, deleted);
  });
  if (!s.ok()) return s;
  return deleted;
}

PgError PostgresStore::PutCache(PgConn& c, std::span<const EmbeddedChunk> batch,
                                std::span<const size_t> rows) {
  if (options_.embedding_cache_namespace.empty() || !resume_tables_ || rows.empty()) return {};
  // Sorted keys: concurrent writers insert (and lock) them in one order.
  std::vector<std::pair<std::string, size_t>> keyed;
  keyed.reserve(rows.size());
  for (size_t i : rows) {
    keyed.emplace_back(EmbeddingCacheKey(options_.embedding_cache_namespace, batch[i].chunk.text),
                       i);
  }
  std::sort(keyed.begin(), keyed.end());
  keyed.erase(std::unique(keyed.begin(), keyed.end(),
                          [](const auto& a, const auto& b) { return a.first == b.first; }),
              keyed.end());
  std::vector<std::string> keys, models, vectors;
  for (auto& [key, i] : keyed) {
    keys.push_back(std::move(key));
    models.push_back(batch[i].model);
    std::string bytes;
    bytes.reserve(4 * batch[i].embedding.size());
    AppendFloatsLE(bytes, batch[i].embedding);
    vectors.push_back(std::move(bytes));
  }
  const std::string params[3] = {pg::EncodeBytesArrayBinary(keys),
                                 pg::EncodeBytesArrayBinary(models),
                                 pg::EncodeBytesArrayBinary(vectors, pg::kByteaOid)};
  PgResult r = ExecParams(c.pg,
                          "INSERT INTO " + q_cache_ +
                              " (key, model, embedding) SELECT * FROM unnest($1::text[], "
                              "$2::text[], $3::bytea[]) ON CONFLICT (key) DO NOTHING",
                          params, 0);
  if (!ResultOk(r.get())) return Classify(c.pg, r.get());
  return {};
}

PgError PostgresStore::PutRunRecords(PgConn& c, std::span<const EmbeddedChunk> batch,
                                     std::span<const size_t> rows) {
  if (options_.run_id == 0 || !resume_tables_ || rows.empty()) return {};
  // Sorted keys: concurrent writers insert (and lock) them in one order.
  std::vector<std::pair<std::string_view, std::string_view>> keyed;
  keyed.reserve(rows.size());
  for (size_t i : rows) {
    const Chunk& ch = batch[i].chunk;
    if (!ch.file_id.empty()) keyed.emplace_back(ch.file_id, ch.id);
  }
  if (keyed.empty()) return {};
  std::sort(keyed.begin(), keyed.end());
  keyed.erase(std::unique(keyed.begin(), keyed.end()), keyed.end());
  std::vector<std::string> files, ids;
  files.reserve(keyed.size());
  ids.reserve(keyed.size());
  for (const auto& [file, id] : keyed) {
    files.emplace_back(file);
    ids.emplace_back(id);
  }
  const std::string params[2] = {pg::EncodeBytesArrayBinary(files),
                                 pg::EncodeBytesArrayBinary(ids)};
  PgResult r =
      ExecParams(c.pg,
                 "INSERT INTO " + q_run_ + " (file_id, run_id, chunk_id) SELECT u.f, " +
                     std::to_string(static_cast<int64_t>(options_.run_id)) +
                     ", u.c FROM unnest($1::text[], $2::text[]) AS u(f, c) ON CONFLICT DO NOTHING",
                 params, 0);
  if (!ResultOk(r.get())) return Classify(c.pg, r.get());
  return {};
}

PgError PostgresStore::FinishBatch(PgConn& c, std::span<const EmbeddedChunk> batch,
                                   std::span<const size_t> rows) {
  if (PgError e = PutCache(c, batch, rows); e.fault != Fault::kNone) return e;
  if (PgError e = PutRunRecords(c, batch, rows); e.fault != Fault::kNone) return e;
  return UpsertSources(c, batch, rows, /*commit=*/true);
}

Status PostgresStore::LookupEmbeddings(std::string_view cache_namespace,
                                       std::span<const std::string_view> texts,
                                       std::vector<CachedEmbedding>& out) {
  if (Status s = ResumeSupported(); !s.ok()) return s;
  out.assign(texts.size(), CachedEmbedding{});
  if (texts.empty()) return Status::OK();
  std::unordered_map<std::string, std::vector<size_t>> where;
  std::vector<std::string> keys;
  for (size_t i = 0; i < texts.size(); ++i) {
    auto [it, inserted] = where.try_emplace(EmbeddingCacheKey(cache_namespace, texts[i]));
    if (inserted) keys.push_back(it->first);
    it->second.push_back(i);
  }
  const std::string params[1] = {pg::EncodeBytesArrayBinary(keys)};
  // One statement, no transaction of its own: on PGlite it may run inside
  // the writer's transaction (one shared backend), which it must not end.
  return Retrying("embedding cache lookup", [&](PgConn& c) -> PgError {
    PgResult r = ExecParams(
        c.pg, "SELECT key, model, embedding FROM " + q_cache_ + " WHERE key = ANY($1::text[])",
        params, 1);
    if (!ResultOk(r.get())) return Classify(c.pg, r.get());
    for (int row = 0; row < PQntuples(r.get()); ++row) {
      auto it = where.find(std::string(Value(r.get(), row, 0)));
      if (it == where.end()) continue;
      CachedEmbedding hit;
      hit.model = Value(r.get(), row, 1);
      hit.embedding = FloatsFromLE(Value(r.get(), row, 2));
      for (size_t i : it->second) out[i] = hit;
    }
    return {};
  });
}

Result<std::vector<EmbeddedChunk>> PostgresStore::ReadChunks(
    std::span<const std::string> chunk_ids) {
  std::vector<EmbeddedChunk> out;
  if (chunk_ids.empty()) return out;
  std::unordered_map<std::string, EmbeddedChunk> found;
  Status s = Retrying("read chunks", [&](PgConn& c) -> PgError {
    found.clear();
    auto has_chunks = ChunksTableExists(c);
    if (!has_chunks.ok() || !*has_chunks) return {};
    // In slices: a bounded statement and result per round trip.
    constexpr size_t kSlice = 1000;
    for (size_t at = 0; at < chunk_ids.size(); at += kSlice) {
      const auto slice = chunk_ids.subspan(at, std::min(kSlice, chunk_ids.size() - at));
      const std::string params[1] = {pg::EncodeBytesArrayBinary(slice)};
      PgResult r =
          ExecParams(c.pg,
                     "SELECT id, source_id, ordinal, byte_begin, byte_end, text, domain, "
                     "category, metadata::text, model, embedding, token_estimate, file_id FROM " +
                         q_chunks_ + " WHERE id = ANY($1::text[])",
                     params, 1);
      if (!ResultOk(r.get())) return Classify(c.pg, r.get());
      for (int row = 0; row < PQntuples(r.get()); ++row) {
        EmbeddedChunk e;
        Chunk& ch = e.chunk;
        ch.id = Value(r.get(), row, 0);
        ch.source_id = Value(r.get(), row, 1);
        ch.ordinal = static_cast<uint32_t>(pg::ReadInt32(PQgetvalue(r.get(), row, 2)));
        ch.byte_begin = static_cast<uint64_t>(pg::ReadInt64(PQgetvalue(r.get(), row, 3)));
        ch.byte_end = static_cast<uint64_t>(pg::ReadInt64(PQgetvalue(r.get(), row, 4)));
        ch.text = Value(r.get(), row, 5);
        ch.domain = Value(r.get(), row, 6);
        ch.category = Value(r.get(), row, 7);
        // jsonb keeps the value, not the text: back to the canonical text
        // the chunker wrote (common/json_canonical.h).
        ch.metadata_json = Value(r.get(), row, 8);
        if (auto canonical = CanonicalJson(ch.metadata_json); canonical.ok()) {
          ch.metadata_json = std::move(*canonical);
        }
        e.model = Value(r.get(), row, 9);
        auto v = pgvector_ ? pg::DecodeVectorBinary(Value(r.get(), row, 10))
                           : pg::DecodeFloat4ArrayBinary(Value(r.get(), row, 10));
        if (!v) {
          PgError bad;
          bad.fault = Fault::kFatal;
          bad.message = "chunk " + ch.id + " has an undecodable embedding";
          return bad;
        }
        e.embedding = std::move(*v);
        ch.token_estimate = static_cast<uint32_t>(pg::ReadInt32(PQgetvalue(r.get(), row, 11)));
        if (!PQgetisnull(r.get(), row, 12)) ch.file_id = Value(r.get(), row, 12);
        std::string id = ch.id;
        found.emplace(std::move(id), std::move(e));
      }
    }
    return {};
  });
  if (!s.ok()) return s;
  out.reserve(found.size());
  for (const std::string& id : chunk_ids) {
    auto it = found.find(id);
    if (it != found.end()) out.push_back(it->second);
  }
  return out;
}

Status PostgresStore::Verify(std::vector<VerifyProblem>& problems, size_t limit) {
  if (Status s = ResumeSupported(); !s.ok()) return s;
  const size_t first = problems.size();
  return Retrying("verify", [&](PgConn& c) -> PgError {
    problems.resize(first);  // a replay starts over
    auto add = [&](std::string kind, std::string_view subject, std::string detail) {
      if (problems.size() < limit) {
        problems.push_back({std::move(kind), std::string(subject), std::move(detail)});
      }
    };
    const std::string lim = std::to_string(limit);
    auto query = [&](const std::string& sql, auto&& each) -> PgError {
      if (problems.size() >= limit) return {};
      PgResult r(PQexec(c.pg, sql.c_str()));
      if (!ResultOk(r.get())) return Classify(c.pg, r.get());
      for (int i = 0; i < PQntuples(r.get()); ++i) each(r.get(), i);
      return {};
    };
    auto has_chunks = ChunksTableExists(c);
    if (!has_chunks.ok()) {
      PgError e;
      e.fault = Fault::kConnection;
      e.message = has_chunks.status().message();
      return e;
    }
    // Each fingerprinted file against the chunks stored for it (one pass
    // over the chunks; rows without a file_id count for their source id).
    const std::string stored =
        *has_chunks ? "LEFT JOIN (SELECT coalesce(nullif(file_id, ''), source_id) AS file_id, "
                      "count(*) AS n FROM " +
                          q_chunks_ + " GROUP BY 1) s ON s.file_id = f.file_id"
                    : "LEFT JOIN (SELECT NULL::text AS file_id, 0::bigint AS n) s ON false";
    PgError e = query(
        "SELECT f.file_id, f.chunk_count, coalesce(s.n, 0) FROM " + q_files_ + " f " + stored +
            " WHERE f.chunk_count <> coalesce(s.n, 0) ORDER BY 1 "
            "LIMIT " +
            lim,
        [&](const PGresult* r, int i) {
          const uint64_t want = std::strtoull(PQgetvalue(r, i, 1), nullptr, 10);
          const uint64_t have = std::strtoull(PQgetvalue(r, i, 2), nullptr, 10);
          add(have < want ? "missing_chunk" : "count_mismatch", Value(r, i, 0),
              "fingerprint counts " + std::to_string(want) + " chunks, " + std::to_string(have) +
                  " stored" + (have < want ? "" : " (stale ones)"));
        });
    if (e.fault != Fault::kNone || !*has_chunks) return e;
    int dims = 0;
    {
      std::lock_guard<std::mutex> lock(schema_mu_);
      dims = dims_;
    }
    if (dims > 0) {
      const std::string n = std::to_string(dims);
      const std::string length =
          pgvector_ ? "vector_dims(embedding)" : "coalesce(cardinality(embedding), 0)";
      e = query("SELECT id, dims, " + length + " FROM " + q_chunks_ + " WHERE dims <> " + n +
                    " OR " + length + " <> " + n + " ORDER BY 1 LIMIT " + lim,
                [&](const PGresult* r, int i) {
                  add("wrong_dimensions", Value(r, i, 0),
                      std::string(Value(r, i, 1)) + " dimensions (" + std::string(Value(r, i, 2)) +
                          " values), store has " + n);
                });
      if (e.fault != Fault::kNone) return e;
    }
    e = query("SELECT c.id, c.source_id FROM " + q_chunks_ + " c WHERE NOT EXISTS (SELECT 1 FROM " +
                  q_sources_ + " s WHERE s.source_id = c.source_id) ORDER BY 1 LIMIT " + lim,
              [&](const PGresult* r, int i) {
                add("orphan_chunk", Value(r, i, 0),
                    "its source '" + std::string(Value(r, i, 1)) + "' is not in the sources table");
              });
    if (e.fault != Fault::kNone) return e;
    return query("SELECT s.source_id, s.chunk_count, count(c.id) FROM " + q_sources_ +
                     " s LEFT JOIN " + q_chunks_ +
                     " c ON c.source_id = s.source_id GROUP BY s.source_id, s.chunk_count "
                     "HAVING s.chunk_count <> count(c.id) ORDER BY 1 LIMIT " +
                     lim,
                 [&](const PGresult* r, int i) {
                   add("count_mismatch", Value(r, i, 0),
                       "sources row says " + std::string(Value(r, i, 1)) + " chunks, " +
                           std::string(Value(r, i, 2)) + " stored");
                 });
  });
}

}  // namespace

PostgresSchemaInfo GetPostgresSchemaInfo(Store& store) {
  if (auto* pg = dynamic_cast<PostgresStore*>(&store)) return pg->Info();
  return {};
}

Result<std::unique_ptr<Store>> OpenPostgresStore(const std::string& conninfo,
                                                 const StoreOptions& options) {
  auto store = std::make_unique<PostgresStore>(conninfo, options);
  Status s = store->Init();
  if (!s.ok()) return s;
  return std::unique_ptr<Store>(std::move(store));
}

}  // namespace sluice
