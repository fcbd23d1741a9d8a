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

#include "sluice/clock.h"
#include "sluice/status.h"
#include "sluice/types.h"

namespace sluice {

struct StoreOptions {
  size_t batch_rows = 0;         // rows per transaction; 0: the store's own (RowsPerTransaction)
  std::string table = "chunks";  // chunks table name; the sources table is "<table>_sources"
                                 // except for the default name, whose sources table is "sources".
  int dimensions = 0;            // expected vector length; 0: taken from the first batch
  int pool_size = 2;             // PostgreSQL: parallel writer connections
  std::string create_index;      // PostgreSQL + pgvector: "", "hnsw" or "ivfflat"
  // PostgreSQL: how long a batch keeps reconnecting and replaying after the
  // connection drops (server restart) before Write returns Unavailable.
  double reconnect_timeout_s = 60;
  // What the store's retries wait on (PostgreSQL's replays after a lost
  // connection); null: the system clock. Must outlive the store.
  const Clock* clock = nullptr;
  // The embedding cache's namespace (the embedder's model and requested
  // dimensions, e.g. "text-embedding-3-small:256"). Non-empty: Write also
  // records every accepted row's vector under (namespace, text) in the same
  // transaction, and LookupEmbeddings answers from it. Empty: no cache.
  std::string embedding_cache_namespace;
  // This ingest run (any value unique per run; 0: none). Non-zero: Write also
  // records, in the same transaction, that this run produced each accepted
  // chunk that has a file_id; CommitSources uses these records to tell a
  // file's current chunks from its stale ones, so no process ever holds a
  // file's list of chunk ids (memory stays flat for a file of any size).
  uint64_t run_id = 0;
  // The embedding model this run writes with (EmbeddingTransport::ModelName).
  // Non-empty: opening a store that holds another model's vectors, or
  // vectors of another length than a non-zero `dimensions`, fails with
  // InvalidArgument naming both (a store belongs to one model and dimension).
  std::string model;
  // true (--reembed): a store of another (or the same) model is emptied when
  // opened: chunks, sources, fingerprints, run records, embedding cache and
  // its recorded model and dimensions, so the run re-embeds everything and
  // the store takes this run's model and dimensions.
  bool reembed = false;
  // true: the store is only read (search, verify): a missing SQLite file is
  // NotFound instead of being created, and no writer lock is taken.
  bool read_only = false;
  // true: hold the store's writer lock for the life of the Store, so a second
  // run into the same store fails at once with StatusCode::kBusy ("... is in
  // use by another sluice run (pid N)"). SQLite takes it (a run's stale-chunk
  // deletion is only safe with one writer); PostgreSQL needs none (runs are
  // safe side by side there) and ignores it.
  bool exclusive_run = false;
};

// The model and dimension a store's vectors were made with ("", 0: nothing
// stored yet).
struct StoreModel {
  std::string model;
  int dimensions = 0;
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
  // The chunks the file produced in the run that committed it (pieces of a
  // split chunk counted, dead-lettered ones included); with --cleanup none,
  // plus the earlier chunks it kept.
  uint64_t chunk_count = 0;
};

// A completed file. Its current chunks are the ones StoreOptions::run_id
// recorded for it in this run (Chunk::file_id); committing it deletes the
// file's other stored chunks.
struct SourceManifest {
  SourceFingerprint fingerprint;  // chunk_count: what this run produced
  uint64_t run_id = 0;            // the run whose records name the current chunks
  // false (--cleanup none): keep the file's earlier chunks (counted in its
  // chunk_count).
  bool delete_stale = true;
  // true: only the file facts (size, mtime, hash) changed, its content did
  // not; the recorded chunk_count is kept and nothing is deleted.
  bool facts_only = false;
  // Of this run's chunks of the file, those stored (chunk_count less the
  // dead-lettered ones); what a distributed worker adds to its job's count.
  uint64_t chunks_stored = 0;
};

// One finding of Store::Verify.
struct VerifyProblem {
  // "missing_chunk" (subject: a file id; fewer of its chunks stored than its
  // fingerprint counts), "orphan_chunk" (a chunk id; no sources row),
  // "wrong_dimensions" (a chunk id), "count_mismatch" (a file id with more
  // chunks stored than its fingerprint counts, i.e. stale ones; or a source
  // id whose sources row miscounts its chunks).
  std::string kind;
  std::string subject;
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
  // The model and dimension of the stored vectors (see StoreModel), so that
  // a query is embedded the way the store was. Optional.
  virtual Result<StoreModel> StoredModel() { return NotSupported(); }

