// The JSON aggregator's scratch chunk index: a SQLite database beside the
// spool holding (group, id, source, ordinal, spool span) per chunk behind a
// bounded page cache, written in batched transactions (json_aggregator.h).
#include "aggregate/json_aggregator.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <functional>
#include <limits>
#include <unordered_set>
#include <utility>

#include <fmt/format.h>
#include <simdjson.h>
#include <sqlite3.h>

#include "aggregate/aggregate_util.h"
#include "common/json_writer.h"
#include "common/private_file.h"
#include "common/sqlite_process.h"

namespace sluice {

namespace fs = std::filesystem;
using namespace aggregate;  // the folder's shared helpers (aggregate_util.h)

Status JsonAggregator::IndexError(std::string_view what) const {
  return Status::IOError(fmt::format("aggregate index '{}': {}: {}", index_path_, what,
                                     db_ != nullptr ? sqlite3_errmsg(db_) : "out of memory"));
}

namespace {

// Imported rows of a source that this run re-added, to this group or to
// another one (its domain or category changed), are superseded.
constexpr const char* kVisible =
    " FROM chunk c WHERE c.g=?1 AND (c.imported=0 OR NOT EXISTS"
    " (SELECT 1 FROM seen s WHERE s.src=c.src))";
const std::string kCountSql = std::string("SELECT count(*)") + kVisible;
const std::string kSourcesSql = std::string("SELECT DISTINCT c.src") + kVisible + " ORDER BY c.src";
const std::string kChunksSql =
    std::string("SELECT c.off, c.len") + kVisible + " ORDER BY c.src, c.ord, c.id";

// What a run of pragmas answers, each value followed by a space ("" when
// they fail). A pragma that cannot switch a mode answers the mode still in
// force rather than failing, so the answers are what to check.
std::string PragmaAnswers(sqlite3* db, const char* pragmas) {
  std::string answers;
  const auto take = [](void* out, int, char** values, char**) {
    if (values[0] != nullptr) *static_cast<std::string*>(out) += std::string(values[0]) + " ";
    return 0;
  };
  if (sqlite3_exec(db, pragmas, take, &answers, nullptr) != SQLITE_OK) return "";
  return answers;
}

}  // namespace

Status JsonAggregator::OpenIndex() {
  // Scratch space, rebuilt by rerunning: no journal, no fsync, one
  // exclusive connection (used by one thread at a time, so no mutex) except
  // while a background rewrite runs (OpenSnapshotReader). The page cache is
  // the only part held in RAM.
  ::unlink(index_path_.c_str());
  ConfigureSqliteForProcess();
  if (sqlite3_open_v2(index_path_.c_str(), &db_,
                      SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX,
                      nullptr) != SQLITE_OK) {
    return IndexError("cannot open");
  }
  // A row per chunk id in the group's document order, keyed (g, src, ord,
  // id): INSERT OR REPLACE makes the latest copy win. A chunk id is a hash
  // of its source, ordinal and text (MakeChunkId, PieceChunkId), so an id
  // comes with one (src, ord) and the key is unique per id within a group.
  // There is no (g, id) index: it answered nothing the key does not, and
  // inserting each chunk's random id into it was ~8% of an offline run's CPU
  // (132k chunks: 4.45-4.65 -> 4.05-4.26 s, BENCHMARKS.md). Only a
  // hand-edited group file that gives one id two ordinals keeps both rows.
  // Ids and sources are BLOBs: compared byte-wise, never re-encoded.
  const std::string setup = fmt::format(
      "PRAGMA journal_mode=OFF; PRAGMA synchronous=OFF; PRAGMA locking_mode=EXCLUSIVE;"
      "PRAGMA temp_store=FILE; PRAGMA cache_size=-{};"
      "CREATE TABLE chunk(g INTEGER NOT NULL, src BLOB NOT NULL, ord INTEGER NOT NULL,"
      " id BLOB NOT NULL, off INTEGER NOT NULL, len INTEGER NOT NULL, imported INTEGER NOT NULL,"
      " PRIMARY KEY(g, src, ord, id)) WITHOUT ROWID;"
      "CREATE TABLE seen(src BLOB PRIMARY KEY) WITHOUT ROWID;",
      std::max<size_t>(limits_.index_cache_bytes / 1024, 64));
  if (sqlite3_exec(db_, setup.c_str(), nullptr, nullptr, nullptr) != SQLITE_OK) {
    return IndexError("cannot create");
  }
  const std::pair<sqlite3_stmt**, std::string> statements[] = {
      {&insert_,
       "INSERT OR REPLACE INTO chunk(g, src, ord, id, off, len, imported)"
       " VALUES(?1, ?2, ?3, ?4, ?5, ?6, ?7)"},
      {&seen_, "INSERT OR IGNORE INTO seen(src) VALUES(?1)"},
      {&was_seen_, "SELECT 1 FROM seen WHERE src=?1"},
      {&count_, kCountSql},
      {&sources_, kSourcesSql},
      {&all_sources_, "SELECT DISTINCT src FROM chunk WHERE g=?1 ORDER BY src"},
      {&chunks_, kChunksSql},
      {&clear_chunks_, "DELETE FROM chunk WHERE g=?1"},
      {&drop_source_, "DELETE FROM chunk WHERE g=?1 AND src=?2"},
      {&drop_chunk_, "DELETE FROM chunk WHERE g=?1 AND src=?2 AND ord=?3 AND id=?4"},
      // Keyset pagination over the primary key (g, src, ord, id).
      {&page_ids_,
       "SELECT ord, id FROM chunk WHERE g=?1 AND src=?2 AND (ord, id) > (?3, ?4)"
       " ORDER BY ord, id LIMIT ?5"},
  };
  for (const auto& [stmt, sql] : statements) {
    if (sqlite3_prepare_v3(db_, sql.c_str(), -1, SQLITE_PREPARE_PERSISTENT, stmt, nullptr) !=
        SQLITE_OK) {
      return IndexError("cannot prepare");
    }
  }
  return Status::OK();
}

Status JsonAggregator::OpenSnapshotReader() {
  // A background rewrite reads a snapshot through a second connection while
  // this one goes on committing: that needs WAL and shared locks, for as
  // long as the rewrite runs only (LeaveWal): in WAL every page the index
  // commits is written twice, the log and the checkpoint (measured on a
  // 288k-chunk offline run with WAL kept on after the first background
  // rewrite: +205k pwrite and +103k pread calls, 0.8-1.4 s more wall).
  // REQUIRES: no open transaction on db_.
  if (PragmaAnswers(db_, "PRAGMA locking_mode=NORMAL; PRAGMA journal_mode=WAL;") != "normal wal ") {
    return IndexError("cannot switch to WAL");
  }
  const auto fail = [&](std::string_view what) {
    Status s = Status::IOError(
        fmt::format("aggregate index '{}': {}: {}", index_path_, what,
                    snapshot_.db != nullptr ? sqlite3_errmsg(snapshot_.db) : "out of memory"));
    CloseSnapshotReader();
    return s;
  };
  if (sqlite3_open_v2(index_path_.c_str(), &snapshot_.db,
                      SQLITE_OPEN_READONLY | SQLITE_OPEN_NOMUTEX, nullptr) != SQLITE_OK) {
    return fail("cannot open a reader");
  }
  const std::string setup =
      fmt::format("PRAGMA cache_size=-{};", std::max<size_t>(limits_.index_cache_bytes / 1024, 64));
  if (sqlite3_exec(snapshot_.db, setup.c_str(), nullptr, nullptr, nullptr) != SQLITE_OK) {
    return fail("cannot set up a reader");
  }
  for (const auto& [stmt, sql] :
       {std::pair{&snapshot_.count, &kCountSql}, std::pair{&snapshot_.sources, &kSourcesSql},
        std::pair{&snapshot_.chunks, &kChunksSql}}) {
    if (sqlite3_prepare_v3(snapshot_.db, sql->c_str(), -1, SQLITE_PREPARE_PERSISTENT, stmt,
                           nullptr) != SQLITE_OK) {
      return fail("cannot prepare a reader");
    }
  }
  return Status::OK();
}

Status JsonAggregator::LeaveWal() {
  CloseSnapshotReader();
  if (Status s = CommitBatch(); !s.ok()) return s;
  if (PragmaAnswers(db_, "PRAGMA journal_mode=OFF; PRAGMA locking_mode=EXCLUSIVE;") !=
      "off exclusive ") {
    return IndexError("cannot leave WAL");
  }
  return Status::OK();
}

void JsonAggregator::CloseSnapshotReader() {
  for (sqlite3_stmt** stmt : {&snapshot_.count, &snapshot_.sources, &snapshot_.chunks}) {
    sqlite3_finalize(*stmt);
    *stmt = nullptr;
  }
  if (snapshot_.db != nullptr) sqlite3_close(snapshot_.db);
  snapshot_.db = nullptr;
}

size_t JsonAggregator::IndexMemoryBytes() const {
  if (db_ == nullptr) return 0;
  size_t total = 0;
  for (int op :
       {SQLITE_DBSTATUS_CACHE_USED, SQLITE_DBSTATUS_SCHEMA_USED, SQLITE_DBSTATUS_STMT_USED}) {
    int current = 0, highwater = 0;
    if (sqlite3_db_status(db_, op, &current, &highwater, 0) == SQLITE_OK) {
      total += static_cast<size_t>(current);
    }
  }
  return total;
}

size_t JsonAggregator::HeldBytes() const {
  return buffered_bytes_ + IndexMemoryBytes() + parser_->capacity();
}

Status JsonAggregator::CommitBatch() {
  if (batch_rows_ == 0) return Status::OK();
  batch_rows_ = 0;
  if (sqlite3_exec(db_, "COMMIT", nullptr, nullptr, nullptr) != SQLITE_OK) {
    return IndexError("cannot commit");
  }
  return Status::OK();
}

Status JsonAggregator::ClearGroup(Group& g) {
  {
    sqlite3_bind_int64(clear_chunks_, 1, g.index_id);
    const int rc = sqlite3_step(clear_chunks_);
    sqlite3_reset(clear_chunks_);
    if (rc != SQLITE_DONE) return IndexError("cannot clear a group");
  }
  buffered_bytes_ -= g.buffer.size();
  std::string().swap(g.buffer);
  ::unlink(g.spool_path.c_str());
  g.spool_bytes = 0;
  g.has_imports = false;
  return Status::OK();
}

Status JsonAggregator::AddLine(Group& g, std::string_view id, std::string_view source_id,
                               uint32_t ordinal, std::string_view line, bool imported) {
  if (batch_rows_ == 0 && sqlite3_exec(db_, "BEGIN", nullptr, nullptr, nullptr) != SQLITE_OK) {
    return IndexError("cannot begin");
  }
  ++batch_rows_;
  if (!imported) {
    Status s = MarkSourceSeen(source_id);
    if (!s.ok()) return s;
  }
  {
    StatementScope scope(insert_);
    sqlite3_bind_int64(insert_, 1, g.index_id);
    BindBytes(insert_, 2, source_id);
    sqlite3_bind_int64(insert_, 3, ordinal);
    BindBytes(insert_, 4, id);
    sqlite3_bind_int64(insert_, 5, static_cast<int64_t>(g.spool_bytes + g.buffer.size()));
    sqlite3_bind_int64(insert_, 6, static_cast<int64_t>(line.size()));
    sqlite3_bind_int(insert_, 7, imported ? 1 : 0);
    // The latest copy of an id wins; the old line becomes dead spool.
    if (sqlite3_step(insert_) != SQLITE_DONE) return IndexError("cannot add a chunk");
  }
  g.buffer.append(line);
  g.buffer.push_back('\n');
  buffered_bytes_ += line.size() + 1;
  if (batch_rows_ >= limits_.index_batch_rows) return CommitBatch();
  return Status::OK();
}

Status JsonAggregator::MarkSourceSeen(std::string_view source_id) {
  // Chunks arrive grouped by source, so one row per run of a source is
  // enough. Every group consults it (a source may have moved groups).
  if (source_id == last_seen_source_) return Status::OK();
  StatementScope scope(seen_);
  BindBytes(seen_, 1, source_id);
  if (sqlite3_step(seen_) != SQLITE_DONE) return IndexError("cannot record a source");
  last_seen_source_.assign(source_id);
  any_seen_ = true;
  return Status::OK();
}

void JsonAggregator::CloseIndex() {
  CancelBackgroundRewrite();  // it reads through the connections closed here
  CloseSnapshotReader();
  for (sqlite3_stmt** stmt : {&insert_, &seen_, &was_seen_, &count_, &sources_, &all_sources_,
                              &chunks_, &clear_chunks_, &drop_source_, &drop_chunk_, &page_ids_}) {
    sqlite3_finalize(*stmt);
    *stmt = nullptr;
  }
  if (db_ != nullptr) sqlite3_close(db_);
  db_ = nullptr;
  batch_rows_ = 0;
}

}  // namespace sluice
