// --cleanup full, after a complete walk: the fingerprinted files under the
// run's roots that the walk did not see are gone, so their chunks are deleted
// from the store and dropped from the aggregate files
// (docs/AGGREGATE_FORMAT.md, "Removal"). Never run after a stop or a
// failure: an incomplete walk would delete files that still exist.
//
// Thread safety: call on one thread, after every stage has joined.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <unordered_map>
#include <vector>

#include "sluice/aggregator.h"
#include "sluice/status.h"
#include "sluice/store.h"

namespace sluice {

struct FullCleanupInput {
  std::vector<std::string> roots;  // the run's inputs ("-" is ignored)
  // What the store had fingerprinted when the run began, by file id.
  const std::unordered_map<std::string, SourceFingerprint>* fingerprints = nullptr;
  // True for file ids the walk saw, and for paths it could not read (kept).
  std::function<bool(const std::string& file_id)> seen;
  std::function<bool(const std::string& path)> unreadable;
};

struct FullCleanupResult {
  Status status;  // the first step that failed (the steps after it did not run)
  uint64_t sources_deleted = 0;
  uint64_t chunks_deleted = 0;
  bool aggregate_failed = false;  // the aggregate files may still show deleted chunks
};

// Deletes the sources that are gone from `store`, then prunes `aggregator`
// (may be null).
FullCleanupResult RunFullCleanup(const FullCleanupInput& input, Store& store,
                                 Aggregator* aggregator);

// True when `path` is `root` or lies under it.
bool UnderRoot(const std::string& path, std::string root);

}  // namespace sluice
