// Stable hashes used for ids and deterministic vectors (xxHash).
// Thread safety: pure functions.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace sluice {

uint64_t Hash64(std::string_view data, uint64_t seed = 0);
// XXH3-128 over `data`, as a value (a map key needs no hex).
struct Hash128Value {
  uint64_t high = 0, low = 0;
  bool operator==(const Hash128Value&) const = default;
};
Hash128Value Hash128(std::string_view data);
// For unordered containers: the value is a hash already.
struct Hash128ValueHasher {
  size_t operator()(const Hash128Value& v) const { return static_cast<size_t>(v.low); }
};
// Lower-case hex (32 chars) of XXH3-128 over `data`: Hash128(data), high
// then low.
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
