#include "pipeline/full_cleanup.h"

#include <algorithm>
#include <span>
#include <string_view>
#include <unordered_set>

#include <spdlog/spdlog.h>

#include "pipeline/source_enumerator.h"

namespace sluice {

bool UnderRoot(const std::string& path, std::string root) {
  while (root.size() > 1 && root.back() == '/') root.pop_back();
  if (path == root) return true;
  return path.size() > root.size() && path.compare(0, root.size(), root) == 0 &&
         (path[root.size()] == '/' || root == "/");
}

FullCleanupResult RunFullCleanup(const FullCleanupInput& input, Store& store,
                                 Aggregator* aggregator) {
  FullCleanupResult result;
  std::vector<std::string> gone;
  for (const auto& [id, fp] : *input.fingerprints) {
    if (input.seen(id) || input.unreadable(fp.path)) continue;
    for (const std::string& root : input.roots) {
      if (root != kStdinPath && UnderRoot(fp.path, root)) {
        gone.push_back(id);
        break;
      }
    }
  }
  if (!gone.empty()) {
    std::sort(gone.begin(), gone.end());
    Result<uint64_t> r = store.DeleteSources(gone);
    if (!r.ok()) {
      result.status = r.status().WithContext("--cleanup full");
      return result;
    }
    result.sources_deleted = gone.size();
    result.chunks_deleted = *r;
  }
  if (aggregator == nullptr) return result;
  // The aggregate files follow: a source this walk did not see keeps its
  // chunks only while the store holds them, which also drops the files that a
  // run dying between DeleteSources and this point removed from the store alone.
  const std::unordered_set<std::string> deleted(gone.begin(), gone.end());
  RetentionPolicy policy;
  policy.source = [&](std::string_view source_id) -> Result<SourceRetention> {
    const std::string id(source_id);
    if (deleted.count(id)) return SourceRetention::kDrop;
    if (input.seen(id) || input.fingerprints->count(id)) return SourceRetention::kKeep;
    return SourceRetention::kCheckChunks;  // a JSONL record, stdin, or no file any more
  };
  policy.chunks = [&](std::string_view domain, std::string_view category,
                      std::span<const std::string> ids, std::vector<bool>& keep) -> Status {
    Result<std::vector<EmbeddedChunk>> stored = store.ReadChunks(ids);
    if (!stored.ok()) return stored.status();
    std::unordered_map<std::string_view, size_t> at;
    for (size_t i = 0; i < ids.size(); ++i) at.emplace(ids[i], i);
    for (const EmbeddedChunk& c : *stored) {
      auto it = at.find(c.chunk.id);
      if (it != at.end() && c.chunk.domain == domain && c.chunk.category == category)
        keep[it->second] = true;
    }
    return Status::OK();
  };
  auto pruned = aggregator->Retain(policy);
  if (!pruned.ok()) {
    // Keeps the marker: the files may still hold the deleted chunks.
    result.aggregate_failed = true;
    result.status = pruned.status().WithContext("--cleanup full: aggregate");
    return result;
  }
  if (pruned->chunks_dropped > 0 || pruned->files_skipped > 0) {
    spdlog::info(
        "--cleanup full: {} chunks dropped from the aggregate files ({} rewritten, {} "
        "removed; {} *.json that are no aggregate files left alone)",
        pruned->chunks_dropped, pruned->files_rewritten, pruned->files_removed,
        pruned->files_skipped);
  }
  return result;
}

}  // namespace sluice
