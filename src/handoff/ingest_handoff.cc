// HandOffIngest: the hand-off of a finished ingest, shared by the CLI's
// `ingest` and the service's jobs (include/sluice/handoff.h).
#include <filesystem>
#include <string>

#include <spdlog/spdlog.h>

#include "common/private_file.h"
#include "sluice/embed.h"
#include "sluice/handoff.h"
#include "sluice/metrics.h"
#include "sluice/pipeline.h"

namespace sluice {

HandoffOutcome HandOffIngest(const IngestReport& report, const Metrics& metrics,
                             const IngestOptions& ingest, const HandoffOptions& options,
                             int exit_status, std::string* report_json) {
  HandoffRun run;
  std::error_code ec;
  if (!ingest.report_path.empty() && std::filesystem::exists(ingest.report_path, ec)) {
    run.report_path = std::filesystem::absolute(ingest.report_path, ec).string();
  }
  run.report_json = RedactHandoffSecrets(FormatReportJson(report, metrics), options);
  run.aggregate_dir = std::filesystem::absolute(ingest.aggregate.out_dir, ec).string();
  run.dead_letter_path = std::filesystem::absolute(DeadLetterPathFor(ingest), ec).string();
  run.exit_status = exit_status;
  run.status = report.status.ok() ? "ok" : StatusCodeName(report.status.code());
  run.sources_ok = Get(metrics.sources_ok);
  run.sources_failed = Get(metrics.sources_failed);
  run.sources_skipped = Get(metrics.sources_skipped);
  run.chunks_produced = Get(metrics.chunks_produced);
  run.chunks_stored = Get(metrics.chunks_stored);
  run.chunks_dead_lettered = Get(metrics.chunks_dead_lettered);
  run.chunks_abandoned = report.chunks_abandoned;
  run.job_id = options.job_id;

  IngestReport with_handoff = report;
  const HandoffOutcome outcome = RunHandoff(options, run, [&](const CommandOutcome& command) {
    with_handoff.handoff_json = HandoffResultJson({.command = command, .webhook = {}});
    return RedactHandoffSecrets(FormatReportJson(with_handoff, metrics), options);
  });
  if (outcome.command.ran) {
    if (outcome.command.ok()) {
      spdlog::info("on-complete: the command exited 0");
    } else {
      spdlog::warn("on-complete: the command failed: {}", outcome.command.error);
    }
  }
  if (outcome.webhook.ran) {
    if (outcome.webhook.ok()) {
      spdlog::info("on-complete-url: report delivered (HTTP {})", outcome.webhook.http_status);
    } else {
      spdlog::warn("on-complete-url: not delivered after {} attempts: {}", outcome.webhook.attempts,
                   outcome.webhook.error);
    }
  }
  with_handoff.handoff_json = HandoffResultJson(outcome);
  const std::string final_json =
      RedactHandoffSecrets(FormatReportJson(with_handoff, metrics), options);
  if (!run.report_path.empty()) {
    if (Status s = WriteFileAtomically(run.report_path, final_json); !s.ok()) {
      spdlog::error("cannot write the hand-off's outcome into the report: {}", s.message());
    }
  }
  if (report_json != nullptr) *report_json = final_json;
  return outcome;
}

}  // namespace sluice
