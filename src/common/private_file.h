// Creating the files and folders sluice writes (store, aggregates, dead
// letters, report, trace). They hold document text, so whatever the umask a
// new file is 0600 and a new folder 0700; rewriting an existing file keeps
// the mode its owner gave it. Temp files are made with mkstemp (O_EXCL) in
// the target's folder, so a file or symlink planted at a predictable name is
// never opened, and renamed over the target when complete.
//
// Thread safety: every function is thread-safe (no shared state).
#pragma once

#include <sys/types.h>

#include <memory>
#include <string>
#include <string_view>
#include <system_error>

#include "sluice/status.h"

namespace sluice {

inline constexpr mode_t kPrivateFileMode = 0600;
inline constexpr mode_t kPrivateDirMode = 0700;

// Creates `dir` and its missing parents with mode 0700; existing folders are
// left as they are. A drop-in for std::filesystem::create_directories: sets
// `ec` (e.g. ENOTDIR when a component is a file) and returns false on error.
bool CreatePrivateDirectories(const std::string& dir, std::error_code& ec);

// Opens `path` for appending (O_APPEND, close-on-exec), creating it with mode
// 0600 when it is missing; never follows a symlink at `path` itself.
// Returns the file descriptor, owned by the caller.
Result<int> OpenPrivateFileForAppend(const std::string& path);

// Replaces a file atomically: the content goes to a temp file
// "<path>.tmp.<pid>.XXXXXX" beside it (mkstemp), which Commit() fsyncs and
// renames over `path`. A reader sees the old file or the new one, never a
// part. The temp file has the mode of the existing `path` (a regular file),
// else 0600. Not thread-safe: one writer per instance.
class AtomicFileWriter {
 public:
  // Creates the temp file. The folder of `path` must exist (see
  // CreatePrivateDirectories): a mistyped path is an error, not a new tree.
  static Result<std::unique_ptr<AtomicFileWriter>> Create(const std::string& path);
  // Removes the temp file unless Commit() succeeded.
  ~AtomicFileWriter();
  AtomicFileWriter(const AtomicFileWriter&) = delete;
  AtomicFileWriter& operator=(const AtomicFileWriter&) = delete;

  // The temp file's descriptor, for callers that stream large content.
  int fd() const { return fd_; }
  const std::string& temp_path() const { return temp_path_; }

  Status Append(std::string_view data);
  // Asks the kernel to start writing out what the temp file holds so far
  // (sync_file_range, SYNC_FILE_RANGE_WRITE: it does not wait for the disk),
  // so that Commit's fsync has only the tail left to wait for. Advisory: a
  // caller streaming a large file calls it every few MiB.
  void StartWriteback();
  // fsync, close, rename over the target, fsync the folder. Once only.
  Status Commit();

 private:
  AtomicFileWriter(std::string path, std::string temp_path, int fd)
      : path_(std::move(path)), temp_path_(std::move(temp_path)), fd_(fd) {}

  const std::string path_;
  const std::string temp_path_;
  int fd_;
  bool committed_ = false;
};

// Writes `content` to `path` through an AtomicFileWriter.
Status WriteFileAtomically(const std::string& path, std::string_view content);

// fsyncs a folder so a rename inside it is durable. Best effort.
void SyncDirectory(const std::string& dir);

}  // namespace sluice
