#include "cli/job_enqueue.h"

#include <sys/stat.h>

#include <atomic>
#include <filesystem>
#include <set>
#include <thread>
#include <unordered_map>
#include <utility>

#include <spdlog/spdlog.h>

#include "cli/commands.h"
#include "cli/ingest_flags.h"
#include "common/json_canonical.h"
#include "common/json_writer.h"
#include "common/utc_time.h"
#include "distributed/task_stream.h"
#include "pipeline/source_enumerator.h"
#include "sluice/parser.h"
#include "sluice/queue.h"
#include "sluice/store.h"
#include "sources/jsonl_ranges.h"

namespace sluice::cli {

namespace {

// Ingest flags a job does not record: the store (recorded without its
// password on its own), where each process writes its own files, and what
// only makes sense for one process.
const std::set<std::string> kNotRecorded = {
    "config", "store", "store-env", "on-complete", "on-complete-shell", "on-complete-timeout",
    "on-complete-url", "metrics-listen", "metrics-allow-remote", "report", "html-report", "trace",
    "dead-letter", "help", "redis", "redis-env",
    // Each worker shares the budget through its own
    // --redis; a URL here could hold a password.
    "budget-redis", "budget-redis-env", "job", "log-level", "log-format",
    // How the enqueue cuts files into tasks, not what a worker does with one.
    "split-bytes"};

bool IsLoopback(std::string_view host) {
  return host == "localhost" || host == "::1" || host == "[::1]" || host.starts_with("127.");
}

// file id -> (size, mtime) of the files the job's store holds fingerprints of.
using StoredFiles = std::unordered_map<std::string, std::pair<uint64_t, int64_t>>;

// The store's fingerprints, read without a lock or a write. A store that does
// not exist yet, keeps no fingerprints or cannot be read gives none: then
// every file is enqueued and the workers still skip the unchanged ones.
StoredFiles StoredFilesOf(const IngestOptions& o) {
  StoredFiles files;
  StoreOptions read_only = o.store;
  read_only.read_only = true;
  read_only.exclusive_run = false;
  read_only.reembed = false;
  auto store = OpenStore(o.store_uri, read_only);
  if (!store.ok()) {
    spdlog::debug("enqueue: no fingerprints to compare with: {}", store.status().ToString());
    return files;
  }
  auto loaded = (*store)->LoadFingerprints();
  if (!loaded.ok()) {
    spdlog::debug("enqueue: no fingerprints to compare with: {}", loaded.status().ToString());
    return files;
  }
  for (const SourceFingerprint& f : *loaded) {
    files.emplace(f.file_id, std::make_pair(f.size_bytes, f.mtime_ns));
  }
  return files;
}

// Whether `file` may be cut into byte ranges (docs/DISTRIBUTED.md): only a
// JSONL file (by its extension, as the parser registry picks it; not with
// --parser-cmd), since its records are independent lines; a document of
// another format (PDF, HTML, Markdown) is chunked as a whole (headings,
// pages, paragraphs that span any cut), so it stays one task at any size. And
// only with the embedding cache when the vectors come from a service: the
// split file's whole-file pass re-reads it, and takes its vectors from the
// cache the ranges filled instead of paying for the file a second time (the
// offline hash embedder computes them again in less time than a lookup).
bool MaySplit(const IngestOptions& o, uint64_t split_bytes, const SourceFile& file) {
  if (split_bytes == 0 || file.size_bytes <= split_bytes) return false;
  if (!o.parser_cmd.empty() || (UsesHttpEmbedder(o) && !EmbeddingCacheOn(o))) {
    return false;
  }
  // The parser the read stage picks by the file's name (the registry's own
  // extension table, not a copy of it).
  static const ParserRegistry registry = [] {
    ParserRegistry r;
    RegisterTextParsers(r);
    return r;
  }();
  const Parser* parser = registry.Find(file.path, std::string_view());
  return parser != nullptr && parser->Name() == "jsonl";
}

// The file's size and mtime now (false: it cannot be stat'ed).
bool StatFile(const std::string& path, uint64_t& size, int64_t& mtime_ns) {
  struct stat st;
  if (::stat(path.c_str(), &st) != 0 || !S_ISREG(st.st_mode)) return false;
  size = static_cast<uint64_t>(st.st_size);
  mtime_ns = static_cast<int64_t>(st.st_mtim.tv_sec) * 1000000000 + st.st_mtim.tv_nsec;
  return true;
}

// The ranges `task`'s file is to be cut into, or none (then it is one task):
// it is not to be split, has no place to cut, repeats an id (then only one
// reader can refuse the repeat as `sluice ingest` does; `repeated_id` names
// it), or changed while it was read.
std::vector<SourceTask> RangesOf(const IngestOptions& o, uint64_t split_bytes,
                                 const SourceFile& file, const SourceTask& task,
                                 std::string& repeated_id) {
  std::vector<SourceTask> ranges;
  if (!MaySplit(o, split_bytes, file)) return ranges;
  Result<JsonlRangePlan> plan = PlanJsonlRangesOfFile(task.path, split_bytes);
  if (!plan.ok()) {
    spdlog::warn("{}: not split: {}", task.path, plan.status().message());
    return ranges;
  }
  if (plan->repeated_id) {
    repeated_id = plan->repeated_example.empty() ? "(one)" : "\"" + plan->repeated_example + "\"";
    return ranges;
  }
  uint64_t size = 0;
  int64_t mtime_ns = 0;
  if (!StatFile(task.path, size, mtime_ns) || size != task.size_bytes ||
      mtime_ns != task.mtime_ns) {
    spdlog::warn("{}: not split: it changed while its cut points were looked for", task.path);
    return ranges;
  }
  if (plan->ranges.size() < 2) return ranges;
  for (const JsonlRange& r : plan->ranges) {
    SourceTask range = task;
    range.split = "planned";  // named by EnqueueSplit
    range.range_begin = r.begin;
    range.range_end = r.end;
    range.first_line = r.first_line;
    ranges.push_back(std::move(range));
  }
  return ranges;
}

}  // namespace

// The URI with any password removed (not replaced: the workers must be able
// to use it as it is, with the password from their environment).
std::string StripPassword(std::string uri) {
  const size_t scheme = uri.find("://");
  if (scheme != std::string::npos) {
    const size_t auth = scheme + 3;
    const size_t at = uri.find('@', auth);
    const size_t slash = uri.find('/', auth);
    if (at != std::string::npos && (slash == std::string::npos || at < slash)) {
      const size_t colon = uri.find(':', auth);
      if (colon != std::string::npos && colon < at) uri.erase(colon, at - colon);
    }
  }
  for (size_t pos; (pos = uri.find("password=")) != std::string::npos;) {
    size_t end = uri.find_first_of("& ", pos);
    if (end == std::string::npos) {
      end = uri.size();
    } else {
      ++end;  // and its separator
    }
    size_t from = pos;
    if (end == uri.size() && from > 0 && (uri[from - 1] == '&' || uri[from - 1] == ' ')) --from;
    uri.erase(from, end - from);
  }
  if (!uri.empty() && (uri.back() == '?')) uri.pop_back();
  return uri;
}

// A SQLite file is only reachable on one machine: with a Redis others can
// reach, workers elsewhere would each write a store of their own.
Status CheckStoreReachable(const std::string& store_uri, const RedisEndpoint& redis) {
  const bool sqlite =
      store_uri.starts_with("sqlite:") || store_uri.find("://") == std::string::npos;
  if (sqlite && !IsLoopback(redis.host)) {
    return Status::InvalidArgument(
        "store '" + RedactUri(store_uri) +
        "' is a SQLite file, which only workers on this "
        "machine can reach, but Redis at " +
        redis.Redacted() +
        " is not on loopback: use a PostgreSQL store (--store postgres://...) for a job "
        "that workers on other machines can take");
  }
  return Status::OK();
}

// The job's options as canonical JSON: {"route":[{glob,domain,category}],
// "settings":{key:[values]}} from the flags given to `sluice enqueue`.
Result<std::string> JobOptionsJson(const CLI::App& app, const IngestOptions& options) {
  std::string out;
  JsonWriter w(out);
  w.BeginObject().Key("route").BeginArray();
  for (const RouteRule& r : options.routes) {
    w.BeginObject().Key("glob").String(r.glob).Key("domain").String(r.domain);
    w.Key("category").String(r.category).EndObject();
  }
  w.EndArray().Key("settings").BeginObject();
  for (const CLI::Option* opt : app.get_options()) {
    if (opt->get_lnames().empty() || opt->count() == 0) continue;
    const std::string key = opt->get_lnames().front();
    if (kNotRecorded.count(key) > 0 || !IsConfigKey(app, key)) continue;
    w.Key(key).BeginArray();
    if (opt->get_type_size_max() == 0) {  // a flag: its final value
      bool value = false;
      try {
        value = opt->as<bool>();
      } catch (const CLI::Error&) {
        value = true;
      }
      w.String(value ? "true" : "false");
    } else {
      for (const std::string& v : opt->results()) w.String(v);
    }
    w.EndArray();
  }
  w.EndObject().EndObject();
  return CanonicalJson(out);
}

Status CheckEnqueueable(const IngestOptions& o, const RedisEndpoint& redis) {
  for (const std::string& input : o.inputs) {
    if (input == kStdinPath) {
      return Status::InvalidArgument("'-' (stdin) cannot be enqueued: workers read files");
    }
  }
  if (o.store.reembed) {
    return Status::InvalidArgument(
        "--reembed empties the store: run it once with sluice ingest, not per worker");
  }
  if (o.cleanup == CleanupMode::kFull) {
    return Status::InvalidArgument(
        "--cleanup full needs one run over all the inputs: use sluice ingest for it, not a "
        "distributed job");
  }
  return CheckStoreReachable(o.store_uri, redis);
}

Result<std::string> RecordedJobOptions(const std::vector<std::string>& config_args,
                                       const std::vector<RouteRule>& routes) {
  IngestOptions options;
  options.routes = routes;
  IngestFlagExtras extras;
  CLI::App table{"sluice enqueue"};
  AddIngestFlags(table, options, extras);
  table.remove_option(table.get_option("inputs"));  // the settings only: inputs are the tasks
  std::vector<std::string> reversed(config_args.rbegin(), config_args.rend());
  try {
    table.parse(reversed);
  } catch (const CLI::ParseError& e) {
    return Status::InvalidArgument(e.what());
  }
  return JobOptionsJson(table, options);
}

Result<EnqueueOutcome> EnqueueIngestJob(const RedisEndpoint& endpoint, const std::string& job,
                                        const std::string& options_json, const IngestOptions& o,
                                        bool must_be_new, uint64_t split_bytes) {
  if (Status s = CheckEnqueueable(o, endpoint); !s.ok()) return s;
  auto stream = TaskStream::Open(endpoint, TaskStreamOptions{job});
  if (!stream.ok()) return stream.status();
  std::string store_uri = StripPassword(o.store_uri);
  if (store_uri.starts_with("sqlite:") && !store_uri.starts_with("sqlite:/")) {
    // Workers run in folders of their own: the same file for all of them.
    std::error_code ec;
    store_uri = "sqlite:" + std::filesystem::absolute(store_uri.substr(7), ec).string();
  }
  const JobRecord record{options_json, store_uri, UtcNowIso8601()};
  if (auto existing = (*stream)->LoadJob(); existing.ok()) {
    if (must_be_new) {
      return Status::Busy("a job '" + job + "' exists already in " + endpoint.Redacted() +
                          " (another server or client using the same name?)");
    }
    if (existing->options_json != record.options_json || existing->store_uri != record.store_uri) {
      return Status::InvalidArgument("job '" + job +
                                     "' exists with other options or another store: choose "
                                     "another --job");
    }
  } else if (existing.status().code() != StatusCode::kNotFound) {
    return existing.status();
  }
  if (Status s = (*stream)->CreateJob(record); !s.ok()) return s;

  const StoredFiles stored = o.skip_unchanged ? StoredFilesOf(o) : StoredFiles{};
  auto enumerator = SourceEnumerator::Open(o);
  if (!enumerator.ok()) return enumerator.status();
  BoundedQueue<SourceFile> files(1000);
  std::atomic<bool> stopping{false};
  Status walked;
  std::thread walker([&] {
    walked = (*enumerator)->Run(files, stopping, [](const std::string& path, const Status& why) {
      spdlog::warn("not enqueued: {}: {}", path, why.message());
    });
    files.Close();
  });
  EnqueueOutcome outcome;
  outcome.store_uri = store_uri;
  std::set<std::string> seen_ids;
  Status failed;
  std::vector<SourceTask> batch;
  const auto flush = [&] {
    if (batch.empty() || !failed.ok()) return;
    failed = (*stream)->Enqueue(batch);
    if (failed.ok()) outcome.enqueued += batch.size();
    batch.clear();
  };
  while (auto file = files.Pop()) {
    // As the read stage of `sluice ingest` decides: a file the store holds
    // with the same size and mtime is not read again. Only a relative path's
    // first file is fingerprinted (two roots may hold the same one).
    const std::string file_id = file->relative_path.empty() ? file->path : file->relative_path;
    if (seen_ids.insert(file_id).second) {
      auto it = stored.find(file_id);
      if (it != stored.end() && it->second.first == file->size_bytes &&
          it->second.second == file->mtime_ns) {
        ++outcome.unchanged;
        continue;
      }
    }
    std::error_code ec;
    const std::string absolute = std::filesystem::absolute(file->path, ec).string();
    SourceTask task;
    task.path = ec ? file->path : absolute;
    task.relative_path = file->relative_path;
    task.root_name = file->root_name;
    task.size_bytes = file->size_bytes;
    task.mtime_ns = file->mtime_ns;
    std::string repeated_id;
    std::vector<SourceTask> ranges = RangesOf(o, split_bytes, *file, task, repeated_id);
    if (!repeated_id.empty() && outcome.kept_whole++ == 0) {
      outcome.kept_whole_example = task.relative_path + ": id " + repeated_id;
    }
    if (!ranges.empty()) {
      flush();  // tasks stay in the walk's order
      if (failed.ok()) failed = (*stream)->EnqueueSplit(task, ranges);
      if (failed.ok()) {
        ++outcome.split_files;
        outcome.ranges_enqueued += ranges.size();
        outcome.enqueued += ranges.size();
      }
    } else {
      batch.push_back(std::move(task));
    }
    if (batch.size() >= 500) flush();
    if (!failed.ok()) {
      files.Cancel();
      break;
    }
  }
  flush();
  walker.join();
  if (!failed.ok()) return failed;
  if (!walked.ok()) return walked;
  return outcome;
}

}  // namespace sluice::cli
