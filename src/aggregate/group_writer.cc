// The JSON aggregator's rewrite of one group file: the consolidated
// document streamed from the spool in index order, written to a temp file,
// fsync'ed and renamed over the old one (json_aggregator.h).
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

JsonAggregator::GroupFileSpec JsonAggregator::SpecOf(const Group& g) {
  GroupFileSpec spec;
  spec.index_id = g.index_id;
  spec.domain = g.domain;
  spec.category = g.category;
  spec.file_path = g.file_path;
  spec.spool_path = g.spool_path;
  spec.has_spool = g.spool_bytes > 0;
  return spec;
}

Status JsonAggregator::RenderGroupFile(const GroupFileSpec& spec, const IndexReader& reader,
                                       const std::atomic<bool>* cancel) const {
  const auto index_error = [&](std::string_view what) {
    return Status::IOError(
        fmt::format("aggregate index '{}': {}: {}", index_path_, what, sqlite3_errmsg(reader.db)));
  };
  // The index streams the group in document order; nothing is sorted or
  // collected in memory here.
  uint64_t chunk_count = 0;
  {
    StatementScope scope(reader.count);
    sqlite3_bind_int64(reader.count, 1, spec.index_id);
    if (sqlite3_step(reader.count) != SQLITE_ROW) return index_error("cannot count a group");
    chunk_count = static_cast<uint64_t>(sqlite3_column_int64(reader.count, 0));
  }

  const fs::path final_path(spec.file_path);
  std::error_code ec;
  if (!CreatePrivateDirectories(final_path.parent_path().string(), ec)) {
    return DirError("cannot create aggregate directory", final_path.parent_path(), ec);
  }
  // A private temp file (or the mode of the file it replaces) made with
  // mkstemp beside the group file; the destructor removes it on failure.
  auto writer_or = AtomicFileWriter::Create(spec.file_path);
  if (!writer_or.ok()) return writer_or.status();
  std::unique_ptr<AtomicFileWriter> writer = std::move(*writer_or);
  const int fd = writer->fd();
  int spool_fd = -1;
  const auto abandon = [&] {
    if (spool_fd >= 0) ::close(spool_fd);
    writer.reset();
  };
  const auto fail = [&](const std::string& why) {
    abandon();
    return Status::IOError(fmt::format("cannot write aggregate '{}': {}", spec.file_path, why));
  };
  if (spec.has_spool) {
    spool_fd = ::open(spec.spool_path.c_str(), O_RDONLY | O_CLOEXEC);
    if (spool_fd < 0) return fail("cannot read spool: " + Errno());
  }

  Status s;
  std::string out;
  out.reserve(kWriteChunkBytes + 4096);
  // The file goes to disk while it is rendered, not all in Commit's fsync:
  // the last rewrite of a large group ran alone at the end of a run and then
  // waited for the disk with the CPU idle (a 180 MB file, ~0.1-0.2 s of a
  // ~2.3 s run, docs/PERFORMANCE.md).
  size_t unsynced = 0;
  const auto flush_out = [&]() -> Status {
    if (out.size() < kWriteChunkBytes) return Status::OK();
    Status w = WriteAll(fd, out);
    unsynced += out.size();
    out.clear();
    if (unsynced >= kWritebackBytes) {
      writer->StartWriteback();
      unsynced = 0;
    }
    return w;
  };
  out += "{\"domain\":";
  AppendJsonString(spec.domain, out);
  out += ",\"category\":";
  AppendJsonString(spec.category, out);
  out += fmt::format(",\"chunk_count\":{},\"sources\":[", chunk_count);
  {
    StatementScope scope(reader.sources);
    sqlite3_bind_int64(reader.sources, 1, spec.index_id);
    bool first = true;
    int rc;
    while ((rc = sqlite3_step(reader.sources)) == SQLITE_ROW) {
      if (!first) out.push_back(',');
      first = false;
      AppendJsonString(ColumnBytes(reader.sources, 0), out);
      s = flush_out();
      if (!s.ok()) return fail(s.message());
    }
    if (rc != SQLITE_DONE) {
      s = index_error("cannot list sources");
      abandon();
      return s;
    }
  }
  out += "],\"chunks\":[";
  {
    StatementScope scope(reader.chunks);
    sqlite3_bind_int64(reader.chunks, 1, spec.index_id);
    uint64_t written = 0;
    SpoolReader spool(spool_fd);
    int rc;
    while ((rc = sqlite3_step(reader.chunks)) == SQLITE_ROW) {
      if (cancel != nullptr && (written & 1023) == 0 && cancel->load(std::memory_order_relaxed)) {
        abandon();
        return Status::Cancelled(fmt::format("rewrite of '{}' cancelled", spec.file_path));
      }
      const auto offset = static_cast<uint64_t>(sqlite3_column_int64(reader.chunks, 0));
      const auto length = static_cast<size_t>(sqlite3_column_int64(reader.chunks, 1));
      out += written++ == 0 ? "\n" : ",\n";
      const size_t at = out.size();
      out.resize(at + length);
      s = spool.Read(out.data() + at, length, offset);
      if (!s.ok()) return fail(s.message());
      s = flush_out();
      if (!s.ok()) return fail(s.message());
    }
    if (rc != SQLITE_DONE || written != chunk_count) {
      s = rc != SQLITE_DONE ? index_error("cannot list chunks")
                            : Status::Internal("aggregate index changed during a rewrite");
      abandon();
      return s;
    }
  }
  out += "\n]}\n";
  s = WriteAll(fd, out);
  if (!s.ok()) return fail(s.message());
  if (spool_fd >= 0) ::close(spool_fd);
  spool_fd = -1;
  s = writer->Commit();  // fsync, rename into place, fsync the folder
  if (!s.ok()) {
    return Status::IOError(
        fmt::format("cannot write aggregate '{}': {}", spec.file_path, s.message()));
  }
  return Status::OK();
}

