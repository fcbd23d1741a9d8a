#include "pipeline/source_tracker.h"

#include <cstdlib>

namespace sluice {

namespace {

// The integer N of `"key":N` in a JSON object's text, or `fallback`.
size_t MetadataInt(const std::string& json, const char* key, size_t fallback) {
  const std::string needle = std::string("\"") + key + "\":";
  const size_t at = json.find(needle);
  if (at == std::string::npos) return fallback;
  const char* p = json.c_str() + at + needle.size();
  if (*p == '"') ++p;  // tolerate a quoted number
  char* end = nullptr;
  const unsigned long v = std::strtoul(p, &end, 10);
  return end == p || v == 0 ? fallback : static_cast<size_t>(v);
}

}  // namespace

SourceTracker::Token SourceTracker::Begin(SourceFingerprint fingerprint, bool delete_stale,
                                          uint64_t run_id) {
  MutexLock lock(mu_);
  const Token token = next_++;
  File& f = files_[token];
  f.manifest.fingerprint = std::move(fingerprint);
  f.manifest.fingerprint.chunk_count = 0;
  f.manifest.delete_stale = delete_stale;
  f.manifest.run_id = run_id;
  return token;
}

SourceTracker::Token SourceTracker::BeginRange(std::string done_id) {
  MutexLock lock(mu_);
  const Token token = next_++;
  File& f = files_[token];
  f.range = true;
  f.done_id = std::move(done_id);
  return token;
}

void SourceTracker::ChunkProduced(Token token, const Chunk& chunk) {
  MutexLock lock(mu_);
  auto it = files_.find(token);
  if (it == files_.end()) return;
  File& f = it->second;
  ++f.manifest.fingerprint.chunk_count;
  ++f.outstanding;
  chunks_.emplace(chunk.id, token);
}

void SourceTracker::Replaced(const std::string& original_id, const std::vector<std::string>& ids) {
  MutexLock lock(mu_);
  if (chunks_.find(original_id) == chunks_.end()) return;  // not tracked (stdin, a replay)
  for (const std::string& id : ids) {
    // A single piece with the original's text has its id: it resolves the
    // original directly.
    if (id != original_id) piece_of_.emplace(id, original_id);
  }
}

void SourceTracker::ParseFinished(Token token, bool ok) {
  MutexLock lock(mu_);
  auto it = files_.find(token);
  if (it == files_.end()) return;
  it->second.parse_done = true;
  if (!ok) it->second.failed = true;
  MaybeCompleteLocked(token);
}

void SourceTracker::Touch(SourceFingerprint fingerprint) {
  MutexLock lock(mu_);
  SourceManifest m;
  m.fingerprint = std::move(fingerprint);
  m.facts_only = true;
  completed_.push_back(std::move(m));
}

void SourceTracker::ResolvedId(const std::string& chunk_id, bool abandoned) {
  MutexLock lock(mu_);
  auto it = chunks_.find(chunk_id);
  if (it != chunks_.end()) ResolveOriginalLocked(it, abandoned);
}

void SourceTracker::Resolved(const Chunk& chunk, bool abandoned) {
  MutexLock lock(mu_);
  ResolveLocked(chunk, abandoned, /*dead_lettered=*/false);
}

void SourceTracker::StoredAll(std::span<const EmbeddedChunk> rows) {
  MutexLock lock(mu_);
  for (const EmbeddedChunk& row : rows) {
    ResolveLocked(row.chunk, /*abandoned=*/false, /*dead_lettered=*/false);
  }
}

void SourceTracker::DeadLettered(const Chunk& chunk) {
  MutexLock lock(mu_);
  ResolveLocked(chunk, /*abandoned=*/false, /*dead_lettered=*/true);
}

void SourceTracker::ResolveLocked(const Chunk& chunk, bool abandoned, bool dead_lettered) {
  auto it = chunks_.find(chunk.id);
  if (it != chunks_.end()) {
    if (dead_lettered) {
      if (auto f = files_.find(it->second); f != files_.end()) ++f->second.dead_lettered;
    }
    ResolveOriginalLocked(it, abandoned);
    return;
  }
  // A piece of an oversize chunk (Replaced)?
  auto piece = piece_of_.find(chunk.id);
  if (piece == piece_of_.end()) return;
  const std::string original_id = std::move(piece->second);
  piece_of_.erase(piece);
  auto original = chunks_.find(original_id);
  if (original == chunks_.end()) return;
  auto f = files_.find(original->second);
  if (f == files_.end()) return;
  const size_t parts = MetadataInt(chunk.metadata_json, "split_parts", 1);
  auto [split, first_piece] = f->second.splits.try_emplace(original_id);
  if (first_piece) {
    // The original is replaced by its pieces (one, for a truncated copy).
    split->second.parts = parts;
    f->second.manifest.fingerprint.chunk_count += parts - 1;
  }
  if (abandoned) f->second.failed = true;
  if (dead_lettered) ++f->second.dead_lettered;
  if (++split->second.resolved >= split->second.parts) {
    f->second.splits.erase(split);
    ResolveOriginalLocked(original, abandoned);
  }
}

void SourceTracker::ResolveOriginalLocked(ChunkMap::iterator it, bool abandoned) {
  const Token token = it->second;
  chunks_.erase(it);
  auto f = files_.find(token);
  if (f == files_.end()) return;
  --f->second.outstanding;
  if (abandoned) f->second.failed = true;
  MaybeCompleteLocked(token);
}

void SourceTracker::MaybeCompleteLocked(Token token) {
  auto it = files_.find(token);
  File& f = it->second;
  if (!f.parse_done || f.outstanding > 0) return;
  if (!f.failed) {
    const uint64_t produced = f.manifest.fingerprint.chunk_count;
    f.manifest.chunks_stored = produced > f.dead_lettered ? produced - f.dead_lettered : 0;
    if (f.range) {
      completed_ranges_.push_back(CompletedRange{std::move(f.done_id), f.manifest.chunks_stored});
    } else {
      completed_.push_back(std::move(f.manifest));
    }
  }
  files_.erase(it);
}

std::vector<SourceManifest> SourceTracker::TakeCompleted() {
  MutexLock lock(mu_);
  std::vector<SourceManifest> out;
  out.swap(completed_);
  return out;
}

std::vector<SourceTracker::CompletedRange> SourceTracker::TakeCompletedRanges() {
  MutexLock lock(mu_);
  std::vector<CompletedRange> out;
  out.swap(completed_ranges_);
  return out;
}

size_t SourceTracker::FilesInFlight() const {
  MutexLock lock(mu_);
  return files_.size();
}

size_t SourceTracker::ChunksInFlight() const {
  MutexLock lock(mu_);
  return chunks_.size();
}

}  // namespace sluice
