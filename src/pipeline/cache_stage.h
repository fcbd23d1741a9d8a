// The cache stage: answers chunks whose text was already embedded (same
// model and dimensions) from the store's embedding cache, straight to the
// vector queue; parks later copies of a text already on its way to the API
// (InflightTexts); sends the rest to the embed stage.
//
// Thread safety: Run() is called on one thread; the counters may be read
// from any thread while it runs.
#pragma once

#include <atomic>
#include <cstdint>
#include <string>

#include "pipeline/run_context.h"
#include "pipeline/shared_read_store.h"
#include "sluice/queue.h"
#include "sluice/types.h"

namespace sluice {

struct CacheStageOptions {
  size_t lookup_batch = 64;  // texts per cache lookup. REQUIRES: >= 1
  // The embed stage's per-input limit: a longer text may be split there, and
  // a piece never answers for the whole text, so it is never parked.
  uint32_t max_tokens_per_input = 8191;
  // The cache key's model and dimensions; empty: no cache (every chunk goes
  // to the embed stage).
  std::string cache_namespace;
};

class CacheStage {
 public:
  // `read_store`: where lookups go (may hold no store: no cache).
  CacheStage(CacheStageOptions options, RunContext& run, SharedReadStore& read_store);

  // Until `in` ends: hits to `out`, misses to `to_embed`. Closes `to_embed`.
  void Run(BoundedQueue<Chunk>& in, BoundedQueue<Chunk>& to_embed,
           BoundedQueue<EmbeddedChunk>& out);

  uint64_t cache_hits() const { return cache_hits_.load(); }
  uint64_t tokens_saved() const { return tokens_saved_.load(); }

 private:
  const CacheStageOptions options_;
  RunContext& run_;
  SharedReadStore& read_store_;
  std::atomic<uint64_t> cache_hits_{0}, tokens_saved_{0};
};

}  // namespace sluice
