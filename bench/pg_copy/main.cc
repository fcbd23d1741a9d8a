// The PostgreSQL store stage against `psql \copy ... WITH (FORMAT binary)` of
// the same rows into a table of the same shape, in one run, for real[] with
// the default storage and with STORAGE EXTERNAL. Prints one table.
//
//   pg_copy_bench --dsn postgres://postgres@127.0.0.1:PORT/postgres [--rows 100000]
//                 [--dims 768] [--text-bytes 2048] [--batch-rows 500] [--pool 2] [--repeat 3]
//
// The psql side loads a binary COPY file generated beforehand (only the copy
// is timed). The store side times only its Write calls (rows are generated
// between them), each call carrying pool x batch_rows rows so the pool writes
// that many transactions in parallel, as the pipeline does. The third row
// also writes what `sluice ingest` writes by default beside each chunk (the
// embedding cache row and the run's per-file chunk record; docs/RESUME.md),
// still against the plain psql copy.
#include <libpq-fe.h>

#include <unistd.h>
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <string>
#include <vector>

#include "common/hashing.h"
#include "sluice/store.h"
#include "store/postgres/pg_binary.h"

namespace {

using sluice::EmbeddedChunk;

struct Args {
  std::string dsn;
  size_t rows = 100000;
  int dims = 768;
  size_t text_bytes = 2048;
  size_t batch_rows = 500;
  int pool = 2;
  int repeat = 3;
};

double Median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

EmbeddedChunk MakeRow(uint64_t n, const Args& a) {
  static const char* kWords[] = {"pump",  "valve", "pressure", "the",     "seal",   "flow",
                                 "motor", "check", "replace",  "housing", "torque", "of",
                                 "and",   "bolt",  "inspect",  "bearing", "to",     "manual"};
  EmbeddedChunk e;
  e.chunk.id = sluice::Hash128Hex("bench-" + std::to_string(n));
  e.chunk.source_id = "manuals/doc-" + std::to_string(n / 20) + ".md";
  e.chunk.file_id = e.chunk.source_id;  // a plain file: the store writes it too
  e.chunk.ordinal = static_cast<uint32_t>(n % 20);
  e.chunk.byte_begin = (n % 20) * a.text_bytes;
  e.chunk.byte_end = e.chunk.byte_begin + a.text_bytes;
  uint64_t state = n * 0x9E3779B97F4A7C15ull + 7;
  while (e.chunk.text.size() < a.text_bytes) {
    e.chunk.text += kWords[sluice::SplitMix64(state) % std::size(kWords)];
    e.chunk.text += ' ';
  }
  e.chunk.domain = "manuals";
  e.chunk.category = "pumps";
  e.chunk.metadata_json =
      "{\"title\":\"Pump manual\",\"page_start\":" + std::to_string(n % 300) + "}";
  e.chunk.token_estimate = static_cast<uint32_t>(a.text_bytes / 4);
  e.model = "text-embedding-3-small";
  e.embedding.resize(a.dims);
  for (auto& f : e.embedding) {
    f = static_cast<float>((sluice::SplitMix64(state) >> 40) / double(1 << 23) - 1.0);
  }
  return e;
}

bool Exec(PGconn* pg, const std::string& sql) {
  PGresult* r = PQexec(pg, sql.c_str());
  const bool ok = PQresultStatus(r) == PGRES_COMMAND_OK || PQresultStatus(r) == PGRES_TUPLES_OK;
  if (!ok) std::fprintf(stderr, "%s: %s", sql.c_str(), PQresultErrorMessage(r));
  PQclear(r);
  return ok;
}

// The chunks table and every table the store keeps beside it.
void DropTables(PGconn* pg, const std::string& t) {
  Exec(pg, "DROP TABLE IF EXISTS \"" + t + "\", \"" + t + "_sources\", \"" + t + "_files\", \"" +
               t + "_embedding_cache\", \"" + t + "_run_chunks\"");
}

double Now() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

// Creates `table` (and its sources table) through the store so both sides
// load the same shape, then sets the embedding column's storage.
bool FreshTable(PGconn* pg, const Args& a, const std::string& table, const char* storage) {
  DropTables(pg, table);
  sluice::StoreOptions o;
  o.table = table;
  o.dimensions = a.dims;
  auto store = sluice::OpenPostgresStore(a.dsn, o);
  if (!store.ok()) {
    std::fprintf(stderr, "%s\n", store.status().ToString().c_str());
    return false;
  }
  (*store)->Close();
  return Exec(pg, "ALTER TABLE \"" + table + "\" ALTER COLUMN embedding SET STORAGE " + storage);
}

double TimePsqlCopy(PGconn* pg, const Args& a, const std::string& table, const std::string& file) {
  Exec(pg, "CHECKPOINT");
  const std::string cmd =
      "psql -X -q -v ON_ERROR_STOP=1 '" + a.dsn + "' -c \"\\copy \\\"" + table +
      "\\\" (id, source_id, file_id, ordinal, byte_begin, byte_end, text, domain, "
      "category, metadata, model, dims, embedding, token_estimate) FROM '" +
      file + "' WITH (FORMAT binary)\"";
  const double start = Now();
  if (std::system(cmd.c_str()) != 0) {
    std::fprintf(stderr, "psql \\copy failed\n");
    return -1;
  }
  return Now() - start;
}

double TimeStore(PGconn* pg, const Args& a, const std::string& table, bool cache) {
  Exec(pg, "CHECKPOINT");
  sluice::StoreOptions o;
  o.table = table;
  if (cache) {
    // What `sluice ingest` does by default: the embedding cache and the run's
    // per-file chunk records, in the same transactions.
    o.embedding_cache_namespace = "text-embedding-3-small:" + std::to_string(a.dims);
    o.run_id = 42;
  }
  o.dimensions = a.dims;
  o.batch_rows = a.batch_rows;
  o.pool_size = a.pool;
  auto store = sluice::OpenPostgresStore(a.dsn, o);
  if (!store.ok()) {
    std::fprintf(stderr, "%s\n", store.status().ToString().c_str());
    return -1;
  }
  const size_t per_call = a.batch_rows * static_cast<size_t>(a.pool);
  double busy = 0;
  std::vector<EmbeddedChunk> batch;
  for (size_t first = 0; first < a.rows; first += per_call) {
    batch.clear();
    for (size_t n = first; n < std::min(a.rows, first + per_call); ++n)
      batch.push_back(MakeRow(n, a));
    const double start = Now();
    sluice::WriteResult w = (*store)->Write(batch);
    busy += Now() - start;
    if (!w.status.ok() || !w.rejected.empty()) {
      std::fprintf(stderr, "store write failed: %s\n", w.status.ToString().c_str());
      return -1;
    }
  }
  (*store)->Close();
  return busy;
}

}  // namespace

