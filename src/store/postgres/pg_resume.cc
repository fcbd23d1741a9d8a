// The PostgreSQL store's resume side (docs/RESUME.md): file fingerprints,
// committing and deleting sources with their stale chunks, the embedding
// cache lookup, reading chunks back and verify, each replayed over a lost
// connection (pg_store.h).
#include "store/postgres/pg_store.h"

#include <algorithm>
#include <cstdlib>
#include <map>
#include <unordered_map>

#include <spdlog/spdlog.h>

#include "common/json_canonical.h"
#include "store/postgres/pg_transaction.h"

namespace sluice::pg {

namespace {

// The chunks of the file `file` (an SQL expression) in the chunks table
// (unqualified columns): its own (file_id), plus rows written before chunks
// had a file_id, which belong to the file whose id is their source id.
std::string FileChunksWhere(const std::string& file) {
  return "(file_id = " + file + " OR (source_id = " + file + " AND coalesce(file_id, '') = ''))";
}

// The same as a join: (file_id, id, source_id) of the stored chunks of every
// file in `files` (a relation with a file_id column, plus `extra` columns
// carried along), by the two indexes.
std::string FileChunksJoin(const std::string& q_chunks, const std::string& files,
                           const std::string& extra, const std::string& where) {
  const std::string cols = "SELECT m.file_id, c.id, c.source_id" + extra + " FROM " + files +
                           " m JOIN " + q_chunks + " c ON ";
  const std::string filter = where.empty() ? "" : " WHERE " + where;
  return cols + "c.file_id = m.file_id" + filter + " UNION ALL " + cols +
         "c.source_id = m.file_id AND coalesce(c.file_id, '') = ''" + filter;
}

}  // namespace

template <typename Attempt>
Status PostgresStore::Retrying(const std::string& what, Attempt&& attempt) {
  auto checked_out = Checkout();
  if (!checked_out.ok()) return checked_out.status();
  std::unique_ptr<PgConn> conn = std::move(*checked_out);
  ReplayBackoff backoff(RetryClock(), options_.reconnect_timeout_s,
                        conn->serial * 0x9E3779B97F4A7C15ull + 7);
  Status result;
  for (;;) {
    PgError e;
    Status last;
    if (!conn->ok()) {
      conn->Drop();
      auto fresh = Connect();
      if (fresh.ok()) {
        conn = std::move(*fresh);
      } else if (fresh.status().code() == StatusCode::kUnavailable) {
        e.fault = Fault::kConnection;
        last = fresh.status();
      } else {
        result = fresh.status();
        break;
      }
    }
    if (e.fault == Fault::kNone) {
      e = attempt(*conn);
      if (e.fault != Fault::kNone) {
        RollbackIfOpen(*conn);
        last = Fail(e, what);
      }
    }
    if (e.fault == Fault::kNone) break;
    if (e.fault == Fault::kData || e.fault == Fault::kFatal) {
      result = last;
      break;
    }
    if (!conn->ok()) conn->Drop();
    if (!backoff.Wait()) {
      result = backoff.GaveUp(last);
      break;
    }
  }
  Return(std::move(conn));
  return result;
}

Result<std::vector<SourceFingerprint>> PostgresStore::LoadFingerprints() {
  if (Status s = ResumeSupported(); !s.ok()) return s;
  std::vector<SourceFingerprint> out;
  Status s = Retrying("load fingerprints", [&](PgConn& c) -> PgError {
    out.clear();
    PgResult r(PQexec(c.pg, ("SELECT file_id, path, size_bytes, mtime_ns, content_hash, "
                             "chunk_count FROM " +
                             q_files_)
                                .c_str()));
    if (!ResultOk(r.get())) return Classify(c.pg, r.get());
    out.reserve(PQntuples(r.get()));
    for (int i = 0; i < PQntuples(r.get()); ++i) {
      SourceFingerprint f;
      f.file_id = Value(r.get(), i, 0);
      f.path = Value(r.get(), i, 1);
      f.size_bytes = std::strtoull(PQgetvalue(r.get(), i, 2), nullptr, 10);
      f.mtime_ns = std::strtoll(PQgetvalue(r.get(), i, 3), nullptr, 10);
      f.content_hash = Value(r.get(), i, 4);
      f.chunk_count = std::strtoull(PQgetvalue(r.get(), i, 5), nullptr, 10);
      out.push_back(std::move(f));
    }
    return {};
  });
  if (!s.ok()) return s;
  return out;
}

Result<std::vector<std::string>> PostgresStore::FileChunkIds(const std::string& file_id) {
  if (Status s = ResumeSupported(); !s.ok()) return s;
  std::vector<std::string> ids;
  Status s = Retrying("read file chunks", [&](PgConn& c) -> PgError {
    ids.clear();
    bool has_chunks = false;
    if (PgError e = ProbeChunksTable(c, has_chunks); e.fault != Fault::kNone) return e;
    if (!has_chunks) return {};
    const std::string params[1] = {file_id};
    PgResult r = ExecParams(c.pg,
                            "SELECT id FROM " + q_chunks_ + " WHERE " + FileChunksWhere("$1") +
                                " ORDER BY source_id COLLATE \"C\", ordinal, id COLLATE \"C\"",
                            params, 0);
    if (!ResultOk(r.get())) return Classify(c.pg, r.get());
    for (int i = 0; i < PQntuples(r.get()); ++i) ids.emplace_back(Value(r.get(), i, 0));
    return {};
  });
  if (!s.ok()) return s;
  return ids;
}

PgError PostgresStore::RecountSources(PgConn& c, const std::vector<std::string>& source_ids) {
  if (source_ids.empty()) return {};
  const std::string params[1] = {pg::EncodeBytesArrayBinary(source_ids)};
  PgResult r =
      ExecParams(c.pg,
                 "WITH counted AS (SELECT s.source_id, (SELECT count(*) FROM " + q_chunks_ +
                     " c WHERE c.source_id = s.source_id) AS n FROM " + q_sources_ +
                     " s WHERE s.source_id = ANY($1::text[])), "
                     "gone AS (DELETE FROM " +
                     q_sources_ +
                     " s USING counted k WHERE s.source_id = k.source_id AND k.n = 0), "
                     "kept AS (UPDATE " +
                     q_sources_ +
                     " s SET chunk_count = k.n, updated_at = now() FROM counted k "
                     "WHERE s.source_id = k.source_id AND k.n > 0 AND s.chunk_count <> k.n) "
                     "SELECT count(*) FROM counted",
                 params, 0);
  if (!ResultOk(r.get())) return Classify(c.pg, r.get());
  return {};
}

PgError PostgresStore::DeleteAndCommit(PgConn& c, const std::string& sql,
                                       std::span<const std::string> params, uint64_t& deleted) {
  PgResult r = ExecParams(c.pg, sql, params, 0);
  if (!ResultOk(r.get())) return Classify(c.pg, r.get());
  std::vector<std::string> touched;
  for (int i = 0; i < PQntuples(r.get()); ++i) {
    if (PQgetisnull(r.get(), i, 0)) continue;
    touched.emplace_back(Value(r.get(), i, 0));
    deleted += std::strtoull(PQgetvalue(r.get(), i, 1), nullptr, 10);
  }
  if (PgError e = RecountSources(c, touched); e.fault != Fault::kNone) return e;
  return Exec(c, "COMMIT");
}

PgError PostgresStore::RefreshStaleStatistics(PgConn& c) {
  const uint64_t written = rows_written_.load();
  uint64_t due = next_statistics_check_.load();
  if (written < due) return {};
  // One caller per check; the others go on with the statistics they have.
  if (!next_statistics_check_.compare_exchange_strong(due, 2 * written)) return {};
  const std::string params[1] = {q_chunks_};
  PgResult r =
      ExecParams(c.pg, "SELECT reltuples FROM pg_class WHERE oid = to_regclass($1)", params, 0);
  if (!ResultOk(r.get())) return Classify(c.pg, r.get());
  // -1: never analyzed (0 before PostgreSQL 14).
  const double estimated =
      PQntuples(r.get()) == 1 ? std::strtod(PQgetvalue(r.get(), 0, 0), nullptr) : -1;
  if (estimated >= static_cast<double>(written)) return {};
  // SKIP_LOCKED: a concurrent ANALYZE (autovacuum's, another worker's) is as good.
  std::string sql =
      "ANALYZE (SKIP_LOCKED) " + q_chunks_ + " (id, source_id, file_id), " + q_sources_;
  if (resume_tables_) sql += ", " + q_files_ + ", " + q_run_;
  PgResult analyzed(PQexec(c.pg, sql.c_str()));
  if (!ResultOk(analyzed.get())) {
    PgError e = Classify(c.pg, analyzed.get());
    if (e.fault == Fault::kConnection) return e;
    spdlog::debug("postgres: refreshing the planner's statistics failed: {}", e.message);
  }
  return {};
}

// One statement for all of a call's files (a data-modifying CTE per table):
// a commit after every store batch stays one round trip however many small
// files it completes. Modes per file: "replace" (delete its stored chunks
// that its run did not record), "keep" (--cleanup none: delete nothing,
// count them), "facts" (only path, size, mtime and hash changed). Every
// mode forgets the committing run's records of the file and any run's
// records of the chunks it deleted, and no others: another run ingesting the
// same file at the same time (distributed workers, two ingests) still needs
// its records of the chunks it wrote to tell them from stale ones when it
// commits. (Forgetting every run's records made that run delete every chunk
// of the file it had written before this commit, leaving the file
// fingerprinted but short of chunks.) A dead run's records (no session holds
// its liveness lock, RunIsDeadSql) go too, here and when a store opens: only
// their own run would have read them. All CTEs read one snapshot, so the stale set is
// computed from the run records before they are deleted.
Result<uint64_t> PostgresStore::CommitSources(std::span<const SourceManifest> completed) {
  if (Status s = ResumeSupported(); !s.ok()) return s;
  if (completed.empty()) return uint64_t{0};
  if (Status s = KeepRunAlive(); !s.ok()) return s;
  // The last manifest of a file wins: a statement may upsert a row once.
  std::map<std::string_view, const SourceManifest*> by_file;
  for (const SourceManifest& m : completed) by_file[m.fingerprint.file_id] = &m;
  std::vector<std::string> file_ids, paths, hashes, modes;
  std::vector<int64_t> sizes, mtimes, produced, run_ids;
  for (const auto& [id, m] : by_file) {
    const SourceFingerprint& f = m->fingerprint;
    file_ids.push_back(f.file_id);
    paths.push_back(f.path);
    sizes.push_back(static_cast<int64_t>(f.size_bytes));
    mtimes.push_back(f.mtime_ns);
    hashes.push_back(f.content_hash);
    modes.emplace_back(m->facts_only ? "facts" : m->delete_stale ? "replace" : "keep");
    produced.push_back(static_cast<int64_t>(f.chunk_count));
    run_ids.push_back(static_cast<int64_t>(m->run_id));
  }
  const std::string params[8] = {
      pg::EncodeBytesArrayBinary(file_ids), pg::EncodeBytesArrayBinary(paths),
      pg::EncodeInt8ArrayBinary(sizes),     pg::EncodeInt8ArrayBinary(mtimes),
      pg::EncodeBytesArrayBinary(hashes),   pg::EncodeBytesArrayBinary(modes),
      pg::EncodeInt8ArrayBinary(produced),  pg::EncodeInt8ArrayBinary(run_ids)};

  uint64_t deleted = 0;
  Status s = Retrying("commit sources", [&](PgConn& c) -> PgError {
    deleted = 0;
    bool has_chunks = false;
    if (PgError e = ProbeChunksTable(c, has_chunks); e.fault != Fault::kNone) return e;
    if (has_chunks) {
      if (PgError e = RefreshStaleStatistics(c); e.fault != Fault::kNone) return e;
    }
    PgError e = BeginAndLock(c, file_ids, "", nullptr);
    if (e.fault != Fault::kNone) return e;
    std::string sql =
        "WITH m AS (SELECT * FROM unnest($1::text[], $2::text[], $3::int8[], $4::int8[], "
        "$5::text[], $6::text[], $7::int8[], $8::int8[]) AS m(file_id, path, size_bytes, "
        "mtime_ns, content_hash, mode, produced, run_id)), ";
    if (has_chunks) {
      // A file's stored chunks that its run did not record: stale.
      sql += "stored AS (" +
             FileChunksJoin(q_chunks_, "m", ", m.mode, m.run_id", "m.mode <> 'facts'") +
             "), stale AS (SELECT s.file_id, s.id, s.mode FROM stored s WHERE NOT EXISTS "
             "(SELECT 1 FROM " +
             q_run_ +
             " r WHERE r.file_id = s.file_id AND r.run_id = s.run_id AND r.chunk_id = s.id)), "
             "kept AS (SELECT file_id, count(*) AS n FROM stale WHERE mode = 'keep' GROUP BY "
             "file_id), "
             "del AS (DELETE FROM " +
             q_chunks_ +
             " c USING stale s WHERE c.id = s.id AND s.mode = 'replace' RETURNING c.source_id), "
             "src AS (UPDATE " +
             q_sources_ +
             " s SET path = m.path, size_bytes = m.size_bytes, mtime_ns = m.mtime_ns, "
             "content_hash = m.content_hash FROM m WHERE s.source_id = m.file_id), ";
    } else {
      sql += "kept AS (SELECT NULL::text AS file_id, 0::bigint AS n WHERE false), ";
    }
    sql += "put AS (INSERT INTO " + q_files_ +
           " AS f (file_id, path, size_bytes, mtime_ns, content_hash, chunk_count) "
           "SELECT m.file_id, m.path, m.size_bytes, m.mtime_ns, m.content_hash, "
           "m.produced + coalesce(k.n, 0) FROM m LEFT JOIN kept k ON k.file_id = m.file_id "
           "WHERE m.mode <> 'facts' ORDER BY m.file_id "
           "ON CONFLICT (file_id) DO UPDATE SET path = EXCLUDED.path, size_bytes = "
           "EXCLUDED.size_bytes, mtime_ns = EXCLUDED.mtime_ns, content_hash = "
           "EXCLUDED.content_hash, chunk_count = EXCLUDED.chunk_count, updated_at = now()), "
           "facts AS (INSERT INTO " +
           q_files_ +
           " AS f (file_id, path, size_bytes, mtime_ns, content_hash) SELECT m.file_id, m.path, "
           "m.size_bytes, m.mtime_ns, m.content_hash FROM m WHERE m.mode = 'facts' ORDER BY "
           "m.file_id ON CONFLICT (file_id) DO UPDATE SET path = EXCLUDED.path, size_bytes = "
           "EXCLUDED.size_bytes, mtime_ns = EXCLUDED.mtime_ns, content_hash = "
           "EXCLUDED.content_hash, updated_at = now()), "
           // Other runs' records of these files whose run is dead. The
           // liveness test reads pg_locks (a snapshot of the lock table per
           // call), so it runs once per distinct other run, in an
           // uncorrelated subquery, not once per record: per record it made
           // each commit of 1,000 chunks take 2-3 s (docs/PERFORMANCE.md).
           "dead AS (SELECT o.run_id FROM (SELECT DISTINCT r.run_id FROM " +
           q_run_ + " r JOIN m ON r.file_id = m.file_id AND r.run_id <> m.run_id) o WHERE " +
           RunIsDeadSql("o.run_id") +
           "), "
           "forget AS (DELETE FROM " +
           q_run_ +
           " r USING m WHERE r.file_id = m.file_id AND (r.run_id = m.run_id OR r.run_id IN "
           "(SELECT run_id FROM dead)" +
           (has_chunks ? std::string(" OR (r.file_id, r.chunk_id) IN (SELECT s.file_id, s.id "
                                     "FROM stale s WHERE s.mode = 'replace')")
                       : std::string()) +
           ")) ";
    sql += has_chunks ? "SELECT source_id, count(*) FROM del GROUP BY source_id"
                      : "SELECT NULL::text, 0";
    return DeleteAndCommit(c, sql, params, deleted);
  });
  if (!s.ok()) return s;
  return deleted;
}

Result<uint64_t> PostgresStore::DeleteSources(std::span<const std::string> file_ids) {
  if (Status s = ResumeSupported(); !s.ok()) return s;
  if (file_ids.empty()) return uint64_t{0};
  std::vector<std::string> sorted(file_ids.begin(), file_ids.end());
  std::sort(sorted.begin(), sorted.end());
  sorted.erase(std::unique(sorted.begin(), sorted.end()), sorted.end());
  uint64_t deleted = 0;
  Status s = Retrying("delete sources", [&](PgConn& c) -> PgError {
    deleted = 0;
    bool has_chunks = false;
    if (PgError e = ProbeChunksTable(c, has_chunks); e.fault != Fault::kNone) return e;
    PgError e = BeginAndLock(c, sorted, "", nullptr);
    if (e.fault != Fault::kNone) return e;
    std::string sql = "WITH m AS (SELECT unnest($1::text[]) AS file_id), gone AS (DELETE FROM " +
                      q_files_ +
                      " f USING m WHERE f.file_id = m.file_id), forget AS (DELETE FROM " + q_run_ +
                      " r USING m WHERE r.file_id = m.file_id)";
    if (has_chunks) {
      sql += ", old AS (" + FileChunksJoin(q_chunks_, "m", "", "") + "), del AS (DELETE FROM " +
             q_chunks_ +
             " c USING old o WHERE c.id = o.id RETURNING c.source_id) "
             "SELECT source_id, count(*) FROM del GROUP BY source_id";
    } else {
      sql += " SELECT NULL::text, 0";
    }
    const std::string params[1] = {pg::EncodeBytesArrayBinary(sorted)};
    return DeleteAndCommit(c, sql, params, deleted);
  });
  if (!s.ok()) return s;
  return deleted;
}

Result<bool> PostgresStore::MayHoldCachedEmbeddings() {
  if (Status s = ResumeSupported(); !s.ok()) return s;
  bool any = true;
  Status s = Retrying("embedding cache probe", [&](PgConn& c) -> PgError {
    PgResult r = ExecParams(c.pg, "SELECT EXISTS (SELECT 1 FROM " + q_cache_ + ")", {}, 0);
    if (!ResultOk(r.get())) return Classify(c.pg, r.get());
    any = PQntuples(r.get()) != 1 || std::string_view(PQgetvalue(r.get(), 0, 0)) != "f";
    return {};
  });
  if (!s.ok()) return s;
  return any;
}

Status PostgresStore::LookupEmbeddings(std::string_view cache_namespace,
                                       std::span<const std::string_view> texts,
                                       std::vector<CachedEmbedding>& out) {
  if (Status s = ResumeSupported(); !s.ok()) return s;
  out.assign(texts.size(), CachedEmbedding{});
  if (texts.empty()) return Status::OK();
  std::unordered_map<std::string, std::vector<size_t>> where;
  std::vector<std::string> keys;
  for (size_t i = 0; i < texts.size(); ++i) {
    auto [it, inserted] = where.try_emplace(EmbeddingCacheKey(cache_namespace, texts[i]));
    if (inserted) keys.push_back(it->first);
    it->second.push_back(i);
  }
  const std::string params[1] = {pg::EncodeBytesArrayBinary(keys)};
  // One statement, no transaction of its own: on PGlite it may run inside
  // the writer's transaction (one shared backend), which it must not end.
  return Retrying("embedding cache lookup", [&](PgConn& c) -> PgError {
    PgResult r = ExecParams(
        c.pg, "SELECT key, model, embedding FROM " + q_cache_ + " WHERE key = ANY($1::text[])",
        params, 1);
    if (!ResultOk(r.get())) return Classify(c.pg, r.get());
    for (int row = 0; row < PQntuples(r.get()); ++row) {
      auto it = where.find(std::string(Value(r.get(), row, 0)));
      if (it == where.end()) continue;
      CachedEmbedding hit;
      hit.model = Value(r.get(), row, 1);
      hit.embedding = FloatsFromLE(Value(r.get(), row, 2));
      for (size_t i : it->second) out[i] = hit;
    }
    return {};
  });
}

Result<std::vector<EmbeddedChunk>> PostgresStore::ReadChunks(
    std::span<const std::string> chunk_ids) {
  std::vector<EmbeddedChunk> out;
  if (chunk_ids.empty()) return out;
  std::unordered_map<std::string, EmbeddedChunk> found;
  Status s = Retrying("read chunks", [&](PgConn& c) -> PgError {
    found.clear();
    auto has_chunks = ChunksTableExists(c);
    if (!has_chunks.ok() || !*has_chunks) return {};
    // In slices: a bounded statement and result per round trip.
    constexpr size_t kSlice = 1000;
    for (size_t at = 0; at < chunk_ids.size(); at += kSlice) {
      const auto slice = chunk_ids.subspan(at, std::min(kSlice, chunk_ids.size() - at));
      const std::string params[1] = {pg::EncodeBytesArrayBinary(slice)};
      PgResult r =
          ExecParams(c.pg,
                     "SELECT id, source_id, ordinal, byte_begin, byte_end, text, domain, "
                     "category, metadata::text, model, embedding, token_estimate, file_id FROM " +
                         q_chunks_ + " WHERE id = ANY($1::text[])",
                     params, 1);
      if (!ResultOk(r.get())) return Classify(c.pg, r.get());
      for (int row = 0; row < PQntuples(r.get()); ++row) {
        EmbeddedChunk e;
        Chunk& ch = e.chunk;
        ch.id = Value(r.get(), row, 0);
        ch.source_id = Value(r.get(), row, 1);
        ch.ordinal = static_cast<uint32_t>(pg::ReadInt32(PQgetvalue(r.get(), row, 2)));
        ch.byte_begin = static_cast<uint64_t>(pg::ReadInt64(PQgetvalue(r.get(), row, 3)));
        ch.byte_end = static_cast<uint64_t>(pg::ReadInt64(PQgetvalue(r.get(), row, 4)));
        ch.text = Value(r.get(), row, 5);
        ch.domain = Value(r.get(), row, 6);
        ch.category = Value(r.get(), row, 7);
        // jsonb keeps the value, not the text: back to the canonical text
        // the chunker wrote (common/json_canonical.h).
        ch.metadata_json = Value(r.get(), row, 8);
        if (auto canonical = CanonicalJson(ch.metadata_json); canonical.ok()) {
          ch.metadata_json = std::move(*canonical);
        }
        e.model = Value(r.get(), row, 9);
        auto v = pgvector_ ? pg::DecodeVectorBinary(Value(r.get(), row, 10))
                           : pg::DecodeFloat4ArrayBinary(Value(r.get(), row, 10));
        if (!v) {
          PgError bad;
          bad.fault = Fault::kFatal;
          bad.message = "chunk " + ch.id + " has an undecodable embedding";
          return bad;
        }
        e.embedding = std::move(*v);
        ch.token_estimate = static_cast<uint32_t>(pg::ReadInt32(PQgetvalue(r.get(), row, 11)));
        if (!PQgetisnull(r.get(), row, 12)) ch.file_id = Value(r.get(), row, 12);
        std::string id = ch.id;
        found.emplace(std::move(id), std::move(e));
      }
    }
    return {};
  });
  if (!s.ok()) return s;
  out.reserve(found.size());
  for (const std::string& id : chunk_ids) {
    auto it = found.find(id);
    if (it != found.end()) out.push_back(it->second);
  }
  return out;
}

Status PostgresStore::Verify(std::vector<VerifyProblem>& problems, size_t limit) {
  if (Status s = ResumeSupported(); !s.ok()) return s;
  const size_t first = problems.size();
  return Retrying("verify", [&](PgConn& c) -> PgError {
    problems.resize(first);  // a replay starts over
    auto add = [&](std::string kind, std::string_view subject, std::string detail) {
      if (problems.size() < limit) {
        problems.push_back({std::move(kind), std::string(subject), std::move(detail)});
      }
    };
    const std::string lim = std::to_string(limit);
    auto query = [&](const std::string& sql, auto&& each) -> PgError {
      if (problems.size() >= limit) return {};
      PgResult r(PQexec(c.pg, sql.c_str()));
      if (!ResultOk(r.get())) return Classify(c.pg, r.get());
      for (int i = 0; i < PQntuples(r.get()); ++i) each(r.get(), i);
      return {};
    };
    bool has_chunks = false;
    if (PgError e = ProbeChunksTable(c, has_chunks); e.fault != Fault::kNone) return e;
    // Each fingerprinted file against the chunks stored for it (one pass
    // over the chunks; rows without a file_id count for their source id).
    const std::string stored =
        has_chunks ? "LEFT JOIN (SELECT coalesce(nullif(file_id, ''), source_id) AS file_id, "
                     "count(*) AS n FROM " +
                         q_chunks_ + " GROUP BY 1) s ON s.file_id = f.file_id"
                   : "LEFT JOIN (SELECT NULL::text AS file_id, 0::bigint AS n) s ON false";
    PgError e = query(
        "SELECT f.file_id, f.chunk_count, coalesce(s.n, 0) FROM " + q_files_ + " f " + stored +
            " WHERE f.chunk_count <> coalesce(s.n, 0) ORDER BY 1 "
            "LIMIT " +
            lim,
        [&](const PGresult* r, int i) {
          const uint64_t want = std::strtoull(PQgetvalue(r, i, 1), nullptr, 10);
          const uint64_t have = std::strtoull(PQgetvalue(r, i, 2), nullptr, 10);
          add(have < want ? "missing_chunk" : "count_mismatch", Value(r, i, 0),
              "fingerprint counts " + std::to_string(want) + " chunks, " + std::to_string(have) +
                  " stored" + (have < want ? "" : " (stale ones)"));
        });
    if (e.fault != Fault::kNone || !has_chunks) return e;
    int dims = 0;
    {
      std::lock_guard<std::mutex> lock(schema_mu_);
      dims = dims_;
    }
    if (dims > 0) {
      const std::string n = std::to_string(dims);
      const std::string length =
          pgvector_ ? "vector_dims(embedding)" : "coalesce(cardinality(embedding), 0)";
      e = query("SELECT id, dims, " + length + " FROM " + q_chunks_ + " WHERE dims <> " + n +
                    " OR " + length + " <> " + n + " ORDER BY 1 LIMIT " + lim,
                [&](const PGresult* r, int i) {
                  add("wrong_dimensions", Value(r, i, 0),
                      std::string(Value(r, i, 1)) + " dimensions (" + std::string(Value(r, i, 2)) +
                          " values), store has " + n);
                });
      if (e.fault != Fault::kNone) return e;
    }
    e = query("SELECT c.id, c.source_id FROM " + q_chunks_ + " c WHERE NOT EXISTS (SELECT 1 FROM " +
                  q_sources_ + " s WHERE s.source_id = c.source_id) ORDER BY 1 LIMIT " + lim,
              [&](const PGresult* r, int i) {
                add("orphan_chunk", Value(r, i, 0),
                    "its source '" + std::string(Value(r, i, 1)) + "' is not in the sources table");
              });
    if (e.fault != Fault::kNone) return e;
    return query("SELECT s.source_id, s.chunk_count, count(c.id) FROM " + q_sources_ +
                     " s LEFT JOIN " + q_chunks_ +
                     " c ON c.source_id = s.source_id GROUP BY s.source_id, s.chunk_count "
                     "HAVING s.chunk_count <> count(c.id) ORDER BY 1 LIMIT " +
                     lim,
                 [&](const PGresult* r, int i) {
                   add("count_mismatch", Value(r, i, 0),
                       "sources row says " + std::string(Value(r, i, 1)) + " chunks, " +
                           std::string(Value(r, i, 2)) + " stored");
                 });
  });
}

}  // namespace sluice::pg
