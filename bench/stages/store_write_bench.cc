// The store write path's own ceiling (issue 15, BENCHMARKS.md "Stage
// ceilings"): rows/s through SqliteStore::Write with the pipeline's defaults
// (embedding cache and run records on, the store's rows per transaction),
// next to the raw SQLite limit for the same rows: one prepared INSERT of
// identical rows into a plain table in transactions of the same size, with
// the same pragmas. The ratio store / raw says how much the store's own
// bookkeeping (upsert, indexes, cache and run rows) costs.
//
//   build-rel/bench/stages/bench_stages --benchmark_filter=Store
#include <benchmark/benchmark.h>
#include <sqlite3.h>

#include <unistd.h>
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <random>
#include <string>
#include <vector>

#include <fmt/format.h>

#include "sluice/store.h"
#include "sluice/types.h"

namespace sluice {
namespace {

constexpr int kDims = 256;
constexpr size_t kRows = 20000;
constexpr int kChunksPerSource = 12;

// ~2 KB of words per chunk (the pipeline's ~512-token chunks), distinct texts.
std::vector<EmbeddedChunk> MakeRows(size_t n) {
  std::mt19937_64 rng(42);
  static const char* kWords[] = {"pump",   "valve", "pressure", "manual", "install",
                                 "torque", "seal",  "the",      "of",     "replace",
                                 "check",  "flow",  "rated",    "bearing"};
  std::uniform_int_distribution<int> word(0, 13);
  std::normal_distribution<float> value(0, 1);
  std::vector<EmbeddedChunk> rows(n);
  for (size_t i = 0; i < n; ++i) {
    EmbeddedChunk& r = rows[i];
    Chunk& c = r.chunk;
    c.source_id = fmt::format("docs/manual-{:05}.md", i / kChunksPerSource);
    c.file_id = c.source_id;
    c.ordinal = static_cast<uint32_t>(i % kChunksPerSource);
    c.text = fmt::format("chunk {} ", i);
    while (c.text.size() < 2000) {
      c.text += kWords[word(rng)];
      c.text += ' ';
    }
    c.id = fmt::format("{:016x}{:016x}", rng(), rng());
    c.byte_begin = c.ordinal * 2000;
    c.byte_end = c.byte_begin + c.text.size();
    c.domain = "manuals";
    c.category = "pumps";
    c.metadata_json = R"({"heading_path":["Install","Seals"],"title":"Pump manual"})";
    c.token_estimate = 500;
    r.embedding.resize(kDims);
    for (float& f : r.embedding) f = value(rng);
    r.model = "text-embedding-3-small";
  }
  return rows;
}

const std::vector<EmbeddedChunk>& Rows() {
  static const std::vector<EmbeddedChunk> rows = MakeRows(kRows);
  return rows;
}

// BENCH_ROWS_PER_TXN=N compares transaction sizes (0 or unset: the store's own).
size_t RowsPerTransactionOverride() {
  const char* v = std::getenv("BENCH_ROWS_PER_TXN");
  return v == nullptr ? 0 : static_cast<size_t>(std::strtoul(v, nullptr, 10));
}

std::string FreshPath(const char* name) {
  const std::string dir = std::filesystem::temp_directory_path() / "sluice-bench-stages";
  std::filesystem::create_directories(dir);
  const std::string path = dir + "/" + name + ".db";
  for (const char* suffix : {"", "-wal", "-shm", ".lock"}) std::remove((path + suffix).c_str());
  return path;
}

// What an ingest run opens its store with: the embedding cache and run
// records on.
StoreOptions PipelineStoreOptions() {
  StoreOptions options;
  options.embedding_cache_namespace = "text-embedding-3-small:256";
  options.run_id = 7;
  return options;
}

// One store write benchmark: each iteration opens a fresh store (`open`,
// untimed), writes every row in calls of RowsPerTransaction x ParallelWrites
// rows, as the store stage sends them, and closes it. Reports rows/s and the
// rows per call.
template <class OpenFn>
void WriteRows(benchmark::State& state, OpenFn open) {
  const auto& rows = Rows();
  size_t per_call = 0;
  for (auto _ : state) {
    state.PauseTiming();
    Result<std::unique_ptr<Store>> store = open(PipelineStoreOptions());
    if (!store.ok()) {
      state.SkipWithError(store.status().ToString().c_str());
      return;
    }
    per_call = (*store)->RowsPerTransaction() * static_cast<size_t>((*store)->ParallelWrites());
    state.ResumeTiming();
    for (size_t i = 0; i < rows.size(); i += per_call) {
      const size_t n = std::min(per_call, rows.size() - i);
      WriteResult r = (*store)->Write(std::span(rows).subspan(i, n));
      if (!r.status.ok() || !r.rejected.empty()) {
        state.SkipWithError("write failed");
        return;
      }
    }
    (*store)->Close();
  }
  state.counters["rows/s"] = benchmark::Counter(static_cast<double>(rows.size()),
                                                benchmark::Counter::kIsIterationInvariantRate);
  state.counters["rows_per_call"] = static_cast<double>(per_call);
}

void BM_StoreWrite(benchmark::State& state) {
  WriteRows(state, [](StoreOptions options) {
    options.exclusive_run = true;
    options.batch_rows = RowsPerTransactionOverride();
    return OpenStore("sqlite:" + FreshPath("store"), options);
  });
}
BENCHMARK(BM_StoreWrite)->Unit(benchmark::kMillisecond)->UseRealTime()->Iterations(3);

// The same write path into one store that grows to BENCH_GROWING_ROWS rows
// (default 400,000): rows/s over the whole load and over its last quarter,
// which shows what the random-key indexes cost as they outgrow a commit.
// Rows are the 20,000 above with a new id and a distinct text each pass
// (made untimed, per call).
void BM_StoreWriteGrowing(benchmark::State& state) {
  const char* env = std::getenv("BENCH_GROWING_ROWS");
  const size_t total = env != nullptr ? std::strtoul(env, nullptr, 10) : 400000;
  const auto& rows = Rows();
  std::mt19937_64 rng(7);
  double last_quarter_seconds = 0;
  for (auto _ : state) {
    state.PauseTiming();
    StoreOptions options = PipelineStoreOptions();
    options.exclusive_run = true;
    options.batch_rows = RowsPerTransactionOverride();
    Result<std::unique_ptr<Store>> store = OpenStore("sqlite:" + FreshPath("growing"), options);
    if (!store.ok()) {
      state.SkipWithError(store.status().ToString().c_str());
      return;
    }
    const size_t per_call = (*store)->RowsPerTransaction();
    std::vector<EmbeddedChunk> batch;
    auto quarter_started = std::chrono::steady_clock::now();
    bool in_last_quarter = false;
    for (size_t written = 0; written < total; written += batch.size()) {
      batch.clear();
      for (size_t i = written; i < std::min(total, written + per_call); ++i) {
        EmbeddedChunk row = rows[i % rows.size()];
        row.chunk.id = fmt::format("{:016x}{:016x}", rng(), rng());
        row.chunk.text.replace(0, 0, fmt::format("pass {} ", i / rows.size()));
        row.chunk.source_id = fmt::format("docs/manual-{:07}.md", i / kChunksPerSource);
        row.chunk.file_id = row.chunk.source_id;
        batch.push_back(std::move(row));
      }
      if (!in_last_quarter && written >= total - total / 4) {
        in_last_quarter = true;
        quarter_started = std::chrono::steady_clock::now();
      }
      state.ResumeTiming();
      WriteResult r = (*store)->Write(batch);
      state.PauseTiming();
      if (!r.status.ok() || !r.rejected.empty()) {
        state.SkipWithError("write failed");
        return;
      }
    }
    state.ResumeTiming();
    (*store)->Close();
    state.PauseTiming();
    last_quarter_seconds +=
        std::chrono::duration<double>(std::chrono::steady_clock::now() - quarter_started).count();
    state.ResumeTiming();
  }
  state.counters["rows/s"] =
      benchmark::Counter(static_cast<double>(total), benchmark::Counter::kIsIterationInvariantRate);
  state.counters["last_quarter_rows/s"] = static_cast<double>(total / 4) *
                                          static_cast<double>(state.iterations()) /
                                          last_quarter_seconds;
}
BENCHMARK(BM_StoreWriteGrowing)->Unit(benchmark::kMillisecond)->UseRealTime()->Iterations(1);

// The PostgreSQL store's own rate (SLUICE_BENCH_PG_DSN=postgres://...; the
// benchmark is skipped without it), each iteration into a fresh table.
void BM_PgStoreWrite(benchmark::State& state) {
  const char* dsn = std::getenv("SLUICE_BENCH_PG_DSN");
  if (dsn == nullptr || *dsn == '\0') {
    state.SkipWithError("set SLUICE_BENCH_PG_DSN to a PostgreSQL URI");
    return;
  }
  int table = 0;
  WriteRows(state, [&](StoreOptions options) {
    options.table = fmt::format("bench_stages_{}_{}", ::getpid(), table++);
    return OpenStore(dsn, options);
  });
}
BENCHMARK(BM_PgStoreWrite)->Unit(benchmark::kMillisecond)->UseRealTime()->Iterations(3);

// The raw limit: identical rows, one prepared INSERT, the store's pragmas
// and rows per transaction, a plain table with the chunk id as its key.
void BM_RawSqliteInsert(benchmark::State& state) {
  const auto& rows = Rows();
  const size_t per_txn = RowsPerTransactionOverride() > 0 ? RowsPerTransactionOverride()
                                                          : Store::kDefaultRowsPerTransaction;
  for (auto _ : state) {
    state.PauseTiming();
    sqlite3* db = nullptr;
    sqlite3_open(FreshPath("raw").c_str(), &db);
    sqlite3_exec(db,
                 "PRAGMA page_size=16384; PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;"
                 "CREATE TABLE chunks (id TEXT PRIMARY KEY, source_id TEXT, ordinal INTEGER, "
                 "byte_begin INTEGER, byte_end INTEGER, text TEXT, domain TEXT, category TEXT, "
                 "metadata TEXT, model TEXT, dims INTEGER, embedding BLOB, token_estimate "
                 "INTEGER, updated_at INTEGER, file_id TEXT);",
                 nullptr, nullptr, nullptr);
    sqlite3_stmt* st = nullptr;
    sqlite3_prepare_v2(db,
                       "INSERT INTO chunks VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, "
                       "?12, ?13, ?14, ?15)",
                       -1, &st, nullptr);
    state.ResumeTiming();
    for (size_t i = 0; i < rows.size(); ++i) {
      if (i % per_txn == 0) sqlite3_exec(db, "BEGIN", nullptr, nullptr, nullptr);
      const Chunk& c = rows[i].chunk;
      sqlite3_bind_text(st, 1, c.id.data(), static_cast<int>(c.id.size()), SQLITE_STATIC);
      sqlite3_bind_text(st, 2, c.source_id.data(), static_cast<int>(c.source_id.size()),
                        SQLITE_STATIC);
      sqlite3_bind_int64(st, 3, c.ordinal);
      sqlite3_bind_int64(st, 4, static_cast<int64_t>(c.byte_begin));
      sqlite3_bind_int64(st, 5, static_cast<int64_t>(c.byte_end));
      sqlite3_bind_text(st, 6, c.text.data(), static_cast<int>(c.text.size()), SQLITE_STATIC);
      sqlite3_bind_text(st, 7, c.domain.data(), static_cast<int>(c.domain.size()), SQLITE_STATIC);
      sqlite3_bind_text(st, 8, c.category.data(), static_cast<int>(c.category.size()),
                        SQLITE_STATIC);
      sqlite3_bind_text(st, 9, c.metadata_json.data(), static_cast<int>(c.metadata_json.size()),
                        SQLITE_STATIC);
      sqlite3_bind_text(st, 10, rows[i].model.data(), static_cast<int>(rows[i].model.size()),
                        SQLITE_STATIC);
      sqlite3_bind_int(st, 11, kDims);
      sqlite3_bind_blob(st, 12, rows[i].embedding.data(), kDims * 4, SQLITE_STATIC);
      sqlite3_bind_int64(st, 13, c.token_estimate);
      sqlite3_bind_int64(st, 14, 0);
      sqlite3_bind_text(st, 15, c.file_id.data(), static_cast<int>(c.file_id.size()),
                        SQLITE_STATIC);
      if (sqlite3_step(st) != SQLITE_DONE) {
        state.SkipWithError(sqlite3_errmsg(db));
        return;
      }
      sqlite3_reset(st);
      if ((i + 1) % per_txn == 0 || i + 1 == rows.size())
        sqlite3_exec(db, "COMMIT", nullptr, nullptr, nullptr);
    }
    sqlite3_finalize(st);
    sqlite3_close(db);
  }
  state.counters["rows/s"] = benchmark::Counter(static_cast<double>(rows.size()),
                                                benchmark::Counter::kIsIterationInvariantRate);
}
BENCHMARK(BM_RawSqliteInsert)->Unit(benchmark::kMillisecond)->UseRealTime()->Iterations(3);

}  // namespace
}  // namespace sluice

BENCHMARK_MAIN();
