// The distributed subcommands (docs/DISTRIBUTED.md):
//   sluice enqueue PATHS... --redis URL --job NAME [ingest options]
//   sluice worker --redis URL --job NAME [--exit-when-idle] [--visibility-timeout S]
//                 [--max-deliveries N]
//   sluice status --redis URL --job NAME [--json] [--watch [SECONDS]]
//                 [--wait [--out DIR] [--store URI | --store-env VAR]]
//   sluice dead-letter list|retry --redis URL --job NAME
//   sluice ingest PATHS... --redis URL [--job NAME] [ingest options]
// The Redis URL may hold a password: --redis-env VAR keeps it out of the
// process list, and it is never printed (RedisEndpoint::Redacted()).
//
// Thread safety: used by main() only.
#pragma once

#include <optional>
#include <string>

#include <CLI/CLI.hpp>

#include "cli/ingest_flags.h"
#include "cli/job_enqueue.h"
#include "distributed/redis_client.h"

namespace sluice::cli {

struct DistributedArgs {
  std::string redis_url;
  std::string redis_env;  // environment variable holding the Redis URL
  std::string job = "default";
  // enqueue (and ingest --redis): a JSONL file larger than this becomes
  // byte-range tasks of about this size; 0: never split.
  uint64_t split_bytes = kDefaultSplitBytes;
  // worker
  bool exit_when_idle = false;
  double visibility_timeout_s = 60;
  int max_deliveries = 5;
  size_t max_in_flight = 16;
  std::string store_uri;  // overrides the job's store (e.g. the same URI with its password)
  std::string store_env;
  std::string log_level = "info";
  // worker and status --wait: how long a Redis outage is waited out
  double redis_outage_timeout_s = 300;
  // status
  bool json = false;
  double watch_s = 0;   // --watch: reprint every this many seconds; 0: print once
  bool wait = false;    // --wait: block until the job is drained
  std::string out_dir;  // --out with --wait: the aggregate files, from the job's store
};

struct DistributedCommands {
  CLI::App* enqueue = nullptr;
  CLI::App* worker = nullptr;
  CLI::App* status = nullptr;
  IngestOptions enqueue_options;
  IngestFlagExtras enqueue_extras;
  DistributedArgs enqueue_args, worker_args, status_args;
};

void AddDistributedCommands(CLI::App& app, DistributedCommands& commands);
// Runs the distributed subcommand that was parsed; nullopt when none was.
std::optional<int> RunDistributedCommand(DistributedCommands& commands);

// `sluice ingest --redis URL [--job NAME]`: the flags (on the ingest
// command), whether they were given, and the run: enqueue the inputs as
// `sluice enqueue` would, then work the job with one worker in this process
// until it is drained (its exit status). REQUIRES: FinishIngestOptions done.
void AddIngestRedisFlags(CLI::App& ingest, DistributedArgs& args);
bool WantsRedis(const DistributedArgs& args);
int RunIngestThroughRedis(const CLI::App& ingest, IngestOptions& options,
                          const IngestFlagExtras& extras, DistributedArgs args);

// `sluice dead-letter list|retry --redis URL --job NAME`: the flags, and the
// command (list prints each dead task with its error; retry re-adds them).
void AddDeadLetterRedisFlags(CLI::App& command, DistributedArgs& args);
int RunDeadLetterRedisCommand(const DistributedArgs& args, bool retry);

// The Redis URL of --redis or --redis-env (it may hold a password: never
// print it; RedisEndpoint::Redacted() is what may be shown).
Result<std::string> RedisUrlOf(const DistributedArgs& args);

}  // namespace sluice::cli
