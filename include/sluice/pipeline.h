// The ingest pipeline: sources -> reader pool (parse + chunk) -> [chunk queue]
// -> embed stage -> [vector queue] -> store writer -> [aggregate queue] ->
// aggregator. Every queue is bounded, so a slow stage holds the earlier ones
// back and memory stays flat whatever the corpus size.
//
// Accounting invariant, checked at the end of every run:
//   chunks_produced == chunks_stored + chunks_dead_lettered + chunks_abandoned
// where "abandoned" chunks were dropped by a stop (signal, fatal error) and
// are redone by the next run; they are not written to the dead-letter file.
//
// Resume and incremental re-ingest (docs/RESUME.md): a file's fingerprint is
// committed only once all its chunks are stored or dead-lettered; a rerun
// skips fingerprinted files whose size+mtime (then content hash) match, and
// an embedding cache in the store answers texts already embedded.
//
// Thread safety: Pipeline::Run() owns its threads and returns when all are
// joined. RequestStop() may be called from any thread (e.g. a signal watcher).
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "sluice/aggregator.h"
#include "sluice/chunker.h"
#include "sluice/control.h"
#include "sluice/embed.h"
#include "sluice/embed_stage.h"
#include "sluice/metrics.h"
#include "sluice/parser.h"
#include "sluice/routing.h"
#include "sluice/shared_budget.h"
#include "sluice/status.h"
#include "sluice/store.h"

namespace sluice {

enum class EmbedderKind { kAuto, kHttp, kHash };

// What happens to chunks that no longer come from the inputs (LangChain's
// indexing cleanup modes).
enum class CleanupMode {
  kNone,         // never delete: a changed file's old chunks stay
  kIncremental,  // a changed file's stale chunks are deleted once its new ones commit
  kFull,         // also delete the files under the given roots that no longer exist
};

// The content hash recorded in fingerprints: hex XXH3-128 of the file's bytes.
Result<std::string> HashFileContents(const std::string& path);

// Parses "none", "incremental" or "full".
Result<CleanupMode> ParseCleanupMode(std::string_view text);

struct IngestReport;

// The final outcome of one source (IngestOptions::on_source_done).
enum class SourceOutcome {
  kCommitted,     // every chunk stored or dead-lettered, and its fingerprint committed
  kUnchanged,     // skipped: its fingerprint matched (size+mtime, or content hash)
  kSkipped,       // nothing to ingest: unsupported format, binary, deleted since listed
  kDeadLettered,  // the whole source failed (parse or read error); `why` says why
};

// An external feed of sources that replaces the walk of `inputs` (the
// distributed workers' task stream, docs/DISTRIBUTED.md).
// Thread safety: Next() is called on the pipeline's one walker thread.
class SourceFeed {
 public:
  virtual ~SourceFeed() = default;
  // Blocks until the next source is available (true, `file` set) or there is
  // no more work (false). Must return (false) soon after `stopping` is set.
  virtual bool Next(SourceFile& file, const std::atomic<bool>& stopping) = 0;
};

// What the progress callback sees (IngestOptions::on_progress): the counters
// of the run so far. Plain data, copied for each call.
struct IngestProgress {
  double elapsed_s = 0;
  uint64_t sources_done = 0;   // read, skipped as unchanged, or failed
  uint64_t sources_total = 0;  // valid when totals_known
  uint64_t bytes_done = 0;
  uint64_t bytes_total = 0;   // valid when totals_known
  bool totals_known = false;  // the size scan of the inputs has finished (never for stdin)
  uint64_t chunks_produced = 0;
  uint64_t chunks_stored = 0;
  uint64_t chunks_dead_lettered = 0;
  uint64_t tokens = 0;      // prompt tokens the service counted
  double chunks_per_s = 0;  // recent rate, smoothed
  bool final = false;       // the last call of the run, after every stage has finished
};

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
  int concurrency = 0;  // requests in flight: N fixed, 0 adaptive (the default)
  double rpm = 0;       // the service's requests/minute if known; 0: from headers
  double tpm = 0;       // the service's tokens/minute if known; 0: from headers
  // One rate budget shared with every process using the same API (Redis;
  // docs/SHARED_BUDGET.md). No redis_url: this process paces alone.
  SharedBudgetOptions shared_budget;

