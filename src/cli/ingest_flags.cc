#include "cli/ingest_flags.h"

#include <cstdlib>

#include <toml++/toml.h>

#include "distributed/redis_client.h"

namespace sluice::cli {

namespace {

// Single-valued options take the last value given, so a command-line flag
// overrides the same key from the config file (inserted before it).
CLI::Option* Last(CLI::Option* o) {
  return o->multi_option_policy(CLI::MultiOptionPolicy::TakeLast)->capture_default_str();
}

}  // namespace

void AddEmbedderFlags(CLI::App& app, IngestOptions& o, IngestFlagExtras& x) {
  Last(app.add_option("--embedder", x.embedder,
                      "auto: HTTP when an endpoint is configured, else the offline hash embedder; "
                      "http; hash (offline, lexical not semantic)"))
      ->check(CLI::IsMember({"auto", "http", "hash"}))
      ->group("Embedder");
  Last(app.add_option("--endpoint", o.http.endpoint,
                      "OpenAI-compatible base URL, e.g. https://api.openai.com/v1 "
                      "(default: $OPENAI_BASE_URL)"))
      ->group("Embedder");
  Last(app.add_option("--model", o.http.model, "embedding model name"))->group("Embedder");
  Last(app.add_option("--dimensions", o.http.dimensions,
                      "request this many dimensions (text-embedding-3 models); 0: model default"))
      ->check(CLI::NonNegativeNumber)
      ->group("Embedder");
  Last(app.add_option("--api-key-env", x.api_key_env,
                      "environment variable holding the API key (never pass keys as flags)"))
      ->group("Embedder");
  Last(app.add_option("--hash-dimensions", o.hash.dimensions,
                      "dimensions of the offline hash embedder"))
      ->check(CLI::Range(8, 65536))
      ->group("Embedder");
  Last(app.add_option("--request-timeout", x.request_timeout_s,
                      "seconds before a request times out"))
      ->check(CLI::PositiveNumber)
      ->group("Embedder");
  Last(app.add_option("--log-level", x.log_level, "error, warn, info or debug"))
      ->check(CLI::IsMember({"error", "warn", "info", "debug"}));
  Last(app.add_option("--log-format", x.log_format,
                      "text, or json: one object per line with time, level, logger and message"))
      ->check(CLI::IsMember({"text", "json"}));
}

void AddIngestFlags(CLI::App& app, IngestOptions& o, IngestFlagExtras& x) {
  app.add_option("inputs", o.inputs,
                 "files or folders to ingest (.txt .md .html .pdf .epub .docx .jsonl ...), "
                 "or '-' for JSONL records on stdin")
      ->required();
  app.add_option("--config",
                 "TOML file of settings: keys are these flags' long names; "
                 "[[route]] tables route sources to domains/categories");
  app.add_option("--include", o.include_globs,
                 "only sources whose relative path matches this glob (repeatable)")
      ->group("Sources");
  app.add_option("--exclude", o.exclude_globs,
                 "skip sources whose relative path matches this glob (repeatable)")
      ->group("Sources");
  Last(app.add_option("--parser-cmd", o.parser_cmd,
                      "run this command on each file (its path is \"$1\"); it prints JSONL records "
                      "{\"id\",\"text\",\"domain\",\"category\",\"metadata\"} on stdout"))
      ->group("Sources");
  Last(app.add_option("--routes", o.routes_file,
                      "TOML file with [[route]] glob/domain/category rules"))
      ->group("Sources");
  Last(app.add_option("--readers", o.reader_threads, "parser threads; 0: one per core"))
      ->check(CLI::NonNegativeNumber)
      ->group("Sources");

  Last(app.add_option("--chunk-tokens", o.chunker.chunk_tokens, "token budget per chunk"))
      ->check(CLI::Range(16u, 1000000u))
      ->group("Chunking");
  Last(app.add_option("--chunk-overlap", o.chunker.overlap_tokens,
                      "tokens repeated between neighbouring chunks"))
      ->group("Chunking");
  Last(app.add_option("--chars-per-token", o.chunker.chars_per_token,
                      "bytes of text per token when estimating token counts"))
      ->check(CLI::Range(0.5, 64.0))
      ->group("Chunking");

  AddEmbedderFlags(app, o, x);
  Last(app.add_option("--batch-size", o.embed.batch_size, "inputs per embedding request"))
      ->check(CLI::Range(size_t{1}, size_t{100000}))
      ->group("Embedder");
  Last(app.add_option("--concurrency", o.concurrency,
                      "requests in flight; 0: adaptive (finds the service's capacity)"))
      ->check(CLI::NonNegativeNumber)
      ->group("Embedder");
  Last(app.add_option(
           "--rpm", o.rpm,
           "the service's requests-per-minute limit, if known (0: learn it from headers)"))
      ->check(CLI::NonNegativeNumber)
      ->group("Embedder");
  Last(app.add_option("--tpm", o.tpm,
                      "the service's tokens-per-minute limit, if known (0: learn it from headers)"))
      ->check(CLI::NonNegativeNumber)
      ->group("Embedder");
  Last(app.add_option("--budget-redis", o.shared_budget.redis_url,
                      "share one rate budget (requests, tokens, Retry-After cooldown, in-flight "
                      "cap) with every sluice process using this Redis, "
                      "redis://[[user]:password@]host[:port][/db]; empty: pace alone"))
      ->check([](const std::string& url) {
        if (url.empty()) return std::string();
        auto parsed = ParseRedisUrl(url);
        return parsed.ok() ? std::string() : parsed.status().message();
      })
      ->group("Embedder");
  Last(app.add_option("--budget-redis-env", x.budget_redis_env,
                      "environment variable holding the --budget-redis URL (a password in a "
                      "flag is visible in the process list)"))
      ->group("Embedder");
  Last(app.add_option("--budget-name", o.shared_budget.name,
                      "the shared budget's name (Redis keys sluice:budget:{NAME}:*); default: "
                      "derived from the endpoint and model, so processes using one API share it"))
      ->group("Embedder");
  Last(app.add_option("--budget-max-in-flight", o.shared_budget.max_in_flight,
                      "requests in flight across every process sharing the budget; 0: no cap"))
      ->check(CLI::NonNegativeNumber)
      ->group("Embedder");
  Last(app.add_option_function<double>(
           "--budget-lease-seconds",
           [&o](double seconds) { o.shared_budget.lease_duration = FromSeconds(seconds); },
           "with --budget-max-in-flight: a slot a process holds lapses this long after its "
           "last renewal, so a killed process's slots come back (default 30)"))
      ->check(CLI::Range(1.0, 3600.0))
      ->group("Embedder");
  Last(app.add_option("--max-chunks-in-flight", o.embed.in_flight_chunk_budget,
                      "chunks the embed stage keeps in requests at once: adaptive batches are "
                      "cut to this over the concurrency limit (bounds memory; throughput is at "
                      "most this / latency, so raise it for a large self-hosted service); 0: no "
                      "cap"))
      ->group("Embedder");
  Last(app.add_option("--max-inputs-per-request", o.embed.max_inputs_per_request,
                      "the service's limit on inputs per request (OpenAI: 2048)"))
      ->check(CLI::PositiveNumber)
      ->group("Embedder");
  Last(app.add_option("--max-tokens-per-request", o.embed.max_tokens_per_request,
                      "the service's limit on tokens per request (OpenAI: 300000)"))
      ->check(CLI::PositiveNumber)
      ->group("Embedder");
  Last(app.add_option("--max-tokens-per-input", o.embed.max_tokens_per_input,
                      "the service's limit on tokens per input (OpenAI: 8191)"))
      ->check(CLI::PositiveNumber)
      ->group("Embedder");
  Last(app.add_option("--oversize", x.oversize,
                      "an input over --max-tokens-per-input is split or truncated"))
      ->check(CLI::IsMember({"split", "truncate"}))
      ->group("Embedder");
  Last(app.add_option("--max-attempts", o.embed.retry.max_attempts,
                      "tries per request (first included) before its chunks are dead-lettered"))
      ->check(CLI::Range(1, 100))
      ->group("Embedder");

  Last(app.add_option("--store", o.store_uri,
                      "sqlite:PATH or postgres://user@host:port/db (no password here: the "
                      "process list shows it; use PGPASSWORD, ~/.pgpass or --store-env)"))
      ->group("Store");
  Last(app.add_option("--store-env", x.store_env, kStoreEnvHelp))->group("Store");
  app.add_option("--store-batch", x.store_batch,
                 "rows per store transaction (default: 4000 for SQLite, 500 for PostgreSQL)")
      ->multi_option_policy(CLI::MultiOptionPolicy::TakeLast)
      ->check(CLI::Range(size_t{1}, size_t{100000}))
      ->group("Store");
  Last(app.add_option("--table", o.store.table, "chunks table name"))->group("Store");
  Last(app.add_option("--pool-size", o.store.pool_size,
                      "PostgreSQL connections writing in parallel"))
      ->check(CLI::Range(1, 64))
      ->group("Store");
  Last(app.add_option("--cleanup", x.cleanup,
                      "incremental: delete a changed file's stale chunks; full: also delete the "
                      "files gone from the given roots; none: never delete (docs/RESUME.md)"))
      ->check(CLI::IsMember({"none", "incremental", "full"}))
      ->group("Store");
  app.add_flag("--skip-unchanged,!--reprocess-all", o.skip_unchanged,
               "skip files whose fingerprint (size+mtime, then content hash) is unchanged")
      ->group("Store");
  app.add_flag("--reembed", o.store.reembed,
               "re-embed everything: empty the store (chunks, fingerprints, cache) and give it "
               "this run's model and dimensions; needed to change a store's model")
      ->group("Store");
  // A callback, not add_flag(std::optional<bool>&): CLI11 takes an optional
  // (constructible from an integer) for a counter and sets it to 0 (false)
  // at registration, which would erase the default. The last of --cache and
  // --no-cache wins, as for the other flags.
  app.add_flag_function(
         "--cache,!--no-cache", [&o](std::int64_t n) { o.embedding_cache = n > 0; },
         "answer texts already embedded (same model and dimensions) from the store; "
         "default: on with an embedding service, off with the offline hash embedder "
         "(it computes a vector faster than the cache looks one up)")
      ->multi_option_policy(CLI::MultiOptionPolicy::TakeLast)
      ->group("Store");
  Last(app.add_option("--create-index", o.store.create_index,
                      "PostgreSQL with pgvector: build an hnsw or ivfflat index after the load"))
      ->check(CLI::IsMember({"", "hnsw", "ivfflat"}))
      ->group("Store");

  Last(
      app.add_option("--out", o.aggregate.out_dir, "folder for the per-domain/category JSON files"))
      ->group("Output");
  Last(app.add_option("--aggregate-every", o.aggregate.flush_every,
                      "chunks between flushes of a domain/category file"))
      ->check(CLI::PositiveNumber)
      ->group("Output");
  Last(app.add_option_function<double>(
           "--aggregate-min-interval",
           [&o](double seconds) { o.aggregate.min_flush_interval = FromSeconds(seconds); },
           "seconds a domain/category file waits after a flush before the next (its first "
           "flush and the last are never held back; each flush rewrites the whole file, so "
           "short runs otherwise write ~1.5x the final files again); 0: --aggregate-every "
           "alone (default 10)"))
      ->check(CLI::Range(0.0, 86400.0))
      ->group("Output");
  app.add_flag("--aggregate-embeddings,!--no-aggregate-embeddings", o.aggregate.include_embeddings,
               "write vectors into the aggregate JSON files too")
      ->group("Output");
  app.add_flag("--aggregate,!--no-aggregate", o.aggregate_enabled,
               "write the per-domain/category JSON files")
      ->group("Output");
  Last(app.add_option("--dead-letter", o.dead_letter_path,
                      "JSONL file receiving every chunk or source that could not be processed "
                      "(default: OUT/.dead-letter.jsonl, OUT being --out)"))
      ->group("Output");
  Last(app.add_option("--report", o.report_path, "write the JSON report to this file"))
      ->group("Output");
  Last(app.add_option("--trace", o.trace_path,
                      "write the concurrency controller's 1-second trace: FILE.csv, FILE.json, or "
                      "FILE.html (the HTML run report); any other extension is refused"))
      ->check(CLI::Validator(
          [](std::string& path) -> std::string {
            if (TraceFormatForPath(path)) return "";
            return "--trace " + path + ": the extension must be .csv, .json or .html";
          },
          "FILE.csv|.json|.html"))
      ->group("Output");
  Last(app.add_option("--html-report", o.html_report_path,
                      "write a self-contained HTML run report (charts over time, counts, cost, "
                      "dead-letter reasons) to this file; opens offline"))
      ->group("Output");
  Last(app.add_option(
           "--queue-capacity", o.queue_capacity,
           "items per stage queue (backpressure bound); the queues into and out of the store "
           "also hold one store write (4,000 rows with SQLite, 1,000 with PostgreSQL)"))
      ->check(CLI::Range(size_t{1}, size_t{1000000}))
      ->group("Output");
  app.add_flag("--progress,!--no-progress", o.progress,
               "progress: a live line on a terminal, else a log line every --progress-interval "
               "seconds (sources, chunks/s, tokens/s, ETA, cost, in flight, 429s)")
      ->group("Output");
  app.add_option_function<double>(
         "--progress-interval",
         [&o](double seconds) { o.progress_interval = FromSeconds(seconds); },
         "seconds between progress lines when stderr is not a terminal (default 10; one more "
         "line at the end)")
      ->check(CLI::Range(0.1, 86400.0))
      ->group("Output");
  app.add_flag_callback(
         "--quiet", [&o] { o.progress = false; },
         "no progress output (errors and warnings still go to stderr)")
      ->group("Output");
  Last(app.add_option("--price-per-mtok", o.price_per_mtok,
                      "USD per million tokens for the cost shown in progress and the report "
                      "(default: the built-in price of OpenAI's embedding models; other models "
                      "show no cost)"))
      ->check(CLI::NonNegativeNumber)
      ->group("Output");
  Last(app.add_option("--metrics-listen", x.metrics_listen,
                      "serve Prometheus metrics at http://HOST:PORT/metrics while the run lasts "
                      "(e.g. 127.0.0.1:9464; port 0: any free port, logged); loopback only "
                      "unless --metrics-allow-remote"))
      ->group("Output");
  app.add_flag("--metrics-allow-remote", x.metrics_allow_remote,
               "allow --metrics-listen on a non-loopback address (other machines can then read "
               "the run's counts and cost)")
      ->group("Output");

  Last(app.add_option(
           "--on-complete", x.on_complete,
           "run this command once the run ends, also after a failure (not through a shell: "
           "split on whitespace, quotes group words); it gets SLUICE_REPORT, "
           "SLUICE_AGGREGATE_DIR, SLUICE_EXIT_STATUS, SLUICE_STATUS, SLUICE_CHUNKS_STORED, ... "
           "in its environment (README.md, \"Hand-off\"); its exit status and output tail go "
           "into the report's \"handoff\"; it never changes sluice's exit status"))
      ->group("Hand-off");
  app.add_flag("--on-complete-shell", x.on_complete_shell,
               "run --on-complete through /bin/sh -c (pipes, redirections, $VARS)")
      ->group("Hand-off");
  Last(app.add_option("--on-complete-timeout", x.on_complete_timeout_s,
                      "seconds before --on-complete (and its children) is killed and reported "
                      "as timed out"))
      ->check(CLI::Range(0.1, 86400.0))
      ->group("Hand-off");
  Last(app.add_option("--on-complete-url", x.on_complete_url,
                      "POST the JSON report to this http(s) URL once the run ends (retried on "
                      "connection errors, 429 and 5xx); the result goes into the report"))
      ->group("Hand-off");
}

bool IsConfigKey(const CLI::App& app, const std::string& key) {
  if (key.empty() || key == "inputs" || key == "config") return false;
  return app.get_option_no_throw("--" + key) != nullptr;
}

std::string ConfigSettingArg(const std::string& key, const std::string& value) {
  return "--" + key + "=" + value;
}

Result<IngestOptions> IngestOptionsFromArgs(const std::vector<std::string>& args,
                                            const std::vector<std::string>& inputs,
                                            IngestOptions base, IngestFlagExtras extras) {
  CLI::App app{"sluice ingest"};
  AddIngestFlags(app, base, extras);
  // CLI11 takes the arguments in reverse order; "--" keeps a path that starts
  // with '-' a path.
  std::vector<std::string> reversed(inputs.rbegin(), inputs.rend());
  reversed.push_back("--");
  reversed.insert(reversed.end(), args.rbegin(), args.rend());
  try {
    app.parse(reversed);
  } catch (const CLI::ParseError& e) {
    return Status::InvalidArgument(e.what());
  }
  if (Status s = FinishIngestOptions(base, extras); !s.ok()) return s;
  return base;
}

Result<std::vector<std::string>> ExpandConfigFile(const CLI::App& app,
                                                  std::vector<std::string> args,
                                                  std::vector<RouteRule>& routes) {
  std::string path;
  size_t config_at = args.size(), config_len = 0;
  for (size_t i = 0; i < args.size(); ++i) {
    if (args[i] == "--config" && i + 1 < args.size()) {
      path = args[i + 1];
      config_at = i;
      config_len = 2;
      break;
    }
    if (args[i].rfind("--config=", 0) == 0) {
      path = args[i].substr(9);
      config_at = i;
      config_len = 1;
      break;
    }
  }
  if (path.empty()) return args;
  args.erase(args.begin() + static_cast<std::ptrdiff_t>(config_at),
             args.begin() + static_cast<std::ptrdiff_t>(config_at + config_len));

  toml::table table;
  try {
    table = toml::parse_file(path);
  } catch (const toml::parse_error& e) {
    const auto& where = e.source().begin;
    return Status::InvalidArgument("config " + path + ":" + std::to_string(where.line) + ":" +
                                   std::to_string(where.column) + ": " +
                                   std::string(e.description()));
  } catch (const std::exception& e) {
    return Status::InvalidArgument("cannot read config " + path + ": " + e.what());
  }

  std::vector<std::string> from_file;
  for (const auto& [key_node, value] : table) {
    const std::string key(key_node.str());
    const auto line = std::to_string(key_node.source().begin.line);
    if (key == "route") {
      const toml::array* rules = value.as_array();
      if (rules == nullptr) {
        return Status::InvalidArgument("config " + path + ":" + line +
                                       ": 'route' must be an array of tables: [[route]]");
      }
      for (const auto& rule_node : *rules) {
        const toml::table* rule = rule_node.as_table();
        const auto rule_line = std::to_string(rule_node.source().begin.line);
        if (rule == nullptr) {
          return Status::InvalidArgument("config " + path + ":" + rule_line +
                                         ": [[route]] entries must be tables");
        }
        RouteRule r;
        for (const auto& [field_key, field] : *rule) {
          const std::string name(field_key.str());
          const auto field_line = std::to_string(field_key.source().begin.line);
          auto text = field.value<std::string>();
          std::string* target = name == "glob"       ? &r.glob
                                : name == "domain"   ? &r.domain
                                : name == "category" ? &r.category
                                                     : nullptr;
          if (target == nullptr) {
            return Status::InvalidArgument("config " + path + ":" + field_line + ": unknown key '" +
                                           name +
                                           "' in [[route]] (expected glob, domain, category)");
          }
          if (!text) {
            return Status::InvalidArgument("config " + path + ":" + field_line + ": '" + name +
                                           "' must be a string");
          }
          *target = *text;
        }
        if (r.glob.empty()) {
          return Status::InvalidArgument("config " + path + ":" + rule_line +
                                         ": [[route]] needs a glob");
        }
        routes.push_back(std::move(r));
      }
      continue;
    }
    if (!IsConfigKey(app, key)) {
      return Status::InvalidArgument("config " + path + ":" + line + ": unknown key '" + key +
                                     "' (keys are the long flag names of `sluice ingest --help`)");
    }
    auto scalar = [&](const toml::node& n) -> std::optional<std::string> {
      if (auto s = n.value<std::string>()) return *s;
      if (auto b = n.as_boolean()) return b->get() ? "true" : "false";
      if (auto i = n.as_integer()) return std::to_string(i->get());
      if (auto f = n.as_floating_point()) return std::to_string(f->get());
      return std::nullopt;
    };
    if (const toml::array* arr = value.as_array()) {
      for (const auto& element : *arr) {
        auto v = scalar(element);
        if (!v)
          return Status::InvalidArgument("config " + path + ":" + line + ": '" + key +
                                         "' must hold scalars");
        from_file.push_back(ConfigSettingArg(key, *v));
      }
      continue;
    }
    auto v = scalar(value);
    if (!v) {
      return Status::InvalidArgument("config " + path + ":" + line + ": '" + key +
                                     "' must be a string, number or boolean");
    }
    from_file.push_back(ConfigSettingArg(key, *v));
  }
  // The file's settings go first so that the command line, parsed later, wins.
  from_file.insert(from_file.end(), args.begin(), args.end());
  return from_file;
}

Status StoreUriFromEnvironment(const std::string& variable, std::string& store_uri) {
  const char* uri = std::getenv(variable.c_str());
  if (uri == nullptr || *uri == '\0') {
    return Status::InvalidArgument("--store-env " + variable +
                                   ": the environment variable is not set or empty");
  }
  store_uri = uri;
  return Status::OK();
}

Status FinishIngestOptions(IngestOptions& o, const IngestFlagExtras& x) {
  if (o.http.endpoint.empty()) {
    if (const char* base = std::getenv("OPENAI_BASE_URL"); base != nullptr && *base != '\0') {
      o.http.endpoint = base;
    }
  }
  if (!x.api_key_env.empty()) {
    if (const char* key = std::getenv(x.api_key_env.c_str()); key != nullptr) o.http.api_key = key;
  }
  if (!x.store_env.empty()) {
    if (Status s = StoreUriFromEnvironment(x.store_env, o.store_uri); !s.ok()) return s;
  }
  if (!x.budget_redis_env.empty()) {
    const char* url = std::getenv(x.budget_redis_env.c_str());
    if (url == nullptr || *url == '\0') {
      return Status::InvalidArgument("--budget-redis-env " + x.budget_redis_env +
                                     ": the environment variable is not set or empty");
    }
    if (auto parsed = ParseRedisUrl(url); !parsed.ok()) {
      return Status::InvalidArgument("--budget-redis-env " + x.budget_redis_env + ": " +
                                     parsed.status().message());
    }
    o.shared_budget.redis_url = url;
  }
  o.embedder = x.embedder == "http"   ? EmbedderKind::kHttp
               : x.embedder == "hash" ? EmbedderKind::kHash
                                      : EmbedderKind::kAuto;
  o.embed.oversize =
      x.oversize == "truncate" ? OversizeInputPolicy::kTruncate : OversizeInputPolicy::kSplit;
  o.http.request_timeout = FromSeconds(x.request_timeout_s);
  o.store.batch_rows = x.store_batch;  // 0: the store's own default
  if (o.http.dimensions > 0) o.store.dimensions = o.http.dimensions;
  o.progress_through_logger = x.log_format == "json";
  o.dead_letter_path = DeadLetterPathFor(o);
  auto cleanup = ParseCleanupMode(x.cleanup);
  if (!cleanup.ok()) return cleanup.status();
  o.cleanup = *cleanup;
  return Status::OK();
}

Result<HandoffOptions> HandoffOptionsFromFlags(const IngestOptions& o, const IngestFlagExtras& x) {
  HandoffOptions handoff;
  if (!x.on_complete.empty()) {
    auto argv = SplitCommandLine(x.on_complete);
    if (!argv.ok()) return argv.status().WithContext("--on-complete");
    handoff.command = std::move(*argv);
  }
  handoff.use_shell = x.on_complete_shell;
  handoff.command_timeout = FromSeconds(x.on_complete_timeout_s);
  if (!x.on_complete_url.empty() && !x.on_complete_url.starts_with("http://") &&
      !x.on_complete_url.starts_with("https://")) {
    return Status::InvalidArgument("--on-complete-url must start with http:// or https://");
  }
  handoff.url = x.on_complete_url;
  // The hook sees the run's outcome, not its credentials.
  for (const std::string& name : {x.api_key_env, x.store_env, x.budget_redis_env}) {
    if (!name.empty()) handoff.secret_env_names.push_back(name);
  }
  handoff.secret_env_names.push_back("OPENAI_API_KEY");
  if (!o.http.api_key.empty()) handoff.secret_env_values.push_back(o.http.api_key);
  return handoff;
}

}  // namespace sluice::cli
