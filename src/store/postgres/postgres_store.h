// The PostgreSQL store: upserts embedded chunks into a chunks table and a
// sources table over libpq, with a small pool of connections.
//
// Write path (see docs/POSTGRES.md):
//   - real PostgreSQL: binary COPY into a per-session temporary staging table,
//     then INSERT ... SELECT ... ON CONFLICT (id) DO UPDATE ... WHERE the row
//     changed, and the sources upsert, in one transaction per batch_rows rows;
//   - PGlite (detected by "PGlite" in version(); its COPY FROM STDIN hangs the
//     server and all its connections share one backend): prepared multi-row
//     INSERT ... ON CONFLICT with binary parameters, one connection.
// A data error (e.g. a wrong dimension) rolls the batch back and replays it row
// by row under savepoints: bad rows come back in WriteResult::rejected with the
// server's message, the rest commits. A lost connection (server restart)
// reconnects with capped, jittered backoff and replays the uncommitted batch
// for up to StoreOptions::reconnect_timeout_s, then returns Unavailable.
//
// Thread safety: Write, Search and Stats may be called from several threads at
// once; each call checks out its own pooled connection (pool_size of them;
// callers beyond that wait). One Write of more than batch_rows rows is split
// into batch_rows transactions written in parallel on up to pool_size
// connections. Flush and Close must not race with writes.
#pragma once

#include <memory>
#include <string>

#include "sluice/store.h"

namespace sluice {

// What the schema probe decided; exposed for tests and the run report.
struct PostgresSchemaInfo {
  bool pgvector = false;   // the embedding column is vector(N)
  bool copy_path = false;  // writes use binary COPY (false on PGlite)
  int dimensions = 0;      // 0 until the schema exists
  std::string chunks_table;
  std::string sources_table;
};

// Returns the probe results of a store opened by OpenPostgresStore, or an
// empty optional-like default when `store` is not a PostgreSQL store.
PostgresSchemaInfo GetPostgresSchemaInfo(Store& store);

}  // namespace sluice