  std::string store_uri = "sqlite:sluice.db";
  StoreOptions store;

  AggregatorOptions aggregate;
  bool aggregate_enabled = true;

  // Empty: <aggregate.out_dir>/.dead-letter.jsonl (see DeadLetterPathFor).
  std::string dead_letter_path;
  std::string report_path;  // JSON report; empty: none
  std::string trace_path;   // controller trace (.csv, .json or .html); empty: none

  // The self-contained HTML run report (include/sluice/html_report.h),
  // written by the CLI once the report is complete; empty: none.
  std::string html_report_path;

  // Dead-letter replay (`sluice dead-letter retry`): these chunks are embedded
  // and stored as they are, and these files re-read (relative_path set to
  // their source id), instead of walking `inputs` (which may then be empty).
  std::vector<Chunk> replay_chunks;
  std::vector<SourceFile> replay_files;

  // Not owned; must outlive Run(). Set: sources come from the feed instead
  // of `inputs` (which must then be empty); needs a store that records
  // fingerprints, and refuses --cleanup full.
  SourceFeed* source_feed = nullptr;
  // Called exactly once per source read from the feed (or the walk) whose
  // outcome is final, with its source id (SourceDoneId: relative_path, or
  // path when that is empty, plus "@BEGIN-END" for a byte range; a range's
  // kCommitted means its chunks are stored, its file is not committed);
  // `why` is the error of kDeadLettered; `chunks_stored` the
  // chunks of it this run stored (kCommitted from the store writer; 0 for
  // the other outcomes and for untracked sources). A source dropped by a
  // stop or a fatal error gets no call: it was not done. (Without
  // fingerprints, which a feed refuses, kCommitted comes once it is parsed.)
  // Thread context: a
  // reader thread (unchanged, skipped, dead-lettered) or the store writer
  // (committed), possibly concurrently: the callback must be thread-safe.
  std::function<void(const std::string& source_id, SourceOutcome outcome, const Status& why,
                     uint64_t chunks_stored)>
      on_source_done;

  CleanupMode cleanup = CleanupMode::kIncremental;
  bool skip_unchanged = true;  // false: re-read every file (fingerprints still recorded)
  // Answer texts already embedded (same model and dimensions) from the
  // store's embedding cache. Unset: on for an embedding service, off for
  // the offline hash embedder, which computes a vector in less time than
  // the cache takes to look one up and store it (an offline run 13-17%
  // faster without it; docs/PERFORMANCE.md). See EmbeddingCacheOn.
  std::optional<bool> embedding_cache;

  // Items per queue; the two on either side of the store stage hold one
  // store write more (4,000 rows with SQLite, 1,000 with PostgreSQL), so the
  // stages around it keep working while it writes.
  size_t queue_capacity = 1000;
  // Progress: a live line when stderr is a terminal, else a log line every
  // progress_interval (src/pipeline/progress.h); false: none (--quiet).
  bool progress = true;
  Duration progress_interval = std::chrono::seconds(10);
  // The progress log lines (never the terminal line) go through spdlog as
  // info events "progress: ..." instead of straight to stderr, so a
  // --log-format json stream stays one JSON object per line.
  bool progress_through_logger = false;
  // USD per million tokens for the cost in the progress line and report;
  // negative: the built-in price of the model, if it has one (else no cost).
  double price_per_mtok = -1;

