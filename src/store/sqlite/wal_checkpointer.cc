#include "store/sqlite/wal_checkpointer.h"

#include <fmt/format.h>
#include <sqlite3.h>

#include "common/thread_name.h"

namespace sluice {

Result<std::unique_ptr<WalCheckpointer>> WalCheckpointer::Start(const std::string& path,
                                                                int busy_timeout_ms) {
  sqlite3* db = nullptr;
  auto fail = [&](const char* what) {
    Status s =
        Status::IOError(fmt::format("sqlite checkpointer for '{}': cannot {}: {}", path, what,
                                    db != nullptr ? sqlite3_errmsg(db) : "out of memory"));
    sqlite3_close(db);
    return s;
  };
  // NOMUTEX: only the checkpointer's thread uses this connection.
  if (sqlite3_open_v2(path.c_str(), &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX, nullptr) !=
      SQLITE_OK) {
    return fail("open");
  }
  sqlite3_busy_timeout(db, busy_timeout_ms);
  // A connection opens the log when it first reads the database; until then
  // a checkpoint through it is a successful no-op (SQLite 3.40).
  if (sqlite3_exec(db, "SELECT 1 FROM sqlite_schema LIMIT 1", nullptr, nullptr, nullptr) !=
      SQLITE_OK) {
    return fail("read");
  }
  std::unique_ptr<WalCheckpointer> checkpointer(new WalCheckpointer(db));
  checkpointer->thread_ = std::thread([raw = checkpointer.get()] { raw->Loop(); });
  return checkpointer;
}

WalCheckpointer::WalCheckpointer(sqlite3* db) : db_(db) {}

WalCheckpointer::~WalCheckpointer() { Stop(); }

void WalCheckpointer::Request() {
  std::lock_guard lock(mu_);
  if (stopping_) return;
  requested_ = true;
  wake_.notify_one();
}

void WalCheckpointer::WaitIdle() {
  std::unique_lock lock(mu_);
  idle_.wait(lock, [&] { return stopping_ || (!requested_ && !running_); });
}

void WalCheckpointer::Stop() {
  {
    std::lock_guard lock(mu_);
    stopping_ = true;
    requested_ = false;
    wake_.notify_one();
    idle_.notify_all();
  }
  if (thread_.joinable()) thread_.join();
  if (db_ != nullptr) {
    sqlite3_close_v2(db_);
    db_ = nullptr;
  }
}

uint64_t WalCheckpointer::completed() const {
  std::lock_guard lock(mu_);
  return completed_;
}

uint64_t WalCheckpointer::failed() const {
  std::lock_guard lock(mu_);
  return failed_;
}

void WalCheckpointer::Loop() {
  SetThreadName("sluice-ckpt");
  std::unique_lock lock(mu_);
  for (;;) {
    wake_.wait(lock, [&] { return stopping_ || requested_; });
    if (stopping_) break;
    requested_ = false;
    running_ = true;
    lock.unlock();
    // PASSIVE: copies what it can without waiting for the writer or the
    // readers; never blocks the writer's commits.
    const int rc =
        sqlite3_wal_checkpoint_v2(db_, nullptr, SQLITE_CHECKPOINT_PASSIVE, nullptr, nullptr);
    lock.lock();
    running_ = false;
    if (rc == SQLITE_OK) {
      ++completed_;
    } else {
      ++failed_;
    }
    if (!requested_) idle_.notify_all();
  }
  running_ = false;
  idle_.notify_all();
}

}  // namespace sluice
