// The subcommands behind main(): each returns the process exit status.
#pragma once

#include <string>

#include "sluice/handoff.h"
#include "sluice/metrics_server.h"
#include "sluice/mock_api.h"
#include "sluice/pipeline.h"

namespace sluice::cli {

struct SearchArgs {
  std::string query;
  std::string store_uri = "sqlite:sluice.db";
  int k = 5;
  bool json = false;
  IngestOptions options;  // embedder settings
  // Whether --model / --dimensions were given: search embeds the query with
  // the store's model and dimension, and refuses explicit other ones.
  bool model_given = false;
  bool dimensions_given = false;
};

struct DemoArgs {
  std::string corpus;  // empty: examples/corpus next to the binary's source tree or cwd
  int synthetic_docs = 200;
  std::string out_dir = "out/demo";
  double rpm = 3000;
  double tpm = 400000;  // the corpus (~440k tokens) outlasts the one-minute burst: pacing shows
  int latency_ms = 80;
  bool progress = true;
  MetricsServerOptions metrics{.listen = "", .allow_remote = false};  // listen empty: none
};

// Runs an ingest with signal handling (first SIGINT/SIGTERM: graceful stop;
// second: immediate exit), prints the report, writes --report. With
// `metrics.listen` set, serves the Prometheus endpoint from before the run
// starts until it ends (a bad or unbindable address fails before any work).
// With a hand-off (a command or a URL), runs it once the report is written
// (the report then defaults to OUT/.report.json) and rewrites the report with
// its outcome under "handoff"; the exit status stays the ingest's.
int RunIngestCommand(IngestOptions options, const MetricsServerOptions& metrics = {"", false},
                     const HandoffOptions& handoff = {});
int RunSearchCommand(const SearchArgs& args);
int RunDemoCommand(const DemoArgs& args);
int RunMockApiCommand(const MockApiOptions& options);

// Runs `pipeline` with the signal handling of `sluice ingest` (the first
// SIGINT/SIGTERM stops it gracefully, a second exits at once); sets
// `signal_number` to the signal that stopped it (0: none).
IngestReport RunWithSignalHandling(Pipeline& pipeline, int& signal_number);

// Exit status for a finished ingest.
int ExitStatusFor(const IngestReport& report, const Metrics& metrics, int signal_number);

}  // namespace sluice::cli