void JsonAggregator::NoteWritten(Group& g) {
  if (!g.written) ++files_written_;
  g.written = true;
  g.last_write = Now();
  ++rewrites_;
}

Status JsonAggregator::WriteGroup(Group& g) {
  Status s = Spill(g);
  if (!s.ok()) return s;
  // The main connection sees its own uncommitted rows: no commit needed.
  s = RenderGroupFile(SpecOf(g), IndexReader{db_, count_, sources_, chunks_}, nullptr);
  if (!s.ok()) return s;
  g.dirty = false;
  NoteWritten(g);
  return Status::OK();
}

Status JsonAggregator::StartBackgroundRewrite(Group& g) {
  Status s = Spill(g);
  if (!s.ok()) return s;
  // The snapshot must hold every row whose line is in the spool file, and no
  // row whose line is not: commit now, and take the snapshot (the read
  // transaction's first read) here, before Add can commit more.
  s = CommitBatch();
  if (!s.ok()) return s;
  s = OpenSnapshotReader();
  if (!s.ok()) return s;
  if (sqlite3_exec(snapshot_.db, "BEGIN; SELECT 1 FROM chunk LIMIT 1;", nullptr, nullptr,
                   nullptr) != SQLITE_OK) {
    Status why = Status::IOError(fmt::format("aggregate index '{}': cannot take a snapshot: {}",
                                             index_path_, sqlite3_errmsg(snapshot_.db)));
    sqlite3_exec(snapshot_.db, "ROLLBACK", nullptr, nullptr, nullptr);
    (void)LeaveWal();  // the snapshot's error is the one to report
    return why;
  }
  auto job = std::make_unique<BackgroundRewrite>();
  job->group = &g;
  BackgroundRewrite* raw = job.get();
  g.dirty = false;  // what Add brings from now on makes it dirty again
  ++background_rewrites_;
  job->thread = std::thread([this, raw, spec = SpecOf(g)] {
    if (background_hook_) background_hook_();
    raw->status = RenderGroupFile(spec, snapshot_, &raw->cancel);
    sqlite3_exec(snapshot_.db, "COMMIT", nullptr, nullptr, nullptr);  // ends the snapshot
    raw->done.store(true, std::memory_order_release);
  });
  background_ = std::move(job);
  return Status::OK();
}

Status JsonAggregator::ReapBackgroundRewrite(bool wait) {
  if (background_ == nullptr) return Status::OK();
  if (!wait && !background_->done.load(std::memory_order_acquire)) return Status::OK();
  if (background_->thread.joinable()) background_->thread.join();
  std::unique_ptr<BackgroundRewrite> job = std::move(background_);
  if (Status s = LeaveWal(); !s.ok()) return s;
  if (!job->status.ok()) {
    job->group->dirty = true;  // what it did not write is still to write
    return job->status;
  }
  NoteWritten(*job->group);
  return Status::OK();
}

void JsonAggregator::CancelBackgroundRewrite() {
  if (background_ == nullptr) return;
  background_->cancel.store(true, std::memory_order_relaxed);
  if (background_->thread.joinable()) background_->thread.join();
  background_.reset();
}

}  // namespace sluice
