// Its own executable: the setting only takes before SQLite initialises,
// so no other test may have touched SQLite in this process first.
#include "common/sqlite_process.h"

#include <gtest/gtest.h>
#include <sqlite3.h>

namespace sluice {
namespace {

TEST(SqliteProcessTest, MemoryStatisticsAreOffSoAllocationsTakeNoGlobalMutex) {
  ConfigureSqliteForProcess();
  ConfigureSqliteForProcess();  // again: harmless
  sqlite3* db = nullptr;
  ASSERT_EQ(sqlite3_open(":memory:", &db), SQLITE_OK);
  ASSERT_EQ(sqlite3_exec(db,
                         "CREATE TABLE t(x TEXT); WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL "
                         "SELECT i + 1 FROM n WHERE i < 1000) INSERT INTO t SELECT "
                         "printf('%.*c', 500, 'x') FROM n;",
                         nullptr, nullptr, nullptr),
            SQLITE_OK);
  // With the statistics on, this counts the connection's heap (hundreds of
  // KB here); off, SQLite keeps no count, and no lock for it.
  EXPECT_EQ(sqlite3_memory_used(), 0);
  // Per-connection figures (what the aggregator reports) still work.
  int current = 0, highwater = 0;
  ASSERT_EQ(sqlite3_db_status(db, SQLITE_DBSTATUS_CACHE_USED, &current, &highwater, 0), SQLITE_OK);
  EXPECT_GT(current, 0);
  sqlite3_close(db);
}

}  // namespace
}  // namespace sluice
