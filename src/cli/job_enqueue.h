// What a distributed job records and how it is enqueued (docs/DISTRIBUTED.md),
// shared by `sluice enqueue`, `sluice ingest --redis` and `sluice serve
// --redis`: the job's options as config keys (canonical JSON), the store URI
// without its password, one task per source file (or byte-range tasks for a
// large JSONL file), the files the store holds unchanged left out.
//
// Thread safety: free functions; EnqueueIngestJob runs one walker thread of
// its own.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include <CLI/CLI.hpp>

#include "distributed/redis_client.h"
#include "sluice/pipeline.h"
#include "sluice/status.h"

namespace sluice::cli {

// A JSONL file larger than this is enqueued as byte-range tasks.
inline constexpr uint64_t kDefaultSplitBytes = uint64_t{64} << 20;

// The URI with any password removed (not replaced: the workers must be able
// to use it as it is, with the password from their environment).
std::string StripPassword(std::string uri);

// A SQLite file is only reachable on one machine: refused (InvalidArgument)
// with a Redis that other machines reach.
Status CheckStoreReachable(const std::string& store_uri, const RedisEndpoint& redis);

// The job's options as canonical JSON: {"route":[{glob,domain,category}],
// "settings":{key:[values]}} from the ingest flags given on `app` (the store,
// the Redis flags, logging and per-process outputs left out).
Result<std::string> JobOptionsJson(const CLI::App& app, const IngestOptions& options);

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
