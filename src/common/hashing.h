// Stable hashes used for ids and deterministic vectors (xxHash).
// Thread safety: pure functions.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

namespace sluice {

uint64_t Hash64(std::string_view data, uint64_t seed = 0);
// Lower-case hex (32 chars) of XXH3-128 over `data`.
std::string Hash128Hex(std::string_view data);
// Lower-case hex (16 chars) of a 64-bit value.
std::string Hex64(uint64_t value);
// The embedding cache's key of `text` under `cache_namespace` (model and
// requested dimensions): Hash128Hex(namespace + "\n" + text). Every store
// uses this one key, so a cache is portable between them.
std::string EmbeddingCacheKey(std::string_view cache_namespace, std::string_view text);

// splitmix64: the step used by MockEmbedding and the hash embedder.
inline uint64_t SplitMix64(uint64_t& state) {
  uint64_t z = (state += 0x9E3779B97F4A7C15ull);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

}  // namespace sluice
