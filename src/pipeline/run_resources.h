// Everything a run opens before any stage starts, opened in one place so a
// bad path, a wrong model or an unreachable store fails in a second with one
// clear message and no work done: the dead-letter file, routing rules,
// parsers, the inputs, the embedding transport, the store (and a second,
// read-only connection for the cache and the aggregate replay), the
// fingerprints of earlier runs and the aggregator with its "incomplete"
// marker.
//
// Thread safety: opened and closed on the Pipeline's thread; the stages use
// the parts they are given.
#pragma once

#include <memory>
#include <optional>
#include <string>
#include <unordered_map>

#include "pipeline/dead_letter_file.h"
#include "pipeline/shared_read_store.h"
#include "pipeline/source_enumerator.h"
#include "sluice/aggregator.h"
#include "sluice/embed.h"
#include "sluice/parser.h"
#include "sluice/pipeline.h"
#include "sluice/routing.h"
#include "sluice/store.h"

namespace sluice {

struct RunResources {
  std::unique_ptr<DeadLetterFile> dead_letters;
  Router router;
  ParserRegistry registry;
  std::unique_ptr<Parser> command_parser;  // --parser-cmd; null: by format
  std::unique_ptr<SourceEnumerator> enumerator;
  std::unique_ptr<EmbeddingTransport> transport;
  bool use_http = false;
  std::optional<double> price_per_mtok;  // USD; unset: unknown model or offline
  std::string cache_namespace;           // empty: no embedding cache
  std::unique_ptr<Store> store;
  std::unique_ptr<SharedReadStore> read_store;  // holds no store without resume
  // Resume (docs/RESUME.md): the store keeps fingerprints.
  bool resume = false;
  std::unordered_map<std::string, SourceFingerprint> fingerprints;  // read-only during the run
  std::unique_ptr<Aggregator> aggregator;                           // null: --no-aggregate
  // Exists while the aggregate files may miss stored chunks; found at start,
  // the last run died, so unchanged files are replayed into the aggregator.
  std::string aggregate_marker;
  bool replay_aggregate = false;
};

// Opens everything in order; fills the report's embedder and store
// descriptions and resume_supported. `run_id`: this run's (StoreOptions::run_id);
// `clock`: the run's, which the store's retries wait on (must outlive the run).
Result<std::unique_ptr<RunResources>> OpenRunResources(const IngestOptions& options,
                                                       uint64_t run_id, const Clock& clock,
                                                       Metrics& metrics, IngestReport& report);

}  // namespace sluice
