// `sluice aggregate`: rebuilds the per-domain/category JSON files of an
// output folder from what a store holds, without reading or embedding
// anything. The files come out as an ingest that stored the same chunks
// writes them (the aggregator orders chunks by source, ordinal and id,
// whatever order they arrive in), so a distributed job, whose workers never
// write aggregate files, ends with the same files as one process would.
//
// Thread safety: call on one thread; nothing else may write `out_dir` meanwhile.
#pragma once

#include <cstdint>

#include "sluice/aggregator.h"
#include "sluice/status.h"
#include "sluice/store.h"

namespace sluice {

struct RebuildStats {
  uint64_t files = 0;                // fingerprinted input files read back
  uint64_t chunks = 0;               // chunks added to the aggregate files
  uint64_t chunks_dropped = 0;       // chunks the folder held that the store no longer has
  uint64_t files_written = 0;        // group files written
  uint64_t chunks_without_file = 0;  // stored chunks no fingerprinted file names (stdin input)
};

// Adds every chunk of every fingerprinted file in `store` to the folder's
// files, then drops from them every chunk the store no longer holds in that
// (domain, category). Memory: one file's chunk ids and one batch of chunks.
// Errors: the store's (NotSupported for a store without resume tables) or
// the aggregator's; files written before an error stay whole.
Result<RebuildStats> RebuildAggregates(Store& store, const AggregatorOptions& options);

}  // namespace sluice
