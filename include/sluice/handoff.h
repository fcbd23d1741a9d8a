// The completion hand-off: what a finished ingest tells the next step of a
// workflow. A command run once the run ends (without a shell unless asked),
// with the run's outcome in environment variables, and/or the JSON report
// POSTed to a URL (retried). Whatever the hook does is recorded and reported,
// never fatal to the data: the ingest's own exit status stays its own.
//
// `sluice ingest --on-complete/--on-complete-url` calls RunHandoff; a service
// or worker finishing a job calls the same function, so every caller hands
// off the same way.
//
// Environment of the command (on top of the caller's environment, minus the
// variables that hold secrets, HandoffOptions::secret_env_names/values):
//   SLUICE_REPORT          path of the JSON report file (empty: none written)
//   SLUICE_AGGREGATE_DIR   folder of the per-domain/category JSON files
//   SLUICE_DEAD_LETTER     path of the dead-letter file
//   SLUICE_EXIT_STATUS     the ingest's exit status (0 ok, 1 failed, 3 dead letters, ...)
//   SLUICE_STATUS          "ok" or the failure's code name (e.g. "unavailable")
//   SLUICE_SOURCES_OK, SLUICE_SOURCES_FAILED, SLUICE_SOURCES_SKIPPED
//   SLUICE_CHUNKS_PRODUCED, SLUICE_CHUNKS_STORED, SLUICE_CHUNKS_DEAD_LETTERED,
//   SLUICE_CHUNKS_ABANDONED
//
// Thread safety: the functions are reentrant; RunHandoff blocks the calling
// thread until the command and the POST are done (each bounded by its timeout).
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <string_view>
#include <vector>

#include "sluice/clock.h"
#include "sluice/embed_stage.h"
#include "sluice/status.h"

namespace sluice {

struct IngestOptions;
struct IngestReport;
struct Metrics;

struct HandoffOptions {
  // The command: argv[0] is looked up in PATH; no shell. Empty: no command.
  std::vector<std::string> command;
  // Run `command` joined by spaces through /bin/sh -c instead (pipes,
  // redirections, $VARS). Default: false.
  bool use_shell = false;
  // The command is killed (its whole process group) after this long and
  // reported as timed out. Default: 5 minutes.
  Duration command_timeout = std::chrono::minutes(5);
  // Bytes kept of the command's stdout+stderr (the last ones). Default: 4 KiB.
  size_t output_tail_bytes = 4096;

  // POST the report JSON here (http:// or https://). Empty: no POST.
  std::string url;
  // Per attempt. Default: 30 s.
  Duration url_timeout = std::chrono::seconds(30);
  // Attempts on a connection failure, a timeout, 429 or 5xx; a 4xx other than
  // 429 is not retried. Default: 5 attempts, 0.5 s doubling to 10 s.
  RetryPolicyOptions url_retry{.max_attempts = 5,
                               .initial_backoff = std::chrono::milliseconds(500),
                               .max_backoff = std::chrono::seconds(10),
                               .multiplier = 2.0};

  // Variables removed from the command's environment (e.g. the one holding
  // the API key, --api-key-env), and values that remove any variable holding
  // them (the API key itself, wherever it came from).
  std::vector<std::string> secret_env_names;
  std::vector<std::string> secret_env_values;
  // The `sluice serve` job this hand-off follows (SLUICE_JOB); empty: none.
  std::string job_id;
};

// The run's outcome, as the hand-off passes it on.
struct HandoffRun {
  std::string report_path;  // empty: no report file
  std::string report_json;  // the body POSTed to `url`
  std::string aggregate_dir;
  std::string dead_letter_path;
  int exit_status = 0;
  std::string status = "ok";  // "ok" or StatusCodeName of the failure
  uint64_t sources_ok = 0;
  uint64_t sources_failed = 0;
  uint64_t sources_skipped = 0;
  uint64_t chunks_produced = 0;
  uint64_t chunks_stored = 0;
  uint64_t chunks_dead_lettered = 0;
  uint64_t chunks_abandoned = 0;
  std::string job_id;  // SLUICE_JOB when not empty (a `sluice serve` job)
};

struct CommandOutcome {
  bool ran = false;        // false: no command configured
  bool started = false;    // false: it could not be started (see `error`)
  int exit_status = -1;    // the command's exit status when it exited
  int signal = 0;          // the signal that ended it, if one did
  bool timed_out = false;  // killed after command_timeout
  double elapsed_s = 0;
  std::string output_tail;  // the last output_tail_bytes of stdout+stderr
  std::string error;        // why it did not start or run to completion
  bool ok() const { return started && !timed_out && signal == 0 && exit_status == 0; }
};

struct WebhookOutcome {
  bool ran = false;     // false: no URL configured
  int http_status = 0;  // the last response's status; 0: no response
  int attempts = 0;
  std::string error;  // empty when the last attempt got a 2xx
  bool ok() const { return ran && error.empty(); }
};

struct HandoffOutcome {
  CommandOutcome command;
  WebhookOutcome webhook;
};

// Splits a command line into argv on whitespace; single quotes keep
// everything literally, double quotes keep whitespace (\" and \\ escape),
// a backslash outside quotes escapes the next character. No expansion of
// any kind. InvalidArgument for an unterminated quote or an empty line.
Result<std::vector<std::string>> SplitCommandLine(std::string_view line);

// The variables RunCompletionCommand adds to the environment (NAME=value).
std::vector<std::string> HandoffEnvironment(const HandoffRun& run);

// Runs the command (if any) to completion or timeout.
CommandOutcome RunCompletionCommand(const HandoffOptions& options, const HandoffRun& run);

// POSTs `run.report_json` to options.url (if any) with retries; waits
// between attempts on `clock`.
WebhookOutcome PostReport(const HandoffOptions& options, const HandoffRun& run,
                          const Clock& clock = SystemClock::Instance());

// The command first, then the POST. `body`, when given, makes the POSTed
// body from the command's outcome (so the receiver sees it: the CLI puts it
// into the report's "handoff" object); otherwise `run.report_json` is sent.
HandoffOutcome RunHandoff(const HandoffOptions& options, const HandoffRun& run,
                          const std::function<std::string(const CommandOutcome&)>& body = {});

// {"command": {...}, "webhook": {...}}, the parts that ran; the URL is not
// included (it may carry a token).
std::string HandoffResultJson(const HandoffOutcome& outcome);

// `json` with every value of options.secret_env_values replaced by
// "[redacted]": what a hand-off may POST, pass on or return.
std::string RedactHandoffSecrets(std::string json, const HandoffOptions& options);

// The hand-off of a finished ingest, as `sluice ingest` and each `sluice
// serve` job run it: the HandoffRun from the run's report, metrics and
// options; the command, then the POST of the report (with the command's
// outcome in its "handoff" object); both outcomes logged. Every value in
// options.secret_env_values is replaced by "[redacted]" in what is POSTed
// and returned. The report file (IngestOptions::report_path, when it exists)
// is rewritten with the "handoff" object. Returns the outcome; the final
// report JSON goes to `report_json` when given. Never changes the run's
// result: a failing hand-off is reported, not raised.
HandoffOutcome HandOffIngest(const IngestReport& report, const Metrics& metrics,
                             const IngestOptions& ingest, const HandoffOptions& options,
                             int exit_status, std::string* report_json = nullptr);

// True when `options` has a command or a URL.
inline bool HandsOff(const HandoffOptions& options) {
  return !options.command.empty() || !options.url.empty();
}

}  // namespace sluice
