// libpq building blocks shared by the parts of the PostgreSQL store: result
// ownership, error classification (what a failed statement means for the
// caller: reconnect, replay, find the bad rows, give up), one pooled
// connection's session state, the replay backoff, quoting and the column
// list every write statement uses.
//
// Thread safety: free functions are pure or act only on the connection they
// are given; a PgConn and a ReplayBackoff belong to one thread at a time.
#pragma once

#include <libpq-fe.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <random>
#include <span>
#include <string>
#include <string_view>
#include <thread>

#include "sluice/clock.h"
#include "sluice/retry_policy.h"
#include "sluice/status.h"

namespace sluice::pg {

struct PgResultDeleter {
  void operator()(PGresult* r) const { PQclear(r); }
};
using PgResult = std::unique_ptr<PGresult, PgResultDeleter>;

// PostgreSQL cuts identifiers at 63 bytes; the longest derived name adds 16.
constexpr size_t kMaxTableNameBytes = 63 - 16;

std::string QuoteIdent(std::string_view name);
std::string QuoteLiteral(std::string_view s);
std::string Trim(std::string s);

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

// The Fault of a failed statement (`res` may be null: a libpq-side failure).
PgError Classify(PGconn* conn, const PGresult* res);

// The waits between replays of work after a lost connection or a transient
// error, until a deadline: the one RetryPolicy (capped exponential, full
// jitter: 100 ms doubling to 5 s) on the store's Clock, so a test with a
// ManualClock runs any number of replays without waiting.
class ReplayBackoff {
 public:
  ReplayBackoff(const Clock& clock, double timeout_s, uint64_t seed)
      : clock_(clock),
        timeout_s_(std::max(0.0, timeout_s)),
        deadline_(clock.Now() +
                  std::chrono::duration_cast<Duration>(std::chrono::duration<double>(timeout_s_))),
        rng_(seed) {}
  // Waits before the next attempt; false (at once) when the deadline passed.
  bool Wait() {
    const TimePoint now = clock_.Now();
    if (now >= deadline_) return false;
    const Duration wait = std::min(policy_.Backoff(++attempt_, std::nullopt, rng_),
                                   deadline_ - now + std::chrono::milliseconds(1));
    if (wait > Duration(0)) clock_.SleepFor(wait);
    return true;
  }
  Status GaveUp(const Status& last) const {
    return Status::Unavailable(last.message() + " (gave up after " + std::to_string(timeout_s_) +
                               " s)");
  }

 private:
  static constexpr RetryPolicyOptions kPolicy{
      .max_attempts = 0,  // unused: the deadline bounds the replays
      .initial_backoff = std::chrono::milliseconds(100),
      .max_backoff = std::chrono::seconds(5),
      .multiplier = 2.0};
  const Clock& clock_;
  double timeout_s_;
  TimePoint deadline_;
  std::mt19937_64 rng_;
  RetryPolicy policy_{kPolicy};
  int attempt_ = 0;
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

// Runs one statement (text format, no parameters) and drains every result so
// the connection is ready for the next command.
PgResult ExecDrain(PGconn* c, const std::string& sql);

// PQexecParams with every parameter in binary format (arrays from
// pg_binary; a text value's binary form is its bytes). Results in
// `result_format` (0 text, 1 binary).
PgResult ExecParams(PGconn* pg, const std::string& sql, std::span<const std::string> params,
                    int result_format);

bool ResultOk(const PGresult* r);

// A text literal escaped by libpq for `pg`'s encoding ("NULL" when `s` is not
// valid in it: the statement then fails as a data error).
std::string EscapeLiteral(PGconn* pg, std::string_view s);

// One value of a result row, binary-safe.
std::string_view Value(const PGresult* r, int row, int col);

// Column list shared by staging, COPY and INSERT (updated_at is defaulted).
// file_id is NULL for a chunk of no file (stdin) and in rows written before
// the column existed.
constexpr const char* kColumns[] = {
    "id",     "source_id", "file_id",  "ordinal", "byte_begin", "byte_end",  "text",
    "domain", "category",  "metadata", "model",   "dims",       "embedding", "token_estimate"};
constexpr int kNumColumns = 14;

std::string ColumnList(std::string_view prefix = "");

// A run is alive while a session holds its advisory lock: the SQL condition
// "run `run_id` (an SQL expression) is dead" (see pg_connection_pool.cc).
std::string RunIsDeadSql(const std::string& run_id);

// Vectors in the embedding cache are little-endian float32 bytes, as in the
// SQLite store's cache, whatever the chunks table's vector type.
void AppendFloatsLE(std::string& out, std::span<const float> values);
std::vector<float> FloatsFromLE(std::string_view bytes);

}  // namespace sluice::pg
