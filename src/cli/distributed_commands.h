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
#include "distributed/redis_client.h"

namespace sluice::cli {

// A JSONL file larger than this is enqueued as byte-range tasks.
inline constexpr uint64_t kDefaultSplitBytes = uint64_t{64} << 20;

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

// What a distributed job cannot do, as `sluice enqueue` refuses it
// (InvalidArgument): read stdin, --reembed, --cleanup full, and a SQLite
// store with a Redis that other machines reach.
Status CheckEnqueueable(const IngestOptions& options, const RedisEndpoint& redis);

// The options a job records in Redis (config keys -> values, canonical
// JSON, as `sluice enqueue` records its flags; the store and per-process
// outputs left out) from config settings as ConfigSettingArg gives them.
Result<std::string> RecordedJobOptions(const std::vector<std::string>& config_args,
                                       const std::vector<RouteRule>& routes);

struct EnqueueOutcome {
  uint64_t enqueued = 0;   // tasks added (ranges included)
  uint64_t unchanged = 0;  // files the store holds unchanged: not enqueued
  std::string store_uri;   // as recorded: no password, a SQLite path absolute
  uint64_t split_files = 0, ranges_enqueued = 0;  // JSONL files cut into range tasks
  // Files above the split size kept whole because an id repeats (one reader
  // refuses the repeat, as sluice ingest does), and the first such "path: id".
  uint64_t kept_whole = 0;
  std::string kept_whole_example;
};

// `sluice enqueue`'s work: records job `job` (its `options_json`, the store
// of `options` without a password) and adds one task per source file of
// options.inputs, leaving out those the store holds unchanged. Refuses what
// CheckEnqueueable refuses, and a job of that name recorded with other
// options (InvalidArgument); with `must_be_new`, any job of that name
// (Busy). A JSONL file larger than `split_bytes` (0: none) becomes range
// tasks (docs/DISTRIBUTED.md). REQUIRES: FinishIngestOptions done on `options`.
Result<EnqueueOutcome> EnqueueIngestJob(const RedisEndpoint& endpoint, const std::string& job,
                                        const std::string& options_json,
                                        const IngestOptions& options, bool must_be_new,
                                        uint64_t split_bytes = kDefaultSplitBytes);

}  // namespace sluice::cli
