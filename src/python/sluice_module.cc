// The Python module: `sluice.ingest(paths, store=..., **options)` runs the
// pipeline with the GIL released and returns the JSON report as a dict;
// `sluice.search(store, query, k)` returns the nearest chunks.
//
// Threads: ingest() blocks the calling Python thread, but not the others
// (the GIL is released while the pipeline runs). `on_progress` is called on
// the pipeline's progress thread, holding the GIL; an exception it raises
// (or a Ctrl-C seen there) stops the run, which then re-raises it.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "sluice/embed.h"
#include "sluice/pipeline.h"
#include "sluice/store.h"

namespace py = pybind11;

namespace sluice {
namespace {

// One keyword option: how it sets IngestOptions, and what it takes.
struct KeywordOption {
  const char* type;  // for the error message
  std::function<void(IngestOptions&, const py::handle&)> set;
};

template <typename T>
T As(const py::handle& value) {
  return value.cast<T>();
}

std::vector<std::string> Paths(const py::handle& value) {
  const py::module_ os = py::module_::import("os");
  if (py::isinstance<py::str>(value) || py::hasattr(value, "__fspath__")) {
    return {As<std::string>(os.attr("fspath")(value))};
  }
  std::vector<std::string> out;
  for (const py::handle item : value) out.push_back(As<std::string>(os.attr("fspath")(item)));
  return out;
}

// The keyword options of ingest(): the CLI's flag names with '_' for '-'.
const std::map<std::string, KeywordOption>& KeywordOptions() {
  static const auto* options = new std::map<std::string, KeywordOption>{
      {"model", {"str", [](auto& o, auto v) { o.http.model = As<std::string>(v); }}},
      {"dimensions",
       {"int",
        [](auto& o, auto v) {
          o.http.dimensions = As<int>(v);
          if (o.http.dimensions > 0) o.store.dimensions = o.http.dimensions;
        }}},
      {"api_key", {"str", [](auto& o, auto v) { o.http.api_key = As<std::string>(v); }}},
      {"hash_dimensions", {"int", [](auto& o, auto v) { o.hash.dimensions = As<int>(v); }}},
      {"request_timeout",
       {"float (seconds)",
        [](auto& o, auto v) { o.http.request_timeout = FromSeconds(As<double>(v)); }}},
      {"chunk_tokens", {"int", [](auto& o, auto v) { o.chunker.chunk_tokens = As<uint32_t>(v); }}},
      {"chunk_overlap",
       {"int", [](auto& o, auto v) { o.chunker.overlap_tokens = As<uint32_t>(v); }}},
      {"batch_size", {"int", [](auto& o, auto v) { o.embed.batch_size = As<size_t>(v); }}},
      {"concurrency", {"int", [](auto& o, auto v) { o.concurrency = As<int>(v); }}},
      {"rpm", {"float", [](auto& o, auto v) { o.rpm = As<double>(v); }}},
      {"tpm", {"float", [](auto& o, auto v) { o.tpm = As<double>(v); }}},
      {"max_attempts", {"int", [](auto& o, auto v) { o.embed.retry.max_attempts = As<int>(v); }}},
      {"readers", {"int", [](auto& o, auto v) { o.reader_threads = As<int>(v); }}},
      {"include",
       {"list of str", [](auto& o, auto v) { o.include_globs = As<std::vector<std::string>>(v); }}},
      {"exclude",
       {"list of str", [](auto& o, auto v) { o.exclude_globs = As<std::vector<std::string>>(v); }}},
      {"out", {"str", [](auto& o, auto v) { o.aggregate.out_dir = Paths(v).at(0); }}},
      {"aggregate", {"bool", [](auto& o, auto v) { o.aggregate_enabled = As<bool>(v); }}},
      {"dead_letter", {"str", [](auto& o, auto v) { o.dead_letter_path = Paths(v).at(0); }}},
      {"report", {"str", [](auto& o, auto v) { o.report_path = Paths(v).at(0); }}},
      {"table", {"str", [](auto& o, auto v) { o.store.table = As<std::string>(v); }}},
      {"cleanup",
       {"'none', 'incremental' or 'full'",
        [](auto& o, auto v) {
          auto mode = ParseCleanupMode(As<std::string>(v));
          if (!mode.ok()) throw py::value_error(mode.status().message());
          o.cleanup = *mode;
        }}},
      {"skip_unchanged", {"bool", [](auto& o, auto v) { o.skip_unchanged = As<bool>(v); }}},
      {"cache", {"bool", [](auto& o, auto v) { o.embedding_cache = As<bool>(v); }}},
      {"reembed", {"bool", [](auto& o, auto v) { o.store.reembed = As<bool>(v); }}},
      {"queue_capacity", {"int", [](auto& o, auto v) { o.queue_capacity = As<size_t>(v); }}},
      {"progress_interval",
       {"float (seconds)",
        [](auto& o, auto v) { o.progress_callback_interval = FromSeconds(As<double>(v)); }}},
  };
  return *options;
}

std::string KnownOptions() {
  std::string names;
  for (const auto& [name, option] : KeywordOptions()) names += (names.empty() ? "" : ", ") + name;
  return names;
}

py::dict ProgressDict(const IngestProgress& p) {
  py::dict d;
  d["elapsed_s"] = p.elapsed_s;
  d["sources_done"] = p.sources_done;
  d["sources_total"] = p.totals_known ? py::object(py::int_(p.sources_total)) : py::none();
  d["bytes_done"] = p.bytes_done;
  d["chunks_produced"] = p.chunks_produced;
  d["chunks_stored"] = p.chunks_stored;
  d["chunks_dead_lettered"] = p.chunks_dead_lettered;
  d["tokens"] = p.tokens;
  d["chunks_per_s"] = p.chunks_per_s;
  d["final"] = p.final;
  return d;
}

py::object Ingest(const py::object& paths, const std::string& store, const py::object& endpoint,
                  const std::string& embedder, const py::object& on_progress, bool check,
                  const py::kwargs& kwargs) {
  IngestOptions o;
  o.inputs = Paths(paths);
  o.store_uri = store;
  o.progress = false;  // no line on stderr: the caller has on_progress
  if (!endpoint.is_none()) o.http.endpoint = As<std::string>(endpoint);
  if (embedder == "hash") {
    o.embedder = EmbedderKind::kHash;
  } else if (embedder == "http") {
    o.embedder = EmbedderKind::kHttp;
  } else if (embedder == "auto") {
    o.embedder = EmbedderKind::kAuto;
  } else {
    throw py::value_error("sluice.ingest: embedder must be 'hash', 'http' or 'auto', not '" +
                          embedder + "'");
  }
  if (const char* key = std::getenv("OPENAI_API_KEY"); key != nullptr) o.http.api_key = key;
  for (const auto& [key, value] : kwargs) {
    const std::string name = As<std::string>(key);
    const auto option = KeywordOptions().find(name);
    if (option == KeywordOptions().end()) {
      throw py::value_error("sluice.ingest: unknown option '" + name +
                            "' (known: " + KnownOptions() + ")");
    }
    try {
      option->second.set(o, value);
    } catch (const py::cast_error&) {
      throw py::value_error("sluice.ingest: option '" + name + "' must be " + option->second.type);
    }
  }
  o.dead_letter_path = DeadLetterPathFor(o);

  // Set by the progress callback (holding the GIL) when it raised.
  std::unique_ptr<py::error_already_set> callback_error;
  Pipeline* running = nullptr;
  if (!on_progress.is_none()) {
    if (!PyCallable_Check(on_progress.ptr())) {
      throw py::value_error("sluice.ingest: on_progress must be callable");
    }
    o.on_progress = [&](const IngestProgress& p) {
      py::gil_scoped_acquire gil;
      if (callback_error) return;
      try {
        if (PyErr_CheckSignals() != 0) throw py::error_already_set();  // Ctrl-C
        on_progress(ProgressDict(p));
      } catch (py::error_already_set& e) {
        callback_error = std::make_unique<py::error_already_set>(std::move(e));
        running->RequestStop();
      }
    };
  }
  Pipeline pipeline(o);
  running = &pipeline;
  IngestReport report;
  {
    py::gil_scoped_release release;
    report = pipeline.Run();
  }
  if (callback_error) throw std::move(*callback_error);
  if (check && !report.status.ok()) {
    if (report.status.code() == StatusCode::kInvalidArgument) {
      throw py::value_error("sluice.ingest: " + report.status.message());
    }
    throw std::runtime_error("sluice.ingest: " + std::string(StatusCodeName(report.status.code())) +
                             ": " + report.status.message());
  }
  return py::module_::import("json").attr("loads")(FormatReportJson(report, pipeline.metrics()));
}

py::list Search(const std::string& store_uri, const py::object& query, int k) {
  if (k <= 0) throw py::value_error("sluice.search: k must be > 0");
  StoreOptions store_options;
  store_options.read_only = true;  // a missing store is an error, never a new empty one
  auto store = OpenStore(store_uri, store_options);
  if (!store.ok()) throw std::runtime_error("sluice.search: " + store.status().message());
  std::vector<float> vector;
  if (py::isinstance<py::str>(query)) {
    // A text query is embedded as the store's chunks were: only the offline
    // hash embedder can do that here (give a vector for any other model).
    auto stored = (*store)->StoredModel();
    if (!stored.ok()) throw std::runtime_error("sluice.search: " + stored.status().message());
    if (stored->dimensions == 0) return py::list();
    const std::string hash_model =
        MakeHashTransport(HashEmbedderOptions{.dimensions = stored->dimensions})->ModelName();
    if (stored->model != hash_model) {
      throw py::value_error("sluice.search: the store holds vectors of model '" + stored->model +
                            "'; a text query works for the hash embedder only: pass the query's "
                            "vector instead");
    }
    vector = HashEmbed(As<std::string>(query), stored->dimensions);
  } else {
    try {
      vector = As<std::vector<float>>(query);
    } catch (const py::cast_error&) {
      throw py::value_error("sluice.search: query must be a str or a sequence of floats");
    }
  }
  std::vector<SearchHit> hits;
  {
    py::gil_scoped_release release;
    auto found = (*store)->Search(vector, k);
    if (!found.ok()) {
      py::gil_scoped_acquire gil;
      throw std::runtime_error("sluice.search: " + found.status().message());
    }
    hits = std::move(*found);
  }
  const py::object loads = py::module_::import("json").attr("loads");
  py::list out;
  for (const SearchHit& h : hits) {
    py::dict d;
    d["score"] = h.score;
    d["chunk_id"] = h.chunk_id;
    d["source_id"] = h.source_id;
    d["ordinal"] = h.ordinal;
    d["domain"] = h.domain;
    d["category"] = h.category;
    d["text"] = h.text;
    d["metadata"] = h.metadata_json.empty() ? py::dict() : loads(h.metadata_json);
    out.append(d);
  }
  return out;
}

}  // namespace
}  // namespace sluice

