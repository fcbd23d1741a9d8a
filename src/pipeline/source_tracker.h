// Tracks each input file from parse to "complete": a file is complete when
// its parse succeeded and every chunk it produced was stored or
// dead-lettered. Only then may its fingerprint be committed (docs/RESUME.md),
// so a crash or a stop before that leaves no fingerprint and the next run
// redoes the file. A file with a chunk abandoned at stop never completes.
//
// The embed stage may replace an oversize chunk by pieces with new ids (split:
// metadata "split_part"/"split_parts") or by a truncated copy (new id), and
// says so (Replaced) before any piece leaves it. The original is resolved
// when all its pieces are, and the file's chunk_count counts the pieces
// instead of the original.
//
// Which chunks a file has is not tracked here: the store records, per run,
// the chunks it wrote for each file (StoreOptions::run_id, Chunk::file_id).
// Memory: one entry per file being processed and one per chunk still in
// flight (bounded by the pipeline's queues), whatever the size of a file.
//
// Thread safety: thread-safe (one mutex; the readers take it once per chunk
// produced, the store stage once per write, StoredAll).
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <unordered_map>
#include <vector>

#include "sluice/store.h"
#include "sluice/thread_annotations.h"
#include "sluice/types.h"

namespace sluice {

class SourceTracker {
 public:
  using Token = uint64_t;

  // A reader starts parsing a file.
  // `run_id`: the run whose store records name the file's current chunks.
  Token Begin(SourceFingerprint fingerprint, bool delete_stale, uint64_t run_id);
  // A reader starts parsing a byte range of a file (a distributed range
  // task, docs/DISTRIBUTED.md): followed like a file, but once complete it is
  // only reported (TakeCompletedRanges), never committed: the file's
  // fingerprint and stale chunks are a later whole-file pass's.
  Token BeginRange(std::string done_id);
  // Before the chunk is pushed downstream (so its outcome can never come first).
  void ChunkProduced(Token token, const Chunk& chunk);
  // The embed stage replaced the chunk `original_id` by the chunks `ids`
  // (its pieces, or one truncated copy), before any of them was pushed on.
  // Their outcomes then resolve the original (see Resolved).
  void Replaced(const std::string& original_id, const std::vector<std::string>& ids);
  // The parse ended; `ok` false (failed or cancelled) means no fingerprint.
  void ParseFinished(Token token, bool ok);
  // A file whose content is unchanged but whose mtime moved: commit its facts only.
  void Touch(SourceFingerprint fingerprint);
  // A chunk's (or a piece's) outcome. `abandoned`: dropped by a stop, to be
  // redone by a rerun. Chunks no tracked file produced (stdin records,
  // dead-letter replays) are ignored.
  void Resolved(const Chunk& chunk, bool abandoned);
  // Resolved(row.chunk, false) for each, under one lock: the store stage
  // resolves a whole write (4,000 rows) at once, instead of taking the lock
  // the readers take per chunk (ChunkProduced) 4,000 times.
  void StoredAll(std::span<const EmbeddedChunk> rows);
  // A chunk (or piece) given up on and written to the dead-letter file: it
  // resolves like a stored one but is not counted in the file's chunks_stored.
  void DeadLettered(const Chunk& chunk);
  // The same for a chunk known only by id: one that never reached the embed
  // stage, so it cannot have been split.
  void ResolvedId(const std::string& chunk_id, bool abandoned);
  // The manifests of files that completed since the last call.
  std::vector<SourceManifest> TakeCompleted();
  struct CompletedRange {
    std::string done_id;         // SourceDoneId of the range
    uint64_t chunks_stored = 0;  // its chunks stored (dead-lettered ones not counted)
  };
  // The ranges that completed since the last call.
  std::vector<CompletedRange> TakeCompletedRanges();
  size_t FilesInFlight() const;
  // Chunks produced and not yet resolved (what the tracker holds per chunk).
  size_t ChunksInFlight() const;

 private:
  struct Split {
    size_t parts = 1;
    size_t resolved = 0;
  };
  struct File {
    SourceManifest manifest;  // fingerprint.chunk_count counts what it produced
    uint64_t outstanding = 0;
    uint64_t dead_lettered = 0;  // chunks (pieces) resolved by DeadLettered
    bool parse_done = false;
    bool failed = false;
    bool range = false;                             // BeginRange: reported, not committed
    std::string done_id;                            // of a range
    std::unordered_map<std::string, Split> splits;  // original id -> its pieces, while in flight
  };
  using ChunkMap = std::unordered_multimap<std::string, Token>;  // chunk id -> its file
  void ResolveLocked(const Chunk& chunk, bool abandoned, bool dead_lettered) SLUICE_REQUIRES(mu_);
  void ResolveOriginalLocked(ChunkMap::iterator it, bool abandoned) SLUICE_REQUIRES(mu_);
  void MaybeCompleteLocked(Token token) SLUICE_REQUIRES(mu_);

  mutable Mutex mu_;
  Token next_ SLUICE_GUARDED_BY(mu_) = 1;
  std::unordered_map<Token, File> files_ SLUICE_GUARDED_BY(mu_);
  ChunkMap chunks_ SLUICE_GUARDED_BY(mu_);
  // A piece's (or truncated copy's) id -> its original's id, from Replaced
  // until the piece resolves. Only oversize chunks have entries: keying
  // every chunk by (source_id, ordinal) to find a piece's original cost two
  // string-keyed map operations per chunk (~2% of an offline run's CPU).
  std::unordered_multimap<std::string, std::string> piece_of_ SLUICE_GUARDED_BY(mu_);
  std::vector<SourceManifest> completed_ SLUICE_GUARDED_BY(mu_);
  std::vector<CompletedRange> completed_ranges_ SLUICE_GUARDED_BY(mu_);
};

}  // namespace sluice
