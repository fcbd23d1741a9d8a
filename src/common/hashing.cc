#include "common/hashing.h"

#include <xxhash.h>

#include <cstdio>

namespace sluice {

uint64_t Hash64(std::string_view data, uint64_t seed) {
  return XXH64(data.data(), data.size(), seed);
}

std::string Hash128Hex(std::string_view data) {
  XXH128_hash_t h = XXH3_128bits(data.data(), data.size());
  char buf[33];
  std::snprintf(buf, sizeof buf, "%016llx%016llx", static_cast<unsigned long long>(h.high64),
                static_cast<unsigned long long>(h.low64));
  return std::string(buf, 32);
}

std::string Hex64(uint64_t value) {
  char buf[17];
  std::snprintf(buf, sizeof buf, "%016llx", static_cast<unsigned long long>(value));
  return std::string(buf, 16);
}

std::string EmbeddingCacheKey(std::string_view cache_namespace, std::string_view text) {
  std::string material;
  material.reserve(cache_namespace.size() + 1 + text.size());
  material.append(cache_namespace);
  material.push_back('\n');
  material.append(text);
  return Hash128Hex(material);
}

}  // namespace sluice
