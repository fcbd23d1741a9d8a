// The aggregator consolidates stored chunks into one JSON file per
// (domain, category) under an output folder, for consumers that want files
// rather than a database. Schema: docs/AGGREGATE_FORMAT.md.
//
// Thread safety: one thread (the aggregator stage) at a time.
#pragma once

#include <cstddef>
#include <memory>
#include <string>

#include "sluice/status.h"
#include "sluice/types.h"

namespace sluice {

struct AggregatorOptions {
  std::string out_dir = "out";     // Default: "out". Created when missing.
  size_t flush_every = 100;        // Default: 100. Chunks between flushes of a group.
  bool include_embeddings = false; // Default: false. Write vectors into the JSON too.
};

class Aggregator {
 public:
  virtual ~Aggregator() = default;
  virtual Status Add(const EmbeddedChunk& chunk) = 0;
  // Writes every group's file (atomically: temp file + rename).
  virtual Status Finish() = 0;
  virtual size_t FilesWritten() const = 0;
};

// Fails clearly when out_dir cannot be created or written.
Result<std::unique_ptr<Aggregator>> OpenAggregator(const AggregatorOptions& options);

// A file-name-safe form of a domain or category name: no separators, no "..",
// no control characters, bounded length; distinct names that sanitise alike
// get distinct results (a short hash suffix).
std::string SafeFileComponent(std::string_view name);

}  // namespace sluice
