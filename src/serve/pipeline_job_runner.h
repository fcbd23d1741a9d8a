// The default runner of `sluice serve` jobs (job_runner.h): each job through
// the same Pipeline as `sluice ingest`, in this process, on the job's thread
// (the pipeline's own threads below it); the client's report files and the
// completion hand-off after it, as `sluice ingest` writes and runs them.
//
// Thread safety: as job_runner.h says; Sample() reads the pipeline's atomic
// counters.
#pragma once

#include <memory>

#include "serve/job_runner.h"
#include "sluice/handoff.h"

namespace sluice::serve {

class PipelineJobRunner : public JobRunner {
 public:
  // `handoff` runs after every run that ends (not one a shutdown stops).
  explicit PipelineJobRunner(HandoffOptions handoff) : handoff_(std::move(handoff)) {}

  Status Check(const JobRequest&, const IngestOptions&) const override { return Status::OK(); }
  Result<std::unique_ptr<JobRun>> Start(RunStart start) override;
  std::string ExternalName(const std::string&) const override { return {}; }

 private:
  const HandoffOptions handoff_;
};

}  // namespace sluice::serve
