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
  size_t batch_rows = 200;       // Default: 200 (SQLite), 500 (PostgreSQL). Rows per transaction.
  std::string table = "chunks";  // chunks table name; the sources table is "<table>_sources"
                                 // except for the default name, whose sources table is "sources".
  int dimensions = 0;            // expected vector length; 0: taken from the first batch
  int pool_size = 2;             // PostgreSQL: parallel writer connections
  std::string create_index;      // PostgreSQL + pgvector: "", "hnsw" or "ivfflat"
  // PostgreSQL: how long a batch keeps reconnecting and replaying after the
  // connection drops (server restart) before Write returns Unavailable.
  double reconnect_timeout_s = 60;
  // The embedding cache's namespace (the embedder's model and requested
  // dimensions, e.g. "text-embedding-3-small:256"). Non-empty: Write also
  // records every accepted row's vector under (namespace, text) in the same
  // transaction, and LookupEmbeddings answers from it. Empty: no cache.
  std::string embedding_cache_namespace;
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

// What the store remembers of one input file after all its chunks were
// stored or dead-lettered (docs/RESUME.md). `file_id` is the file's path
// relative to its ingested root (the source id of a plain file; a JSONL file
// holds several sources under one file_id).
struct SourceFingerprint {
  std::string file_id;
  std::string path;  // as opened, for --cleanup full and verify
  uint64_t size_bytes = 0;
  int64_t mtime_ns = 0;
  std::string content_hash;  // hex XXH3-128 of the file's bytes
  uint64_t chunk_count = 0;
};

// A completed file: its fingerprint and the ids of ALL its current chunks.
// Committing it deletes the chunks the file had before that are not listed.
struct SourceManifest {
  SourceFingerprint fingerprint;
  std::vector<std::string> chunk_ids;
  // false (--cleanup none): keep the file's earlier chunks; they stay listed
  // in its fingerprint together with the new ones.
  bool delete_stale = true;
  // true: only the file facts (size, mtime, hash) changed, its content did
  // not; chunk_ids is ignored and the recorded ids are kept.
  bool facts_only = false;
};

// One finding of Store::Verify.
struct VerifyProblem {
  std::string kind;     // "missing_chunk", "orphan_chunk", "wrong_dimensions", "count_mismatch"
  std::string subject;  // a chunk id or file id
  std::string detail;
};

// A cached embedding (see StoreOptions::embedding_cache_namespace).
struct CachedEmbedding {
  std::vector<float> embedding;  // empty: not cached
  std::string model;
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

  // --- Resume, incremental re-ingest and cache (docs/RESUME.md). ---
  // A store that does not implement these returns InvalidArgument
  // ("not supported by this store"); the pipeline then runs without them.

  // Every fingerprint in the store (bounded by the number of input files).
  virtual Result<std::vector<SourceFingerprint>> LoadFingerprints() { return NotSupported(); }
  // In one transaction: upserts each manifest's fingerprint and deletes that
  // file's previously recorded chunks that are not in its chunk_ids. Returns
  // the number of chunks deleted. REQUIRES: the listed chunks are committed.
  virtual Result<uint64_t> CommitSources(std::span<const SourceManifest> /*completed*/) {
    return NotSupported();
  }
  // In one transaction: deletes these files' fingerprints and recorded chunks.
  // Returns the number of chunks deleted.
  virtual Result<uint64_t> DeleteSources(std::span<const std::string> /*file_ids*/) {
    return NotSupported();
  }
  // Looks `texts` up in the embedding cache under `cache_namespace`;
  // out[i].embedding is empty for a miss. May run on a second Store object
  // while another one writes.
  virtual Status LookupEmbeddings(std::string_view /*cache_namespace*/,
                                  std::span<const std::string_view> /*texts*/,
                                  std::vector<CachedEmbedding>& /*out*/) {
    return NotSupported();
  }
  // The chunk ids recorded in `file_id`'s fingerprint (empty when none).
  virtual Result<std::vector<std::string>> FileChunkIds(const std::string& /*file_id*/) {
    return NotSupported();
  }
  // The stored chunks with these ids (missing ids are left out), with vectors.
  virtual Result<std::vector<EmbeddedChunk>> ReadChunks(
      std::span<const std::string> /*chunk_ids*/) {
    return NotSupported();
  }
  // Checks the store's own consistency: every fingerprinted file's chunks are
  // present, no chunk belongs to no file (orphan), every vector has the
  // store's dimension. Appends what is wrong to `problems` (at most `limit`).
  virtual Status Verify(std::vector<VerifyProblem>& /*problems*/, size_t /*limit*/) {
    return NotSupported();
  }

 protected:
  static Status NotSupported() { return Status::InvalidArgument("not supported by this store"); }
};

// Opens the store named by `uri` (see above) with a clear error for a bad URI,
// a missing directory or an unreachable server.
Result<std::unique_ptr<Store>> OpenStore(std::string_view uri, const StoreOptions& options);

// Per-implementation factories (each in its own folder).
Result<std::unique_ptr<Store>> OpenSqliteStore(const std::string& path,
                                               const StoreOptions& options);
Result<std::unique_ptr<Store>> OpenPostgresStore(const std::string& conninfo,
                                                 const StoreOptions& options);

// Removes any password from a URI or conninfo string for display.
std::string RedactUri(std::string_view uri);

}  // namespace sluice
