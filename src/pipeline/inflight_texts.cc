#include "pipeline/inflight_texts.h"

#include "common/hashing.h"

namespace sluice {

bool InflightTexts::ParkOrOwn(Chunk& chunk, const Hash128Value& key) {
  MutexLock lock(mu_);
  auto it = by_text_.find(key);
  if (it != by_text_.end()) {
    if (parked_ >= max_parked_) return false;
    it->second.push_back(std::move(chunk));
    ++parked_;
    return true;
  }
  // A second chunk with the owner's id (same id means same text) is parked
  // above, so by_owner_ never holds two entries for one id.
  by_owner_.emplace(chunk.id, key);
  by_text_.emplace(key, std::vector<Chunk>{});
  return false;
}

std::vector<Chunk> InflightTexts::Release(const std::string& chunk_id) {
  MutexLock lock(mu_);
  auto owner = by_owner_.find(chunk_id);
  if (owner == by_owner_.end()) return {};
  auto it = by_text_.find(owner->second);
  std::vector<Chunk> out;
  if (it != by_text_.end()) {
    out = std::move(it->second);
    by_text_.erase(it);
  }
  by_owner_.erase(owner);
  parked_ -= out.size();
  return out;
}

std::vector<std::pair<size_t, Chunk>> InflightTexts::ReleaseAll(
    std::span<const EmbeddedChunk> owners) {
  std::vector<std::pair<size_t, Chunk>> out;
  MutexLock lock(mu_);
  if (by_owner_.empty()) return out;
  for (size_t i = 0; i < owners.size(); ++i) {
    auto owner = by_owner_.find(owners[i].chunk.id);
    if (owner == by_owner_.end()) continue;
    if (auto it = by_text_.find(owner->second); it != by_text_.end()) {
      parked_ -= it->second.size();
      for (Chunk& copy : it->second) out.emplace_back(i, std::move(copy));
      by_text_.erase(it);
    }
    by_owner_.erase(owner);
  }
  return out;
}

std::vector<Chunk> InflightTexts::TakeAll() {
  MutexLock lock(mu_);
  std::vector<Chunk> out;
  for (auto& [key, parked] : by_text_) {
    for (Chunk& c : parked) out.push_back(std::move(c));
  }
  by_text_.clear();
  by_owner_.clear();
  parked_ = 0;
  return out;
}

size_t InflightTexts::parked() const {
  MutexLock lock(mu_);
  return parked_;
}

}  // namespace sluice
