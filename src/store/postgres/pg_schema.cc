// The PostgreSQL store's tables: probing and creating the chunks and
// sources tables (pgvector or real[]), the resume tables and their
// migrations, the stored model check, --reembed and the vector index
// (pg_store.h).
#include "store/postgres/pg_store.h"

#include <cstdlib>

#include "store/postgres/pg_transaction.h"

namespace sluice::pg {

Status PostgresStore::CheckStoredModelLocked(PgConn& c) {
  // One row names the table's model: opening refuses another model, so a
  // table holds one (a table mixed by an older sluice shows its first row's).
  std::string model;
  {
    const std::string sql = "SELECT model FROM " + q_chunks_ + " LIMIT 1";
    PgResult r(PQexec(c.pg, sql.c_str()));
    if (!ResultOk(r.get())) return Fail(Classify(c.pg, r.get()), "read the stored model");
    if (PQntuples(r.get()) > 0) model = PQgetvalue(r.get(), 0, 0);
  }
  const bool other_model = !options_.model.empty() && !model.empty() && model != options_.model;
  const bool other_dims = options_.dimensions > 0 && dims_ > 0 && options_.dimensions != dims_;
  if (!other_model && !other_dims) return Status::OK();
  return StoreModelMismatch(described_ + " table " + chunks_table_, StoreModel{model, dims_},
                            options_.model, options_.dimensions);
}

Status PostgresStore::DropEverythingLocked(PgConn& c) {
  // The vector column's type fixes the dimension, so the tables go and are
  // made again for the new model (the first write, or Init when the
  // dimension is known). Same advisory lock as their creation.
  std::string sql = "BEGIN; SELECT pg_advisory_xact_lock(" +
                    std::to_string(static_cast<int64_t>(Hash64(chunks_table_, 0x5109ce))) + ");\n";
  sql += "DROP TABLE IF EXISTS " + q_chunks_ + ", " + q_sources_ + ", " + q_files_ + ", " +
         q_cache_ + ", " + q_run_ + ";\nCOMMIT;";
  PgTransaction tx(c);
  PgResult r(PQexec(c.pg, sql.c_str()));
  if (!ResultOk(r.get()))
    return Fail(Classify(c.pg, r.get()), "--reembed: drop the store's tables");
  tx.Committed();
  dims_ = 0;
  schema_ready_ = false;
  file_id_ready_ = false;
  return Status::OK();
}

Result<StoreModel> PostgresStore::StoredModel() {
  int dims = 0;
  {
    std::lock_guard<std::mutex> lock(schema_mu_);
    if (!schema_ready_) return StoreModel{};
    dims = dims_;
  }
  auto usable = CheckoutUsable();
  if (!usable.ok()) return usable.status();
  std::unique_ptr<PgConn> conn = std::move(*usable);
  const std::string sql = "SELECT model FROM " + q_chunks_ + " LIMIT 1";
  PgResult r(PQexec(conn->pg, sql.c_str()));
  Result<StoreModel> out = StoreModel{};
  if (!ResultOk(r.get())) {
    out = Fail(Classify(conn->pg, r.get()), "read the stored model");
  } else if (PQntuples(r.get()) > 0) {
    out = StoreModel{PQgetvalue(r.get(), 0, 0), dims};
  }
  Return(std::move(conn));
  return out;
}

// Reads the embedding column of an existing chunks table. REQUIRES: schema_mu_.
Status PostgresStore::ProbeExistingLocked(PgConn& c, bool* exists) {
  const std::string sql =
      "SELECT format_type(a.atttypid, a.atttypmod) FROM pg_attribute a "
      "WHERE a.attrelid = to_regclass(" +
      QuoteLiteral(q_chunks_) + ") AND a.attname = 'embedding' AND NOT a.attisdropped";
  PgResult r(PQexec(c.pg, sql.c_str()));
  if (!ResultOk(r.get())) return Fail(Classify(c.pg, r.get()), "probe table");
  *exists = PQntuples(r.get()) > 0;
  if (!*exists) return Status::OK();
  if (Status s = EnsureFileIdLocked(c); !s.ok()) return s;
  const std::string type = PQgetvalue(r.get(), 0, 0);
  if (type.starts_with("vector")) {
    pgvector_ = true;
    const size_t open = type.find('(');
    dims_ = open == std::string::npos ? 0 : std::atoi(type.c_str() + open + 1);
  } else if (type == "real[]") {
    pgvector_ = false;
    // The dimension lives in the CHECK constraint; read it back from a row or
    // the constraint text.
    const std::string q =
        "SELECT pg_get_constraintdef(oid) FROM pg_constraint WHERE conrelid = to_regclass(" +
        QuoteLiteral(q_chunks_) + ") AND contype = 'c'";
    PgResult cr(PQexec(c.pg, q.c_str()));
    dims_ = 0;
    if (ResultOk(cr.get())) {
      for (int i = 0; i < PQntuples(cr.get()); ++i) {
        const std::string def = PQgetvalue(cr.get(), i, 0);
        const size_t eq = def.find("cardinality(embedding) = ");
        if (eq != std::string::npos) dims_ = std::atoi(def.c_str() + eq + 25);
      }
    }
  } else {
    return Status::InvalidArgument("table " + q_chunks_ + " exists with embedding type " + type +
                                   ", expected vector(N) or real[]");
  }
  schema_ready_ = dims_ > 0;
  return Status::OK();
}

Status PostgresStore::EnsureFileIdLocked(PgConn& c) {
  if (file_id_ready_) return Status::OK();
  // Probed first: a role that may not ALTER the table can still use it once
  // someone else has added the column.
  const std::string index = QuoteIdent(chunks_table_ + "_file_id_idx");
  const std::string probe =
      "SELECT EXISTS (SELECT 1 FROM pg_attribute WHERE attrelid = to_regclass(" +
      QuoteLiteral(q_chunks_) + ") AND attname = 'file_id' AND NOT attisdropped), to_regclass(" +
      QuoteLiteral(index) + ") IS NOT NULL";
  PgResult r(PQexec(c.pg, probe.c_str()));
  if (!ResultOk(r.get())) return Fail(Classify(c.pg, r.get()), "probe file_id column");
  const bool has_column = std::string_view(PQgetvalue(r.get(), 0, 0)) == "t";
  const bool has_index = std::string_view(PQgetvalue(r.get(), 0, 1)) == "t";
  if (has_column && has_index) {
    file_id_ready_ = true;
    return Status::OK();
  }
  const std::string sql = "BEGIN; SELECT pg_advisory_xact_lock(" +
                          std::to_string(static_cast<int64_t>(Hash64(chunks_table_, 0x5109ce))) +
                          ");\nALTER TABLE " + q_chunks_ +
                          " ADD COLUMN IF NOT EXISTS file_id text;\nCREATE INDEX IF NOT EXISTS " +
                          index + " ON " + q_chunks_ + " (file_id);\nCOMMIT;";
  PgTransaction tx(c);
  PgResult a(PQexec(c.pg, sql.c_str()));
  if (!ResultOk(a.get())) {
    PgError e = Classify(c.pg, a.get());
    // The column is there, only its index is not (and we may not build it):
    // correct, just slower to find a file's chunks.
    if (has_column && e.fault == Fault::kFatal) {
      file_id_ready_ = true;
      return Status::OK();
    }
    return Fail(e, "add column file_id to " + q_chunks_);
  }
  tx.Committed();
  file_id_ready_ = true;
  return Status::OK();
}

Status PostgresStore::EnsureSchema(PgConn& c, int dims) {
  std::lock_guard<std::mutex> lock(schema_mu_);
  if (schema_ready_) return Status::OK();
  return CreateSchemaLocked(c, dims);
}

Status PostgresStore::CreateSchemaLocked(PgConn& c, int dims) {
  if (dims <= 0 || dims > 16000) {
    return Status::InvalidArgument("postgres store: bad embedding dimension " +
                                   std::to_string(dims));
  }
  const std::string n = std::to_string(dims);
  const std::string embedding_type = pgvector_ ? "vector(" + n + ")" : "real[]";
  const std::string dims_check = pgvector_ ? ""
                                           : ", CONSTRAINT " +
                                                 QuoteIdent(chunks_table_ + "_embedding_dims") +
                                                 " CHECK (cardinality(embedding) = " + n + ")";
  // One transaction under an advisory lock so two stores creating the same
  // table at once do not trip over each other's catalog rows.
  std::string sql = "BEGIN; SELECT pg_advisory_xact_lock(" +
                    std::to_string(static_cast<int64_t>(Hash64(chunks_table_, 0x5109ce))) + ");\n";
  sql += "CREATE TABLE IF NOT EXISTS " + q_sources_ +
         " (source_id text PRIMARY KEY, path text, domain text NOT NULL DEFAULT '', "
         "category text NOT NULL DEFAULT '', chunk_count integer NOT NULL DEFAULT 0, "
         "size_bytes bigint, mtime_ns bigint, content_hash text, "
         "updated_at timestamptz NOT NULL DEFAULT now());\n";
  sql += "CREATE TABLE IF NOT EXISTS " + q_chunks_ +
         " (id text PRIMARY KEY, source_id text NOT NULL, file_id text, ordinal integer NOT NULL, "
         "byte_begin bigint NOT NULL, byte_end bigint NOT NULL, text text NOT NULL, "
         "domain text NOT NULL DEFAULT '', category text NOT NULL DEFAULT '', "
         "metadata jsonb NOT NULL DEFAULT '{}', model text NOT NULL DEFAULT '', "
         "dims integer NOT NULL, embedding " +
         embedding_type +
         " NOT NULL, token_estimate integer NOT NULL DEFAULT 0, "
         "updated_at timestamptz NOT NULL DEFAULT now()" +
         dims_check + ");\n";
  if (!pgvector_) {
    // PostgreSQL otherwise spends most of its COPY time trying (and failing)
    // to compress random floats; pgvector's type is EXTERNAL already.
    sql += "ALTER TABLE " + q_chunks_ + " ALTER COLUMN embedding SET STORAGE EXTERNAL;\n";
  }
  sql += "CREATE INDEX IF NOT EXISTS " + QuoteIdent(chunks_table_ + "_source_id_idx") + " ON " +
         q_chunks_ + " (source_id);\n";
  sql += "CREATE INDEX IF NOT EXISTS " + QuoteIdent(chunks_table_ + "_file_id_idx") + " ON " +
         q_chunks_ + " (file_id);\nCOMMIT;";
  {
    PgTransaction tx(c);
    PgResult r(PQexec(c.pg, sql.c_str()));
    if (!ResultOk(r.get())) return Fail(Classify(c.pg, r.get()), "create schema");
    tx.Committed();
  }
  bool exists = false;
  Status s = ProbeExistingLocked(c, &exists);  // another store may have won with other dims
  if (!s.ok()) return s;
  if (dims_ != dims) {
    return Status::InvalidArgument("table " + q_chunks_ + " holds " + std::to_string(dims_) +
                                   "-dimensional vectors, not " + n);
  }
  schema_ready_ = true;
  return Status::OK();
}

Status PostgresStore::EnsureResumeTables(PgConn& c) {
  // Probed first: a role that may not create tables can still use them.
  const std::string probe =
      "SELECT to_regclass(" + QuoteLiteral(q_files_) + ") IS NOT NULL, to_regclass(" +
      QuoteLiteral(q_cache_) + ") IS NOT NULL, to_regclass(" + QuoteLiteral(q_run_) +
      ") IS NOT NULL, EXISTS (SELECT 1 FROM pg_attribute WHERE attrelid = to_regclass(" +
      QuoteLiteral(q_files_) + ") AND attname = 'chunk_ids' AND NOT attisdropped)";
  bool have_files = false, have_cache = false, have_run = false, have_lists = false;
  {
    PgResult r(PQexec(c.pg, probe.c_str()));
    if (!ResultOk(r.get())) return Fail(Classify(c.pg, r.get()), "probe resume tables");
    auto yes = [&](int col) { return std::string_view(PQgetvalue(r.get(), 0, col)) == "t"; };
    have_files = yes(0);
    have_cache = yes(1);
    have_run = yes(2);
    have_lists = yes(3);
    if (have_files && have_cache && have_run && !have_lists) {
      resume_tables_ = true;
      return Status::OK();
    }
  }
  // None depends on the vector dimension, so they exist from the start and
  // LoadFingerprints works before the first write. Same advisory lock as the
  // chunks table's creation. The cache's vectors are random floats: EXTERNAL
  // storage skips PostgreSQL's (futile) compression attempt. Only what is
  // missing is created, so a role that owns none of them can add the run
  // records table to tables someone else made.
  std::string sql = "BEGIN; SELECT pg_advisory_xact_lock(" +
                    std::to_string(static_cast<int64_t>(Hash64(chunks_table_, 0x5109ce))) + ");\n";
  if (!have_files) {
    sql += "CREATE TABLE IF NOT EXISTS " + q_files_ +
           " (file_id text PRIMARY KEY, path text NOT NULL DEFAULT '', "
           "size_bytes bigint NOT NULL DEFAULT 0, mtime_ns bigint NOT NULL DEFAULT 0, "
           "content_hash text NOT NULL DEFAULT '', chunk_count integer NOT NULL DEFAULT 0, "
           "updated_at timestamptz NOT NULL DEFAULT now());\n";
  }
  if (!have_cache) {
    sql += "CREATE TABLE IF NOT EXISTS " + q_cache_ +
           " (key text PRIMARY KEY, model text NOT NULL DEFAULT '', embedding bytea NOT NULL);\n"
           "ALTER TABLE " +
           q_cache_ + " ALTER COLUMN embedding SET STORAGE EXTERNAL;\n";
  }
  if (!have_run) {
    // Which chunks each run stored for each file (StoreOptions::run_id);
    // CommitSources reads a file's records by this key and then forgets them.
    sql += "CREATE TABLE IF NOT EXISTS " + q_run_ +
           " (file_id text NOT NULL, run_id bigint NOT NULL, chunk_id text NOT NULL, "
           "PRIMARY KEY (file_id, run_id, chunk_id));\n";
  }
  PgTransaction tx(c);  // begun by `sql`
  PgResult r(PQexec(c.pg, sql.c_str()));
  PgError e;
  if (!ResultOk(r.get())) e = Classify(c.pg, r.get());
  if (e.fault == Fault::kNone && have_lists) e = MigrateChunkIdLists(c);
  if (e.fault == Fault::kNone) e = tx.Commit();
  if (e.fault != Fault::kNone) {
    if (e.sqlstate == "42501") {
      // Not allowed to create (or migrate) them: the store still works,
      // without resume.
      resume_error_ = "cannot create or migrate " + q_files_ + ", " + q_cache_ + " and " + q_run_ +
                      ": " + e.message;
      return Status::OK();
    }
    return Fail(e, "create resume tables");
  }
  resume_tables_ = true;
  return Status::OK();
}

PgError PostgresStore::MigrateChunkIdLists(PgConn& c) {
  // Re-probed under the lock: another store may have migrated meanwhile.
  const std::string probe =
      "SELECT EXISTS (SELECT 1 FROM pg_attribute WHERE attrelid = to_regclass(" +
      QuoteLiteral(q_files_) +
      ") AND attname = 'chunk_ids' AND NOT attisdropped), EXISTS (SELECT 1 FROM pg_attribute "
      "WHERE attrelid = to_regclass(" +
      QuoteLiteral(q_chunks_) + ") AND attname = 'file_id' AND NOT attisdropped)";
  PgResult r(PQexec(c.pg, probe.c_str()));
  if (!ResultOk(r.get())) return Classify(c.pg, r.get());
  if (std::string_view(PQgetvalue(r.get(), 0, 0)) != "t") return {};
  std::string sql;
  if (std::string_view(PQgetvalue(r.get(), 0, 1)) == "t") {
    // A listed chunk takes its file's id; rows listed nowhere keep NULL and
    // are found by the legacy rule (source_id = the file's id).
    sql = "UPDATE " + q_chunks_ + " c SET file_id = l.file_id FROM (SELECT f.file_id, u.id FROM " +
          q_files_ + " f CROSS JOIN LATERAL unnest(f.chunk_ids) AS u(id)) l WHERE c.id = l.id " +
          "AND c.file_id IS NULL;\n";
  }
  sql += "ALTER TABLE " + q_files_ + " DROP COLUMN chunk_ids;";
  return Exec(c, sql);
}

Status PostgresStore::ResumeSupported() const {
  if (resume_tables_) return Status::OK();
  return Status::InvalidArgument("not supported by this store: " + resume_error_);
}

Result<bool> PostgresStore::ChunksTableExists(PgConn& c) {
  std::lock_guard<std::mutex> lock(schema_mu_);
  if (schema_ready_) return true;
  bool exists = false;
  if (Status s = ProbeExistingLocked(c, &exists); !s.ok()) return s;
  return exists;
}

PgError PostgresStore::ProbeChunksTable(PgConn& c, bool& exists) {
  Result<bool> probed = ChunksTableExists(c);
  if (probed.ok()) {
    exists = *probed;
    return {};
  }
  PgError e;
  e.fault = Fault::kConnection;  // the probe failed: replay
  e.message = probed.status().message();
  return e;
}

Status PostgresStore::Flush() {
  if (options_.create_index.empty() || index_built_) return Status::OK();
  {
    std::lock_guard<std::mutex> lock(schema_mu_);
    if (!schema_ready_) return Status::OK();  // nothing written yet
  }
  auto usable = CheckoutUsable();
  if (!usable.ok()) return usable.status();
  std::unique_ptr<PgConn> conn = std::move(*usable);
  std::string sql;
  if (options_.create_index == "hnsw") {
    sql = "CREATE INDEX IF NOT EXISTS " + QuoteIdent(chunks_table_ + "_embedding_hnsw_idx") +
          " ON " + q_chunks_ + " USING hnsw (embedding vector_cosine_ops)";
  } else {
    // ivfflat wants data first; lists ~ rows / 1000 as pgvector suggests.
    PgResult r(PQexec(conn->pg, ("SELECT count(*) FROM " + q_chunks_).c_str()));
    long long n = ResultOk(r.get()) ? std::atoll(PQgetvalue(r.get(), 0, 0)) : 0;
    sql = "CREATE INDEX IF NOT EXISTS " + QuoteIdent(chunks_table_ + "_embedding_ivfflat_idx") +
          " ON " + q_chunks_ + " USING ivfflat (embedding vector_cosine_ops) WITH (lists = " +
          std::to_string(std::max(1LL, n / 1000)) + ")";
  }
  PgError e = Exec(*conn, sql);
  Return(std::move(conn));
  if (e.fault != Fault::kNone) return Fail(e, "create index");
  index_built_ = true;
  return Status::OK();
}

}  // namespace sluice::pg