int main(int argc, char** argv) {
  Args a;
  if (const char* env = std::getenv("SLUICE_TEST_PG_DSN")) a.dsn = env;
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string k = argv[i], v = argv[i + 1];
    if (k == "--dsn")
      a.dsn = v;
    else if (k == "--rows")
      a.rows = std::stoul(v);
    else if (k == "--dims")
      a.dims = std::stoi(v);
    else if (k == "--text-bytes")
      a.text_bytes = std::stoul(v);
    else if (k == "--batch-rows")
      a.batch_rows = std::stoul(v);
    else if (k == "--pool")
      a.pool = std::stoi(v);
    else if (k == "--repeat")
      a.repeat = std::max(1, std::stoi(v));
    else {
      std::fprintf(stderr, "unknown option %s\n", k.c_str());
      return 2;
    }
  }
  if (a.dsn.empty()) {
    std::fprintf(stderr,
                 "usage: pg_copy_bench --dsn postgres://... [--rows N] (or SLUICE_TEST_PG_DSN)\n");
    return 2;
  }
  PGconn* pg = PQconnectdb(a.dsn.c_str());
  PQsetNoticeProcessor(
      pg, [](void*, const char*) {}, nullptr);
  if (PQstatus(pg) != CONNECTION_OK) {
    std::fprintf(stderr, "cannot connect to %s: %s", sluice::RedactUri(a.dsn).c_str(),
                 PQerrorMessage(pg));
    return 1;
  }
  // The COPY file psql loads: the same rows, in the store's column order.
  const std::string file = "/tmp/sluice_pg_copy_bench_" + std::to_string(getpid()) + ".bin";
  {
    std::ofstream out(file, std::ios::binary);
    std::string buf;
    sluice::pg::CopyWriter::AppendHeader(buf);
    sluice::pg::CopyWriter w(buf);
    for (size_t n = 0; n < a.rows; ++n) {
      const EmbeddedChunk e = MakeRow(n, a);
      w.BeginTuple(14);
      w.Text(e.chunk.id);
      w.Text(e.chunk.source_id);
      w.Text(e.chunk.file_id);
      w.Int4(static_cast<int32_t>(e.chunk.ordinal));
      w.Int8(static_cast<int64_t>(e.chunk.byte_begin));
      w.Int8(static_cast<int64_t>(e.chunk.byte_end));
      w.Text(e.chunk.text);
      w.Text(e.chunk.domain);
      w.Text(e.chunk.category);
      w.Jsonb(e.chunk.metadata_json);
      w.Text(e.model);
      w.Int4(static_cast<int32_t>(e.embedding.size()));
      w.Float4Array(e.embedding);
      w.Int4(static_cast<int32_t>(e.chunk.token_estimate));
      if (buf.size() > (8 << 20)) {
        out.write(buf.data(), static_cast<std::streamsize>(buf.size()));
        buf.clear();
      }
    }
    sluice::pg::CopyWriter::AppendTrailer(buf);
    out.write(buf.data(), static_cast<std::streamsize>(buf.size()));
  }
  std::printf("rows=%zu dims=%d text_bytes=%zu batch_rows=%zu pool=%d server=%s\n", a.rows, a.dims,
              a.text_bytes, a.batch_rows, a.pool, sluice::RedactUri(a.dsn).c_str());
  std::printf("%-26s %14s %14s %7s %13s\n", "embedding column", "psql rows/s", "store rows/s",
              "ratio", "ratio min-max");
  struct Variant {
    const char* name;
    const char* storage;
    bool cache;
  } variants[] = {{"real[] default (EXTENDED)", "EXTENDED", false},
                  {"real[] STORAGE EXTERNAL", "EXTERNAL", false},
                  {"EXTERNAL, as ingest writes", "EXTERNAL", true}};
  int rc = 0;
  for (const auto& v : variants) {
    const std::string copy_table = std::string("bench_psql_") + v.storage;
    const std::string store_table = std::string("bench_store_") + v.storage;
    std::vector<double> psql_rates, store_rates, ratios;
    for (int r = 0; r < a.repeat && rc == 0; ++r) {
      if (!FreshTable(pg, a, copy_table, v.storage) || !FreshTable(pg, a, store_table, v.storage)) {
        rc = 1;
        break;
      }
      // Alternate which side goes first (caches, checkpoints, autovacuum).
      double psql_s, store_s;
      if (r % 2 == 0) {
        psql_s = TimePsqlCopy(pg, a, copy_table, file);
        store_s = TimeStore(pg, a, store_table, v.cache);
      } else {
        store_s = TimeStore(pg, a, store_table, v.cache);
        psql_s = TimePsqlCopy(pg, a, copy_table, file);
      }
      if (psql_s <= 0 || store_s <= 0) {
        rc = 1;
        break;
      }
      psql_rates.push_back(a.rows / psql_s);
      store_rates.push_back(a.rows / store_s);
      ratios.push_back(psql_s / store_s);
    }
    if (rc != 0) break;
    std::printf("%-26s %14.0f %14.0f %7.2f %6.2f-%-6.2f\n", v.name, Median(psql_rates),
                Median(store_rates), Median(ratios),
                *std::min_element(ratios.begin(), ratios.end()),
                *std::max_element(ratios.begin(), ratios.end()));
    std::fflush(stdout);
  }
  for (const char* side : {"bench_psql_", "bench_store_"}) {
    for (const char* storage : {"EXTENDED", "EXTERNAL"}) {
      const std::string t = std::string(side) + storage;
      DropTables(pg, t);
    }
  }
  std::remove(file.c_str());
  PQfinish(pg);
  return rc;
}
