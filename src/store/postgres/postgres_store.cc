// The PostgreSQL store: opening (argument checks, server probe, schema and
// resume tables, the run's liveness lock), Close, and the public entry
// points of postgres_store.h. The other parts are listed in pg_store.h.
#include "store/postgres/postgres_store.h"

#include "store/postgres/pg_store.h"

namespace sluice::pg {

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

}  // namespace sluice::pg

namespace sluice {

PostgresSchemaInfo GetPostgresSchemaInfo(Store& store) {
  if (auto* pg = dynamic_cast<pg::PostgresStore*>(&store)) return pg->Info();
  return {};
}

Result<std::unique_ptr<Store>> OpenPostgresStore(const std::string& conninfo,
                                                 const StoreOptions& options) {
  auto store = std::make_unique<pg::PostgresStore>(conninfo, options);
  Status s = store->Init();
  if (!s.ok()) return s;
  return std::unique_ptr<Store>(std::move(store));
}

}  // namespace sluice
