#include "common/hashing.h"

// For XXH3_state_t on the stack (the header and the library come from one
// Debian package, so the layout matches).
#define XXH_STATIC_LINKING_ONLY
#include <xxhash.h>

namespace sluice {

uint64_t Hash64(std::string_view data, uint64_t seed) {
  return XXH64(data.data(), data.size(), seed);
}

namespace {

// Lower-case hex of `value`, most significant digit first, into out[0, 16).
// By hand: snprintf's format parsing cost ~0.3 µs a call, and ids and cache
// keys are made for every chunk, several times (docs/PERFORMANCE.md).
void HexInto(uint64_t value, char* out) {
  static constexpr char kDigits[] = "0123456789abcdef";
  for (int i = 15; i >= 0; --i) {
    out[i] = kDigits[value & 0xF];
    value >>= 4;
  }
}

std::string Hex128(const XXH128_hash_t& h) {
  std::string out(32, '\0');
  HexInto(h.high64, out.data());
  HexInto(h.low64, out.data() + 16);
  return out;
}

}  // namespace

Hash128Value Hash128(std::string_view data) {
  const XXH128_hash_t h = XXH3_128bits(data.data(), data.size());
  return {h.high64, h.low64};
}

std::string Hash128Hex(std::string_view data) {
  return Hex128(XXH3_128bits(data.data(), data.size()));
}

std::string Hex64(uint64_t value) {
  std::string out(16, '\0');
  HexInto(value, out.data());
  return out;
}

std::string EmbeddingCacheKey(std::string_view cache_namespace, std::string_view text) {
  // XXH3's streaming digest equals the one-shot hash of the concatenation
  // (namespace, "\n", text), without copying the text into one buffer.
  XXH3_state_t state;
  XXH3_INITSTATE(&state);
  XXH3_128bits_reset(&state);
  XXH3_128bits_update(&state, cache_namespace.data(), cache_namespace.size());
  XXH3_128bits_update(&state, "\n", 1);
  XXH3_128bits_update(&state, text.data(), text.size());
  return Hex128(XXH3_128bits_digest(&state));
}

}  // namespace sluice
