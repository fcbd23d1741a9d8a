// Within one run, the embedding cache only knows vectors already committed; a
// text repeated in many files (a licence, a disclaimer) would be sent again
// while its first copy is still in flight. InflightTexts parks later copies
// beside the first ("owner") chunk and hands them back when the owner's fate
// is known: stored (they take its vector), failed (they fail the same way) or
// abandoned (so are they). Parking is capped so memory stays bounded: past
// the cap a copy is simply embedded again.
//
// Thread safety: thread-safe (one mutex; once per cache miss, and once per
// store write for the stored owners, ReleaseAll).
#pragma once

#include <cstddef>
#include <mutex>
#include <span>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include "common/hashing.h"
#include "sluice/thread_annotations.h"
#include "sluice/types.h"

namespace sluice {

class InflightTexts {
 public:
  explicit InflightTexts(size_t max_parked) : max_parked_(max_parked) {}

  // True: a chunk with the same text is in flight and `chunk` was moved into
  // the parking lot. False: `chunk` is now the owner of its text (or the lot
  // is full) and must be embedded.
  bool ParkOrOwn(Chunk& chunk) { return ParkOrOwn(chunk, Hash128(chunk.text)); }
  // The same with the text's Hash128 already computed.
  bool ParkOrOwn(Chunk& chunk, const Hash128Value& text);
  // The owner `chunk_id` reached its outcome: the chunks parked behind it.
  std::vector<Chunk> Release(const std::string& chunk_id);
  // Release for each owner, under one lock (the store stage's whole write):
  // the parked copies, each with the index of its owner in `owners`.
  std::vector<std::pair<size_t, Chunk>> ReleaseAll(std::span<const EmbeddedChunk> owners);
  // Every chunk still parked (end of run; empty when all owners resolved).
  std::vector<Chunk> TakeAll();
  size_t parked() const;

 private:
  // Texts are keyed by their XXH3-128 value (not its hex, nor the text: one
  // lookup per chunk, so no string is built or copied for it).
  mutable Mutex mu_;
  const size_t max_parked_;
  size_t parked_ SLUICE_GUARDED_BY(mu_) = 0;
  std::unordered_map<Hash128Value, std::vector<Chunk>, Hash128ValueHasher> by_text_
      SLUICE_GUARDED_BY(mu_);  // text -> the copies parked behind its owner
  std::unordered_map<std::string, Hash128Value> by_owner_
      SLUICE_GUARDED_BY(mu_);  // owner id -> text
};

}  // namespace sluice
