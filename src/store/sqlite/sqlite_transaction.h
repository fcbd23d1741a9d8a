// An RAII guard for one SQLite transaction of a SqliteStore: every early
// return between Begin() and Commit() rolls back by leaving scope, instead of
// a hand-written Rollback() before each exit.
//
// Begin() sends the given BEGIN ("BEGIN IMMEDIATE" for writers, "BEGIN" for
// a read snapshot); Commit() sends COMMIT. Leaving scope after a successful
// Begin() and without a successful Commit() rolls back (SqliteStore::Rollback:
// only when a transaction is open). A failed Begin() leaves nothing to undo.
//
// Thread safety: like the store, one thread at a time.
#pragma once

#include "store/sqlite/sqlite_store.h"

namespace sluice {

class SqliteStore::Transaction {
 public:
  explicit Transaction(SqliteStore& store) : store_(store) {}
  Transaction(const Transaction&) = delete;
  Transaction& operator=(const Transaction&) = delete;
  ~Transaction() {
    if (open_) store_.Rollback();
  }

  Status Begin(const char* begin_sql = "BEGIN IMMEDIATE") {
    Status s = store_.Exec(begin_sql);
    open_ = s.ok();
    return s;
  }

  Status Commit() {
    Status s = store_.Exec("COMMIT");
    if (s.ok()) open_ = false;
    return s;
  }

 private:
  SqliteStore& store_;
  bool open_ = false;
};

}  // namespace sluice
