// Process-wide SQLite settings, applied once before the first connection.
//
// Thread safety: ConfigureSqliteForProcess may be called from any thread,
// any number of times; the settings are applied at most once.
#pragma once

namespace sluice {

// Turns off SQLite's memory statistics (SQLITE_CONFIG_MEMSTATUS): with them
// on, as Debian builds it, every sqlite3_malloc and sqlite3_free in the
// process takes one global mutex to keep the counters, so the store writer,
// the cache lookups, the checkpointer and the aggregator's index all queue
// on it. Nothing here reads those counters (sqlite3_db_status per
// connection does not need them). Must run before SQLite initialises: call
// it before opening any connection. When something else in the process
// has already used SQLite (an application embedding sluice), the setting is
// refused and SQLite keeps its own: harmless, only slower.
void ConfigureSqliteForProcess();

}  // namespace sluice
