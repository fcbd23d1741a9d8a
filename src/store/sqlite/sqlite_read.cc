// The SQLite store's reads: exact cosine search, stats and the per-chunk
// and per-source reads the tests and tools use (sqlite_store.h).
#include "store/sqlite/sqlite_store.h"

#include <sqlite3.h>

#include <algorithm>
#include <cmath>
#include <queue>
#include <utility>

#include <fmt/format.h>
#include "store/sqlite/sqlite_util.h"

namespace sluice {

using namespace sqlite;  // the folder's shared helpers (sqlite_util.h)

Result<std::vector<SearchHit>> SqliteStore::Search(std::span<const float> query, int k) {
  if (db_ == nullptr) return Status::InvalidArgument("sqlite store is closed");
  if (k <= 0) return Status::InvalidArgument("search k must be positive");
  if (dims_ == 0) return std::vector<SearchHit>{};  // nothing written yet
  if (static_cast<int>(query.size()) != dims_) {
    return Status::InvalidArgument(
        fmt::format("query has {} dimensions, store '{}' has {}", query.size(), path_, dims_));
  }
  double query_norm = 0;
  for (float x : query) query_norm += double{x} * x;
  query_norm = std::sqrt(query_norm);
  if (query_norm == 0) return Status::InvalidArgument("query vector has zero length");

  // Stream (rowid, embedding) and keep the k best in a min-heap: memory is
  // O(k) whatever the table size. Ties keep the lower rowid (older row).
  using Entry = std::pair<double, int64_t>;
  // better(a, b): a ranks before b. As the heap's "less", it keeps the
  // worst kept entry on top.
  const auto better = [](const Entry& a, const Entry& b) {
    return a.first != b.first ? a.first > b.first : a.second < b.second;
  };
  std::priority_queue<Entry, std::vector<Entry>, decltype(better)> heap(better);
  {
    ScopedStmt stmt;
    int rc = sqlite3_prepare_v2(
        db_, fmt::format("SELECT rowid, embedding FROM {}", Quote(chunks_table_)).c_str(), -1,
        stmt.out(), nullptr);
    if (rc != SQLITE_OK) return ErrorStatus(rc, "search");
    const size_t want_bytes = query.size() * 4;
    while ((rc = sqlite3_step(stmt.get())) == SQLITE_ROW) {
      const auto* blob = static_cast<const uint8_t*>(sqlite3_column_blob(stmt.get(), 1));
      if (blob == nullptr || static_cast<size_t>(sqlite3_column_bytes(stmt.get(), 1)) != want_bytes)
        continue;
      double dot = 0, norm = 0;
      for (size_t i = 0; i < query.size(); ++i) {
        const double v = FloatAt(blob, i);
        dot += v * query[i];
        norm += v * v;
      }
      const double score = norm > 0 ? dot / (std::sqrt(norm) * query_norm) : 0.0;
      const Entry e{score, sqlite3_column_int64(stmt.get(), 0)};
      if (heap.size() < static_cast<size_t>(k)) {
        heap.push(e);
      } else if (better(e, heap.top())) {
        heap.pop();
        heap.push(e);
      }
    }
    if (rc != SQLITE_DONE) return ErrorStatus(rc, "search");
  }
  std::vector<Entry> best;
  while (!heap.empty()) {
    best.push_back(heap.top());
    heap.pop();
  }
  std::reverse(best.begin(), best.end());
  ScopedStmt stmt;
  int rc = sqlite3_prepare_v2(
      db_,
      fmt::format("SELECT id, source_id, ordinal, text, domain, category, metadata FROM {} "
                  "WHERE rowid = ?1",
                  Quote(chunks_table_))
          .c_str(),
      -1, stmt.out(), nullptr);
  if (rc != SQLITE_OK) return ErrorStatus(rc, "search");
  std::vector<SearchHit> hits;
  hits.reserve(best.size());
  for (const Entry& e : best) {
    sqlite3_bind_int64(stmt.get(), 1, e.second);
    rc = sqlite3_step(stmt.get());
    if (rc == SQLITE_ROW) {
      SearchHit hit;
      hit.chunk_id = ColumnText(stmt.get(), 0);
      hit.source_id = ColumnText(stmt.get(), 1);
      hit.ordinal = static_cast<uint32_t>(sqlite3_column_int64(stmt.get(), 2));
      hit.text = ColumnText(stmt.get(), 3);
      hit.domain = ColumnText(stmt.get(), 4);
      hit.category = ColumnText(stmt.get(), 5);
      hit.metadata_json = ColumnText(stmt.get(), 6);
      hit.score = e.first;
      hits.push_back(std::move(hit));
    } else if (rc != SQLITE_DONE) {
      return ErrorStatus(rc, "search");
    }
    sqlite3_reset(stmt.get());
  }
  return hits;
}

Result<StoreStats> SqliteStore::Stats() {
  if (db_ == nullptr) return Status::InvalidArgument("sqlite store is closed");
  StoreStats stats;
  ScopedStmt stmt;
  int rc =
      sqlite3_prepare_v2(db_,
                         fmt::format("SELECT (SELECT count(*) FROM {}), (SELECT count(*) FROM {})",
                                     Quote(chunks_table_), Quote(sources_table_))
                             .c_str(),
                         -1, stmt.out(), nullptr);
  if (rc == SQLITE_OK) rc = sqlite3_step(stmt.get());
  if (rc != SQLITE_ROW) return ErrorStatus(rc, "stats");
  stats.chunks = static_cast<uint64_t>(sqlite3_column_int64(stmt.get(), 0));
  stats.sources = static_cast<uint64_t>(sqlite3_column_int64(stmt.get(), 1));
  return stats;
}

Result<StoredChunk> SqliteStore::ReadChunk(std::string_view chunk_id) {
  if (db_ == nullptr) return Status::InvalidArgument("sqlite store is closed");
  ScopedStmt stmt;
  int rc = sqlite3_prepare_v2(
      db_,
      fmt::format("SELECT id, source_id, ordinal, byte_begin, byte_end, text, domain, category, "
                  "metadata, model, dims, embedding, token_estimate, updated_at, file_id FROM {} "
                  "WHERE id = ?1",
                  Quote(chunks_table_))
          .c_str(),
      -1, stmt.out(), nullptr);
  if (rc != SQLITE_OK) return ErrorStatus(rc, "read chunk");
  sqlite3_bind_text(stmt.get(), 1, chunk_id.data(), static_cast<int>(chunk_id.size()),
                    SQLITE_STATIC);
  rc = sqlite3_step(stmt.get());
  if (rc == SQLITE_DONE) {
    return Status::NotFound(fmt::format("no chunk '{}' in '{}'", chunk_id, path_));
  }
  if (rc != SQLITE_ROW) return ErrorStatus(rc, "read chunk");
  sqlite3_stmt* st = stmt.get();
  StoredChunk c;
  c.id = ColumnText(st, 0);
  c.source_id = ColumnText(st, 1);
  c.ordinal = static_cast<uint32_t>(sqlite3_column_int64(st, 2));
  c.byte_begin = static_cast<uint64_t>(sqlite3_column_int64(st, 3));
  c.byte_end = static_cast<uint64_t>(sqlite3_column_int64(st, 4));
  c.text = ColumnText(st, 5);
  c.domain = ColumnText(st, 6);
  c.category = ColumnText(st, 7);
  c.metadata_json = ColumnText(st, 8);
  c.model = ColumnText(st, 9);
  c.dims = sqlite3_column_int(st, 10);
  const auto* blob = static_cast<const uint8_t*>(sqlite3_column_blob(st, 11));
  const size_t bytes = static_cast<size_t>(sqlite3_column_bytes(st, 11));
  if (blob != nullptr) {
    c.embedding_bytes.assign(blob, blob + bytes);
    c.embedding.resize(bytes / 4);
    for (size_t i = 0; i < c.embedding.size(); ++i) c.embedding[i] = FloatAt(blob, i);
  }
  c.token_estimate = static_cast<uint32_t>(sqlite3_column_int64(st, 12));
  c.updated_at_ms = sqlite3_column_int64(st, 13);
  c.file_id = ColumnText(st, 14);
  return c;
}

Result<std::vector<float>> SqliteStore::ReadEmbedding(std::string_view chunk_id) {
  Result<StoredChunk> c = ReadChunk(chunk_id);
  if (!c.ok()) return c.status();
  return std::move(c->embedding);
}

Result<SourceRecord> SqliteStore::ReadSource(std::string_view source_id) {
  if (db_ == nullptr) return Status::InvalidArgument("sqlite store is closed");
  ScopedStmt stmt;
  int rc = sqlite3_prepare_v2(
      db_,
      fmt::format("SELECT source_id, path, domain, category, chunk_count, size_bytes, mtime_ns, "
                  "content_hash, updated_at FROM {} WHERE source_id = ?1",
                  Quote(sources_table_))
          .c_str(),
      -1, stmt.out(), nullptr);
  if (rc != SQLITE_OK) return ErrorStatus(rc, "read source");
  sqlite3_bind_text(stmt.get(), 1, source_id.data(), static_cast<int>(source_id.size()),
                    SQLITE_STATIC);
  rc = sqlite3_step(stmt.get());
  if (rc == SQLITE_DONE) {
    return Status::NotFound(fmt::format("no source '{}' in '{}'", source_id, path_));
  }
  if (rc != SQLITE_ROW) return ErrorStatus(rc, "read source");
  sqlite3_stmt* st = stmt.get();
  SourceRecord r;
  r.source_id = ColumnText(st, 0);
  r.path = ColumnText(st, 1);
  r.domain = ColumnText(st, 2);
  r.category = ColumnText(st, 3);
  r.chunk_count = static_cast<uint64_t>(sqlite3_column_int64(st, 4));
  if (sqlite3_column_type(st, 5) != SQLITE_NULL) {
    r.size_bytes = static_cast<uint64_t>(sqlite3_column_int64(st, 5));
  }
  if (sqlite3_column_type(st, 6) != SQLITE_NULL) r.mtime_ns = sqlite3_column_int64(st, 6);
  if (sqlite3_column_type(st, 7) != SQLITE_NULL) r.content_hash = ColumnText(st, 7);
  r.updated_at_ms = sqlite3_column_int64(st, 8);
  return r;
}

Result<std::vector<std::string>> SqliteStore::ChunkIdsForSource(std::string_view source_id) {
  if (db_ == nullptr) return Status::InvalidArgument("sqlite store is closed");
  ScopedStmt stmt;
  int rc =
      sqlite3_prepare_v2(db_,
                         fmt::format("SELECT id FROM {} WHERE source_id = ?1 ORDER BY ordinal, id",
                                     Quote(chunks_table_))
                             .c_str(),
                         -1, stmt.out(), nullptr);
  if (rc != SQLITE_OK) return ErrorStatus(rc, "list chunks");
  sqlite3_bind_text(stmt.get(), 1, source_id.data(), static_cast<int>(source_id.size()),
                    SQLITE_STATIC);
  std::vector<std::string> ids;
  while ((rc = sqlite3_step(stmt.get())) == SQLITE_ROW) ids.push_back(ColumnText(stmt.get(), 0));
  if (rc != SQLITE_DONE) return ErrorStatus(rc, "list chunks");
  return ids;
}

}  // namespace sluice
