// Stores persist embedded chunks. Every store upserts by chunk id, so writing
// the same chunk twice (a retry, a rerun) never duplicates it, and writes a
// batch in one transaction: either all of it (minus rejected rows) commits or
// none does.
//
// URIs: "sqlite:PATH" (default "sqlite:sluice.db"), "postgres://..." or
// "postgresql://..." (a libpq URI).
//
// Thread safety: a Store is used by one writer thread, except Search which may
// be called when no write is in progress. Implementations document more.
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "sluice/status.h"
#include "sluice/types.h"

namespace sluice {

struct StoreOptions {
  size_t batch_rows = 200;      // Default: 200 (SQLite), 500 (PostgreSQL). Rows per transaction.
  std::string table = "chunks";  // chunks table name; the sources table is "<table>_sources"
                                 // except for the default name, whose sources table is "sources".
  int dimensions = 0;            // expected vector length; 0: taken from the first batch
  int pool_size = 2;             // PostgreSQL: parallel writer connections
  std::string create_index;      // PostgreSQL + pgvector: "", "hnsw" or "ivfflat"
  // PostgreSQL: how long a batch keeps reconnecting and replaying after the
  // connection drops (server restart) before Write returns Unavailable.
  double reconnect_timeout_s = 60;
};

// A row the store refused for good (e.g. a dimension mismatch) while the rest
// of its batch committed.
struct RejectedRow {
  size_t index = 0;  // position in the batch given to Write
  Status why;
};

struct WriteResult {
  // OK: the batch committed, minus `rejected`. Retryable: nothing committed,
  // write the same batch again. Other errors: nothing committed, give up.
  Status status;
  std::vector<RejectedRow> rejected;
};

struct SearchHit {
  std::string chunk_id;
  std::string source_id;
  uint32_t ordinal = 0;
  std::string text;
  std::string domain;
  std::string category;
  std::string metadata_json;
  double score = 0;  // cosine similarity, higher is nearer
};

struct StoreStats {
  uint64_t chunks = 0;
  uint64_t sources = 0;
};

class Store {
 public:
  virtual ~Store() = default;
  // Upserts `batch` in one transaction (splitting into batch_rows
  // transactions is the caller's job). The sources table is updated in the
  // same transaction.
  virtual WriteResult Write(std::span<const EmbeddedChunk> batch) = 0;
  virtual Status Flush() = 0;
  virtual Status Close() = 0;
  // The k chunks nearest to `query` by cosine similarity.
  virtual Result<std::vector<SearchHit>> Search(std::span<const float> query, int k) = 0;
  virtual Result<StoreStats> Stats() = 0;
  // "sqlite:/path/to.db", "postgres://user@host/db" — never with a password.
  virtual std::string Describe() const = 0;
};

// Opens the store named by `uri` (see above) with a clear error for a bad URI,
// a missing directory or an unreachable server.
Result<std::unique_ptr<Store>> OpenStore(std::string_view uri, const StoreOptions& options);

// Per-implementation factories (each in its own folder).
Result<std::unique_ptr<Store>> OpenSqliteStore(const std::string& path, const StoreOptions& options);
Result<std::unique_ptr<Store>> OpenPostgresStore(const std::string& conninfo,
                                                 const StoreOptions& options);

// Removes any password from a URI or conninfo string for display.
std::string RedactUri(std::string_view uri);

}  // namespace sluice
