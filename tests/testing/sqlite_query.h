// Reading a SQLite store from a test, read-only, while a writer may hold it:
// one column of a query, or the number of stored chunks.
//
// Thread safety: each call opens its own connection; safe from any thread.
#pragma once

#include <gtest/gtest.h>
#include <sqlite3.h>

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace sluice::testing {

// How long a read waits for a writer's lock before it gives up.
inline constexpr int kSqliteBusyTimeoutMs = 5000;

// The first column of every row `sql` returns from the SQLite file `path`
// (NULL as ""); nullopt while it cannot be read: no such file yet, no such
// table yet, or locked by a writer for longer than kSqliteBusyTimeoutMs.
inline std::optional<std::vector<std::string>> TrySqliteColumn(const std::string& path,
                                                               const std::string& sql,
                                                               std::string* why = nullptr) {
  std::optional<std::vector<std::string>> out;
  sqlite3* db = nullptr;
  if (sqlite3_open_v2(path.c_str(), &db, SQLITE_OPEN_READONLY, nullptr) != SQLITE_OK) {
    if (why != nullptr) *why = "cannot open " + path;
    sqlite3_close(db);
    return out;
  }
  sqlite3_busy_timeout(db, kSqliteBusyTimeoutMs);
  sqlite3_stmt* st = nullptr;
  if (sqlite3_prepare_v2(db, sql.c_str(), -1, &st, nullptr) != SQLITE_OK) {
    if (why != nullptr) *why = sql + ": " + sqlite3_errmsg(db);
  } else {
    std::vector<std::string> rows;
    int rc = SQLITE_OK;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
      const unsigned char* text = sqlite3_column_text(st, 0);
      rows.emplace_back(text != nullptr ? reinterpret_cast<const char*>(text) : "");
    }
    if (rc == SQLITE_DONE) {
      out = std::move(rows);
    } else if (why != nullptr) {
      *why = sql + ": " + sqlite3_errmsg(db);
    }
  }
  sqlite3_finalize(st);
  sqlite3_close(db);
  return out;
}

// TrySqliteColumn for a store that must be readable: a failure otherwise.
inline std::vector<std::string> SqliteColumn(const std::string& path, const std::string& sql) {
  std::string why;
  std::optional<std::vector<std::string>> rows = TrySqliteColumn(path, sql, &why);
  if (!rows) {
    ADD_FAILURE() << why;
    return {};
  }
  return *rows;
}

// Rows in the `chunks` table of the SQLite store `path`; -1 while it cannot
// be read (see TrySqliteColumn), so a test can poll it while a run writes.
inline int64_t StoredChunkCount(const std::string& path) {
  const std::optional<std::vector<std::string>> rows =
      TrySqliteColumn(path, "SELECT count(*) FROM chunks");
  if (!rows || rows->size() != 1) return -1;
  return std::stoll(rows->front());
}

}  // namespace sluice::testing
