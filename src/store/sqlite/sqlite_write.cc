// The SQLite store's write path: one IMMEDIATE transaction per batch that
// upserts chunks (each with its embedding-cache key), source counts, the
// model metadata and run records (sqlite_store.h).
#include "store/sqlite/sqlite_store.h"

#include <sqlite3.h>

#include <algorithm>
#include <string>
#include <unordered_map>
#include <utility>

#include <fmt/format.h>

#include "common/hashing.h"
#include "store/sqlite/sqlite_transaction.h"
#include "store/sqlite/sqlite_util.h"

namespace sluice {

using namespace sqlite;  // the folder's shared helpers (sqlite_util.h)

WriteResult SqliteStore::Write(std::span<const EmbeddedChunk> batch) {
  WriteResult result;
  if (db_ == nullptr) {
    result.status = Status::InvalidArgument("sqlite store is closed");
    return result;
  }
  if (batch.empty()) return result;
  int dims = dims_;
  if (dims == 0) {
    for (const EmbeddedChunk& row : batch) {
      if (!row.embedding.empty()) {
        dims = static_cast<int>(row.embedding.size());
        break;
      }
    }
  }
  Transaction txn(*this);
  result.status = txn.Begin();
  if (!result.status.ok()) return result;

  const auto fail = [&](Status s) {
    sqlite3_reset(upsert_chunk_);
    sqlite3_reset(upsert_source_counts_);
    sqlite3_reset(put_meta_);
    sqlite3_reset(put_run_);
    if (add_recent_text_key_ != nullptr) sqlite3_reset(add_recent_text_key_);
    if (rowid_of_chunk_ != nullptr) sqlite3_reset(rowid_of_chunk_);
    // `txn` rolls back as the caller returns this.
    result.status = std::move(s);
    result.rejected.clear();
    return result;
  };

  const int64_t now = NowMs();
  std::vector<uint8_t> scratch;
  std::string text_key;
  std::string first_model;
  bool any_accepted = false;
  int64_t recent_keys_added = 0;
  // source_id -> last accepted row of that source in this batch.
  std::unordered_map<std::string_view, size_t> sources;
  std::vector<std::string_view> source_order;
  for (size_t i = 0; i < batch.size(); ++i) {
    const EmbeddedChunk& row = batch[i];
    const Chunk& c = row.chunk;
    if (static_cast<int>(row.embedding.size()) != dims || dims == 0) {
      result.rejected.push_back(
          {i, Status::Rejected(fmt::format("chunk {}: embedding has {} dimensions, store has {}",
                                           c.id, row.embedding.size(), dims))});
      continue;
    }
    if (c.id.empty()) {
      result.rejected.push_back({i, Status::Rejected("chunk with an empty id")});
      continue;
    }
    if (!any_accepted) first_model = row.model;
    any_accepted = true;
    // Decided before the row is written: the question is whether the file
    // had chunks before this run wrote any. A fresh file's chunk has no
    // stored row to replace and needs no run record.
    bool fresh = false;
    if (!c.file_id.empty()) {
      Result<bool> is_fresh = IsFreshFile(c.file_id, /*ranged=*/!c.record_run);
      if (!is_fresh.ok()) return fail(is_fresh.status());
      fresh = *is_fresh;
    }
    if (has_text_key_) {
      text_key.clear();
      if (!options_.store.embedding_cache_namespace.empty()) {
        text_key = EmbeddingCacheKey(options_.store.embedding_cache_namespace, c.text);
      }
    }
    if (has_text_key_ && !fresh) {
      // The row this upsert may replace keeps its vector in the cache table
      // if its text goes (version 4: the row was the text's cache entry).
      sqlite3_stmt* ks = keep_replaced_vector_;
      sqlite3_bind_text(ks, 1, c.id.data(), static_cast<int>(c.id.size()), SQLITE_STATIC);
      if (text_key.empty()) {
        sqlite3_bind_null(ks, 2);
      } else {
        sqlite3_bind_text(ks, 2, text_key.data(), static_cast<int>(text_key.size()), SQLITE_STATIC);
      }
      sqlite3_bind_text(ks, 3, c.text.data(), static_cast<int>(c.text.size()), SQLITE_STATIC);
      const int krc = sqlite3_step(ks);
      sqlite3_reset(ks);
      if (krc != SQLITE_DONE) return fail(ErrorStatus(krc, "keep the cached vector of " + c.id));
    }
    const bool record_run =
        options_.store.run_id != 0 && !c.file_id.empty() && c.record_run && !fresh;
    sqlite3_stmt* st = upsert_chunk_;
    sqlite3_bind_text(st, 1, c.id.data(), static_cast<int>(c.id.size()), SQLITE_STATIC);
    sqlite3_bind_text(st, 2, c.source_id.data(), static_cast<int>(c.source_id.size()),
                      SQLITE_STATIC);
    sqlite3_bind_int64(st, 3, c.ordinal);
    sqlite3_bind_int64(st, 4, static_cast<int64_t>(c.byte_begin));
    sqlite3_bind_int64(st, 5, static_cast<int64_t>(c.byte_end));
    sqlite3_bind_text(st, 6, c.text.data(), static_cast<int>(c.text.size()), SQLITE_STATIC);
    sqlite3_bind_text(st, 7, c.domain.data(), static_cast<int>(c.domain.size()), SQLITE_STATIC);
    sqlite3_bind_text(st, 8, c.category.data(), static_cast<int>(c.category.size()), SQLITE_STATIC);
    std::string_view meta = c.metadata_json;
    if (meta.empty()) meta = "{}";
    sqlite3_bind_text(st, 9, meta.data(), static_cast<int>(meta.size()), SQLITE_STATIC);
    sqlite3_bind_text(st, 10, row.model.data(), static_cast<int>(row.model.size()), SQLITE_STATIC);
    sqlite3_bind_int(st, 11, dims);
    sqlite3_bind_blob(st, 12, EmbeddingBytes(row.embedding, scratch), dims * 4, SQLITE_STATIC);
    sqlite3_bind_int64(st, 13, c.token_estimate);
    sqlite3_bind_int64(st, 14, now);
    if (c.file_id.empty()) {
      sqlite3_bind_null(st, 15);
    } else {
      sqlite3_bind_text(st, 15, c.file_id.data(), static_cast<int>(c.file_id.size()),
                        SQLITE_STATIC);
    }
    // The chunk row is the embedding cache's entry for its text (version 4).
    if (has_text_key_) {
      if (text_key.empty()) {
        sqlite3_bind_null(st, 16);
      } else {
        sqlite3_bind_text(st, 16, text_key.data(), static_cast<int>(text_key.size()),
                          SQLITE_STATIC);
      }
    }
    // 0 unless this upsert inserts a row (sqlite3_last_insert_rowid is left
    // alone by an update).
    if (add_recent_text_key_ != nullptr) sqlite3_set_last_insert_rowid(db_, 0);
    const int rc = sqlite3_step(st);
    sqlite3_reset(st);
    if (rc != SQLITE_DONE) return fail(ErrorStatus(rc, "write chunk " + c.id));
    // A keyed row inserted or changed gets its text key entry (one already
    // stored as is has one).
    if (add_recent_text_key_ != nullptr && !text_key.empty() && sqlite3_changes(db_) > 0) {
      int64_t rowid = sqlite3_last_insert_rowid(db_);
      if (rowid == 0) {
        sqlite3_stmt* rs = rowid_of_chunk_;
        sqlite3_bind_text(rs, 1, c.id.data(), static_cast<int>(c.id.size()), SQLITE_STATIC);
        const int rrc = sqlite3_step(rs);
        if (rrc == SQLITE_ROW) rowid = sqlite3_column_int64(rs, 0);
        sqlite3_reset(rs);
        if (rrc != SQLITE_ROW) return fail(ErrorStatus(rrc, "find the row of " + c.id));
      }
      sqlite3_stmt* ks = add_recent_text_key_;
      sqlite3_bind_int64(ks, 1, TextKeyPrefix(text_key));
      sqlite3_bind_int64(ks, 2, rowid);
      const int krc = sqlite3_step(ks);
      sqlite3_reset(ks);
      if (krc != SQLITE_DONE) return fail(ErrorStatus(krc, "write the text key of " + c.id));
      ++recent_keys_added;
    }
    if (record_run) {
      sqlite3_stmt* rs = put_run_;
      sqlite3_bind_text(rs, 1, c.file_id.data(), static_cast<int>(c.file_id.size()), SQLITE_STATIC);
      sqlite3_bind_int64(rs, 2, static_cast<int64_t>(options_.store.run_id));
      sqlite3_bind_text(rs, 3, c.id.data(), static_cast<int>(c.id.size()), SQLITE_STATIC);
      const int rrc = sqlite3_step(rs);
      sqlite3_reset(rs);
      if (rrc != SQLITE_DONE) return fail(ErrorStatus(rrc, "record run chunk " + c.id));
    }
    auto [it, inserted] = sources.try_emplace(c.source_id, i);
    if (inserted) {
      source_order.push_back(c.source_id);
    } else {
      it->second = i;
    }
  }
  sqlite3_clear_bindings(upsert_chunk_);
  sqlite3_clear_bindings(put_run_);

  for (std::string_view source_id : source_order) {
    const Chunk& c = batch[sources[source_id]].chunk;
    sqlite3_stmt* st = upsert_source_counts_;
    sqlite3_bind_text(st, 1, source_id.data(), static_cast<int>(source_id.size()), SQLITE_STATIC);
    sqlite3_bind_text(st, 2, c.domain.data(), static_cast<int>(c.domain.size()), SQLITE_STATIC);
    sqlite3_bind_text(st, 3, c.category.data(), static_cast<int>(c.category.size()), SQLITE_STATIC);
    sqlite3_bind_int64(st, 4, now);
    const int rc = sqlite3_step(st);
    sqlite3_reset(st);
    if (rc != SQLITE_DONE) return fail(ErrorStatus(rc, "update source " + std::string(source_id)));
  }
  sqlite3_clear_bindings(upsert_source_counts_);

  if (any_accepted && !meta_persisted_) {
    const std::string dims_text = std::to_string(dims);
    for (auto [key, value] : {std::pair<const char*, std::string_view>{"dimensions", dims_text},
                              {"model", first_model}}) {
      sqlite3_bind_text(put_meta_, 1, key, -1, SQLITE_STATIC);
      sqlite3_bind_text(put_meta_, 2, value.data(), static_cast<int>(value.size()), SQLITE_STATIC);
      const int rc = sqlite3_step(put_meta_);
      sqlite3_reset(put_meta_);
      if (rc != SQLITE_DONE) return fail(ErrorStatus(rc, "write meta"));
    }
    sqlite3_clear_bindings(put_meta_);
  }

  const bool merge_keys = recent_keys_added > 0 && recent_text_keys_ + recent_keys_added >=
                                                       std::max(1, options_.recent_text_keys_limit);
  if (merge_keys) {
    if (Status s = MergeRecentTextKeys(); !s.ok()) return fail(s.WithContext("move text keys"));
  }

  Status commit = txn.Commit();
  if (!commit.ok()) return fail(std::move(commit));
  recent_text_keys_ = merge_keys ? 0 : recent_text_keys_ + recent_keys_added;
  if (any_accepted && !meta_persisted_) {
    meta_persisted_ = true;
    model_ = first_model;
  }
  if (any_accepted) dims_ = dims;
  return result;
}

Result<bool> SqliteStore::IsFreshFile(const std::string& file_id, bool ranged) {
  if (writer_lock_fd_ < 0) return false;
  if (ranged) {
    // (An entry already there stays: flipping a fresh file whose unrecorded
    // rows this run wrote would make its commit delete them.)
    return fresh_files_.try_emplace(file_id, false).first->second;
  }
  if (auto it = fresh_files_.find(file_id); it != fresh_files_.end()) return it->second;
  sqlite3_stmt* st = file_has_chunks_;
  sqlite3_bind_text(st, 1, file_id.data(), static_cast<int>(file_id.size()), SQLITE_STATIC);
  const int rc = sqlite3_step(st);
  const bool has_chunks = rc == SQLITE_ROW && sqlite3_column_int(st, 0) != 0;
  sqlite3_reset(st);
  if (rc != SQLITE_ROW) return ErrorStatus(rc, "look up chunks of " + file_id);
  fresh_files_.emplace(file_id, !has_chunks);
  return !has_chunks;
}

Status SqliteStore::UpsertSource(const SourceRecord& source) {
  if (db_ == nullptr) return Status::InvalidArgument("sqlite store is closed");
  ScopedStmt stmt;
  int rc = sqlite3_prepare_v2(
      db_,
      fmt::format("INSERT INTO {0} (source_id, path, domain, category, chunk_count, size_bytes, "
                  "mtime_ns, content_hash, updated_at) VALUES (?1, ?2, ?3, ?4, "
                  "(SELECT count(*) FROM {1} WHERE source_id = ?1), ?5, ?6, ?7, ?8) "
                  "ON CONFLICT(source_id) DO UPDATE SET path = excluded.path, "
                  "domain = excluded.domain, category = excluded.category, "
                  "chunk_count = excluded.chunk_count, size_bytes = excluded.size_bytes, "
                  "mtime_ns = excluded.mtime_ns, content_hash = excluded.content_hash, "
                  "updated_at = excluded.updated_at",
                  Quote(sources_table_), Quote(chunks_table_))
          .c_str(),
      -1, stmt.out(), nullptr);
  if (rc != SQLITE_OK) return ErrorStatus(rc, "upsert source");
  sqlite3_stmt* st = stmt.get();
  sqlite3_bind_text(st, 1, source.source_id.c_str(), -1, SQLITE_STATIC);
  sqlite3_bind_text(st, 2, source.path.c_str(), -1, SQLITE_STATIC);
  sqlite3_bind_text(st, 3, source.domain.c_str(), -1, SQLITE_STATIC);
  sqlite3_bind_text(st, 4, source.category.c_str(), -1, SQLITE_STATIC);
  if (source.size_bytes) sqlite3_bind_int64(st, 5, static_cast<int64_t>(*source.size_bytes));
  if (source.mtime_ns) sqlite3_bind_int64(st, 6, *source.mtime_ns);
  if (source.content_hash)
    sqlite3_bind_text(st, 7, source.content_hash->c_str(), -1, SQLITE_STATIC);
  sqlite3_bind_int64(st, 8, NowMs());
  rc = sqlite3_step(st);
  return rc == SQLITE_DONE ? Status::OK() : ErrorStatus(rc, "upsert source");
}

}  // namespace sluice