PYBIND11_MODULE(sluice, m) {
  m.doc() =
      "sluice: documents -> chunks -> embeddings -> a vector store (SQLite or PostgreSQL) and "
      "per-domain JSON files. See README.md, \"Python\".";
  m.def("ingest", &sluice::Ingest, py::arg("paths"), py::kw_only(),
        py::arg("store") = "sqlite:sluice.db", py::arg("endpoint") = py::none(),
        py::arg("embedder") = "auto", py::arg("on_progress") = py::none(), py::arg("check") = true,
        "ingest(paths, *, store='sqlite:sluice.db', endpoint=None, embedder='auto', "
        "on_progress=None, check=True, **options) -> dict\n\n"
        "Ingests files or folders (a path or a list of paths) and returns the JSON report as a "
        "dict. embedder: 'hash' (offline), 'http' (an OpenAI-compatible endpoint; the key from "
        "api_key= or $OPENAI_API_KEY) or 'auto' (http when an endpoint is given). on_progress "
        "is called with a dict of counts every progress_interval seconds (default 1) and once at "
        "the end, on a pipeline thread holding the GIL; an exception it raises stops the run "
        "and is re-raised. check: raise (ValueError for bad options, RuntimeError otherwise) "
        "when the run fails, instead of returning a report whose 'status' is not 'ok'. "
        "options: the `sluice ingest` flags with '_' for '-' (model, dimensions, api_key, "
        "hash_dimensions, chunk_tokens, chunk_overlap, batch_size, concurrency, out, "
        "aggregate, report, dead_letter, include, exclude, cleanup, skip_unchanged, cache, ...); "
        "an unknown option raises ValueError. The GIL is released while the run goes.");
  m.def("search", &sluice::Search, py::arg("store"), py::arg("query"), py::arg("k") = 5,
        "search(store, query, k=5) -> list of dict\n\n"
        "The k chunks nearest to `query` (a sequence of floats, or a text for a store built "
        "with the hash embedder), best first: score (cosine), chunk_id, source_id, ordinal, "
        "domain, category, text, metadata.");
}
