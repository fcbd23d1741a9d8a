// An RAII guard for one transaction on a pooled connection: every early
// return of a statement sequence rolls back by leaving scope, instead of a
// hand-written ROLLBACK before each exit.
//
// The guard does not always send BEGIN itself: the write path starts its
// transaction in the same round trip as its advisory locks (BeginAndLock), and
// several statements end in their own COMMIT ("...; COMMIT"). So:
//   - Begin() sends BEGIN when the caller has nothing to batch with it;
//   - a transaction begun by another statement is guarded all the same (the
//     destructor looks at the connection, not at what the guard sent);
//   - Commit() sends COMMIT; Committed() records that a statement already
//     ended the transaction.
// Until one of those two, leaving scope sends ROLLBACK when the connection is
// alive and inside a transaction (open or aborted), and nothing otherwise.
//
// Thread safety: like the PgConn it guards, one thread at a time.
#pragma once

#include "store/postgres/pg_conn.h"

namespace sluice::pg {

// Rolls back `c`'s open (or aborted) transaction, if any; a no-op on a lost
// connection, whose transaction the server has already ended.
inline void RollbackIfOpen(PgConn& c) {
  if (c.ok() && PQtransactionStatus(c.pg) != PQTRANS_IDLE) PgResult r(PQexec(c.pg, "ROLLBACK"));
}

class PgTransaction {
 public:
  explicit PgTransaction(PgConn& conn) : conn_(conn) {}
  PgTransaction(const PgTransaction&) = delete;
  PgTransaction& operator=(const PgTransaction&) = delete;
  ~PgTransaction() {
    if (!done_) RollbackIfOpen(conn_);
  }

  // Sends BEGIN.
  PgError Begin() { return Run("BEGIN"); }

  // Sends COMMIT. On success the guard has nothing left to do; on failure
  // the destructor still rolls back whatever is left open.
  PgError Commit() {
    PgError e = Run("COMMIT");
    if (e.fault == Fault::kNone) done_ = true;
    return e;
  }

  // The transaction was ended by a statement the caller sent (a trailing
  // "; COMMIT"): nothing to roll back.
  void Committed() { done_ = true; }

 private:
  PgError Run(const char* sql) {
    PgResult r(PQexec(conn_.pg, sql));
    if (ResultOk(r.get())) return {};
    return Classify(conn_.pg, r.get());
  }

  PgConn& conn_;
  bool done_ = false;
};

}  // namespace sluice::pg
