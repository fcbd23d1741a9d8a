// The PostgreSQL store's write path: binary COPY (or prepared INSERTs on
// PGlite) and upsert of chunks, per-source advisory locks, the sources
// upsert, embedding-cache rows and run records, with row-by-row replay of a
// refused batch and reconnect-and-replay of a lost one (pg_store.h).
#include "store/postgres/pg_store.h"

#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <map>
#include <set>
#include <system_error>
#include <thread>
#include <unordered_map>

#include "store/postgres/pg_transaction.h"

namespace sluice::pg {

PgError PostgresStore::EnsureStaging(PgConn& c) {
  if (c.staging_ready) return {};
  // Per session; rows vanish at each commit. LIKE ... INCLUDING STORAGE keeps
  // the EXTERNAL embedding (fast COPY); typmods come along (vector(N) checks).
  PgError e = Exec(c, "CREATE TEMP TABLE IF NOT EXISTS " + q_stage_ + " (LIKE " + q_chunks_ +
                          " INCLUDING DEFAULTS INCLUDING STORAGE) ON COMMIT DELETE ROWS");
  if (e.fault == Fault::kNone) c.staging_ready = true;
  return e;
}

Result<std::string> PostgresStore::PrepareInsert(PgConn& c, size_t rows, PgError* err) {
  auto it = c.prepared.find(rows);
  if (it != c.prepared.end()) return it->second;
  // Unique per process and connection: on PGlite every connection shares one
  // backend, so names must not collide with another (or an earlier) client's.
  const std::string name = "sluice_ins_" + std::to_string(getpid()) + "_" +
                           std::to_string(c.serial) + "_" + table_hash_ + "_" +
                           std::to_string(rows);
  static constexpr const char* kCasts[kNumColumns] = {"text", "text", "text",  "int4", "int8",
                                                      "int8", "text", "text",  "text", "jsonb",
                                                      "text", "int4", nullptr, "int4"};
  const std::string emb_cast = pgvector_ ? "vector" : "real[]";
  std::string sql = "INSERT INTO " + q_chunks_ + " AS t (" + ColumnList() + ") VALUES ";
  int p = 1;
  for (size_t r = 0; r < rows; ++r) {
    sql += r ? ",(" : "(";
    for (int col = 0; col < kNumColumns; ++col) {
      if (col) sql += ',';
      // Appended piecewise: GCC 12 warns (-Wrestrict, a false positive) on
      // the operator+ chain here.
      sql += '$';
      sql += std::to_string(p++);
      sql += "::";
      sql += kCasts[col] ? std::string_view(kCasts[col]) : std::string_view(emb_cast);
    }
    sql += ')';
  }
  sql += " ON CONFLICT (id) DO UPDATE SET ";
  for (int col = 1; col < kNumColumns; ++col) {
    sql += std::string(kColumns[col]) + " = EXCLUDED." + kColumns[col] + ", ";
  }
  sql += "updated_at = now() WHERE (" + ColumnList("t.") + ") IS DISTINCT FROM (" +
         ColumnList("EXCLUDED.") + ")";
  PgResult r(PQprepare(c.pg, name.c_str(), sql.c_str(), 0, nullptr));
  if (!ResultOk(r.get())) {
    *err = Classify(c.pg, r.get());
    return Fail(*err, "prepare insert");
  }
  c.prepared[rows] = name;
  return name;
}

namespace {

// Binary parameters of one row, in kColumns order, appended to `buf`;
// offsets/lengths recorded for PQexecPrepared (length -1: NULL).
void AppendRowParams(const EmbeddedChunk& e, bool pgvector, std::string& buf,
                     std::vector<std::pair<size_t, int>>& spans) {
  auto add = [&](auto&& fill) {
    const size_t at = buf.size();
    fill();
    spans.emplace_back(at, static_cast<int>(buf.size() - at));
  };
  const Chunk& c = e.chunk;
  add([&] { buf += c.id; });
  add([&] { buf += c.source_id; });
  if (c.file_id.empty()) {
    spans.emplace_back(buf.size(), -1);
  } else {
    add([&] { buf += c.file_id; });
  }
  add([&] { pg::AppendInt32(buf, static_cast<int32_t>(c.ordinal)); });
  add([&] { pg::AppendInt64(buf, static_cast<int64_t>(c.byte_begin)); });
  add([&] { pg::AppendInt64(buf, static_cast<int64_t>(c.byte_end)); });
  add([&] { buf += c.text; });
  add([&] { buf += c.domain; });
  add([&] { buf += c.category; });
  add([&] { pg::AppendJsonbBinary(buf, c.metadata_json.empty() ? "{}" : c.metadata_json); });
  add([&] { buf += e.model; });
  add([&] { pg::AppendInt32(buf, static_cast<int32_t>(e.embedding.size())); });
  add([&] {
    if (pgvector) {
      pg::AppendVectorBinary(buf, e.embedding);
    } else {
      pg::AppendFloat4ArrayBinary(buf, e.embedding);
    }
  });
  add([&] { pg::AppendInt32(buf, static_cast<int32_t>(c.token_estimate)); });
}

PgResult ExecRows(PGconn* pg, const std::string& stmt, std::span<const EmbeddedChunk> batch,
                  std::span<const size_t> rows, bool pgvector) {
  std::string buf;
  std::vector<std::pair<size_t, int>> spans;
  spans.reserve(rows.size() * kNumColumns);
  for (size_t i : rows) AppendRowParams(batch[i], pgvector, buf, spans);
  std::vector<const char*> values(spans.size());
  std::vector<int> lengths(spans.size());
  std::vector<int> formats(spans.size(), 1);
  for (size_t i = 0; i < spans.size(); ++i) {
    values[i] = spans[i].second < 0 ? nullptr : buf.data() + spans[i].first;
    lengths[i] = std::max(spans[i].second, 0);
  }
  return PgResult(PQexecPrepared(pg, stmt.c_str(), static_cast<int>(values.size()), values.data(),
                                 lengths.data(), formats.data(), 0));
}

}  // namespace

// Upserts the batch's distinct sources, sorted, with their chunk counts
// recomputed in this transaction; with `commit`, COMMITs in the same round
// trip (an error skips the COMMIT: the transaction stays aborted).
PgError PostgresStore::UpsertSources(PgConn& c, std::span<const EmbeddedChunk> batch,
                                     std::span<const size_t> rows, bool commit) {
  std::map<std::string_view, const Chunk*> sources;
  for (size_t i : rows) sources.emplace(batch[i].chunk.source_id, &batch[i].chunk);
  std::string sql;
  if (!sources.empty()) {
    // A new row takes its file facts from the fingerprint when the file was
    // fingerprinted before any chunk of it was stored (dead-letter retry);
    // an existing row keeps its own.
    const bool facts = resume_tables_;
    sql = "INSERT INTO " + q_sources_ + " AS s (source_id, domain, category, chunk_count" +
          (facts ? ", path, size_bytes, mtime_ns, content_hash" : "") +
          ") SELECT v.source_id, v.domain, v.category, (SELECT count(*) FROM " + q_chunks_ +
          " c WHERE c.source_id = v.source_id)" +
          (facts ? ", f.path, f.size_bytes, f.mtime_ns, f.content_hash" : "") + " FROM (VALUES ";
    bool first = true;
    for (const auto& [id, chunk] : sources) {
      sql += first ? "(" : ",(";
      first = false;
      sql += EscapeLiteral(c.pg, chunk->source_id);
      sql += "::text,";
      sql += EscapeLiteral(c.pg, chunk->domain);
      sql += "::text,";
      sql += EscapeLiteral(c.pg, chunk->category);
      sql += "::text)";
    }
    sql += ") AS v(source_id, domain, category) ";
    if (facts) sql += "LEFT JOIN " + q_files_ + " f ON f.file_id = v.source_id ";
    sql +=
        "ORDER BY v.source_id ON CONFLICT (source_id) DO "
        "UPDATE SET domain = EXCLUDED.domain, category = EXCLUDED.category, chunk_count = "
        "EXCLUDED.chunk_count, updated_at = now() WHERE (s.domain, s.category, s.chunk_count) IS "
        "DISTINCT FROM (EXCLUDED.domain, EXCLUDED.category, EXCLUDED.chunk_count);";
  }
  if (commit) sql += "COMMIT";
  if (sql.empty()) return {};
  return Exec(c, sql);
}

// Starts a transaction and takes a transaction-scoped advisory lock per
// source id, in sorted order. Writers of the same source thus take turns, so
// each one's chunk_count (counted after its own insert, in a later statement)
// sees every committed chunk: exact under concurrency. CommitSources and
// DeleteSources take the same locks for the files they change (a plain
// file's source id is its file id).
// REQUIRES: the caller guards the transaction (a PgTransaction, or
// Retrying's rollback): a failure here leaves it open or aborted.
PgError PostgresStore::BeginAndLock(PgConn& c, std::span<const std::string_view> source_ids,
                                    const std::string& then_sql, PgResult* last) {
  std::vector<int64_t> keys;
  const uint64_t seed = Hash64(chunks_table_);
  for (std::string_view id : source_ids) keys.push_back(static_cast<int64_t>(Hash64(id, seed)));
  std::sort(keys.begin(), keys.end());
  keys.erase(std::unique(keys.begin(), keys.end()), keys.end());
  // One round trip: BEGIN, the locks (a sorted subquery fixes their order),
  // then whatever the caller needs next.
  std::string sql = "BEGIN; SELECT pg_advisory_xact_lock(k) FROM (SELECT unnest(ARRAY[";
  for (size_t i = 0; i < keys.size(); ++i) {
    if (i) sql += ',';
    sql += std::to_string(keys[i]);
  }
  sql += "]::bigint[]) AS k ORDER BY 1) AS s;";
  sql += then_sql;
  PgResult r(PQexec(c.pg, sql.c_str()));
  if (!ResultOk(r.get())) return Classify(c.pg, r.get());
  if (last) *last = std::move(r);
  return {};
}

PgError PostgresStore::BeginAndLock(PgConn& c, std::span<const std::string> source_ids,
                                    const std::string& then_sql, PgResult* last) {
  std::vector<std::string_view> views(source_ids.begin(), source_ids.end());
  return BeginAndLock(c, std::span<const std::string_view>(views), then_sql, last);
}

PgError PostgresStore::BeginAndLockSources(PgConn& c, std::span<const EmbeddedChunk> batch,
                                           std::span<const size_t> rows,
                                           const std::string& then_sql, PgResult* last) {
  std::vector<std::string_view> ids;
  ids.reserve(rows.size());
  for (size_t i : rows) ids.push_back(batch[i].chunk.source_id);
  return BeginAndLock(c, std::span<const std::string_view>(ids), then_sql, last);
}

// Sends rows as one binary COPY into `target` (inside the caller's
// transaction; no rollback here).
PgError PostgresStore::CopyRows(PgConn& c, const std::string& target,
                                std::span<const EmbeddedChunk> batch,
                                std::span<const size_t> rows) {
  {
    PgResult r(PQexec(
        c.pg, ("COPY " + target + " (" + ColumnList() + ") FROM STDIN (FORMAT binary)").c_str()));
    if (!r || PQresultStatus(r.get()) != PGRES_COPY_IN) return Classify(c.pg, r.get());
  }
  std::string buf;
  constexpr size_t kSendBytes = 1 << 20;
  buf.reserve(kSendBytes + (1 << 16));
  pg::CopyWriter::AppendHeader(buf);
  pg::CopyWriter w(buf);
  bool send_failed = false;
  for (size_t i : rows) {
    const EmbeddedChunk& ec = batch[i];
    const Chunk& ch = ec.chunk;
    w.BeginTuple(kNumColumns);
    w.Text(ch.id);
    w.Text(ch.source_id);
    if (ch.file_id.empty()) {
      w.Null();
    } else {
      w.Text(ch.file_id);
    }
    w.Int4(static_cast<int32_t>(ch.ordinal));
    w.Int8(static_cast<int64_t>(ch.byte_begin));
    w.Int8(static_cast<int64_t>(ch.byte_end));
    w.Text(ch.text);
    w.Text(ch.domain);
    w.Text(ch.category);
    w.Jsonb(ch.metadata_json.empty() ? "{}" : ch.metadata_json);
    w.Text(ec.model);
    w.Int4(static_cast<int32_t>(ec.embedding.size()));
    if (pgvector_) {
      w.Vector(ec.embedding);
    } else {
      w.Float4Array(ec.embedding);
    }
    w.Int4(static_cast<int32_t>(ch.token_estimate));
    if (buf.size() >= kSendBytes) {
      if (PQputCopyData(c.pg, buf.data(), static_cast<int>(buf.size())) != 1) {
        send_failed = true;
        break;
      }
      buf.clear();
    }
  }
  if (!send_failed) {
    pg::CopyWriter::AppendTrailer(buf);
    send_failed = PQputCopyData(c.pg, buf.data(), static_cast<int>(buf.size())) != 1;
  }
  if (PQputCopyEnd(c.pg, send_failed ? "sluice: send failed" : nullptr) != 1) send_failed = true;
  // Drain every result of the COPY.
  PgError copy_error;
  while (PGresult* raw = PQgetResult(c.pg)) {
    PgResult r(raw);
    if (!ResultOk(r.get()) && copy_error.fault == Fault::kNone) {
      copy_error = Classify(c.pg, r.get());
    }
    if (PQstatus(c.pg) != CONNECTION_OK) break;
  }
  if (copy_error.fault == Fault::kNone && (send_failed || !c.ok())) {
    copy_error = Classify(c.pg, nullptr);
    copy_error.fault = Fault::kConnection;
  }
  return copy_error;
}

// SELECT of the ids of `rows` already in the table.
std::string PostgresStore::ExistingIdsSql(PgConn& c, std::span<const EmbeddedChunk> batch,
                                          std::span<const size_t> rows) const {
  std::string ids = "{";
  for (size_t i : rows) {
    if (ids.size() > 1) ids += ',';
    ids += '"';
    for (char ch : batch[i].chunk.id) {
      if (ch == '"' || ch == '\\') ids += '\\';
      ids += ch;
    }
    ids += '"';
  }
  ids += '}';
  return "SELECT id FROM " + q_chunks_ + " WHERE id = ANY(" + EscapeLiteral(c.pg, ids) +
         "::text[])";
}

// New ids go straight into the table by binary COPY (as fast as a plain
// COPY); ids already there go through the staging table and an upsert that
// skips unchanged rows. A concurrent writer inserting one of the "new" ids
// first makes the direct COPY fail with a unique violation: it is rolled back
// to its savepoint and those rows take the upsert path too.
PgError PostgresStore::TryCopy(PgConn& c, std::span<const EmbeddedChunk> batch,
                               std::span<const size_t> rows) {
  PgError e = EnsureStaging(c);
  if (e.fault != Fault::kNone) return e;
  PgTransaction tx(c);
  // BEGIN, locks, a savepoint for the direct COPY and the id lookup: one trip.
  PgResult ids;
  if ((e = BeginAndLockSources(c, batch, rows,
                               "SAVEPOINT sluice_direct;" + ExistingIdsSql(c, batch, rows), &ids))
          .fault != Fault::kNone) {
    return e;
  }
  std::set<std::string, std::less<>> existing;
  for (int i = 0; i < PQntuples(ids.get()); ++i) existing.emplace(PQgetvalue(ids.get(), i, 0));
  std::vector<size_t> fresh, known;
  for (size_t i : rows) (existing.count(batch[i].chunk.id) ? known : fresh).push_back(i);
  if (!fresh.empty()) {
    e = CopyRows(c, q_chunks_, batch, fresh);
    if (e.fault != Fault::kNone && e.sqlstate == "23505") {
      if ((e = Exec(c, "ROLLBACK TO SAVEPOINT sluice_direct")).fault != Fault::kNone) return e;
      known.assign(rows.begin(), rows.end());
    } else if (e.fault != Fault::kNone) {
      return e;
    }
  }
  if (!known.empty()) {
    if ((e = CopyRows(c, q_stage_, batch, known)).fault != Fault::kNone) return e;
    const std::string upsert =
        "INSERT INTO " + q_chunks_ + " AS t (" + ColumnList() + ") SELECT " + ColumnList() +
        " FROM " + q_stage_ + " ORDER BY id ON CONFLICT (id) DO UPDATE SET " +
        [&] {
          std::string set;
          for (int col = 1; col < kNumColumns; ++col) {
            set += std::string(kColumns[col]) + " = EXCLUDED." + kColumns[col] + ", ";
          }
          return set;
        }() +
        "updated_at = now() WHERE (" + ColumnList("t.") + ") IS DISTINCT FROM (" +
        ColumnList("EXCLUDED.") + ")";
    if ((e = Exec(c, upsert)).fault != Fault::kNone) return e;
  }
  if ((e = FinishBatch(c, batch, rows)).fault != Fault::kNone) return e;
  tx.Committed();  // FinishBatch's last statement is the COMMIT
  return {};
}

PgError PostgresStore::TryInsert(PgConn& c, std::span<const EmbeddedChunk> batch,
                                 std::span<const size_t> rows) {
  constexpr size_t kRowsPerStatement = 64;
  PgError e;
  PgTransaction tx(c);
  if ((e = BeginAndLockSources(c, batch, rows, "", nullptr)).fault != Fault::kNone) return e;
  for (size_t at = 0; at < rows.size(); at += kRowsPerStatement) {
    const auto part = rows.subspan(at, std::min(kRowsPerStatement, rows.size() - at));
    auto stmt = PrepareInsert(c, part.size(), &e);
    if (!stmt.ok()) return e;
    PgResult r = ExecRows(c.pg, *stmt, batch, part, pgvector_);
    if (!ResultOk(r.get())) return Classify(c.pg, r.get());
  }
  if ((e = FinishBatch(c, batch, rows)).fault != Fault::kNone) return e;
  tx.Committed();  // FinishBatch's last statement is the COMMIT
  return {};
}

PgError PostgresStore::TryRowByRow(PgConn& c, std::span<const EmbeddedChunk> batch,
                                   std::span<const size_t> rows,
                                   std::vector<RejectedRow>* rejected) {
  rejected->clear();
  PgError e;
  PgTransaction tx(c);
  if ((e = BeginAndLockSources(c, batch, rows, "", nullptr)).fault != Fault::kNone) return e;
  auto stmt = PrepareInsert(c, 1, &e);
  if (!stmt.ok()) return e;
  std::vector<size_t> accepted;
  for (size_t i : rows) {
    if ((e = Exec(c, "SAVEPOINT sluice_row")).fault != Fault::kNone) return e;
    const size_t one[1] = {i};
    PgResult r = ExecRows(c.pg, *stmt, batch, one, pgvector_);
    if (ResultOk(r.get())) {
      accepted.push_back(i);
      e = Exec(c, "RELEASE SAVEPOINT sluice_row");
    } else {
      PgError row_error = Classify(c.pg, r.get());
      if (row_error.fault != Fault::kData) return row_error;
      std::string msg = row_error.message;
      if (!row_error.sqlstate.empty()) msg += " [SQLSTATE " + row_error.sqlstate + "]";
      rejected->push_back({i, Status::Rejected(msg)});
      e = Exec(c, "ROLLBACK TO SAVEPOINT sluice_row");
    }
    if (e.fault != Fault::kNone) return e;
  }
  if ((e = FinishBatch(c, batch, accepted)).fault != Fault::kNone) return e;
  tx.Committed();  // FinishBatch's last statement is the COMMIT
  return {};
}

WriteResult PostgresStore::WriteTransaction(std::span<const EmbeddedChunk> batch,
                                            std::span<const size_t> rows) {
  WriteResult result;
  auto checked_out = Checkout();
  if (!checked_out.ok()) return {checked_out.status(), {}};
  std::unique_ptr<PgConn> conn = std::move(*checked_out);
  ReplayBackoff backoff(RetryClock(), options_.reconnect_timeout_s,
                        conn->serial * 0x9E3779B97F4A7C15ull + rows.size());
  bool row_by_row = false;
  Status last;
  for (;;) {
    PgError e;
    if (!conn->ok()) {
      conn->Drop();
      auto fresh = Connect();
      if (fresh.ok()) {
        conn = std::move(*fresh);
      } else {
        e.fault =
            fresh.status().code() == StatusCode::kUnavailable ? Fault::kConnection : Fault::kFatal;
        last = fresh.status();
      }
    }
    if (e.fault == Fault::kNone) {
      const int dims = options_.dimensions > 0 ? options_.dimensions
                                               : static_cast<int>(batch[rows[0]].embedding.size());
      Status s = EnsureSchema(*conn, dims);
      if (!s.ok() && conn->ok()) {
        result.status = s;
        break;
      }
      if (!s.ok()) {
        e.fault = Fault::kConnection;
        last = s;
      } else if (row_by_row) {
        e = TryRowByRow(*conn, batch, rows, &result.rejected);
      } else {
        e = copy_path_ ? TryCopy(*conn, batch, rows) : TryInsert(*conn, batch, rows);
      }
      if (e.fault != Fault::kNone && e.fault != Fault::kConnection) last = Fail(e, "write batch");
      if (e.fault == Fault::kConnection && conn->ok() == false) last = Fail(e, "write batch");
    }
    if (e.fault == Fault::kNone) {
      result.status = Status::OK();
      break;
    }
    if (e.fault == Fault::kData && !row_by_row) {
      row_by_row = true;  // find the bad rows; the rest commits
      continue;
    }
    if (e.fault == Fault::kData || e.fault == Fault::kFatal) {
      result.status = last;
      result.rejected.clear();
      break;
    }
    // Connection lost or transient: back off and replay.
    if (!conn->ok()) conn->Drop();
    if (!backoff.Wait()) {
      result.status = backoff.GaveUp(last);
      result.rejected.clear();
      break;
    }
  }
  Return(std::move(conn));
  std::sort(result.rejected.begin(), result.rejected.end(),
            [](const RejectedRow& a, const RejectedRow& b) { return a.index < b.index; });
  return result;
}

WriteResult PostgresStore::Write(std::span<const EmbeddedChunk> batch) {
  if (batch.empty()) return {};
  // Keep the last occurrence of each id (ON CONFLICT cannot touch one row
  // twice in a statement) and otherwise the caller's order: rows of one
  // source stay together, which measured ~1.3x faster to COPY than id order
  // (the source_id index and the heap fill sequentially). Lock order between
  // concurrent writers comes from the sorted per-source advisory locks and
  // the upsert's ORDER BY id, not from this order.
  std::unordered_map<std::string_view, size_t> last;
  last.reserve(batch.size());
  for (size_t i = 0; i < batch.size(); ++i) last[batch[i].chunk.id] = i;
  std::vector<size_t> rows;
  rows.reserve(last.size());
  std::vector<RejectedRow> no_id;
  for (size_t i = 0; i < batch.size(); ++i) {
    if (batch[i].chunk.id.empty()) {
      no_id.push_back({i, Status::Rejected("chunk has no id")});
    } else if (last[batch[i].chunk.id] == i) {
      rows.push_back(i);
    }
  }
  WriteResult merged = WriteParts(batch, rows);
  if (merged.status.ok()) rows_written_ += rows.size() - merged.rejected.size();
  if (merged.status.ok() && !no_id.empty()) {
    merged.rejected.insert(merged.rejected.end(), no_id.begin(), no_id.end());
    std::sort(merged.rejected.begin(), merged.rejected.end(),
              [](const RejectedRow& a, const RejectedRow& b) { return a.index < b.index; });
  }
  return merged;
}

std::vector<std::vector<size_t>> SplitBySource(std::span<const EmbeddedChunk> batch,
                                               std::span<const size_t> rows, size_t rows_per_part) {
  // Rows per source, the sources in the order of their first rows; then each
  // source's part.
  struct SourcePart {
    size_t rows = 0;
    size_t part = 0;
  };
  std::unordered_map<std::string_view, SourcePart> of_source;
  std::vector<SourcePart*> in_order;
  std::vector<SourcePart*> of_row;  // rows[k]'s source (the map's nodes stay put)
  of_row.reserve(rows.size());
  for (size_t i : rows) {
    SourcePart& sp = of_source[batch[i].chunk.source_id];
    if (sp.rows++ == 0) in_order.push_back(&sp);
    of_row.push_back(&sp);
  }
  const size_t per_part = std::max<size_t>(rows_per_part, 1);
  size_t part = 0, filled = 0;
  for (SourcePart* sp : in_order) {
    if (filled >= per_part) {
      ++part;
      filled = 0;
    }
    sp->part = part;
    filled += sp->rows;
  }
  std::vector<std::vector<size_t>> parts(in_order.empty() ? 0 : part + 1);
  for (size_t k = 0; k < rows.size(); ++k) parts[of_row[k]->part].push_back(rows[k]);
  return parts;
}

WriteResult PostgresStore::WriteParts(std::span<const EmbeddedChunk> batch,
                                      std::span<const size_t> rows) {
  if (rows.empty()) return {};
  if (rows.size() <= rows_per_tx_) return WriteTransaction(batch, rows);
  const std::vector<std::vector<size_t>> parts = SplitBySource(batch, rows, rows_per_tx_);
  if (parts.size() <= 1) return WriteTransaction(batch, rows);

  // Several transactions: write them in parallel on the pool. A retryable
  // failure of one part makes the whole call retryable; replaying the parts
  // that did commit is a no-op (upsert, unchanged rows are skipped).
  std::vector<WriteResult> results(parts.size());
  std::atomic<size_t> next{0};
  auto worker = [&] {
    for (size_t p; (p = next++) < parts.size();) results[p] = WriteTransaction(batch, parts[p]);
  };
  const size_t threads = std::min<size_t>(parts.size(), static_cast<size_t>(pool_limit_));
  std::vector<std::thread> pool;
  for (size_t t = 1; t < threads; ++t) {
    try {
      pool.emplace_back(worker);
    } catch (const std::system_error&) {
      break;  // no thread to spare: fewer parts in parallel, same result
    }
  }
  worker();
  for (auto& t : pool) t.join();
  WriteResult merged;
  for (auto& r : results) {
    if (!r.status.ok() && merged.status.ok()) merged.status = r.status;
    for (auto& rej : r.rejected) merged.rejected.push_back(std::move(rej));
  }
  if (!merged.status.ok()) merged.rejected.clear();
  std::sort(merged.rejected.begin(), merged.rejected.end(),
            [](const RejectedRow& a, const RejectedRow& b) { return a.index < b.index; });
  return merged;
}

PgError PostgresStore::PutCache(PgConn& c, std::span<const EmbeddedChunk> batch,
                                std::span<const size_t> rows) {
  if (options_.embedding_cache_namespace.empty() || !resume_tables_ || rows.empty()) return {};
  // Sorted keys: concurrent writers insert (and lock) them in one order.
  std::vector<std::pair<std::string, size_t>> keyed;
  keyed.reserve(rows.size());
  for (size_t i : rows) {
    keyed.emplace_back(EmbeddingCacheKey(options_.embedding_cache_namespace, batch[i].chunk.text),
                       i);
  }
  std::sort(keyed.begin(), keyed.end());
  keyed.erase(std::unique(keyed.begin(), keyed.end(),
                          [](const auto& a, const auto& b) { return a.first == b.first; }),
              keyed.end());
  std::vector<std::string> keys, models, vectors;
  for (auto& [key, i] : keyed) {
    keys.push_back(std::move(key));
    models.push_back(batch[i].model);
    std::string bytes;
    bytes.reserve(4 * batch[i].embedding.size());
    AppendFloatsLE(bytes, batch[i].embedding);
    vectors.push_back(std::move(bytes));
  }
  const std::string params[3] = {pg::EncodeBytesArrayBinary(keys),
                                 pg::EncodeBytesArrayBinary(models),
                                 pg::EncodeBytesArrayBinary(vectors, pg::kByteaOid)};
  PgResult r = ExecParams(c.pg,
                          "INSERT INTO " + q_cache_ +
                              " (key, model, embedding) SELECT * FROM unnest($1::text[], "
                              "$2::text[], $3::bytea[]) ON CONFLICT (key) DO NOTHING",
                          params, 0);
  if (!ResultOk(r.get())) return Classify(c.pg, r.get());
  return {};
}

PgError PostgresStore::PutRunRecords(PgConn& c, std::span<const EmbeddedChunk> batch,
                                     std::span<const size_t> rows) {
  if (options_.run_id == 0 || !resume_tables_ || rows.empty()) return {};
  // Sorted keys: concurrent writers insert (and lock) them in one order.
  std::vector<std::pair<std::string_view, std::string_view>> keyed;
  keyed.reserve(rows.size());
  for (size_t i : rows) {
    const Chunk& ch = batch[i].chunk;
    if (!ch.file_id.empty() && ch.record_run) keyed.emplace_back(ch.file_id, ch.id);
  }
  if (keyed.empty()) return {};
  std::sort(keyed.begin(), keyed.end());
  keyed.erase(std::unique(keyed.begin(), keyed.end()), keyed.end());
  std::vector<std::string> files, ids;
  files.reserve(keyed.size());
  ids.reserve(keyed.size());
  for (const auto& [file, id] : keyed) {
    files.emplace_back(file);
    ids.emplace_back(id);
  }
  const std::string params[2] = {pg::EncodeBytesArrayBinary(files),
                                 pg::EncodeBytesArrayBinary(ids)};
  PgResult r =
      ExecParams(c.pg,
                 "INSERT INTO " + q_run_ + " (file_id, run_id, chunk_id) SELECT u.f, " +
                     std::to_string(static_cast<int64_t>(options_.run_id)) +
                     ", u.c FROM unnest($1::text[], $2::text[]) AS u(f, c) ON CONFLICT DO NOTHING",
                 params, 0);
  if (!ResultOk(r.get())) return Classify(c.pg, r.get());
  return {};
}

PgError PostgresStore::FinishBatch(PgConn& c, std::span<const EmbeddedChunk> batch,
                                   std::span<const size_t> rows) {
  if (PgError e = PutCache(c, batch, rows); e.fault != Fault::kNone) return e;
  if (PgError e = PutRunRecords(c, batch, rows); e.fault != Fault::kNone) return e;
  return UpsertSources(c, batch, rows, /*commit=*/true);
}

}  // namespace sluice::pg
