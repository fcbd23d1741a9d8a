// A store table's chunks and fingerprints, sorted, in one comparable form:
// for tests that check one store equals another (a distributed job against a
// single-process ingest of the same corpus).
#pragma once

#include <libpq-fe.h>

#include <gtest/gtest.h>

#include <algorithm>
#include <string>
#include <vector>

#include "store/postgres/pg_test_util.h"

namespace sluice::pgtest {

inline std::vector<std::string> Dump(const std::string& dsn, const std::string& table) {
  RawPg pg(dsn);
  EXPECT_TRUE(pg.ok()) << PQerrorMessage(pg.get());
  const std::string queries[] = {
      "SELECT 'c', id, source_id, file_id, ordinal, text, domain, category, metadata::text, "
      "embedding::text, model, dims FROM \"" +
          table + "\"",
      "SELECT 'f', file_id, chunk_count, size_bytes, mtime_ns, content_hash FROM \"" + table +
          "_files\""};
  std::vector<std::string> rows;
  for (const std::string& sql : queries) {
    PGresult* r = PQexec(pg.get(), sql.c_str());
    if (PQresultStatus(r) != PGRES_TUPLES_OK) {
      ADD_FAILURE() << sql << ": " << PQresultErrorMessage(r);
    } else {
      for (int i = 0; i < PQntuples(r); ++i) {
        std::string row;
        for (int j = 0; j < PQnfields(r); ++j) {
          row += PQgetisnull(r, i, j) ? "NULL" : PQgetvalue(r, i, j);
          row += '|';
        }
        rows.push_back(std::move(row));
      }
    }
    PQclear(r);
  }
  std::sort(rows.begin(), rows.end());
  return rows;
}

}  // namespace sluice::pgtest
