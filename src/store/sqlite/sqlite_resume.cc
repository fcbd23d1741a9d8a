// The SQLite store's resume side (docs/RESUME.md): fingerprints, committing
// and deleting sources with their stale chunks (in bounded windows), the
// embedding cache lookup, reading chunks back and verify (sqlite_store.h).
#include "store/sqlite/sqlite_store.h"

#include <sqlite3.h>

#include <algorithm>
#include <limits>
#include <string>
#include <utility>

#include <fmt/format.h>

#include "common/hashing.h"
#include "store/sqlite/sqlite_transaction.h"
#include "store/sqlite/sqlite_util.h"

namespace sluice {

using namespace sqlite;  // the folder's shared helpers (sqlite_util.h)

namespace {

// A chunk stored without a file id: written before schema version 3 (NULL)
// or from stdin. Such a row counts as file F's when its source_id is F (a
// plain file's source id is its file id).
constexpr const char* kNoFileId = "(c.file_id IS NULL OR c.file_id = '')";

// Rows one DELETE statement removes at most. SQLite collects a DELETE's
// rowids before removing the rows, so one statement over a huge file would
// hold an entry per chunk; windows of rowids keep that bounded.
constexpr int kDeleteWindow = 4096;

// Per connection: the sources whose chunks a CommitSources/DeleteSources
// call deleted, recounted once before it commits.
constexpr const char* kTouched = "temp.sluice_touched_sources";

// Not recorded by run ?2 for file ?1 (run records table `run_table`).
std::string NotRecorded(const std::string& run_table) {
  return fmt::format(
      "NOT EXISTS (SELECT 1 FROM {} r WHERE r.file_id = ?1 AND r.run_id = ?2 AND "
      "r.chunk_id = c.id)",
      run_table);
}

}  // namespace

struct SqliteStore::FileChunkDelete {
  // Per branch of kFileBranches: the next window (row count, last rowid),
  // the sources of its rows to delete, and their deletion.
  ScopedStmt window[2], touch[2], del[2];
  // Their vectors kept in the cache table first (version 4; null before).
  ScopedStmt keep[2];
};

Result<std::vector<SourceFingerprint>> SqliteStore::LoadFingerprints() {
  if (db_ == nullptr) return Status::InvalidArgument("sqlite store is closed");
  ScopedStmt stmt;
  int rc = sqlite3_prepare_v2(
      db_,
      fmt::format("SELECT file_id, path, size_bytes, mtime_ns, content_hash, chunk_count FROM {}",
                  Quote(files_table_))
          .c_str(),
      -1, stmt.out(), nullptr);
  if (rc != SQLITE_OK) return ErrorStatus(rc, "load fingerprints");
  std::vector<SourceFingerprint> out;
  while ((rc = sqlite3_step(stmt.get())) == SQLITE_ROW) {
    SourceFingerprint f;
    f.file_id = ColumnText(stmt.get(), 0);
    f.path = ColumnText(stmt.get(), 1);
    f.size_bytes = static_cast<uint64_t>(sqlite3_column_int64(stmt.get(), 2));
    f.mtime_ns = sqlite3_column_int64(stmt.get(), 3);
    f.content_hash = ColumnText(stmt.get(), 4);
    f.chunk_count = static_cast<uint64_t>(sqlite3_column_int64(stmt.get(), 5));
    out.push_back(std::move(f));
  }
  if (rc != SQLITE_DONE) return ErrorStatus(rc, "load fingerprints");
  return out;
}

Status SqliteStore::RecountTouchedSourcesInTxn() {
  // As Write counts them: chunk_count is the number of the source's stored
  // chunks; a row left with none goes.
  const std::string sql = fmt::format(
      "UPDATE {0} SET chunk_count = (SELECT count(*) FROM {1} c WHERE c.source_id = "
      "{0}.source_id) WHERE source_id IN (SELECT source_id FROM {2});"
      "DELETE FROM {0} WHERE chunk_count = 0 AND source_id IN (SELECT source_id FROM {2});"
      "DELETE FROM {2};",
      Quote(sources_table_), Quote(chunks_table_), kTouched);
  return Exec(sql.c_str());
}

Status SqliteStore::PrepareFileChunkDelete(bool keep_run, FileChunkDelete& d) {
  const std::string c = Quote(chunks_table_);
  const std::string spare = keep_run ? " AND " + NotRecorded(Quote(run_table_)) : std::string();
  for (int b = 0; b < 2; ++b) {
    // ?3: the window starts after this rowid; ?4: its last rowid.
    const std::string window = fmt::format(
        "SELECT count(*), max(r) FROM (SELECT c.rowid AS r FROM {} c WHERE {} AND c.rowid > ?3 "
        "ORDER BY c.rowid LIMIT {})",
        c, kFileBranches[b], kDeleteWindow);
    const std::string in_window =
        fmt::format("{} AND c.rowid > ?3 AND c.rowid <= ?4{}", kFileBranches[b], spare);
    const std::string touch =
        fmt::format("INSERT OR IGNORE INTO {} (source_id) SELECT c.source_id FROM {} c WHERE {}",
                    kTouched, c, in_window);
    const std::string del = fmt::format("DELETE FROM {} AS c WHERE {}", c, in_window);
    for (auto [sql, stmt] : {std::pair{&window, &d.window[b]}, std::pair{&touch, &d.touch[b]},
                             std::pair{&del, &d.del[b]}}) {
      const int rc = sqlite3_prepare_v2(db_, sql->c_str(), static_cast<int>(sql->size()),
                                        stmt->out(), nullptr);
      if (rc != SQLITE_OK) return ErrorStatus(rc, "prepare chunk deletion");
    }
    if (has_text_key_) {
      // A deleted chunk's vector stays findable by its text (RESUME.md).
      const std::string keep = fmt::format(
          "INSERT OR IGNORE INTO {} (key, model, embedding) SELECT c.text_key, c.model, "
          "c.embedding FROM {} c WHERE {} AND c.text_key IS NOT NULL AND c.embedding IS NOT NULL",
          Quote(cache_table_), c, in_window);
      if (Status s = Prepare(keep, d.keep[b].out()); !s.ok()) {
        return s.WithContext("prepare chunk deletion");
      }
    }
  }
  return Status::OK();
}

Status SqliteStore::DeleteFileChunksInTxn(FileChunkDelete& d, const std::string& file_id,
                                          uint64_t run_id, uint64_t& deleted) {
  // Binds ?1..?4 (a statement without some of them ignores those binds).
  const auto bind = [&](sqlite3_stmt* st, int64_t after, int64_t last) {
    sqlite3_reset(st);
    sqlite3_bind_text(st, 1, file_id.data(), static_cast<int>(file_id.size()), SQLITE_STATIC);
    sqlite3_bind_int64(st, 2, static_cast<int64_t>(run_id));
    sqlite3_bind_int64(st, 3, after);
    sqlite3_bind_int64(st, 4, last);
    return st;
  };
  const auto step = [&](sqlite3_stmt* st, int want) -> Status {
    const int rc = sqlite3_step(st);
    if (rc == want) return Status::OK();
    sqlite3_reset(st);
    return ErrorStatus(rc, "delete chunks of " + file_id);
  };
  for (int b = 0; b < 2; ++b) {
    int64_t after = std::numeric_limits<int64_t>::min();
    for (;;) {
      sqlite3_stmt* window = bind(d.window[b].get(), after, 0);
      if (Status s = step(window, SQLITE_ROW); !s.ok()) return s;
      const int64_t rows = sqlite3_column_int64(window, 0);
      const int64_t last = sqlite3_column_int64(window, 1);
      sqlite3_reset(window);
      if (rows == 0) break;
      sqlite3_stmt* touch = bind(d.touch[b].get(), after, last);
      if (Status s = step(touch, SQLITE_DONE); !s.ok()) return s;
      sqlite3_reset(touch);
      if (d.keep[b].get() != nullptr) {
        sqlite3_stmt* keep = bind(d.keep[b].get(), after, last);
        if (Status s = step(keep, SQLITE_DONE); !s.ok()) return s;
        sqlite3_reset(keep);
      }
      sqlite3_stmt* del = bind(d.del[b].get(), after, last);
      if (Status s = step(del, SQLITE_DONE); !s.ok()) return s;
      deleted += static_cast<uint64_t>(sqlite3_changes64(db_));
      sqlite3_reset(del);
      if (rows < kDeleteWindow) break;
      after = last;
    }
  }
  return Status::OK();
}

Result<uint64_t> SqliteStore::CommitSources(std::span<const SourceManifest> completed) {
  if (db_ == nullptr) return Status::InvalidArgument("sqlite store is closed");
  if (completed.empty()) return uint64_t{0};
  // Statements prepared once per call and reused for every manifest: a call
  // may carry thousands of small files.
  FileChunkDelete stale;
  if (Status s = PrepareFileChunkDelete(/*keep_run=*/true, stale); !s.ok()) return s;
  const std::string c = Quote(chunks_table_);
  const std::string not_recorded = NotRecorded(Quote(run_table_));
  ScopedStmt count_stale, upsert, facts, forget;
  const std::pair<ScopedStmt*, std::string> sqls[] = {
      {&count_stale, fmt::format("SELECT (SELECT count(*) FROM {0} c WHERE {1} AND {3}) + "
                                 "(SELECT count(*) FROM {0} c WHERE {2} AND {3})",
                                 c, kFileBranches[0], kFileBranches[1], not_recorded)},
      // ?8: facts only; the recorded chunk_count stays.
      {&upsert,
       fmt::format(
           "INSERT INTO {0} (file_id, path, size_bytes, mtime_ns, content_hash, "
           "chunk_count, updated_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7) "
           "ON CONFLICT(file_id) DO UPDATE SET path = excluded.path, "
           "size_bytes = excluded.size_bytes, mtime_ns = excluded.mtime_ns, "
           "content_hash = excluded.content_hash, chunk_count = CASE WHEN ?8 THEN "
           "{0}.chunk_count ELSE excluded.chunk_count END, updated_at = excluded.updated_at",
           Quote(files_table_))},
      {&facts, fmt::format("UPDATE {} SET path = ?2, size_bytes = ?3, mtime_ns = ?4, "
                           "content_hash = ?5 WHERE source_id = ?1",
                           Quote(sources_table_))},
      {&forget, fmt::format("DELETE FROM {} WHERE file_id = ?1", Quote(run_table_))},
  };
  for (const auto& [stmt, sql] : sqls) {
    if (Status s = Prepare(sql, stmt->out()); !s.ok()) return s.WithContext("commit sources");
  }
  Transaction txn(*this);
  if (Status s = txn.Begin(); !s.ok()) return s;
  const auto fail = [&](Status s) -> Result<uint64_t> {
    for (const auto& q : sqls) sqlite3_reset(q.first->get());
    return s;  // `txn` rolls back as the caller returns this
  };
  // Binds the file id (?1) and the run id (?2).
  const auto bind_file = [](sqlite3_stmt* st, const SourceManifest& m) {
    sqlite3_reset(st);
    sqlite3_bind_text(st, 1, m.fingerprint.file_id.data(),
                      static_cast<int>(m.fingerprint.file_id.size()), SQLITE_STATIC);
    sqlite3_bind_int64(st, 2, static_cast<int64_t>(m.run_id));
    return st;
  };
  uint64_t deleted = 0;
  const int64_t now = NowMs();
  for (const SourceManifest& m : completed) {
    const SourceFingerprint& f = m.fingerprint;
    uint64_t chunk_count = f.chunk_count;
    // Every stored chunk of a fresh file is this run's (IsFreshFile): none
    // is stale, none counts as kept from before.
    const auto fresh_it = fresh_files_.find(f.file_id);
    const bool fresh =
        m.run_id == options_.store.run_id && fresh_it != fresh_files_.end() && fresh_it->second;
    if (fresh || m.facts_only) {
      // nothing to delete or to count
    } else if (m.delete_stale) {
      if (Status s = DeleteFileChunksInTxn(stale, f.file_id, m.run_id, deleted); !s.ok()) {
        return fail(s);
      }
    } else {
      // --cleanup none: the earlier chunks stay and are counted.
      sqlite3_stmt* st = bind_file(count_stale.get(), m);
      const int rc = sqlite3_step(st);
      if (rc != SQLITE_ROW) return fail(ErrorStatus(rc, "commit source " + f.file_id));
      chunk_count += static_cast<uint64_t>(sqlite3_column_int64(st, 0));
      sqlite3_reset(st);
    }
    sqlite3_stmt* st = bind_file(upsert.get(), m);
    sqlite3_bind_text(st, 2, f.path.data(), static_cast<int>(f.path.size()), SQLITE_STATIC);
    sqlite3_bind_int64(st, 3, static_cast<int64_t>(f.size_bytes));
    sqlite3_bind_int64(st, 4, f.mtime_ns);
    sqlite3_bind_text(st, 5, f.content_hash.data(), static_cast<int>(f.content_hash.size()),
                      SQLITE_STATIC);
    sqlite3_bind_int64(st, 6, static_cast<int64_t>(chunk_count));
    sqlite3_bind_int64(st, 7, now);
    sqlite3_bind_int(st, 8, m.facts_only ? 1 : 0);
    int rc = sqlite3_step(st);
    if (rc != SQLITE_DONE) return fail(ErrorStatus(rc, "commit source " + f.file_id));
    st = bind_file(facts.get(), m);
    sqlite3_bind_text(st, 2, f.path.data(), static_cast<int>(f.path.size()), SQLITE_STATIC);
    sqlite3_bind_int64(st, 3, static_cast<int64_t>(f.size_bytes));
    sqlite3_bind_int64(st, 4, f.mtime_ns);
    sqlite3_bind_text(st, 5, f.content_hash.data(), static_cast<int>(f.content_hash.size()),
                      SQLITE_STATIC);
    rc = sqlite3_step(st);
    if (rc != SQLITE_DONE) return fail(ErrorStatus(rc, "commit source " + f.file_id));
    // Every run's records of the file go, also a crashed earlier run's.
    rc = sqlite3_step(bind_file(forget.get(), m));
    if (rc != SQLITE_DONE) return fail(ErrorStatus(rc, "commit source " + f.file_id));
  }
  for (const auto& q : sqls) sqlite3_reset(q.first->get());
  if (deleted > 0) {
    if (Status s = RecountTouchedSourcesInTxn(); !s.ok()) return fail(s);
  }
  if (Status s = txn.Commit(); !s.ok()) return fail(s);
  for (const SourceManifest& m : completed) fresh_files_.erase(m.fingerprint.file_id);
  return deleted;
}

Result<std::vector<std::string>> SqliteStore::FileChunkIds(const std::string& file_id) {
  if (db_ == nullptr) return Status::InvalidArgument("sqlite store is closed");
  ScopedStmt stmt;
  const std::string c = Quote(chunks_table_);
  const std::string sql = fmt::format(
      "SELECT id FROM (SELECT c.id, c.source_id, c.ordinal FROM {0} c WHERE {1} UNION ALL "
      "SELECT c.id, c.source_id, c.ordinal FROM {0} c WHERE {2}) ORDER BY source_id, ordinal, id",
      c, kFileBranches[0], kFileBranches[1]);
  int rc = sqlite3_prepare_v2(db_, sql.c_str(), static_cast<int>(sql.size()), stmt.out(), nullptr);
  if (rc != SQLITE_OK) return ErrorStatus(rc, "read file chunks");
  sqlite3_bind_text(stmt.get(), 1, file_id.data(), static_cast<int>(file_id.size()), SQLITE_STATIC);
  std::vector<std::string> ids;
  while ((rc = sqlite3_step(stmt.get())) == SQLITE_ROW) ids.push_back(ColumnText(stmt.get(), 0));
  if (rc != SQLITE_DONE) return ErrorStatus(rc, "read file chunks");
  return ids;
}

Result<uint64_t> SqliteStore::DeleteSources(std::span<const std::string> file_ids) {
  if (db_ == nullptr) return Status::InvalidArgument("sqlite store is closed");
  if (file_ids.empty()) return uint64_t{0};
  FileChunkDelete all;
  if (Status s = PrepareFileChunkDelete(/*keep_run=*/false, all); !s.ok()) return s;
  ScopedStmt del_file, forget;
  const std::pair<ScopedStmt*, std::string> sqls[] = {
      {&del_file, fmt::format("DELETE FROM {} WHERE file_id = ?1", Quote(files_table_))},
      {&forget, fmt::format("DELETE FROM {} WHERE file_id = ?1", Quote(run_table_))},
  };
  for (const auto& [stmt, sql] : sqls) {
    if (Status s = Prepare(sql, stmt->out()); !s.ok()) return s.WithContext("delete sources");
  }
  Transaction txn(*this);
  if (Status s = txn.Begin(); !s.ok()) return s;
  const auto fail = [&](Status s) -> Result<uint64_t> {
    for (const auto& q : sqls) sqlite3_reset(q.first->get());
    return s;  // `txn` rolls back as the caller returns this
  };
  uint64_t deleted = 0;
  for (const std::string& file_id : file_ids) {
    if (Status s = DeleteFileChunksInTxn(all, file_id, 0, deleted); !s.ok()) return fail(s);
    for (const auto& q : sqls) {
      sqlite3_stmt* st = q.first->get();
      sqlite3_reset(st);
      sqlite3_bind_text(st, 1, file_id.data(), static_cast<int>(file_id.size()), SQLITE_STATIC);
      const int rc = sqlite3_step(st);
      if (rc != SQLITE_DONE) return fail(ErrorStatus(rc, "delete source " + file_id));
    }
  }
  for (const auto& q : sqls) sqlite3_reset(q.first->get());
  if (deleted > 0) {
    if (Status s = RecountTouchedSourcesInTxn(); !s.ok()) return fail(s);
  }
  if (Status s = txn.Commit(); !s.ok()) return fail(s);
  return deleted;
}

Result<bool> SqliteStore::MayHoldCachedEmbeddings() {
  if (db_ == nullptr) return Status::InvalidArgument("sqlite store is closed");
  // The cache table, and the chunks that carry a cache key (version 5: the
  // key tables; version 4: the text_key column): the places LookupEmbeddings
  // reads. Each probe is one index or table seek.
  std::string sql = fmt::format("SELECT EXISTS (SELECT 1 FROM {})", Quote(cache_table_));
  if (has_key_tables_) {
    sql += fmt::format(" OR EXISTS (SELECT 1 FROM {}) OR EXISTS (SELECT 1 FROM {})",
                       Quote(recent_text_keys_table_), Quote(text_keys_table_));
  } else if (has_text_key_) {
    sql += fmt::format(" OR EXISTS (SELECT 1 FROM {} WHERE text_key IS NOT NULL)",
                       Quote(chunks_table_));
  }
  ScopedStmt stmt;
  int rc = sqlite3_prepare_v2(db_, sql.c_str(), -1, stmt.out(), nullptr);
  if (rc == SQLITE_OK) rc = sqlite3_step(stmt.get());
  if (rc != SQLITE_ROW) return ErrorStatus(rc, "embedding cache probe");
  return sqlite3_column_int(stmt.get(), 0) != 0;
}

Status SqliteStore::LookupEmbeddings(std::string_view cache_namespace,
                                     std::span<const std::string_view> texts,
                                     std::vector<CachedEmbedding>& out) {
  if (db_ == nullptr) return Status::InvalidArgument("sqlite store is closed");
  out.assign(texts.size(), CachedEmbedding{});
  // A stored chunk with the text answers first (version 4: its row is the
  // cache entry); the cache table holds the vectors of chunks since deleted,
  // and every vector of a store written before version 4.
  if (lookup_in_cache_ == nullptr) {
    for (sqlite3_stmt** st : {&lookup_by_text_key_, &cache_has_rows_}) {  // after a failed call
      sqlite3_finalize(*st);
      *st = nullptr;
    }
    if (has_key_tables_) {
      // ?1 the text key, ?2 its prefix (sqlite_store.cc, "Version 5").
      if (Status s = Prepare(
              fmt::format("SELECT model, embedding FROM {0} WHERE rowid IN (SELECT chunk_rowid "
                          "FROM {1} WHERE key = ?2 UNION ALL SELECT chunk_rowid FROM {2} WHERE "
                          "key = ?2) AND text_key = ?1 AND embedding IS NOT NULL LIMIT 1",
                          Quote(chunks_table_), Quote(recent_text_keys_table_),
                          Quote(text_keys_table_)),
              &lookup_by_text_key_);
          !s.ok()) {
        return s.WithContext("embedding cache lookup");
      }
    } else if (has_text_key_) {
      if (Status s = Prepare(fmt::format("SELECT model, embedding FROM {} WHERE text_key = ?1 AND "
                                         "embedding IS NOT NULL LIMIT 1",
                                         Quote(chunks_table_)),
                             &lookup_by_text_key_);
          !s.ok()) {
        return s.WithContext("embedding cache lookup");
      }
    }
    if (Status s = Prepare(fmt::format("SELECT EXISTS (SELECT 1 FROM {})", Quote(cache_table_)),
                           &cache_has_rows_);
        !s.ok()) {
      return s.WithContext("embedding cache lookup");
    }
    if (Status s = Prepare(
            fmt::format("SELECT model, embedding FROM {} WHERE key = ?1", Quote(cache_table_)),
            &lookup_in_cache_);
        !s.ok()) {
      return s.WithContext("embedding cache lookup");
    }
  }
  // One read transaction for the whole batch: a consistent snapshot, one lock.
  Transaction txn(*this);
  if (Status s = txn.Begin("BEGIN"); !s.ok()) return s;
  // The cache table of a version 4 store is empty until a chunk is deleted
  // or rewritten: then one probe per text is enough.
  sqlite3_stmt* cache_probe = lookup_in_cache_;
  {
    const int rc = sqlite3_step(cache_has_rows_);
    const bool any = rc == SQLITE_ROW && sqlite3_column_int(cache_has_rows_, 0) != 0;
    sqlite3_reset(cache_has_rows_);
    if (rc != SQLITE_ROW) return ErrorStatus(rc, "embedding cache lookup");
    if (!any) cache_probe = nullptr;
  }
  for (size_t i = 0; i < texts.size(); ++i) {
    const std::string key = EmbeddingCacheKey(cache_namespace, texts[i]);
    for (sqlite3_stmt* st : {lookup_by_text_key_, cache_probe}) {
      if (st == nullptr) continue;
      sqlite3_reset(st);
      sqlite3_bind_text(st, 1, key.c_str(), static_cast<int>(key.size()), SQLITE_STATIC);
      if (st == lookup_by_text_key_ && has_key_tables_) {
        sqlite3_bind_int64(st, 2, TextKeyPrefix(key));
      }
      const int rc = sqlite3_step(st);
      if (rc == SQLITE_ROW) {
        out[i].model = ColumnText(st, 0);
        const auto* blob = static_cast<const uint8_t*>(sqlite3_column_blob(st, 1));
        const size_t bytes = static_cast<size_t>(sqlite3_column_bytes(st, 1));
        if (blob != nullptr) {
          out[i].embedding.resize(bytes / 4);
          for (size_t d = 0; d < out[i].embedding.size(); ++d) {
            out[i].embedding[d] = FloatAt(blob, d);
          }
        }
        sqlite3_reset(st);
        break;
      }
      sqlite3_reset(st);
      if (rc != SQLITE_DONE) return ErrorStatus(rc, "embedding cache lookup");
    }
  }
  return txn.Commit();
}

Result<std::vector<EmbeddedChunk>> SqliteStore::ReadChunks(std::span<const std::string> chunk_ids) {
  std::vector<EmbeddedChunk> out;
  out.reserve(chunk_ids.size());
  for (const std::string& id : chunk_ids) {
    Result<StoredChunk> c = ReadChunk(id);
    if (!c.ok()) {
      if (c.status().code() == StatusCode::kNotFound) continue;
      return c.status();
    }
    EmbeddedChunk e;
    e.chunk.id = std::move(c->id);
    e.chunk.source_id = std::move(c->source_id);
    e.chunk.file_id = std::move(c->file_id);
    e.chunk.ordinal = c->ordinal;
    e.chunk.byte_begin = c->byte_begin;
    e.chunk.byte_end = c->byte_end;
    e.chunk.text = std::move(c->text);
    e.chunk.domain = std::move(c->domain);
    e.chunk.category = std::move(c->category);
    e.chunk.metadata_json = std::move(c->metadata_json);
    e.chunk.token_estimate = c->token_estimate;
    e.embedding = std::move(c->embedding);
    e.model = std::move(c->model);
    out.push_back(std::move(e));
  }
  return out;
}

Status SqliteStore::Verify(std::vector<VerifyProblem>& problems, size_t limit) {
  if (db_ == nullptr) return Status::InvalidArgument("sqlite store is closed");
  // Each check is one query that returns only the rows in error.
  const auto run = [&](const std::string& sql, const std::function<void(sqlite3_stmt*)>& row,
                       int dims_param) -> Status {
    if (problems.size() >= limit) return Status::OK();
    ScopedStmt stmt;
    int rc =
        sqlite3_prepare_v2(db_, sql.c_str(), static_cast<int>(sql.size()), stmt.out(), nullptr);
    if (rc != SQLITE_OK) return ErrorStatus(rc, "verify");
    if (dims_param > 0) sqlite3_bind_int(stmt.get(), dims_param, dims_);
    while (problems.size() < limit && (rc = sqlite3_step(stmt.get())) == SQLITE_ROW) {
      row(stmt.get());
    }
    if (rc != SQLITE_ROW && rc != SQLITE_DONE) return ErrorStatus(rc, "verify");
    return Status::OK();
  };
  const auto add = [&](std::string kind, std::string subject, std::string detail) {
    if (problems.size() < limit) {
      problems.push_back({std::move(kind), std::move(subject), std::move(detail)});
    }
  };
  // Every fingerprinted file has as many chunks stored as it counts.
  Status s = run(
      fmt::format("SELECT file_id, chunk_count, stored FROM (SELECT f.file_id, f.chunk_count, "
                  "(SELECT count(*) FROM {1} c WHERE c.file_id = f.file_id) + (SELECT count(*) "
                  "FROM {1} c WHERE c.source_id = f.file_id AND {2}) AS stored FROM {0} f) "
                  "WHERE stored IS NOT chunk_count ORDER BY file_id",
                  Quote(files_table_), Quote(chunks_table_), kNoFileId),
      [&](sqlite3_stmt* st) {
        const int64_t count = sqlite3_column_int64(st, 1);
        const int64_t stored = sqlite3_column_int64(st, 2);
        if (stored < count) {
          add("missing_chunk", ColumnText(st, 0),
              fmt::format("fingerprint counts {} chunks, {} stored", count, stored));
        } else {
          add("count_mismatch", ColumnText(st, 0),
              fmt::format("fingerprint counts {} chunks, {} stored (stale ones)", count, stored));
        }
      },
      0);
  if (!s.ok()) return s;
  // Every chunk: a sources row and, once the store has a dimension, that one.
  s = run(
      fmt::format("SELECT c.id, c.source_id, c.dims, length(c.embedding), "
                  "s.source_id IS NULL FROM {} c LEFT JOIN {} s ON s.source_id = c.source_id "
                  "WHERE s.source_id IS NULL OR (?1 > 0 AND (c.dims IS NOT ?1 OR "
                  "length(c.embedding) IS NOT ?1 * 4))",
                  Quote(chunks_table_), Quote(sources_table_)),
      [&](sqlite3_stmt* st) {
        const std::string id = ColumnText(st, 0);
        const int dims = sqlite3_column_int(st, 2);
        const int64_t bytes = sqlite3_column_int64(st, 3);
        if (dims_ > 0 && (dims != dims_ || bytes != int64_t{dims_} * 4)) {
          add("wrong_dimensions", id,
              fmt::format("{} dimensions ({} bytes), store has {}", dims, bytes, dims_));
        }
        if (sqlite3_column_int(st, 4) != 0) {
          add("orphan_chunk", id,
              "its source '" + ColumnText(st, 1) + "' is not in the sources table");
        }
      },
      1);
  if (!s.ok()) return s;
  // Source rows count their chunks.
  return run(
      fmt::format("SELECT source_id, chunk_count, stored FROM (SELECT s.source_id, "
                  "s.chunk_count, (SELECT count(*) FROM {1} c WHERE c.source_id = "
                  "s.source_id) AS stored FROM {0} s) WHERE chunk_count IS NOT stored",
                  Quote(sources_table_), Quote(chunks_table_)),
      [&](sqlite3_stmt* st) {
        add("count_mismatch", ColumnText(st, 0),
            fmt::format("sources row says {} chunks, {} stored", sqlite3_column_int64(st, 1),
                        sqlite3_column_int64(st, 2)));
      },
      0);
}

}  // namespace sluice
