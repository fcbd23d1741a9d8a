#include "pipeline/rebuild_aggregates.h"

#include <algorithm>
#include <span>
#include <string_view>
#include <unordered_map>

namespace sluice {
namespace {

// Chunks read back per ReadChunks call: bounds memory by a batch of vectors.
constexpr size_t kReadBatch = 512;

}  // namespace

Result<RebuildStats> RebuildAggregates(Store& store, const AggregatorOptions& options) {
  RebuildStats stats;
  Result<std::vector<SourceFingerprint>> fingerprints = store.LoadFingerprints();
  if (!fingerprints.ok()) return fingerprints.status().WithContext("reading the store's files");
  std::sort(
      fingerprints->begin(), fingerprints->end(),
      [](const SourceFingerprint& a, const SourceFingerprint& b) { return a.file_id < b.file_id; });
  auto opened = OpenAggregator(options);
  if (!opened.ok()) return opened.status();
  Aggregator& aggregator = **opened;

  for (const SourceFingerprint& fp : *fingerprints) {
    Result<std::vector<std::string>> ids = store.FileChunkIds(fp.file_id);
    if (!ids.ok()) return ids.status().WithContext(fp.file_id);
    ++stats.files;
    for (size_t at = 0; at < ids->size(); at += kReadBatch) {
      const size_t n = std::min(kReadBatch, ids->size() - at);
      Result<std::vector<EmbeddedChunk>> chunks =
          store.ReadChunks(std::span<const std::string>(ids->data() + at, n));
      if (!chunks.ok()) return chunks.status().WithContext(fp.file_id);
      for (const EmbeddedChunk& c : *chunks) {
        if (Status s = aggregator.Add(c); !s.ok()) return s;
        ++stats.chunks;
      }
    }
  }
  if (Status s = aggregator.Finish(); !s.ok()) return s;
  stats.files_written = aggregator.FilesWritten();

  // What the folder held before and the store no longer has (a file
  // re-ingested with fewer chunks, deleted by --cleanup full, or moved to
  // another category) goes, so the folder says what the store says.
  RetentionPolicy policy;
  policy.source = [](std::string_view) -> Result<SourceRetention> {
    return SourceRetention::kCheckChunks;
  };
  policy.chunks = [&](std::string_view domain, std::string_view category,
                      std::span<const std::string> ids, std::vector<bool>& keep) -> Status {
    Result<std::vector<EmbeddedChunk>> stored = store.ReadChunks(ids);
    if (!stored.ok()) return stored.status();
    std::unordered_map<std::string_view, size_t> at;
    for (size_t i = 0; i < ids.size(); ++i) at.emplace(ids[i], i);
    for (const EmbeddedChunk& c : *stored) {
      auto it = at.find(c.chunk.id);
      if (it != at.end() && c.chunk.domain == domain && c.chunk.category == category) {
        keep[it->second] = true;
      }
    }
    return Status::OK();
  };
  Result<RetainStats> retained = aggregator.Retain(policy);
  if (!retained.ok())
    return retained.status().WithContext("dropping chunks the store no longer has");
  stats.chunks_dropped = retained->chunks_dropped;

  if (Result<StoreStats> totals = store.Stats(); totals.ok() && totals->chunks > stats.chunks) {
    stats.chunks_without_file = totals->chunks - stats.chunks;
  }
  return stats;
}

}  // namespace sluice
