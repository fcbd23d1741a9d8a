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

Status JsonAggregator::WriteGroup(Group& g) {
  Status s = Spill(g);
  if (!s.ok()) return s;

  // The index streams the group in document order; nothing is sorted or
  // collected in memory here.
  uint64_t chunk_count = 0;
  {
    StatementScope scope(count_);
    sqlite3_bind_int64(count_, 1, g.index_id);
    if (sqlite3_step(count_) != SQLITE_ROW) return IndexError("cannot count a group");
    chunk_count = static_cast<uint64_t>(sqlite3_column_int64(count_, 0));
  }

  const fs::path final_path(g.file_path);
  std::error_code ec;
  if (!CreatePrivateDirectories(final_path.parent_path().string(), ec)) {
    return DirError("cannot create aggregate directory", final_path.parent_path(), ec);
  }
  // A private temp file (or the mode of the file it replaces) made with
  // mkstemp beside the group file; the destructor removes it on failure.
  auto writer_or = AtomicFileWriter::Create(g.file_path);
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
    return Status::IOError(fmt::format("cannot write aggregate '{}': {}", g.file_path, why));
  };
  if (g.spool_bytes > 0) {
    spool_fd = ::open(g.spool_path.c_str(), O_RDONLY | O_CLOEXEC);
    if (spool_fd < 0) return fail("cannot read spool: " + Errno());
  }

  std::string out;
  out.reserve(kWriteChunkBytes + 4096);
  const auto flush_out = [&]() -> Status {
    if (out.size() < kWriteChunkBytes) return Status::OK();
    Status w = WriteAll(fd, out);
    out.clear();
    return w;
  };
  out += "{\"domain\":";
  AppendJsonString(g.domain, out);
  out += ",\"category\":";
  AppendJsonString(g.category, out);
  out += fmt::format(",\"chunk_count\":{},\"sources\":[", chunk_count);
  {
    StatementScope scope(sources_);
    sqlite3_bind_int64(sources_, 1, g.index_id);
    bool first = true;
    int rc;
    while ((rc = sqlite3_step(sources_)) == SQLITE_ROW) {
      if (!first) out.push_back(',');
      first = false;
      AppendJsonString(ColumnBytes(sources_, 0), out);
      s = flush_out();
      if (!s.ok()) return fail(s.message());
    }
    if (rc != SQLITE_DONE) {
      s = IndexError("cannot list sources");
      abandon();
      return s;
    }
  }
  out += "],\"chunks\":[";
  {
    StatementScope scope(chunks_);
    sqlite3_bind_int64(chunks_, 1, g.index_id);
    uint64_t written = 0;
    SpoolReader spool(spool_fd);
    int rc;
    while ((rc = sqlite3_step(chunks_)) == SQLITE_ROW) {
      const auto offset = static_cast<uint64_t>(sqlite3_column_int64(chunks_, 0));
      const auto length = static_cast<size_t>(sqlite3_column_int64(chunks_, 1));
      out += written++ == 0 ? "\n" : ",\n";
      const size_t at = out.size();
      out.resize(at + length);
      s = spool.Read(out.data() + at, length, offset);
      if (!s.ok()) return fail(s.message());
      s = flush_out();
      if (!s.ok()) return fail(s.message());
    }
    if (rc != SQLITE_DONE || written != chunk_count) {
      s = rc != SQLITE_DONE ? IndexError("cannot list chunks")
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
        fmt::format("cannot write aggregate '{}': {}", g.file_path, s.message()));
  }
  g.dirty = false;
  if (!g.written) ++files_written_;
  g.written = true;
  g.last_write = Now();
  ++rewrites_;
  return Status::OK();
}

}  // namespace sluice
