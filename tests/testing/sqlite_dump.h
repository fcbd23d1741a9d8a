// Reads a SQLite database into comparable rows: each query's rows as
// "col|col|...|" strings (NULL spelled out), all sorted, so two stores can be
// compared with EXPECT_EQ.
#pragma once

#include <gtest/gtest.h>
#include <sqlite3.h>

#include <algorithm>
#include <initializer_list>
#include <map>
#include <string>
#include <vector>

namespace sluice::testing {

inline std::vector<std::string> DumpSqliteRows(const std::string& db,
                                               std::initializer_list<const char*> queries) {
  std::vector<std::string> rows;
  sqlite3* h = nullptr;
  EXPECT_EQ(sqlite3_open_v2(db.c_str(), &h, SQLITE_OPEN_READONLY, nullptr), SQLITE_OK);
  for (const char* sql : queries) {
    sqlite3_stmt* st = nullptr;
    EXPECT_EQ(sqlite3_prepare_v2(h, sql, -1, &st, nullptr), SQLITE_OK) << sql;
    while (sqlite3_step(st) == SQLITE_ROW) {
      std::string row;
      for (int i = 0; i < sqlite3_column_count(st); ++i) {
        const unsigned char* t = sqlite3_column_text(st, i);
        row += (t ? reinterpret_cast<const char*>(t) : "NULL");
        row += '|';
      }
      rows.push_back(row);
    }
    sqlite3_finalize(st);
  }
  sqlite3_close(h);
  std::sort(rows.begin(), rows.end());
  return rows;
}

// A stored chunk as the SQLite store holds it: text and float32 vector.
struct StoredChunk {
  std::string text;
  std::vector<float> embedding;
  bool operator==(const StoredChunk&) const = default;
};

// Every row of the `chunks` table by id; a repeated id is a test failure.
inline std::map<std::string, StoredChunk> ReadStoredChunks(const std::string& db) {
  std::map<std::string, StoredChunk> rows;
  sqlite3* h = nullptr;
  EXPECT_EQ(sqlite3_open_v2(db.c_str(), &h, SQLITE_OPEN_READONLY, nullptr), SQLITE_OK);
  sqlite3_stmt* st = nullptr;
  EXPECT_EQ(sqlite3_prepare_v2(h, "SELECT id, text, embedding FROM chunks", -1, &st, nullptr),
            SQLITE_OK);
  while (sqlite3_step(st) == SQLITE_ROW) {
    StoredChunk row;
    row.text = reinterpret_cast<const char*>(sqlite3_column_text(st, 1));
    const auto* blob = static_cast<const float*>(sqlite3_column_blob(st, 2));
    row.embedding.assign(blob, blob + sqlite3_column_bytes(st, 2) / sizeof(float));
    const std::string id = reinterpret_cast<const char*>(sqlite3_column_text(st, 0));
    EXPECT_TRUE(rows.emplace(id, std::move(row)).second) << "duplicate id " << id;
  }
  sqlite3_finalize(st);
  sqlite3_close(h);
  return rows;
}

}  // namespace sluice::testing
