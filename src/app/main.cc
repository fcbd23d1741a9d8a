// sluice: the command-line entry point. Subcommands: ingest, search, demo,
// mock-api, verify, aggregate, dead-letter (list, retry), serve, and the distributed enqueue,
// worker, status.
// Exit status: 0 success; 1 fatal error; 2 usage error; 3 finished but something was dead-lettered;
// 4 the store is in use by another run; 130/143 stopped by SIGINT/SIGTERM.
#include <csignal>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <thread>

#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>
#include <CLI/CLI.hpp>

#include "cli/commands.h"
#include "cli/distributed_commands.h"
#include "cli/ingest_flags.h"
#include "cli/json_log.h"
#include "cli/resume_commands.h"
#include "mockapi/mock_api_flags.h"
#include "serve/serve_command.h"

namespace sluice::cli {
namespace {

// `format`: "text" (a prefixed line) or "json" (cli/json_log.h).
void SetUpLogging(const std::string& level, const std::string& format = "text") {
  auto logger = spdlog::stderr_color_mt("sluice");
  if (format == "json") {
    logger->set_formatter(std::make_unique<JsonLogFormatter>());
  } else {
    logger->set_pattern("[sluice] %^%l%$: %v");
  }
  spdlog::set_default_logger(logger);
  spdlog::set_level(spdlog::level::from_str(level));
}

int Main(int argc, char** argv) {
  CLI::App app{
      "sluice: ingest document collections into embeddings in a vector store, as fast as the "
      "embedding API allows and with nothing lost."};
  app.require_subcommand(1);
  app.set_version_flag("--version", "sluice 0.1.0");

  IngestOptions ingest_options;
  IngestFlagExtras ingest_extras;
  CLI::App* ingest = app.add_subcommand(
      "ingest", "Parse, chunk, embed and store files, folders or JSONL records (stdin: '-').");
  AddIngestFlags(*ingest, ingest_options, ingest_extras);
  DistributedArgs ingest_redis;  // ingest --redis URL: enqueue + one local worker
  AddIngestRedisFlags(*ingest, ingest_redis);

  SearchArgs search_args;
  IngestFlagExtras search_extras;
  CLI::App* search =
      app.add_subcommand("search", "Embed a query and print the nearest stored chunks.");
  search->add_option("query", search_args.query, "the text to search for")->required();
  search->add_option("--store", search_args.store_uri, "sqlite:PATH or postgres://...")
      ->capture_default_str();
  std::string search_store_env;
  search->add_option("--store-env", search_store_env, kStoreEnvHelp);
  search->add_option("-k,--top", search_args.k, "how many results")
      ->capture_default_str()
      ->check(CLI::Range(1, 1000));
  search->add_flag("--json", search_args.json, "print results as JSON lines");
  AddEmbedderFlags(*search, search_args.options, search_extras);

  DemoArgs demo_args;
  CLI::App* demo = app.add_subcommand(
      "demo",
      "Start the simulated API in-process (latency + rate limit) and ingest the sample corpus.");
  demo->add_option("--corpus", demo_args.corpus, "folder to ingest (default: examples/corpus)");
  demo->add_option("--synthetic", demo_args.synthetic_docs,
                   "also generate this many synthetic documents")
      ->capture_default_str();
  demo->add_option("--out", demo_args.out_dir, "output folder (store, aggregates, report)")
      ->capture_default_str();
  demo->add_option("--rpm", demo_args.rpm, "simulated requests/minute limit")
      ->capture_default_str();
  demo->add_option("--tpm", demo_args.tpm, "simulated tokens/minute limit")->capture_default_str();
  demo->add_option("--latency-ms", demo_args.latency_ms, "simulated base latency")
      ->capture_default_str();
  demo->add_flag("--progress,!--no-progress", demo_args.progress,
                 "live progress line on a terminal");
  demo->add_option("--metrics-listen", demo_args.metrics.listen,
                   "serve Prometheus metrics at http://HOST:PORT/metrics during the demo");
  demo->add_flag("--metrics-allow-remote", demo_args.metrics.allow_remote,
                 "allow --metrics-listen on a non-loopback address");

  MockApiOptions mock_options;
  CLI::App* mock = app.add_subcommand(
      "mock-api", "Serve the simulated OpenAI-compatible embeddings API until SIGINT/SIGTERM.");
  AddMockApiFlags(*mock, mock_options);

  VerifyArgs verify_args;
  CLI::App* verify = app.add_subcommand(
      "verify",
      "Check a store: every fingerprinted file's chunks present, no orphans, right dimensions; "
      "with inputs, also that every file is ingested and unchanged. Exit 0 clean, 1 otherwise.");
  verify->add_option("inputs", verify_args.inputs, "files or folders the store was ingested from");
  verify->add_option("--store", verify_args.store_uri, "sqlite:PATH or postgres://...")
      ->capture_default_str();
  verify->add_option("--table", verify_args.table, "chunks table name")->capture_default_str();
  std::string verify_store_env;
  verify->add_option("--store-env", verify_store_env, kStoreEnvHelp);

  AggregateArgs aggregate_args;
  CLI::App* aggregate = app.add_subcommand(
      "aggregate",
      "Rebuild the per-domain/category JSON files of --out from a store (what an ingest writes; "
      "chunks the store no longer holds are dropped). Reads nothing else, embeds nothing.");
  aggregate->add_option("--store", aggregate_args.store_uri, "sqlite:PATH or postgres://...")
      ->capture_default_str();
  aggregate->add_option("--table", aggregate_args.table, "chunks table name")
      ->capture_default_str();
  std::string aggregate_store_env;
  aggregate->add_option("--store-env", aggregate_store_env, kStoreEnvHelp);
  aggregate->add_option("--out", aggregate_args.aggregate.out_dir, "the folder of the files")
      ->capture_default_str();
  aggregate->add_flag(
      "--aggregate-embeddings", aggregate_args.aggregate.include_embeddings,
      "write each chunk's vector into the files too (as ingest --aggregate-embeddings)");

  CLI::App* dead_letter =
      app.add_subcommand("dead-letter", "Inspect or re-drive the dead-letter file.");
  dead_letter->require_subcommand(1);
  DeadLetterArgs dl_args;
  CLI::App* dl_list =
      dead_letter->add_subcommand("list", "Count dead-lettered items by reason and kind.");
  dl_list->add_option("--dead-letter", dl_args.dead_letter_path, "the dead-letter JSONL file")
      ->capture_default_str();
  IngestOptions retry_options;
  IngestFlagExtras retry_extras;
  CLI::App* dl_retry = dead_letter->add_subcommand(
      "retry",
      "Re-embed dead-lettered chunks and re-read dead-lettered sources with the ingest's flags; "
      "remove from the file what gets stored.");
  AddIngestFlags(*dl_retry, retry_options, retry_extras);
  dl_retry->remove_option(dl_retry->get_option("inputs"));  // the file says what to redo
  // Emptying the store to redo only the dead letters would lose the rest.
  dl_retry->remove_option(dl_retry->get_option("--reembed"));
  // A retry is short; a flag it would silently ignore is not offered.
  dl_retry->remove_option(dl_retry->get_option("--metrics-listen"));
  dl_retry->remove_option(dl_retry->get_option("--metrics-allow-remote"));
  for (const char* flag :
       {"--on-complete", "--on-complete-shell", "--on-complete-timeout", "--on-complete-url"}) {
    dl_retry->remove_option(dl_retry->get_option(flag));
  }
  dl_retry->add_option("--reason", dl_args.reason_pattern,
                       "only entries whose reason or message matches this regular expression");

  DistributedArgs dl_redis;  // dead-letter list|retry --redis URL --job NAME
  AddDeadLetterRedisFlags(*dl_list, dl_redis);
  AddDeadLetterRedisFlags(*dl_retry, dl_redis);
  DistributedCommands distributed;
  AddDistributedCommands(app, distributed);

  serve::ServeArgs serve_args;
  CLI::App* serve = app.add_subcommand(
      "serve",
      "Serve an HTTP/JSON job API (docs/openapi.yaml): submit ingest jobs, watch their "
      "progress, cancel them; jobs survive a restart.");
  serve::AddServeFlags(*serve, serve_args);
  serve->add_option("--log-level", serve_args.log_level, "error, warn, info or debug")
      ->capture_default_str()
      ->check(CLI::IsMember({"error", "warn", "info", "debug"}));

  // Expand `--config FILE` (ingest, dead-letter retry) before parsing so its
  // keys become flags.
  std::vector<std::string> args;
  for (int i = argc - 1; i >= 1; --i) args.emplace_back(argv[i]);  // CLI11 wants reverse order
  std::vector<std::string> forward(args.rbegin(), args.rend());
  const bool is_enqueue = !forward.empty() && forward[0] == "enqueue";
  const bool is_ingest = !forward.empty() && (forward[0] == "ingest" || is_enqueue);
  const bool is_retry = forward.size() >= 2 && forward[0] == "dead-letter" && forward[1] == "retry";
  if (is_ingest || is_retry) {
    const size_t skip = is_ingest ? 1 : 2;
    std::vector<std::string> rest(forward.begin() + static_cast<std::ptrdiff_t>(skip),
                                  forward.end());
    auto expanded = is_enqueue  ? ExpandConfigFile(*distributed.enqueue, rest,
                                                   distributed.enqueue_options.routes)
                    : is_ingest ? ExpandConfigFile(*ingest, rest, ingest_options.routes)
                                : ExpandConfigFile(*dl_retry, rest, retry_options.routes);
    if (!expanded.ok()) {
      std::fprintf(stderr, "sluice: %s\n", expanded.status().message().c_str());
      return 2;
    }
    forward.resize(skip);
    forward.insert(forward.end(), expanded->begin(), expanded->end());
    args.assign(forward.rbegin(), forward.rend());
  }
  try {
    app.parse(args);
  } catch (const CLI::ParseError& e) {
    // --help/--version exit 0; every usage error exits 2 (CLI11 has its own codes).
    return app.exit(e) == 0 ? 0 : 2;
  }

  if (*ingest) {
    SetUpLogging(ingest_extras.log_level, ingest_extras.log_format);
    if (Status s = FinishIngestOptions(ingest_options, ingest_extras); !s.ok()) {
      spdlog::error("{}", s.message());
      return 2;
    }
    if (!WantsRedis(ingest_redis) && !ingest_redis.job.empty()) {
      spdlog::error("--job names a distributed job: it needs --redis or --redis-env");
      return 2;
    }
    if (WantsRedis(ingest_redis)) {
      return RunIngestThroughRedis(*ingest, ingest_options, ingest_extras, ingest_redis);
    }
    auto handoff = HandoffOptionsFromFlags(ingest_options, ingest_extras);
    if (!handoff.ok()) {
      spdlog::error("{}", handoff.status().message());
      return 2;
    }
    return RunIngestCommand(ingest_options,
                            {ingest_extras.metrics_listen, ingest_extras.metrics_allow_remote},
                            *handoff);
  }
  if (*search) {
    SetUpLogging(search_extras.log_level, search_extras.log_format);
    if (Status s = FinishIngestOptions(search_args.options, search_extras); !s.ok()) {
      spdlog::error("{}", s.message());
      return 2;
    }
    if (!search_store_env.empty()) {
      if (Status s = StoreUriFromEnvironment(search_store_env, search_args.store_uri); !s.ok()) {
        spdlog::error("{}", s.message());
        return 2;
      }
    }
    search_args.model_given = search->get_option("--model")->count() > 0;
    search_args.dimensions_given = search->get_option("--dimensions")->count() > 0;
    return RunSearchCommand(search_args);
  }
  if (*demo) {
    SetUpLogging("info");
    return RunDemoCommand(demo_args);
  }
  if (*verify) {
    SetUpLogging("info");
    if (!verify_store_env.empty()) {
      if (Status s = StoreUriFromEnvironment(verify_store_env, verify_args.store_uri); !s.ok()) {
        spdlog::error("{}", s.message());
        return 2;
      }
    }
    return RunVerifyCommand(verify_args);
  }
  if (*aggregate) {
    SetUpLogging("info");
    if (!aggregate_store_env.empty()) {
      if (Status s = StoreUriFromEnvironment(aggregate_store_env, aggregate_args.store_uri);
          !s.ok()) {
        spdlog::error("{}", s.message());
        return 2;
      }
    }
    return RunAggregateCommand(aggregate_args);
  }
  const bool dl_from_redis = !dl_redis.redis_url.empty() || !dl_redis.redis_env.empty();
  if (*dl_list) {
    SetUpLogging("info");
    if (dl_from_redis) return RunDeadLetterRedisCommand(dl_redis, /*retry=*/false);
    return RunDeadLetterListCommand(dl_args);
  }
  if (*dl_retry) {
    SetUpLogging(retry_extras.log_level, retry_extras.log_format);
    if (dl_from_redis) return RunDeadLetterRedisCommand(dl_redis, /*retry=*/true);
    if (Status s = FinishIngestOptions(retry_options, retry_extras); !s.ok()) {
      spdlog::error("{}", s.message());
      return 2;
    }
    return RunDeadLetterRetryCommand(dl_args, retry_options);
  }
  if (*distributed.enqueue) {
    SetUpLogging(distributed.enqueue_extras.log_level, distributed.enqueue_extras.log_format);
  } else if (*distributed.worker) {
    SetUpLogging(distributed.worker_args.log_level);
  } else if (*distributed.status) {
    SetUpLogging("info");
  }
  if (std::optional<int> status = RunDistributedCommand(distributed)) return *status;
  if (*serve) {
    SetUpLogging(serve_args.log_level);
    return serve::RunServeCommand(serve_args);
  }
  if (*mock) {
    SetUpLogging("info");
    return RunMockApiCommand(mock_options);
  }
  return 2;
}

}  // namespace
}  // namespace sluice::cli

int main(int argc, char** argv) { return sluice::cli::Main(argc, argv); }