  // Called every progress_callback_interval while the run goes, and once more
  // with `final` set after every stage has finished (so a short run gets at
  // least one call). Thread context: the pipeline's progress thread, never
  // the caller's and never two calls at once; Run() waits for a call in
  // progress before it returns, so a slow callback delays the end of the run
  // (not its work). Independent of `progress` (the printed line). Empty: none.
  std::function<void(const IngestProgress&)> on_progress;
  Duration progress_callback_interval = std::chrono::seconds(1);
  // Called once at the end of every run that Run() starts, failed or not,
  // with the final report (the pipeline's counters are final too), on the
  // thread that called Run(), before Run() returns. The CLI's completion
  // hand-off (include/sluice/handoff.h) runs after it. Empty: none.
  std::function<void(const IngestReport&)> on_complete;
};

// Where the run's dead letters go: `dead_letter_path`, or by default
// `<aggregate.out_dir>/.dead-letter.jsonl`. sluice's own files in the output
// folder start with '.', a name SafeFileComponent never gives a domain
// folder, so no document can collide with them (docs/AGGREGATE_FORMAT.md).
std::string DeadLetterPathFor(const IngestOptions& options);

// Whether the run embeds through the HTTP service (else the hash embedder):
// --embedder http, or auto with an endpoint.
bool UsesHttpEmbedder(const IngestOptions& options);
// IngestOptions::embedding_cache with its default resolved.
bool EmbeddingCacheOn(const IngestOptions& options);

struct IngestReport {
  Status status;  // OK, or the fatal error that stopped the run
  std::string embedder_description;
  bool embedding_cache = false;  // whether the run used the embedding cache
  std::string store_description;
  double elapsed_s = 0;
  std::map<std::string, uint64_t> skipped_reasons;      // reason -> sources
  std::map<std::string, uint64_t> dead_letter_reasons;  // reason -> items
  std::map<std::string, size_t> queue_high_water;       // queue -> max items seen
  bool reconciled = false;  // produced == stored + dead-lettered + abandoned
  // Resume / incremental counters (docs/RESUME.md).
  uint64_t sources_unchanged = 0;     // skipped: fingerprint matched (not re-read)
  uint64_t sources_touched = 0;       // mtime moved but the content hash matched
  uint64_t sources_completed = 0;     // fingerprints committed this run
  uint64_t sources_deleted = 0;       // --cleanup full: files gone from the roots
  uint64_t chunks_deleted_stale = 0;  // old chunks of changed or deleted files
  uint64_t chunks_abandoned = 0;      // dropped by a stop; the rerun redoes them
  uint64_t cache_hits = 0;            // chunks answered by the embedding cache
  uint64_t api_requests_saved = 0;    // ceil(cache hits / batch size)
  uint64_t api_tokens_saved = 0;      // estimated tokens of the cache hits
  bool resume_supported = true;       // false: the store has no fingerprints/cache
  // Cost (issue 12): tokens x the model's price per million (the built-in
  // price, or IngestOptions::price_per_mtok); unset for an unknown model or
  // the offline embedder: a cost is never guessed.
  std::optional<double> estimated_cost_usd;
  // The stage that limited the run (read, cache, embed, store or aggregate):
  // when the process kept its cores busy (cpu_bound), the stage that used
  // the most CPU (StageMetrics::cpu_ns); otherwise the one whose threads were
  // busy the largest share of the run (StageMetrics::busy_ns). Empty: none
  // measured.
  std::string bottleneck_stage;
  double process_cpu_s = 0;        // the whole process's CPU (user + system) during the run
  int cpu_cores = 0;               // the cores it could run on
  bool cpu_bound = false;          // process_cpu_s >= 75% of cpu_cores x elapsed_s
  std::string trace_summary;       // one line on what the concurrency controller did
  std::string trace_summary_json;  // the same as a JSON object

  // The 1-second controller trace (TraceHook), for the HTML run report.
  std::vector<TraceRow> trace_rows;

  // The completion hand-off's outcome as a JSON object (HandoffResultJson in
  // include/sluice/handoff.h), written under "handoff"; empty: no hand-off.
  std::string handoff_json;
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
