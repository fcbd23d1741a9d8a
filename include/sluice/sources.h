// Inputs: the source walker that lists the files to ingest, and the
// --parser-cmd parser that runs a user's command to turn a file into records.
//
// SourceWalker streams files under one or more roots (files or folders) in a
// stable order: roots in the order given, then depth-first with the entries of
// each folder sorted by byte-wise name. It keeps one folder listing (names
// only) per depth level and one (st_dev, st_ino) per folder seen, so it walks
// 100k files in bounded memory. Symlinks are followed; a folder already seen
// (a loop, or the same folder reached twice) is skipped. Hidden entries
// (names starting with '.') are skipped unless asked for. Entries that cannot
// be read (a folder without permission, a dangling symlink) are reported to
// the error callback and skipped: the walk goes on. Only regular files are
// yielded (FIFOs, sockets and devices found in a folder are skipped and
// counted in skipped_filtered). A root given explicitly is always walked,
// even if hidden or not matching the globs; a root that is neither a regular
// file nor a folder is refused (CheckInputRoot).
//
// Globs (include/exclude here, and routing rules) use GlobMatch below.
//
// Thread safety: a SourceWalker is used by one thread. MakeCommandParser's
// parser is immutable and may run from many threads at once.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "sluice/clock.h"
#include "sluice/parser.h"
#include "sluice/status.h"

namespace sluice {

// Matches a '/'-separated relative path against a glob.
//  - A pattern without '/' matches the last path component at any depth
//    ("*.md" matches "a/b/x.md"), as in .gitignore.
//  - Otherwise the pattern is matched component by component with fnmatch()
//    (so '*' and '?' never match '/'); a component "**" matches zero or more
//    whole components ("manuals/**" matches everything under manuals/,
//    "**/faq.md" matches faq.md at any depth).
//  - A leading "./" or "/" in the pattern is ignored.
bool GlobMatch(std::string_view pattern, std::string_view relative_path);

struct WalkOptions {
  bool include_hidden = false;  // Default: false. Walk dot-files and dot-folders too.
  // When non-empty, a file is yielded only if its relative path matches one
  // of these globs (folders are always entered).
  std::vector<std::string> include_globs;
  // A file or folder whose relative path matches one of these is skipped
  // (a matching folder is not entered).
  std::vector<std::string> exclude_globs;
};

// Whether `root` can be given as an input: OK for a regular file or a folder
// (symlinks followed); NotFound "input 'ROOT' does not exist" when it does not
// exist; InvalidArgument naming what it is for a FIFO, a socket or a device
// (reading one would block or never end, and silently skipping a root the
// user named would report success for nothing: a stream is read from '-');
// IOError / PermissionDenied when it cannot be examined.
Status CheckInputRoot(const std::string& root);

// Called for each entry that could not be read; the walk continues.
using WalkErrorFn = std::function<void(const std::string& path, const Status& why)>;

struct WalkStats {
  uint64_t files = 0;             // yielded
  uint64_t dirs = 0;              // entered
  uint64_t errors = 0;            // reported to the error callback
  uint64_t skipped_repeats = 0;   // folders skipped as already seen (symlink loops)
  uint64_t skipped_filtered = 0;  // hidden, excluded, not included, not a regular file
};

class SourceWalker {
 public:
  // Checks every root with CheckInputRoot (a missing root is an error:
  // NotFound, nothing is walked; a FIFO or a device: InvalidArgument). `on_error` may be empty
  // (errors are then only counted).
  static Result<SourceWalker> Open(std::vector<std::string> roots, WalkOptions options,
                                   WalkErrorFn on_error = {});

  SourceWalker(SourceWalker&&) noexcept;
  SourceWalker& operator=(SourceWalker&&) noexcept;
  ~SourceWalker();

  // The next file, or nullopt when the walk is over. For a folder root,
  // relative_path is relative to it and root_name is its name; for a file
  // root, relative_path is the file name and root_name the name of the folder
  // holding it. domain/category are left empty (routing fills them).
  std::optional<SourceFile> Next();

  const WalkStats& stats() const;

 private:
  struct Impl;
  explicit SourceWalker(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

// A parser that runs `command` through /bin/sh -c with the input path as "$1"
// (passed as an argument, never spliced into the command text), and reads
// JSON Lines records from its stdout as they come, in the jsonl parser's
// record format ({"id","text","domain","category","title","author",
// "metadata"}). Missing domain/category default to the SourceFile's. A
// malformed line is dead-lettered and skipped. A non-zero exit fails the
// input with the exit code and the tail of stderr (kCorrupt); exceeding
// `timeout` kills the command's process group and fails it with kTimeout.
// Name() is "command"; it claims no extension and sniffs nothing.
std::unique_ptr<Parser> MakeCommandParser(std::string command, Duration timeout);

}  // namespace sluice
