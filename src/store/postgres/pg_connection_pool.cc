// The PostgreSQL store's connections: connecting, the pool (checkout and
// return), error-to-Status mapping, and the session that holds this run's
// liveness lock (pg_store.h).
#include "store/postgres/pg_store.h"

#include <atomic>
#include <cstdlib>

namespace sluice::pg {

namespace {

std::atomic<uint64_t> g_conn_serial{0};

}  // namespace

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
  // No JIT: sluice's statements are short, and a cost estimate over
  // jit_above_cost (a large join before ANALYZE) made the server compile
  // each one with LLVM, tens of milliseconds per statement (issue 15). A
  // server without the setting keeps its default.
  PgResult jit(PQexec(conn->pg, "SET jit = off"));
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

}  // namespace sluice::pg