  // How the store wants to be fed, so that no caller guesses from the URI:
  // rows per transaction (StoreOptions::batch_rows, or the store's own
  // default), and how many such transactions one Write runs at once (a
  // pool's connections). A writer gives each Write about
  // RowsPerTransaction() * ParallelWrites() rows. Optional: the defaults
  // suit a store with one connection.
  virtual size_t RowsPerTransaction() const { return kDefaultRowsPerTransaction; }
  virtual int ParallelWrites() const { return 1; }
  static constexpr size_t kDefaultRowsPerTransaction = 200;

  // --- Resume, incremental re-ingest and cache (docs/RESUME.md). ---
  // A store that does not implement these returns InvalidArgument
  // ("not supported by this store"); the pipeline then runs without them.

  // Every fingerprint in the store (bounded by the number of input files).
  virtual Result<std::vector<SourceFingerprint>> LoadFingerprints() { return NotSupported(); }
  // In one transaction, per manifest: upserts the fingerprint; unless
  // delete_stale is false or facts_only, deletes the file's stored chunks
  // (file_id = the file's, or, for rows written before chunks had a
  // file_id, source_id = the file's) that manifest.run_id did not record for
  // it; and forgets every run's records of the file. Returns the number of
  // chunks deleted. REQUIRES: the run's chunks of these files are committed.
  virtual Result<uint64_t> CommitSources(std::span<const SourceManifest> /*completed*/) {
    return NotSupported();
  }
  // In one transaction: deletes these files' fingerprints, stored chunks and
  // run records. Returns the number of chunks deleted.
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
  // Whether LookupEmbeddings could answer any text now. False only when the
  // store holds no vector its lookups read (a new or emptied store): the
  // cache stage then looks up only texts this run has already sent to be
  // embedded (pipeline/seen_texts.h). True when a store cannot tell.
  virtual Result<bool> MayHoldCachedEmbeddings() { return true; }
  // The ids of the chunks stored for `file_id`, by source id and ordinal
  // (empty when none).
  virtual Result<std::vector<std::string>> FileChunkIds(const std::string& /*file_id*/) {
    return NotSupported();
  }
  // The stored chunks with these ids (missing ids are left out), with vectors.
  virtual Result<std::vector<EmbeddedChunk>> ReadChunks(
      std::span<const std::string> /*chunk_ids*/) {
    return NotSupported();
  }
  // Checks the store's own consistency: every fingerprinted file has as many
  // chunks stored as it counts (fewer: missing; more: stale), every chunk has
  // a sources row, every sources row counts its chunks, every vector has the
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

// The error for a store opened by a run of another model or dimension: names
// both (the store's and the run's; dimensions 0: the model's default) and how
// to proceed (--reembed, or another store). Inline: each store's library uses
// it without linking the factory.
inline Status StoreModelMismatch(std::string_view store, const StoreModel& stored,
                                 std::string_view model, int dimensions) {
  std::string msg = "store '" + std::string(store) + "' holds " +
                    std::to_string(stored.dimensions) + "-dimension vectors";
  if (dimensions > 0 && dimensions != stored.dimensions) {
    msg += " but " + std::to_string(dimensions) + " dimensions were asked for";
  }
  msg += " (store: model '" + stored.model + "', " + std::to_string(stored.dimensions) +
         " dimensions; this run: ";
  if (!model.empty()) msg += "model '" + std::string(model) + "', ";
  msg += dimensions > 0 ? std::to_string(dimensions) + " dimensions)"
                        : std::string("the model's default dimensions)");
  msg +=
      ": a store holds one model's vectors; pass --reembed to re-embed everything with this "
      "run's model (replacing every stored vector), or use another --store";
  return Status::InvalidArgument(std::move(msg));
}

// Removes any password from a URI or conninfo string for display.
std::string RedactUri(std::string_view uri);

}  // namespace sluice
