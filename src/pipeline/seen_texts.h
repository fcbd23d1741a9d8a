// The texts the cache stage has sent on to be embedded in this run, as a
// Bloom filter of their XXH3-128 values. In a store that held no cached
// vector when the run began, only such a text can be in the cache, so a text
// the filter has never seen needs no lookup: a first load skips one store
// round trip per 64 chunks (issue 15). A false positive costs a lookup, as
// without the filter; there are no false negatives for texts added.
//
// Another writer of the same store during the run (a second run, a
// distributed worker) is not seen: a text only it stored is embedded again
// here, as when its commit lands just after a lookup; nothing is lost.
//
// Memory is fixed (kBytes): past a few million texts false positives grow,
// and the stage does more lookups, never fewer. Blocked layout: the four
// bits of a text lie in one 64-byte block, one cache line per call.
//
// Thread safety: not thread-safe (the cache stage's thread only).
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

#include "common/hashing.h"

namespace sluice {

class SeenTexts {
 public:
  static constexpr size_t kBytes = size_t{4} << 20;
  explicit SeenTexts(size_t bytes = kBytes);

  void Add(const Hash128Value& text);
  // False: the text was never added.
  bool MayContain(const Hash128Value& text) const;

 private:
  static constexpr size_t kWordsPerBlock = 8;  // 512 bits, one cache line
  static constexpr int kBitsPerText = 4;
  // The first word of the text's block, and its i-th bit in that block.
  size_t BlockStart(const Hash128Value& text) const;
  static unsigned BitInBlock(const Hash128Value& text, int i);

  size_t blocks_;
  std::vector<uint64_t> words_;
};

}  // namespace sluice
