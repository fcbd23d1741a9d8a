#include "cli/distributed_commands.h"

#include <pthread.h>
#include <signal.h>
#include <unistd.h>

#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <thread>
#include <unordered_map>
#include <utility>

#include <fmt/format.h>
#include <simdjson.h>
#include <spdlog/spdlog.h>

#include "cli/commands.h"
#include "common/hashing.h"
#include "common/json_canonical.h"
#include "common/json_writer.h"
#include "distributed/job_rates.h"
#include "distributed/shared_budget.h"
#include "distributed/task_feed.h"
#include "distributed/task_stream.h"
#include "pipeline/rebuild_aggregates.h"
#include "pipeline/source_enumerator.h"
#include "sluice/store.h"

namespace sluice::cli {

namespace {

// The Redis URL of --redis or --redis-env (with its password, if any).
Result<std::string> RedisUrl(const DistributedArgs& args) {
  std::string url = args.redis_url;
  if (!args.redis_env.empty()) {
    const char* v = std::getenv(args.redis_env.c_str());
    if (v == nullptr || *v == '\0') {
      return Status::InvalidArgument("--redis-env " + args.redis_env +
                                     ": the environment variable is not set or empty");
    }
    url = v;
  }
  if (url.empty()) return Status::InvalidArgument("give --redis URL or --redis-env VAR");
  return url;
}

RedisOutageOptions OutageOptions(const DistributedArgs& args) {
  RedisOutageOptions outage;
  outage.give_up_after = FromSeconds(args.redis_outage_timeout_s);
  return outage;
}

Result<RedisEndpoint> ResolveRedis(const DistributedArgs& args) {
  Result<std::string> url = RedisUrl(args);
  if (!url.ok()) return url.status();
  return ParseRedisUrl(*url);
}

std::string HostName() {
  char buf[256] = {};
  if (::gethostname(buf, sizeof(buf) - 1) != 0) return "unknown";
  return buf;
}

// JobOptionsJson read back: the flag arguments and the routes.
Status ParseJobOptions(const std::string& json, std::vector<std::string>& args,
                       std::vector<RouteRule>& routes) {
  simdjson::dom::parser parser;
  simdjson::padded_string padded(json);
  simdjson::dom::element root;
  simdjson::dom::object object;
  if (parser.parse(padded).get(root) != simdjson::SUCCESS ||
      root.get_object().get(object) != simdjson::SUCCESS) {
    return Status::Corrupt("the job's options are not a JSON object");
  }
  for (auto [key, value] : object) {
    if (key == "route") {
      simdjson::dom::array list;
      if (value.get_array().get(list) != simdjson::SUCCESS) return Status::Corrupt("job route");
      for (simdjson::dom::element e : list) {
        std::string_view glob, domain, category;
        if (e["glob"].get_string().get(glob) != simdjson::SUCCESS ||
            e["domain"].get_string().get(domain) != simdjson::SUCCESS ||
            e["category"].get_string().get(category) != simdjson::SUCCESS) {
          return Status::Corrupt("job route");
        }
        routes.push_back(RouteRule{std::string(glob), std::string(domain), std::string(category)});
      }
    } else if (key == "settings") {
      simdjson::dom::object settings;
      if (value.get_object().get(settings) != simdjson::SUCCESS) {
        return Status::Corrupt("job settings");
      }
      for (auto [name, values] : settings) {
        simdjson::dom::array list;
        if (values.get_array().get(list) != simdjson::SUCCESS) {
          return Status::Corrupt("job setting");
        }
        for (simdjson::dom::element v : list) {
          std::string_view text;
          if (v.get_string().get(text) != simdjson::SUCCESS) return Status::Corrupt("job setting");
          args.push_back(ConfigSettingArg(std::string(name), std::string(text)));
        }
      }
    }
  }
  return Status::OK();
}

// The ingest options of a job, built through the ingest flag table itself.
Result<IngestOptions> WorkerIngestOptions(const JobRecord& job, IngestFlagExtras& extras) {
  std::vector<std::string> args;
  IngestOptions base;
  if (Status s = ParseJobOptions(job.options_json, args, base.routes); !s.ok()) return s;
  base.store_uri = job.store_uri;
  CLI::App table{"sluice worker"};
  AddIngestFlags(table, base, extras);
  table.remove_option(table.get_option("inputs"));  // the task stream says what to read
  std::vector<std::string> reversed(args.rbegin(), args.rend());
  try {
    table.parse(reversed);
  } catch (const CLI::ParseError& e) {
    return Status::InvalidArgument(std::string("the job's options: ") + e.what());
  }
  if (Status s = FinishIngestOptions(base, extras); !s.ok()) return s;
  return base;
}

int Fail(const Status& s, int code = 1) {
  spdlog::error("{}", s.message());
  return code;
}

int RunEnqueue(const CLI::App& app, IngestOptions& o, const DistributedArgs& args) {
  auto endpoint = ResolveRedis(args);
  if (!endpoint.ok()) return Fail(endpoint.status(), 2);
  auto options_json = JobOptionsJson(app, o);
  if (!options_json.ok()) return Fail(options_json.status());
  auto enqueued = EnqueueIngestJob(*endpoint, args.job, *options_json, o, /*must_be_new=*/false,
                                   args.split_bytes);
  if (!enqueued.ok()) {
    return Fail(enqueued.status(),
                enqueued.status().code() == StatusCode::kInvalidArgument ? 2 : 1);
  }
  std::printf(
      "enqueued %llu tasks to job '%s' at %s (store %s); %llu files unchanged in the "
      "store, not enqueued\n",
      static_cast<unsigned long long>(enqueued->enqueued), args.job.c_str(),
      endpoint->Redacted().c_str(), RedactUri(enqueued->store_uri).c_str(),
      static_cast<unsigned long long>(enqueued->unchanged));
  if (enqueued->split_files > 0) {
    std::printf(
        "split %llu JSONL files larger than %llu bytes into %llu range tasks (each file then "
        "gets one whole-file pass that commits it)\n",
        static_cast<unsigned long long>(enqueued->split_files),
        static_cast<unsigned long long>(args.split_bytes),
        static_cast<unsigned long long>(enqueued->ranges_enqueued));
  }
  if (enqueued->kept_whole > 0) {
    // Two ranges would each store a record under the repeated id; one reader
    // refuses the repeat, as sluice ingest does.
    std::printf(
        "kept %llu JSONL files larger than %llu bytes whole (one task each): an id is on more "
        "than one line (%s); the repeat is refused as sluice ingest refuses it\n",
        static_cast<unsigned long long>(enqueued->kept_whole),
        static_cast<unsigned long long>(args.split_bytes), enqueued->kept_whole_example.c_str());
  }
  return 0;
}

int RunWorker(const DistributedArgs& args) {
  auto endpoint = ResolveRedis(args);
  if (!endpoint.ok()) return Fail(endpoint.status(), 2);
  TaskStreamOptions stream_options{
      args.job, std::chrono::milliseconds(static_cast<int64_t>(args.visibility_timeout_s * 1000)),
      args.max_deliveries};
  auto stream = TaskStream::Open(*endpoint, stream_options);
  if (!stream.ok()) return Fail(stream.status(), 2);
  auto job = (*stream)->LoadJob();
  if (!job.ok()) return Fail(job.status());
  IngestFlagExtras extras;
  extras.log_level = args.log_level;
  auto built = WorkerIngestOptions(*job, extras);
  if (!built.ok()) return Fail(built.status(), 2);
  IngestOptions options = std::move(*built);
  if (!args.store_uri.empty()) options.store_uri = args.store_uri;
  if (!args.store_env.empty()) {
    if (Status s = StoreUriFromEnvironment(args.store_env, options.store_uri); !s.ok()) {
      return Fail(s, 2);
    }
  }
  if (Status s = CheckStoreReachable(options.store_uri, *endpoint); !s.ok()) return Fail(s, 2);
  // Every worker paces against one rate budget in the job's Redis
  // (docs/SHARED_BUDGET.md), named after the endpoint and model unless the
  // job set --budget-name: N workers on one API key stay within its limits.
  if (options.shared_budget.redis_url.empty()) {
    Result<std::string> url = RedisUrl(args);
    if (!url.ok()) return Fail(url.status(), 2);
    options.shared_budget.redis_url = *url;
  }

  const std::string host = HostName();
  const int64_t pid = static_cast<int64_t>(::getpid());
  const std::string consumer = host + "-" + std::to_string(pid);
  TaskFeedOptions feed_options;
  feed_options.endpoint = *endpoint;
  feed_options.stream = stream_options;
  feed_options.consumer = consumer;
  feed_options.host = host;
  feed_options.pid = pid;
  feed_options.exit_when_idle = args.exit_when_idle;
  feed_options.max_in_flight = args.max_in_flight;
  feed_options.outage = OutageOptions(args);
  auto feed = TaskFeed::Open(std::move(feed_options));
  if (!feed.ok()) return Fail(feed.status());
  TaskFeed& tasks = **feed;
  options.inputs.clear();
  options.source_feed = &tasks;
  options.on_source_done = [&tasks](const std::string& id, SourceOutcome outcome, const Status& why,
                                    uint64_t chunks_stored) {
    tasks.OnSourceDone(id, outcome, why, chunks_stored);
  };
  // Aggregates are per machine: a worker writes none (docs/DISTRIBUTED.md).
  options.aggregate_enabled = false;
  options.progress = false;
  options.report_path.clear();
  options.trace_path.clear();
  options.html_report_path.clear();
  options.dead_letter_path =
      (std::filesystem::path(options.aggregate.out_dir) / (".dead-letter." + consumer + ".jsonl"))
          .string();
  spdlog::info("worker {}: job '{}' at {}, store {}", consumer, args.job, endpoint->Redacted(),
               RedactUri(options.store_uri));
  // SIGINT/SIGTERM are for the watcher thread of RunWithSignalHandling:
  // blocked before the heartbeat thread starts, so it inherits the mask.
  sigset_t stop_signals;
  sigemptyset(&stop_signals);
  sigaddset(&stop_signals, SIGINT);
  sigaddset(&stop_signals, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &stop_signals, nullptr);
  tasks.Start();
  Pipeline pipeline(options);
  int signal_number = 0;
  IngestReport report = RunWithSignalHandling(pipeline, signal_number);
  tasks.Stop();
  std::fputs(FormatReportText(report, pipeline.metrics()).c_str(), stdout);
  std::printf("  %-22s%llu\n", "tasks done", static_cast<unsigned long long>(tasks.tasks_done()));
  std::fflush(stdout);
  if (!report.status.ok() && report.status.code() != StatusCode::kCancelled) {
    spdlog::error("{}", report.status.message());
  }
  if (Status s = tasks.error(); !s.ok()) return Fail(s);
  return ExitStatusFor(report, pipeline.metrics(), signal_number);
}

// Set by SIGINT/SIGTERM while `status --watch` or `--wait` waits.
volatile std::sig_atomic_t g_status_signal = 0;
extern "C" void OnStatusSignal(int signal_number) { g_status_signal = signal_number; }

// The shared budget the job's workers pace against, as control_wiring names
// it (docs/SHARED_BUDGET.md); empty when they embed without HTTP.
std::string JobBudgetName(const IngestOptions& o) {
  if (o.embedder == EmbedderKind::kHash || o.http.endpoint.empty()) return {};
  if (!o.shared_budget.name.empty()) return o.shared_budget.name;
  return DefaultBudgetName(o.http.endpoint, o.http.model);
}

std::string Seconds(double s) {
  if (s < 120) return fmt::format("{:.0f} s", s);
  if (s < 7200) return fmt::format("{:.0f} min", s / 60);
  return fmt::format("{:.1f} h", s / 3600);
}

std::string Limit(double v) { return v > 0 ? fmt::format("{:.0f}", v) : "unknown"; }

void PrintStatus(const DistributedArgs& args, const RedisEndpoint& endpoint, const JobStatus& s,
                 const std::string& budget_name, const Result<SharedBudgetState>& budget) {
  const JobRates rates = RatesOf(s);
  if (args.json) {
    std::string out;
    JsonWriter w(out);
    w.BeginObject().Key("job").String(args.job).Key("redis").String(endpoint.Redacted());
    w.Key("total").Uint(s.total).Key("pending").Uint(s.pending);
    w.Key("in_flight").Uint(s.in_flight).Key("done").Uint(s.done).Key("dead").Uint(s.dead);
    w.Key("drained").Bool(s.Drained()).Key("chunks_stored").Uint(s.chunks_stored);
    w.Key("chunks_per_s");
    rates.known ? w.Double(rates.chunks_per_s) : w.Null();
    w.Key("tasks_per_s");
    rates.known ? w.Double(rates.tasks_per_s) : w.Null();
    w.Key("eta_s");
    if (s.Drained()) {
      w.Double(0);
    } else {
      rates.known ? w.Double(rates.eta_s) : w.Null();
    }
    w.Key("budget");
    if (budget_name.empty()) {
      w.Null();
    } else {
      w.BeginObject().Key("name").String(budget_name);
      if (budget.ok()) {
        w.Key("found").Bool(budget->found).Key("rpm").Double(budget->rpm);
        w.Key("tpm").Double(budget->tpm);
        w.Key("cooldown_s").Double(static_cast<double>(budget->cooldown_left_ms) / 1000.0);
        w.Key("leases").Int(budget->leases);
      } else {
        w.Key("error").String(budget.status().message());
      }
      w.EndObject();
    }
    w.Key("workers").BeginArray();
    for (const WorkerStatus& ws : s.workers) {
      w.BeginObject().Key("consumer").String(ws.consumer).Key("host").String(ws.host);
      w.Key("pid").Int(ws.pid).Key("tasks").Uint(ws.tasks_done);
      w.Key("heartbeat_age_s").Double(static_cast<double>(ws.heartbeat_age_ms) / 1000.0);
      w.EndObject();
    }
    w.EndArray().EndObject();
    std::printf("%s\n", out.c_str());
    std::fflush(stdout);
    return;
  }
  std::printf("job '%s' at %s\n", args.job.c_str(), endpoint.Redacted().c_str());
  std::printf("  tasks     %llu total: %llu pending, %llu in flight, %llu done, %llu dead\n",
              static_cast<unsigned long long>(s.total), static_cast<unsigned long long>(s.pending),
              static_cast<unsigned long long>(s.in_flight), static_cast<unsigned long long>(s.done),
              static_cast<unsigned long long>(s.dead));
  std::printf("  chunks    %llu stored, %s\n", static_cast<unsigned long long>(s.chunks_stored),
              rates.known ? fmt::format("{:.1f}/s", rates.chunks_per_s).c_str()
                          : "rate unknown (no task done yet)");
  if (s.Drained()) {
    std::printf("  eta       drained%s\n",
                s.dead > 0 ? " (with dead tasks: sluice dead-letter list)" : "");
  } else if (rates.known) {
    std::printf("  eta       %s (%.2f tasks/s)\n", Seconds(rates.eta_s).c_str(), rates.tasks_per_s);
  } else {
    std::printf("  eta       unknown (no task done yet)\n");
  }
  if (budget_name.empty()) {
    std::printf("  budget    none (the job does not embed over HTTP)\n");
  } else if (!budget.ok()) {
    std::printf("  budget    %s: %s\n", budget_name.c_str(), budget.status().message().c_str());
  } else if (!budget->found) {
    std::printf("  budget    %s: no keys (nothing paced against it lately)\n", budget_name.c_str());
  } else {
    std::printf("  budget    %s: rpm %s, tpm %s, %s, %lld leases in flight\n", budget_name.c_str(),
                Limit(budget->rpm).c_str(), Limit(budget->tpm).c_str(),
                budget->cooldown_left_ms > 0
                    ? ("cooldown " + Seconds(budget->cooldown_left_ms / 1000.0) + " left").c_str()
                    : "no cooldown",
                static_cast<long long>(budget->leases));
  }
  std::printf("  workers   %zu alive\n", s.workers.size());
  for (const WorkerStatus& ws : s.workers) {
    std::printf("    %-32s host %s pid %lld, %llu tasks, last heartbeat %.1f s ago\n",
                ws.consumer.c_str(), ws.host.c_str(), static_cast<long long>(ws.pid),
                static_cast<unsigned long long>(ws.tasks_done),
                static_cast<double>(ws.heartbeat_age_ms) / 1000.0);
  }
  std::fflush(stdout);
}

// Sleeps up to `seconds`, less when a stop signal comes.
void SleepUnlessSignalled(double seconds) {
  const auto until = std::chrono::steady_clock::now() +
                     std::chrono::milliseconds(static_cast<int64_t>(seconds * 1000));
  while (g_status_signal == 0 && std::chrono::steady_clock::now() < until) {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
}

// `status --wait --out DIR`: the aggregate files from the job's store, as
// `sluice aggregate --store URI --out DIR` writes them.
int WriteJobAggregates(const DistributedArgs& args, const JobRecord& job) {
  IngestFlagExtras extras;
  extras.log_level = args.log_level;
  auto options = WorkerIngestOptions(job, extras);
  if (!options.ok()) return Fail(options.status());
  std::string store_uri = job.store_uri;
  if (!args.store_uri.empty()) store_uri = args.store_uri;
  if (!args.store_env.empty()) {
    if (Status s = StoreUriFromEnvironment(args.store_env, store_uri); !s.ok()) return Fail(s, 2);
  }
  StoreOptions store_options = options->store;
  store_options.read_only = true;  // a missing store is an error, never a new empty one
  auto store = OpenStore(store_uri, store_options);
  if (!store.ok()) return Fail(store.status());
  AggregatorOptions aggregate = options->aggregate;
  aggregate.out_dir = args.out_dir;
  Result<RebuildStats> stats = RebuildAggregates(**store, aggregate);
  if (!stats.ok()) {
    return Fail(
        stats.status().WithContext("aggregate " + (*store)->Describe() + " -> " + args.out_dir));
  }
  std::printf("aggregate %s -> %s: %llu chunks of %llu files in %llu group files\n",
              (*store)->Describe().c_str(), args.out_dir.c_str(),
              static_cast<unsigned long long>(stats->chunks),
              static_cast<unsigned long long>(stats->files),
              static_cast<unsigned long long>(stats->files_written));
  std::fflush(stdout);
  return 0;
}

int RunStatus(const DistributedArgs& args) {
  auto endpoint = ResolveRedis(args);
  if (!endpoint.ok()) return Fail(endpoint.status(), 2);
  if (!args.out_dir.empty() && !args.wait) {
    return Fail(Status::InvalidArgument("--out needs --wait (the files are written once the "
                                        "job is drained)"),
                2);
  }
  auto stream = TaskStream::Open(*endpoint, TaskStreamOptions{args.job});
  if (!stream.ok()) return Fail(stream.status(), 2);
  auto job = (*stream)->LoadJob();
  if (!job.ok()) return Fail(job.status());
  std::string budget_name;
  {
    IngestFlagExtras extras;
    extras.log_level = args.log_level;
    if (auto options = WorkerIngestOptions(*job, extras); options.ok()) {
      budget_name = JobBudgetName(*options);
    }
  }
  auto budget_client = RedisClient::Connect(*endpoint);
  if (!budget_client.ok()) return Fail(budget_client.status());

  const bool repeat = args.watch_s > 0 || args.wait;
  if (repeat) {
    struct sigaction action {};
    action.sa_handler = OnStatusSignal;
    sigemptyset(&action.sa_mask);
    sigaction(SIGINT, &action, nullptr);
    sigaction(SIGTERM, &action, nullptr);
  }
  const double interval_s = args.watch_s > 0 ? args.watch_s : 1.0;
  RedisOutage outage(OutageOptions(args), SystemClock::Instance());
  while (true) {
    auto s = (*stream)->Summary();
    if (!s.ok()) {
      // Waiting out a Redis restart is part of waiting for the job.
      const bool first = !outage.ongoing();
      const std::optional<Duration> wait = repeat ? outage.Failed() : std::nullopt;
      if (!wait) return Fail(s.status());
      if (first) {
        spdlog::warn("status: {} (retrying for up to {:g} s)", s.status().message(),
                     args.redis_outage_timeout_s);
      }
      SleepUnlessSignalled(std::chrono::duration<double>(*wait).count());
      if (g_status_signal != 0) return 128 + g_status_signal;
      continue;
    }
    outage.Succeeded();
    const bool drained = s->Drained();
    if (!args.wait || args.watch_s > 0 || drained) {
      Result<SharedBudgetState> budget = Status::NotFound("no budget");
      if (!budget_name.empty()) budget = ReadSharedBudgetState(**budget_client, budget_name);
      PrintStatus(args, *endpoint, *s, budget_name, budget);
    }
    if (!repeat) return 0;
    if (drained) {
      if (!args.wait) return 0;
      if (!args.out_dir.empty()) {
        if (int code = WriteJobAggregates(args, *job); code != 0) return code;
      }
      return s->dead > 0 ? 3 : 0;
    }
    SleepUnlessSignalled(interval_s);
    if (g_status_signal != 0) return 128 + g_status_signal;
  }
}

// Not an ingest option (not recorded with the job): it decides how the
// enqueue cuts the files, not what a worker does with a task, so enqueueing
// more files to a job with another value is allowed.
void AddSplitFlag(CLI::App& app, DistributedArgs& a) {
  app.add_option("--split-bytes", a.split_bytes,
                 "a JSONL file larger than this many bytes becomes byte-range tasks of about "
                 "this size, cut after a newline, so one huge export is worked by several "
                 "workers; 0: never split (docs/DISTRIBUTED.md)")
      ->capture_default_str()
      ->group("Distributed");
}

void AddRedisFlags(CLI::App& app, DistributedArgs& a) {
  app.add_option("--redis", a.redis_url, "Redis URL: redis://[[user]:password@]host[:port][/db]")
      ->group("Distributed");
  app.add_option("--redis-env", a.redis_env,
                 "environment variable holding the Redis URL (keeps a password out of the "
                 "process list)")
      ->group("Distributed");
  app.add_option("--job", a.job, "the job's name (letters, digits, . _ -)")
      ->capture_default_str()
      ->group("Distributed");
}

void AddRedisOutageFlag(CLI::App& app, DistributedArgs& a) {
  app.add_option("--redis-outage-timeout", a.redis_outage_timeout_s,
                 "seconds to keep retrying (with backoff) a Redis that stopped answering (a "
                 "restart, a failover) before giving up with exit status 1")
      ->capture_default_str()
      ->check(CLI::PositiveNumber)
      ->group("Distributed");
}

}  // namespace

void AddDistributedCommands(CLI::App& app, DistributedCommands& c) {
  c.enqueue = app.add_subcommand(
      "enqueue",
      "Walk files and folders as ingest does and add one task per source to a job in Redis, "
      "with the job's ingest options; `sluice worker`s take them (docs/DISTRIBUTED.md).");
  AddIngestFlags(*c.enqueue, c.enqueue_options, c.enqueue_extras);
  AddRedisFlags(*c.enqueue, c.enqueue_args);
  AddSplitFlag(*c.enqueue, c.enqueue_args);

  c.worker = app.add_subcommand(
      "worker",
      "Take tasks of a job from Redis and ingest them with the job's options, until "
      "SIGINT/SIGTERM (or, with --exit-when-idle, until no task is left).");
  AddRedisFlags(*c.worker, c.worker_args);
  DistributedArgs& w = c.worker_args;
  c.worker->add_flag("--exit-when-idle", w.exit_when_idle,
                     "exit once no task is waiting and none is pending with any worker");
  c.worker
      ->add_option("--visibility-timeout", w.visibility_timeout_s,
                   "seconds a task may go without its worker's heartbeat before another "
                   "worker takes it")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  c.worker
      ->add_option("--max-deliveries", w.max_deliveries,
                   "a task delivered this many times without being done goes to the job's "
                   "dead-letter stream")
      ->capture_default_str()
      ->check(CLI::Range(1, 1000));
  c.worker
      ->add_option("--max-in-flight", w.max_in_flight,
                   "tasks this worker holds at once (claimed, not yet done)")
      ->capture_default_str()
      ->check(CLI::Range(1, 100000));
  AddRedisOutageFlag(*c.worker, w);
  c.worker->add_option("--store", w.store_uri,
                       "the store, instead of the job's (the job records it without a password: "
                       "give it here, in --store-env, or PGPASSWORD / ~/.pgpass)");
  c.worker->add_option("--store-env", w.store_env, kStoreEnvHelp);
  c.worker->add_option("--log-level", w.log_level, "error, warn, info or debug")
      ->capture_default_str()
      ->check(CLI::IsMember({"error", "warn", "info", "debug"}));

  c.status = app.add_subcommand(
      "status",
      "Show a job's tasks (total, pending, in flight, done, dead), the chunks its workers "
      "stored and how fast, an ETA, the state of its shared rate budget and its live workers. "
      "Exit status with --wait: 0 when the job drained with no dead task, 3 when some task "
      "is dead (sluice dead-letter list), 1 on an error, 130/143 on SIGINT/SIGTERM.");
  AddRedisFlags(*c.status, c.status_args);
  DistributedArgs& st = c.status_args;
  c.status->add_flag("--json", st.json, "print one JSON object (one per line with --watch)");
  c.status
      ->add_option("--watch", st.watch_s,
                   "reprint every SECONDS (default 2) until the job is drained or SIGINT")
      ->expected(0, 1)
      ->default_str("2")
      ->check(CLI::PositiveNumber);
  c.status->add_flag("--wait", st.wait,
                     "block until the job is drained (no task pending or in flight), print its "
                     "status, and exit 0, or 3 when some task is dead");
  c.status->add_option("--out", st.out_dir,
                       "with --wait: then write the aggregate files from the job's store into "
                       "DIR, as `sluice aggregate --store URI --out DIR` does");
  c.status->add_option("--store", st.store_uri,
                       "with --out: the store, instead of the job's (which is recorded without "
                       "a password: give it here, in --store-env, or PGPASSWORD / ~/.pgpass)");
  c.status->add_option("--store-env", st.store_env, kStoreEnvHelp);
  AddRedisOutageFlag(*c.status, st);
}

void AddIngestRedisFlags(CLI::App& ingest, DistributedArgs& args) {
  args.job.clear();  // empty: named after the job's options (below)
  ingest
      .add_option("--redis", args.redis_url,
                  "enqueue the inputs to a job in this Redis and work it with one local worker "
                  "until it is drained (docs/DISTRIBUTED.md); more workers may join it: sluice "
                  "worker --redis URL --job NAME")
      ->group("Distributed");
  ingest
      .add_option("--redis-env", args.redis_env,
                  "environment variable holding the --redis URL (keeps a password out of the "
                  "process list)")
      ->group("Distributed");
  ingest
      .add_option("--job", args.job,
                  "with --redis: the job's name (default: ingest- and a hash of the inputs, "
                  "store and options, so the same command reuses its job)")
      ->group("Distributed");
  AddSplitFlag(ingest, args);
}

bool WantsRedis(const DistributedArgs& args) {
  return !args.redis_url.empty() || !args.redis_env.empty();
}

int RunIngestThroughRedis(const CLI::App& ingest, IngestOptions& options,
                          const IngestFlagExtras& extras, DistributedArgs args) {
  if (args.job.empty()) {
    auto options_json = JobOptionsJson(ingest, options);
    if (!options_json.ok()) return Fail(options_json.status(), 2);
    std::string identity = *options_json + '\n' + StripPassword(options.store_uri);
    for (const std::string& input : options.inputs) {
      std::error_code ec;
      identity += '\n' + std::filesystem::absolute(input, ec).string();
    }
    args.job = "ingest-" + Hex64(Hash64(identity)).substr(0, 12);
  }
  if (Status s = ValidateJobName(args.job); !s.ok()) return Fail(s, 2);
  // What one process writes about its own run has no meaning for a job that
  // other workers may share: refused rather than silently dropped.
  for (const auto& [given, flag] : std::initializer_list<std::pair<bool, const char*>>{
           {!options.report_path.empty(), "--report"},
           {!options.html_report_path.empty(), "--html-report"},
           {!options.trace_path.empty(), "--trace"},
           {!extras.metrics_listen.empty(), "--metrics-listen"},
           {!extras.on_complete.empty() || !extras.on_complete_url.empty(), "--on-complete"}}) {
    if (given) {
      return Fail(Status::InvalidArgument(
                      std::string(flag) +
                      " is not available with --redis (a job's workers report on their own; "
                      "see sluice status --redis URL --job NAME)"),
                  2);
    }
  }
  if (int status = RunEnqueue(ingest, options, args); status != 0) return status;
  // The local worker: the job's options as recorded, the store as given here
  // (with its password, never recorded), until no task is left.
  args.exit_when_idle = true;
  args.store_uri = options.store_uri;
  args.log_level = extras.log_level;
  return RunWorker(args);
}

std::optional<int> RunDistributedCommand(DistributedCommands& c) {
  if (c.enqueue != nullptr && *c.enqueue) {
    if (Status s = FinishIngestOptions(c.enqueue_options, c.enqueue_extras); !s.ok()) {
      return Fail(s, 2);
    }
    return RunEnqueue(*c.enqueue, c.enqueue_options, c.enqueue_args);
  }
  if (c.worker != nullptr && *c.worker) return RunWorker(c.worker_args);
  if (c.status != nullptr && *c.status) return RunStatus(c.status_args);
  return std::nullopt;
}

void AddDeadLetterRedisFlags(CLI::App& command, DistributedArgs& args) {
  AddRedisFlags(command, args);
}

int RunDeadLetterRedisCommand(const DistributedArgs& args, bool retry) {
  auto endpoint = ResolveRedis(args);
  if (!endpoint.ok()) return Fail(endpoint.status(), 2);
  auto stream = TaskStream::Open(*endpoint, TaskStreamOptions{args.job});
  if (!stream.ok()) return Fail(stream.status(), 2);
  if (auto job = (*stream)->LoadJob(); !job.ok()) return Fail(job.status());
  if (retry) {
    auto n = (*stream)->RetryDead();
    if (!n.ok()) return Fail(n.status());
    std::printf("dead-letter retry: %llu tasks of job '%s' added back to its task stream\n",
                static_cast<unsigned long long>(*n), args.job.c_str());
    return 0;
  }
  auto dead = (*stream)->ListDead();
  if (!dead.ok()) return Fail(dead.status());
  if (dead->empty()) {
    std::printf("no dead tasks in job '%s'\n", args.job.c_str());
    return 0;
  }
  std::printf("%zu dead tasks in job '%s'\n", dead->size(), args.job.c_str());
  for (const DeadTask& d : *dead) {
    const std::string range = d.task.IsRange() ? " bytes " + std::to_string(d.task.range_begin) +
                                                     "-" + std::to_string(d.task.range_end)
                                               : std::string();
    std::printf("  %s%s  (%lld deliveries)  %s\n", d.task.path.c_str(), range.c_str(),
                static_cast<long long>(d.deliveries), d.error.c_str());
  }
  std::printf("retry with: sluice dead-letter retry --redis URL --job %s\n", args.job.c_str());
  return 0;
}

Result<std::string> RedisUrlOf(const DistributedArgs& args) { return RedisUrl(args); }

}  // namespace sluice::cli
