// Helpers shared by the files of the JSON aggregator (json_aggregator.h):
// whole writes and reads of file descriptors, directory errors, the walk
// over the domain folders of an output folder, the group key, and the
// SQLite binding helpers of the scratch chunk index.
//
// Thread safety: pure functions; a StatementScope belongs to one thread.
#pragma once

#include <sqlite3.h>

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <string>
#include <string_view>
#include <system_error>

#include "sluice/status.h"

namespace sluice::aggregate {

// Bytes per write (and read) when a group file is rewritten from the spool.
constexpr size_t kWriteChunkBytes = 1 << 20;
// A group file being written is handed to the kernel's writeback every this
// many bytes (AtomicFileWriter::StartWriteback).
constexpr size_t kWritebackBytes = 8 << 20;

std::string Errno();
// Writes all of `data`, retrying on EINTR.
Status WriteAll(int fd, std::string_view data);
// Reads `length` bytes at `offset`, fewer only at the end of the file;
// returns how many, retrying on EINTR.
Result<size_t> PreadUpTo(int fd, char* out, size_t length, uint64_t offset);
// Reads exactly `length` bytes at `offset` (IOError when the file is shorter).
Status PreadAll(int fd, char* out, size_t length, uint64_t offset);

// Reads the spool's lines for a group file's rewrite, in index order, with
// fewer system calls than one pread per line: a read past the current block
// also reads ahead, and the read-ahead adapts to how much of each block the
// following lines use. Chunks of one source arrive together, so index order
// is mostly spool order and a 256 KiB block serves ~190 lines of 1.3 KB;
// with many sources interleaved a source's next line is far away, the blocks
// go unused and the read-ahead shrinks to nothing (one pread per line, as
// before, instead of a block per line).
class SpoolReader {
 public:
  static constexpr size_t kMaxReadAhead = 256 * 1024;
  static constexpr size_t kMinReadAhead = 4 * 1024;  // below: none

  explicit SpoolReader(int fd) : fd_(fd) {}
  // Copies exactly `length` bytes at `offset` to `out` (IOError when the
  // file is shorter).
  Status Read(char* out, size_t length, uint64_t offset);
  uint64_t reads() const { return reads_; }  // reads (a block or a line) so far
  size_t read_ahead() const { return read_ahead_; }

 private:
  int fd_;
  std::string block_;
  uint64_t block_offset_ = 0;
  size_t block_used_ = 0;  // bytes of block_ handed out
  size_t read_ahead_ = 64 * 1024;
  uint64_t reads_ = 0;
};

// PermissionDenied or IOError for a directory operation that failed.
Status DirError(const std::string& what, const std::string& dir, const std::error_code& ec);

// Calls `each` for every entry of every domain folder of `out_dir` (group
// files are out_dir/<d>/<c>.json; folders whose names start with '.', such
// as the spool, are not domains). Returns the first listing error.
Status ForEachDomainFolderEntry(
    const std::string& out_dir,
    const std::function<void(const std::filesystem::directory_entry&)>& each);

// The groups_ key of (domain, category); length-prefixed so ("ab", "c") and
// ("a", "bc") differ.
std::string GroupKey(std::string_view domain, std::string_view category);

// sqlite3_bind_blob binds NULL for a null pointer; an empty id or source is
// an empty blob.
inline void BindBytes(sqlite3_stmt* stmt, int index, std::string_view bytes) {
  sqlite3_bind_blob(stmt, index, bytes.empty() ? "" : bytes.data(), static_cast<int>(bytes.size()),
                    SQLITE_STATIC);
}

inline std::string_view ColumnBytes(sqlite3_stmt* stmt, int index) {
  const void* p = sqlite3_column_blob(stmt, index);
  const int n = sqlite3_column_bytes(stmt, index);
  return p == nullptr ? std::string_view() : std::string_view(static_cast<const char*>(p), n);
}

// Resets a statement on every path out of a scope.
class StatementScope {
 public:
  explicit StatementScope(sqlite3_stmt* stmt) : stmt_(stmt) {}
  ~StatementScope() {
    sqlite3_reset(stmt_);
    sqlite3_clear_bindings(stmt_);
  }
  StatementScope(const StatementScope&) = delete;
  StatementScope& operator=(const StatementScope&) = delete;

 private:
  sqlite3_stmt* stmt_;
};

}  // namespace sluice::aggregate
