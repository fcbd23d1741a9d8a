// The JSON aggregator's retention (Aggregator::Retain): per group file,
// drop the chunks of sources the policy does not keep, and rewrite it
// (json_aggregator.h).
#include "aggregate/json_aggregator.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <functional>
#include <limits>
#include <unordered_set>
#include <utility>

#include <fmt/format.h>
#include <simdjson.h>
#include <sqlite3.h>

#include "aggregate/aggregate_util.h"
#include "common/json_writer.h"
#include "common/private_file.h"

namespace sluice {

namespace fs = std::filesystem;
using namespace aggregate;  // the folder's shared helpers (aggregate_util.h)

namespace {

// The group and sources of a file in the layout WriteGroup writes, from its
// first line alone. False when the file has another layout.
bool ReadGroupHead(const std::string& path, simdjson::dom::parser& parser, std::string& domain,
                   std::string& category, std::vector<std::string>& sources) {
  std::FILE* f = std::fopen(path.c_str(), "rb");
  if (f == nullptr) return false;
  char* buf = nullptr;
  size_t cap = 0;
  const ssize_t n = ::getline(&buf, &cap, f);
  std::fclose(f);
  std::string head = n > 0 ? std::string(buf, static_cast<size_t>(n)) : std::string();
  std::free(buf);
  if (!head.empty() && head.back() == '\n') head.pop_back();
  constexpr std::string_view kHeadStart = "{\"domain\":", kHeadEnd = ",\"chunks\":[";
  if (!head.starts_with(kHeadStart) || !head.ends_with(kHeadEnd)) return false;
  head += "]}";
  simdjson::dom::element doc;
  std::string_view d, c;
  simdjson::dom::array list;
  if (parser.parse(head).get(doc) || doc["domain"].get_string().get(d) ||
      doc["category"].get_string().get(c) || doc["sources"].get_array().get(list)) {
    return false;
  }
  domain = d;
  category = c;
  sources.clear();
  for (simdjson::dom::element e : list) {
    std::string_view src;
    if (e.get_string().get(src)) return false;
    sources.emplace_back(src);
  }
  return true;
}

}  // namespace

// ---------------------------------------------------------------- Retain

Result<RetainStats> JsonAggregator::Retain(const RetentionPolicy& policy) {
  if (!finished_) return Status::InvalidArgument("Retain needs a finished aggregator");
  if (!policy.source || !policy.chunks) {
    return Status::InvalidArgument("retention policy needs both a source and a chunks answer");
  }
  // Group files are out_dir/<d>/<c>.json; SafeFileComponent never starts a
  // name with '.', so .spool, probes and markers are not groups. The list is
  // bounded by the number of groups.
  std::vector<std::string> files;
  Status listed = ForEachDomainFolderEntry(options_.out_dir, [&](const fs::directory_entry& file) {
    const std::string name = file.path().filename().string();
    std::error_code file_ec;
    if (name.empty() || name[0] == '.' || !name.ends_with(".json") ||
        !file.is_regular_file(file_ec)) {
      return;
    }
    files.push_back(file.path().string());
  });
  if (!listed.ok()) return listed;
  std::sort(files.begin(), files.end());
  std::error_code ec;

  // The rewrite goes through the spool and index like a run's, so they come
  // back for the duration (Finish removed them).
  if (!CreatePrivateDirectories(spool_dir_, ec)) {
    return DirError("cannot create spool directory", spool_dir_, ec);
  }
  RetainStats stats;
  Status s = OpenIndex();
  for (const std::string& path : files) {
    if (!s.ok()) break;
    s = RetainFile(path, policy, stats);
  }
  RemoveSpool();
  if (!s.ok()) return s;
  return stats;
}

Status JsonAggregator::StepDelete(sqlite3_stmt* stmt, int64_t group, std::string_view key,
                                  uint64_t& dropped) {
  StatementScope scope(stmt);
  sqlite3_bind_int64(stmt, 1, group);
  BindBytes(stmt, 2, key);
  if (sqlite3_step(stmt) != SQLITE_DONE) return IndexError("cannot drop chunks");
  dropped += static_cast<uint64_t>(sqlite3_changes(db_));
  return Status::OK();
}

Status JsonAggregator::RetainChunksOf(Group& g, std::string_view source_id,
                                      const RetentionPolicy& policy, uint64_t& dropped) {
  int64_t after_ordinal = -1;  // below every ordinal
  std::string after_id;
  std::vector<std::string> ids;
  std::vector<int64_t> ordinals;
  std::vector<bool> keep;
  for (;;) {
    ids.clear();
    ordinals.clear();
    int64_t last_ordinal = after_ordinal;
    {
      StatementScope scope(page_ids_);
      sqlite3_bind_int64(page_ids_, 1, g.index_id);
      BindBytes(page_ids_, 2, source_id);
      sqlite3_bind_int64(page_ids_, 3, after_ordinal);
      BindBytes(page_ids_, 4, after_id);
      sqlite3_bind_int64(page_ids_, 5, static_cast<int64_t>(kRetainBatch));
      int rc;
      while ((rc = sqlite3_step(page_ids_)) == SQLITE_ROW) {
        last_ordinal = sqlite3_column_int64(page_ids_, 0);
        ordinals.push_back(last_ordinal);
        ids.emplace_back(ColumnBytes(page_ids_, 1));
      }
      if (rc != SQLITE_DONE) return IndexError("cannot list a source's chunks");
    }
    if (ids.empty()) return Status::OK();
    after_ordinal = last_ordinal;
    after_id = ids.back();
    keep.assign(ids.size(), false);
    Status s = policy.chunks(g.domain, g.category, ids, keep);
    if (!s.ok()) return s;
    for (size_t i = 0; i < ids.size(); ++i) {
      if (i < keep.size() && keep[i]) continue;
      StatementScope scope(drop_chunk_);
      sqlite3_bind_int64(drop_chunk_, 1, g.index_id);
      BindBytes(drop_chunk_, 2, source_id);
      sqlite3_bind_int64(drop_chunk_, 3, ordinals[i]);
      BindBytes(drop_chunk_, 4, ids[i]);
      if (sqlite3_step(drop_chunk_) != SQLITE_DONE) return IndexError("cannot drop chunks");
      dropped += static_cast<uint64_t>(sqlite3_changes(db_));
    }
    if (ids.size() < kRetainBatch) return Status::OK();
  }
}

Status JsonAggregator::RetainFile(const std::string& path, const RetentionPolicy& policy,
                                  RetainStats& stats) {
  std::string domain, category;
  std::vector<std::string> sources;
  if (ReadGroupHead(path, *parser_, domain, category, sources)) {
    // Fast path: the first line lists the sources; a file whose sources all
    // stay is not read any further.
    bool all_kept = true;
    for (const std::string& src : sources) {
      auto verdict = policy.source(src);
      if (!verdict.ok()) return verdict.status();
      if (*verdict != SourceRetention::kKeep) {
        all_kept = false;
        break;
      }
    }
    if (all_kept) return Status::OK();
  } else {
    // Another layout (formatted by hand or by another tool): the whole file.
    simdjson::dom::element doc;
    std::string_view d, c;
    simdjson::dom::array chunks;
    const bool is_aggregate = !parser_->load(path).get(doc) && !doc["domain"].get_string().get(d) &&
                              !doc["category"].get_string().get(c) &&
                              !doc["chunks"].get_array().get(chunks);
    if (is_aggregate) {
      domain = d;
      category = c;
    }
    parser_ = std::make_unique<simdjson::dom::parser>();  // give the file's memory back
    if (!is_aggregate) {
      ++stats.files_skipped;
      return Status::OK();
    }
  }

  Group g;
  g.index_id = next_group_id_++;
  g.domain = std::move(domain);
  g.category = std::move(category);
  g.file_path = path;
  g.spool_path = (fs::path(spool_dir_) / fmt::format("g{}.jsonl", g.index_id)).string();
  g.next_flush = std::numeric_limits<uint64_t>::max();
  const auto fail = [&](Status why) {
    ClearGroup(g);  // best effort: the group's rows and spool are scratch
    return why;
  };
  Status s = ImportExisting(g);
  if (!s.ok()) return fail(s);

  // The sources as imported (the header may list fewer in a hand-made file),
  // including those this run superseded (DropMovedSources drops them).
  sources.clear();
  {
    StatementScope scope(all_sources_);
    sqlite3_bind_int64(all_sources_, 1, g.index_id);
    int rc;
    while ((rc = sqlite3_step(all_sources_)) == SQLITE_ROW) {
      sources.emplace_back(ColumnBytes(all_sources_, 0));
    }
    if (rc != SQLITE_DONE) return fail(IndexError("cannot list sources"));
  }
  uint64_t dropped = 0;
  for (const std::string& src : sources) {
    auto verdict = policy.source(src);
    if (!verdict.ok()) return fail(verdict.status());
    if (*verdict == SourceRetention::kDrop) {
      s = StepDelete(drop_source_, g.index_id, src, dropped);
    } else if (*verdict == SourceRetention::kCheckChunks) {
      s = RetainChunksOf(g, src, policy, dropped);
    }
    if (!s.ok()) return fail(s);
  }
  if (dropped == 0) return ClearGroup(g);

  uint64_t left = 0;
  {
    StatementScope scope(count_);
    sqlite3_bind_int64(count_, 1, g.index_id);
    if (sqlite3_step(count_) != SQLITE_ROW) return fail(IndexError("cannot count a group"));
    left = static_cast<uint64_t>(sqlite3_column_int64(count_, 0));
  }
  if (left == 0) {
    // A run adding none of these chunks would not have created the file.
    if (::unlink(path.c_str()) != 0 && errno != ENOENT) {
      return fail(Status::IOError(fmt::format("cannot remove aggregate '{}': {}", path, Errno())));
    }
    const fs::path folder = fs::path(path).parent_path();
    SyncDirectory(folder.string());
    std::error_code ec;
    if (fs::remove(folder, ec)) SyncDirectory(options_.out_dir);  // only when empty
    ++stats.files_removed;
  } else {
    // FilesWritten counts distinct files: one this run already wrote is not new.
    auto it = groups_.find(GroupKey(g.domain, g.category));
    if (it != groups_.end() && it->second->file_path == path) g.written = it->second->written;
    s = WriteGroup(g);
    if (!s.ok()) return fail(s);
    ++stats.files_rewritten;
  }
  stats.chunks_dropped += dropped;
  return ClearGroup(g);
}

}  // namespace sluice
