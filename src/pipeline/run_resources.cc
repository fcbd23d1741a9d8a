#include "pipeline/run_resources.h"

#include <unistd.h>

#include <filesystem>

#include <spdlog/spdlog.h>

#include "common/private_file.h"
#include "pipeline/progress.h"
#include "sluice/sources.h"

namespace sluice {

namespace {

Status OpenTransport(const IngestOptions& options, RunResources& run, IngestReport& report) {
  run.use_http = UsesHttpEmbedder(options);
  if (!run.use_http) {
    run.transport = MakeHashTransport(options.hash);
    report.embedder_description = "offline hash embedder (lexical, not semantic), " +
                                  std::to_string(options.hash.dimensions) + " dims";
    if (options.embedder == EmbedderKind::kAuto) {
      spdlog::info(
          "no embedding endpoint configured: using the offline hash embedder "
          "(lexical, not semantic); set --endpoint or OPENAI_BASE_URL for a real model");
    }
    return Status::OK();  // the offline embedder costs nothing
  }
  if (options.http.endpoint.empty()) {
    return Status::InvalidArgument(
        "--embedder http needs an endpoint: --endpoint URL or OPENAI_BASE_URL");
  }
  auto t = MakeHttpTransport(options.http);
  if (!t.ok()) return t.status();
  run.transport = std::move(*t);
  report.embedder_description =
      "http " + RedactEndpoint(options.http.endpoint) + " model " + options.http.model;
  run.price_per_mtok = options.price_per_mtok >= 0
                           ? std::optional<double>(options.price_per_mtok)
                           : BuiltInPricePerMillionTokens(run.transport->ModelName());
  return Status::OK();
}

Status OpenStoreAndFingerprints(const IngestOptions& options, uint64_t run_id, const Clock& clock,
                                RunResources& run, IngestReport& report) {
  // The cache key names what produced a vector: the model and the requested
  // dimensions (0: the model's default). Vectors of another model never match.
  report.embedding_cache = EmbeddingCacheOn(options);
  if (report.embedding_cache) {
    run.cache_namespace =
        run.transport->ModelName() + ":" +
        std::to_string(run.use_http ? options.http.dimensions : options.hash.dimensions);
  }
  StoreOptions store_options = options.store;
  store_options.embedding_cache_namespace = run.cache_namespace;
  store_options.run_id = run_id;
  // A store belongs to one (model, dimensions): opening refuses another
  // model's store (unless --reembed), and the run holds the store's writer
  // lock so that a second run cannot interleave with it (docs/RESUME.md).
  store_options.model = run.transport->ModelName();
  if (!run.use_http) {
    store_options.dimensions = options.hash.dimensions;
  } else if (options.http.dimensions > 0) {
    store_options.dimensions = options.http.dimensions;
  }
  store_options.exclusive_run = true;
  store_options.read_only = false;
  if (store_options.clock == nullptr) store_options.clock = &clock;
  auto store = OpenStore(options.store_uri, store_options);
  if (!store.ok()) return store.status();
  run.store = std::move(*store);
  report.store_description = run.store->Describe();
  // No --dimensions: the vectors must match the store's, when it has any,
  // instead of whatever length the first response brings.
  if (run.use_http && options.http.dimensions == 0 && !store_options.reembed) {
    if (auto stored = run.store->StoredModel(); stored.ok() && stored->dimensions > 0) {
      HttpEmbedderOptions http = options.http;
      http.expected_dimensions = stored->dimensions;
      auto t = MakeHttpTransport(http);
      if (!t.ok()) return t.status();
      run.transport = std::move(*t);
    }
  }

  // Fingerprints, loaded once (bounded by the number of input files), and a
  // second connection for cache lookups while the store stage commits.
  auto loaded = run.store->LoadFingerprints();
  if (loaded.ok()) {
    run.resume = true;
    for (SourceFingerprint& f : *loaded) {
      std::string id = f.file_id;
      run.fingerprints.emplace(std::move(id), std::move(f));
    }
    // Reads only: no lock (this run holds it), no second --reembed.
    StoreOptions reader_options = store_options;
    reader_options.exclusive_run = false;
    reader_options.read_only = true;
    reader_options.reembed = false;
    auto second = OpenStore(options.store_uri, reader_options);
    if (!second.ok()) return second.status();
    run.read_store = std::make_unique<SharedReadStore>(std::move(*second));
    return Status::OK();
  }
  if (loaded.status().code() != StatusCode::kInvalidArgument) {
    return loaded.status().WithContext("load fingerprints");
  }
  report.resume_supported = false;
  run.cache_namespace.clear();
  run.read_store = std::make_unique<SharedReadStore>(nullptr);
  spdlog::warn("{} keeps no fingerprints: every file is re-read and re-embedded",
               run.store->Describe());
  return Status::OK();
}

Status OpenAggregate(const IngestOptions& options, RunResources& run) {
  if (!options.aggregate_enabled) return Status::OK();
  auto a = OpenAggregator(options.aggregate);
  if (!a.ok()) return a.status();
  run.aggregator = std::move(*a);
  run.aggregate_marker =
      (std::filesystem::path(options.aggregate.out_dir) / ".sluice-incomplete").string();
  std::error_code ec;
  run.replay_aggregate = run.resume && std::filesystem::exists(run.aggregate_marker, ec);
  if (!run.resume) return Status::OK();
  Result<int> fd = OpenPrivateFileForAppend(run.aggregate_marker);
  if (!fd.ok()) return fd.status();
  const bool synced = ::fsync(*fd) == 0;
  ::close(*fd);
  if (!synced) return Status::IOError("cannot write " + run.aggregate_marker);
  return Status::OK();
}

}  // namespace

Result<std::unique_ptr<RunResources>> OpenRunResources(const IngestOptions& options,
                                                       uint64_t run_id, const Clock& clock,
                                                       Metrics& metrics, IngestReport& report) {
  auto run = std::make_unique<RunResources>();
  auto dead = DeadLetterFile::Open(DeadLetterPathFor(options), metrics);
  if (!dead.ok()) return dead.status();
  run->dead_letters = std::move(*dead);

  run->router = Router(options.routes);
  if (options.routes.empty() && !options.routes_file.empty()) {
    auto loaded = Router::LoadFile(options.routes_file);
    if (!loaded.ok()) return loaded.status();
    run->router = std::move(*loaded);
  }
  RegisterTextParsers(run->registry);
  RegisterDocumentParsers(run->registry);
  if (!options.parser_cmd.empty())
    run->command_parser = MakeCommandParser(options.parser_cmd, options.parser_cmd_timeout);

  auto enumerator = SourceEnumerator::Open(options);
  if (!enumerator.ok()) return enumerator.status();
  run->enumerator = std::move(*enumerator);

  if (Status s = OpenTransport(options, *run, report); !s.ok()) return s;
  if (Status s = OpenStoreAndFingerprints(options, run_id, clock, *run, report); !s.ok()) return s;
  if (Status s = OpenAggregate(options, *run); !s.ok()) return s;
  return run;
}

}  // namespace sluice
