#include "serve/serve_command.h"

#include <pthread.h>
#include <signal.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <thread>

#include <spdlog/spdlog.h>

#include "cli/distributed_commands.h"
#include "common/private_file.h"
#include "distributed/task_stream.h"
#include "serve/http_api.h"
#include "serve/job_manager.h"
#include "serve/path_policy.h"
#include "serve/redis_job_runner.h"
#include "sluice/handoff.h"

namespace sluice::serve {

void AddServeFlags(CLI::App& app, ServeArgs& a) {
  app.add_option("--listen", a.listen,
                 "HOST:PORT to serve the job API on (port 0: any free port, printed); a "
                 "non-loopback address needs --token-env")
      ->capture_default_str();
  app.add_option("--token-env", a.token_env,
                 "environment variable holding the bearer token every request (but GET "
                 "/healthz) must send as 'Authorization: Bearer <token>'");
  app.add_option("--state-dir", a.state_dir,
                 "folder for the jobs' specs, state, inline inputs and default outputs; a "
                 "restart with the same folder resumes unfinished jobs")
      ->capture_default_str();
  app.add_option("--max-jobs", a.max_jobs, "jobs running at once; the rest wait in the queue")
      ->capture_default_str()
      ->check(CLI::Range(1, 64));
  app.add_option("--max-body", a.max_body_bytes,
                 "largest request body in bytes (inline JSONL included); larger ones get 413")
      ->capture_default_str()
      ->check(CLI::Range(size_t{1024}, size_t{1} << 32));
  app.add_option("--allow-root", a.allow_roots,
                 "folder whose files jobs may read and write (repeatable); without any, jobs "
                 "may only send inline 'jsonl' and write under --state-dir")
      ->check(CLI::ExistingDirectory);
  app.add_option("--store", a.store_uri,
                 "the store of jobs that name none (default: sqlite:STATE-DIR/sluice.db)");
  app.add_option("--api-key-env", a.api_key_env,
                 "environment variable holding the embeddings API key; sent only to the "
                 "server's endpoint (OPENAI_BASE_URL), never to one a job names")
      ->capture_default_str();
  app.add_option("--http-threads", a.http_threads,
                 "requests served at once (an open event stream holds one)")
      ->capture_default_str()
      ->check(CLI::Range(2, 256));
  app.add_option("--on-complete", a.on_complete,
                 "run this command after every job that ends (succeeded, failed or cancelled), "
                 "as `sluice ingest --on-complete` does: no shell, SLUICE_* variables, SLUICE_JOB "
                 "the job's id; its outcome goes into the job's report")
      ->group("Hand-off");
  app.add_flag("--on-complete-shell", a.on_complete_shell, "run --on-complete through /bin/sh -c")
      ->group("Hand-off");
  app.add_option("--on-complete-timeout", a.on_complete_timeout_s,
                 "seconds before --on-complete is killed and reported as timed out")
      ->capture_default_str()
      ->check(CLI::Range(0.1, 86400.0))
      ->group("Hand-off");
  app.add_option("--on-complete-url", a.on_complete_url,
                 "POST every finished job's JSON report to this http(s) URL (retried)")
      ->group("Hand-off");
  app.add_option("--redis", a.redis_url,
                 "enqueue each job to a job in this Redis (redis://[[user]:password@]host"
                 "[:port][/db]) for `sluice worker`s to take, instead of running it in this "
                 "process; the API is the same (docs/DISTRIBUTED.md)")
      ->group("Distributed");
  app.add_option("--redis-env", a.redis_env,
                 "environment variable holding the --redis URL (keeps a password out of the "
                 "process list)")
      ->group("Distributed");
  app.add_option("--redis-job-prefix", a.redis_job_prefix,
                 "with --redis: a job's Redis name is this and its id (sluice worker --job "
                 "NAME); servers sharing one Redis need different prefixes")
      ->capture_default_str()
      ->group("Distributed");
}

namespace {

// The runner the jobs go to: null (the manager's in-process default) without
// a Redis URL; InvalidArgument for a bad URL (never naming its password).
Result<std::unique_ptr<JobRunner>> MakeRunner(const ServeArgs& args,
                                              const HandoffOptions& handoff) {
  if (args.redis_url.empty() && args.redis_env.empty()) return std::unique_ptr<JobRunner>();
  cli::DistributedArgs flags;
  flags.redis_url = args.redis_url;
  flags.redis_env = args.redis_env;
  auto url = cli::RedisUrlOf(flags);
  if (!url.ok()) return url.status();
  auto endpoint = ParseRedisUrl(*url);
  if (!endpoint.ok()) return endpoint.status();
  RedisJobRunnerOptions options;
  options.endpoint = std::move(*endpoint);
  options.job_prefix = args.redis_job_prefix;
  options.handoff = handoff;
  // The hook sees the jobs' outcomes, not the Redis password.
  if (!options.endpoint.password.empty()) {
    options.handoff.secret_env_values.push_back(options.endpoint.password);
  }
  if (!args.redis_env.empty()) options.handoff.secret_env_names.push_back(args.redis_env);
  if (Status s = ValidateJobName(args.redis_job_prefix + "j000000"); !s.ok()) {
    return Status::InvalidArgument("--redis-job-prefix: " + s.message());
  }
  spdlog::info("serve: jobs go to Redis at {} for sluice workers (job names {}<id>)",
               options.endpoint.Redacted(), args.redis_job_prefix);
  return std::unique_ptr<JobRunner>(new RedisJobRunner(std::move(options)));
}

}  // namespace

int RunServeCommand(const ServeArgs& args) {
  // Signals are taken by sigwait below: block them before any thread starts.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);

  ApiOptions api;
  api.listen = args.listen;
  api.max_body_bytes = args.max_body_bytes;
  api.http_threads = args.http_threads;
  if (!args.token_env.empty()) {
    const char* token = std::getenv(args.token_env.c_str());
    if (token == nullptr || *token == '\0') {
      spdlog::error("--token-env {}: the environment variable is not set or empty", args.token_env);
      return 2;
    }
    api.token = token;
  }
  {
    // Refuse a reachable address without a token before touching the disk.
    std::string host;
    int port = 0;
    if (Status s = SplitListenAddress(args.listen, host, port); !s.ok()) {
      spdlog::error("{}", s.message());
      return 2;
    }
    if (!IsLoopbackHost(host) && api.token.empty()) {
      spdlog::error(
          "--listen {} is reachable from other machines: refusing to start without a bearer "
          "token (set --token-env VAR, the variable holding the token, or listen on 127.0.0.1)",
          args.listen);
      return 2;
    }
  }

  std::error_code ec;
  if (!CreatePrivateDirectories(args.state_dir, ec)) {
    spdlog::error("cannot create --state-dir {}: {}", args.state_dir, ec.message());
    return 1;
  }
  auto policy = PathPolicy::Create(args.allow_roots, args.state_dir);
  if (!policy.ok()) {
    spdlog::error("{}", policy.status().message());
    return 2;
  }
  JobDefaults defaults;
  defaults.store_uri =
      args.store_uri.empty()
          ? "sqlite:" + std::filesystem::absolute(args.state_dir).string() + "/sluice.db"
          : args.store_uri;
  defaults.api_key_env = args.api_key_env;
  JobManagerOptions manager_options;
  manager_options.state_dir = args.state_dir;
  manager_options.max_jobs = args.max_jobs;
  if (!args.on_complete.empty()) {
    auto argv = SplitCommandLine(args.on_complete);
    if (!argv.ok()) {
      spdlog::error("--on-complete: {}", argv.status().message());
      return 2;
    }
    manager_options.handoff.command = std::move(*argv);
  }
  if (!args.on_complete_url.empty() && !args.on_complete_url.starts_with("http://") &&
      !args.on_complete_url.starts_with("https://")) {
    spdlog::error("--on-complete-url must start with http:// or https://");
    return 2;
  }
  manager_options.handoff.use_shell = args.on_complete_shell;
  manager_options.handoff.command_timeout = FromSeconds(args.on_complete_timeout_s);
  manager_options.handoff.url = args.on_complete_url;
  // The hook sees the jobs' outcomes, not the server's credentials.
  manager_options.handoff.secret_env_names = {args.api_key_env, "OPENAI_API_KEY"};
  if (!args.token_env.empty()) manager_options.handoff.secret_env_names.push_back(args.token_env);
  if (!api.token.empty()) manager_options.handoff.secret_env_values.push_back(api.token);
  auto runner = MakeRunner(args, manager_options.handoff);
  if (!runner.ok()) {
    spdlog::error("{}", runner.status().message());
    return 2;
  }
  auto manager = JobManager::Open(
      manager_options,
      [defaults, policy = *policy](const JobRequest& request, const std::string& job_dir) {
        return BuildIngestOptions(request, job_dir, defaults, policy);
      },
      std::move(*runner));
  if (!manager.ok()) {
    spdlog::error("{}", manager.status().message());
    return 1;
  }
  auto server = ApiServer::Start(api, **manager);
  if (!server.ok()) {
    spdlog::error("{}", server.status().message());
    (*manager)->Shutdown();
    return server.status().code() == StatusCode::kInvalidArgument ? 2 : 1;
  }
  if (policy->roots().empty()) {
    spdlog::info("serve: no --allow-root: jobs may send inline jsonl only");
  }
  std::printf("sluice serve listening on %s (state in %s); Ctrl-C stops\n",
              (*server)->Url().c_str(), args.state_dir.c_str());
  std::fflush(stdout);

  int sig = 0;
  sigwait(&signals, &sig);
  spdlog::info(
      "serve: {}: stopping (running jobs are saved and resume at the next start; a "
      "second signal exits at once)",
      sig == SIGINT ? "SIGINT" : "SIGTERM");
  std::thread second_signal([signals] {
    int again = 0;
    sigwait(&signals, &again);
    std::fprintf(stderr, "[sluice] second signal: exiting now (the store is consistent)\n");
    std::_Exit(128 + again);
  });
  second_signal.detach();
  (*server)->Stop();
  (*manager)->Shutdown();
  spdlog::info("serve: stopped");
  return 0;
}

}  // namespace sluice::serve
