#include "pipeline/source_tracker.h"

namespace sluice {

SourceTracker::Token SourceTracker::Begin(SourceFingerprint fingerprint, bool delete_stale) {
  std::lock_guard lock(mu_);
  const Token token = next_++;
  File& f = files_[token];
  f.manifest.fingerprint = std::move(fingerprint);
  f.manifest.delete_stale = delete_stale;
  return token;
}

void SourceTracker::ChunkProduced(Token token, const std::string& chunk_id) {
  std::lock_guard lock(mu_);
  auto it = files_.find(token);
  if (it == files_.end()) return;
  it->second.manifest.chunk_ids.push_back(chunk_id);
  ++it->second.outstanding;
  chunks_.emplace(chunk_id, token);
}

void SourceTracker::ParseFinished(Token token, bool ok) {
  std::lock_guard lock(mu_);
  auto it = files_.find(token);
  if (it == files_.end()) return;
  it->second.parse_done = true;
  if (!ok) it->second.failed = true;
  MaybeCompleteLocked(token);
}

void SourceTracker::Touch(SourceFingerprint fingerprint) {
  std::lock_guard lock(mu_);
  SourceManifest m;
  m.fingerprint = std::move(fingerprint);
  m.facts_only = true;
  completed_.push_back(std::move(m));
}

void SourceTracker::Resolved(const std::string& chunk_id, bool abandoned) {
  std::lock_guard lock(mu_);
  auto it = chunks_.find(chunk_id);
  if (it == chunks_.end()) return;
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
    f.manifest.fingerprint.chunk_count = f.manifest.chunk_ids.size();
    completed_.push_back(std::move(f.manifest));
  }
  files_.erase(it);
}

std::vector<SourceManifest> SourceTracker::TakeCompleted() {
  std::lock_guard lock(mu_);
  std::vector<SourceManifest> out;
  out.swap(completed_);
  return out;
}

size_t SourceTracker::FilesInFlight() const {
  std::lock_guard lock(mu_);
  return files_.size();
}

}  // namespace sluice
