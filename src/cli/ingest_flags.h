// The ingest options table: every option is declared once here (name, type,
// default, help) and that declaration feeds the command-line flags, --help
// and the TOML config file (--config FILE, whose keys are the long flag names
// without dashes; unknown keys are an error, and [[route]] tables hold the
// routing rules).
//
// Thread safety: used by main() only.
#pragma once

#include <string>
#include <vector>

#include <CLI/CLI.hpp>

#include "sluice/handoff.h"
#include "sluice/pipeline.h"

namespace sluice::cli {

// Values that need post-processing after parsing (environment, enums).
struct IngestFlagExtras {
  std::string embedder = "auto";
  std::string api_key_env = "OPENAI_API_KEY";
  std::string oversize = "split";
  double request_timeout_s = 60;
  std::string log_level = "info";
  std::string log_format = "text";  // text or json (one object per line, cli/json_log.h)
  std::string cleanup = "incremental";
  size_t store_batch = 0;      // 0: the store's default (SQLite 200, PostgreSQL 500)
  std::string store_env;       // environment variable holding the store URI; wins over --store
  std::string metrics_listen;  // --metrics-listen HOST:PORT; empty: no endpoint
  bool metrics_allow_remote = false;  // --metrics-allow-remote
  // The completion hand-off (include/sluice/handoff.h).
  std::string on_complete;             // the command line, split without a shell
  bool on_complete_shell = false;      // run it through /bin/sh -c instead
  double on_complete_timeout_s = 300;  // then its process group is killed
  std::string on_complete_url;         // POST the report JSON here
  // Environment variable holding the --budget-redis URL (its password stays
  // out of the process list); wins over --budget-redis.
  std::string budget_redis_env;
};

// Declares the embedder flags (shared by ingest, search and demo).
void AddEmbedderFlags(CLI::App& app, IngestOptions& options, IngestFlagExtras& extras);
// Declares every ingest flag.
void AddIngestFlags(CLI::App& app, IngestOptions& options, IngestFlagExtras& extras);

// Reads `--config FILE` from `args` (if present) and returns the arguments
// with the file's settings inserted before the user's own (so the command line
// wins). Unknown keys, bad types and TOML syntax errors are clear errors.
// The file's [[route]] tables are validated and appended to `routes`.
Result<std::vector<std::string>> ExpandConfigFile(const CLI::App& app,
                                                  std::vector<std::string> args,
                                                  std::vector<RouteRule>& routes);

// Whether `key` is a setting of the config file: a long flag name of `app`
// without its dashes, other than "inputs" and "config". The one mapping the
// TOML config file and `sluice serve`'s job options share (the same key means
// the same thing in both).
bool IsConfigKey(const CLI::App& app, const std::string& key);

// The flag argument of one config setting ("--key=value"); a list is one such
// argument per element.
std::string ConfigSettingArg(const std::string& key, const std::string& value);

// Ingest options from `args` (config settings as ConfigSettingArg gives them)
// and the input paths, parsed by the `sluice ingest` flag table over `base`
// (whose values are the defaults of every flag not given) and finished like
// the ingest command (FinishIngestOptions with `extras`). Routes are taken
// from `base.routes`. InvalidArgument with CLI11's message (which names the
// flag) when a value is refused.
Result<IngestOptions> IngestOptionsFromArgs(const std::vector<std::string>& args,
                                            const std::vector<std::string>& inputs,
                                            IngestOptions base, IngestFlagExtras extras);

// --store-env VAR: sets `store_uri` from the variable (which keeps a password
// out of the process list). InvalidArgument when it is unset or empty.
Status StoreUriFromEnvironment(const std::string& variable, std::string& store_uri);

// The help text of --store-env, shared by ingest, search and verify.
inline constexpr const char* kStoreEnvHelp =
    "environment variable holding the store URI, instead of --store (for a URI with a "
    "password: the process list shows flags, not the environment)";

// Resolves environment variables (OPENAI_API_KEY via --api-key-env,
// OPENAI_BASE_URL, the store URI via --store-env) and enum flags into
// `options`. A --store-env variable that is unset or empty is an error.
Status FinishIngestOptions(IngestOptions& options, const IngestFlagExtras& extras);

// The hand-off flags as HandoffOptions (call after FinishIngestOptions): the
// command split into argv (InvalidArgument for a bad quote), and the
// variables holding the API key and the store URI kept out of its
// environment. Empty options when no hand-off flag is set.
Result<HandoffOptions> HandoffOptionsFromFlags(const IngestOptions& options,
                                               const IngestFlagExtras& extras);

}  // namespace sluice::cli
