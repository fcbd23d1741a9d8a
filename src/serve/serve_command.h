// `sluice serve`: the job API (http_api.h) over the job manager
// (job_manager.h) until SIGINT/SIGTERM. Its flags are declared here; main()
// only registers the subcommand.
#pragma once

#include <string>
#include <vector>

#include <CLI/CLI.hpp>

namespace sluice::serve {

struct ServeArgs {
  std::string listen = "127.0.0.1:8700";
  std::string token_env;  // environment variable holding the bearer token
  std::string state_dir = ".sluice-serve";
  int max_jobs = 1;
  size_t max_body_bytes = size_t{8} << 20;
  std::vector<std::string> allow_roots;
  std::string store_uri;  // jobs' default store; empty: sqlite:<state-dir>/sluice.db
  std::string api_key_env = "OPENAI_API_KEY";
  int http_threads = 16;
  std::string log_level = "info";
  // The completion hand-off after every job that ends (succeeded, failed or
  // cancelled; not one stopped by the server's own shutdown, which resumes
  // it): the same as `sluice ingest --on-complete...`.
  std::string on_complete;
  bool on_complete_shell = false;
  double on_complete_timeout_s = 300;
  std::string on_complete_url;
  // With a Redis URL (--redis, or --redis-env naming a variable holding it):
  // jobs are enqueued for `sluice worker`s (redis_job_runner.h) instead of
  // run in this process, each as the Redis job <redis_job_prefix><job id>.
  std::string redis_url;
  std::string redis_env;
  std::string redis_job_prefix = "serve-";
};

void AddServeFlags(CLI::App& app, ServeArgs& args);

// Serves until SIGINT/SIGTERM, then stops accepting, stops the running jobs
// (their state saved as queued, resumed by the next start) and returns 0; 2
// for a usage error (e.g. a non-loopback --listen without a token), 1 when
// the server cannot start.
int RunServeCommand(const ServeArgs& args);

}  // namespace sluice::serve
