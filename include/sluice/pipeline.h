// The ingest pipeline: sources -> reader pool (parse + chunk) -> [chunk queue]
// -> embed stage -> [vector queue] -> store writer -> [aggregate queue] ->
// aggregator. Every queue is bounded, so a slow stage holds the earlier ones
// back and memory stays flat whatever the corpus size.
//
// Accounting invariant, checked at the end of every run:
//   chunks_produced == chunks_stored + chunks_dead_lettered
//
// Thread safety: RunIngest() owns its threads and returns when all are
// joined. RequestStop() may be called from any thread (e.g. a signal watcher).
#pragma once

#include <atomic>
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "sluice/aggregator.h"
#include "sluice/chunker.h"
#include "sluice/embed.h"
#include "sluice/embed_stage.h"
#include "sluice/metrics.h"
#include "sluice/parser.h"
#include "sluice/routing.h"
#include "sluice/status.h"
#include "sluice/store.h"

namespace sluice {

enum class EmbedderKind { kAuto, kHttp, kHash };

struct IngestOptions {
  // Inputs: files or directories, "-" for JSONL on stdin, or JSONL files.
  std::vector<std::string> inputs;
  std::vector<std::string> include_globs;  // relative-path globs; empty: everything
  std::vector<std::string> exclude_globs;
  std::string parser_cmd;  // run this program per file; it prints JSONL records
  Duration parser_cmd_timeout = std::chrono::minutes(10);  // per file
  std::string routes_file;                                 // TOML with [[route]] rules
  std::vector<RouteRule> routes;  // rules given directly (e.g. from --config); win over routes_file
  int reader_threads = 0;         // 0: number of cores

  ChunkerOptions chunker;

  EmbedderKind embedder = EmbedderKind::kAuto;  // kAuto: HTTP when an endpoint is configured
  HttpEmbedderOptions http;
  HashEmbedderOptions hash;
  EmbedStageOptions embed;
  int concurrency = 0;   // requests in flight: N fixed, 0 adaptive (the default)
  double rpm = 0;        // the service's requests/minute if known; 0: from headers
  double tpm = 0;        // the service's tokens/minute if known; 0: from headers

  std::string store_uri = "sqlite:sluice.db";
  StoreOptions store;
  int store_writers = 1;

  AggregatorOptions aggregate;
  bool aggregate_enabled = true;

  std::string dead_letter_path = "out/dead-letter.jsonl";
  std::string report_path;  // JSON report; empty: none
  std::string trace_path;   // controller trace; empty: none

  size_t queue_capacity = 1000;  // items per queue
  bool progress = true;          // live line when stderr is a TTY
};

struct IngestReport {
  Status status;  // OK, or the fatal error that stopped the run
  std::string embedder_description;
  std::string store_description;
  double elapsed_s = 0;
  std::map<std::string, uint64_t> skipped_reasons;      // reason -> sources
  std::map<std::string, uint64_t> dead_letter_reasons;  // reason -> items
  std::map<std::string, size_t> queue_high_water;       // queue -> max items seen
  bool reconciled = false;                              // produced == stored + dead-lettered
  std::string trace_summary;       // one line on what the concurrency controller did
  std::string trace_summary_json;  // the same as a JSON object
};

class Pipeline {
 public:
  explicit Pipeline(IngestOptions options);
  ~Pipeline();
  Pipeline(const Pipeline&) = delete;
  Pipeline& operator=(const Pipeline&) = delete;

  // Runs the whole ingest. Returns the report; `metrics()` has the counters.
  IngestReport Run();
  // Stop reading new sources; finish what is in flight; commit; report.
  void RequestStop();
  const Metrics& metrics() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// The human-readable end-of-run report.
std::string FormatReportText(const IngestReport& report, const Metrics& metrics);
// The JSON report (keys documented in README.md).
std::string FormatReportJson(const IngestReport& report, const Metrics& metrics);

}  // namespace sluice
