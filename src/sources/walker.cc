// SourceWalker: iterative depth-first walk with one sorted listing per depth
// level; see include/sluice/sources.h for the contract.
#include <dirent.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <set>
#include <utility>

#include "sluice/sources.h"

namespace sluice {
namespace {

std::string StripTrailingSlashes(std::string p) {
  while (p.size() > 1 && p.back() == '/') p.pop_back();
  return p;
}

std::string BaseName(const std::string& p) {
  const size_t slash = p.find_last_of('/');
  return slash == std::string::npos ? p : p.substr(slash + 1);
}

// The name of the folder `p` denotes, resolving "." and ".." through realpath.
std::string FolderName(const std::string& p) {
  std::string base = BaseName(p);
  if (base.empty() || base == "." || base == "..") {
    char* real = realpath(p.c_str(), nullptr);
    if (real != nullptr) {
      base = BaseName(real);
      free(real);
    }
  }
  return base.empty() ? "/" : base;
}

std::string ParentFolderName(const std::string& file_path) {
  char* real = realpath(file_path.c_str(), nullptr);
  std::string resolved = real != nullptr ? real : file_path;
  free(real);
  const size_t slash = resolved.find_last_of('/');
  if (slash == std::string::npos) return FolderName(".");
  if (slash == 0) return "/";
  return BaseName(resolved.substr(0, slash));
}

Status ErrnoStatus(const std::string& what, int err) {
  std::string msg = what + ": " + std::strerror(err);
  if (err == ENOENT || err == ENOTDIR || err == ELOOP) return Status::NotFound(std::move(msg));
  if (err == EACCES || err == EPERM) return Status::PermissionDenied(std::move(msg));
  return Status::IOError(std::move(msg));
}

}  // namespace

struct SourceWalker::Impl {
  struct Frame {
    std::string abs_dir;  // path to open entries with
    std::string rel_dir;  // '/'-separated, "" at the root
    std::vector<std::string> names;
    size_t next = 0;
  };

  std::vector<std::string> roots;
  WalkOptions options;
  WalkErrorFn on_error;
  WalkStats stats;

  size_t next_root = 0;
  std::string root_name;
  std::vector<Frame> stack;
  std::set<std::pair<dev_t, ino_t>> seen_dirs;

  void Report(const std::string& path, const Status& why) {
    ++stats.errors;
    if (on_error) on_error(path, why);
  }

  bool Excluded(const std::string& rel) const {
    for (const std::string& g : options.exclude_globs) {
      if (GlobMatch(g, rel)) return true;
    }
    return false;
  }

  bool Included(const std::string& rel) const {
    if (options.include_globs.empty()) return true;
    for (const std::string& g : options.include_globs) {
      if (GlobMatch(g, rel)) return true;
    }
    return false;
  }

  // Lists a folder (names only, sorted byte-wise) and pushes it.
  void Enter(const std::string& abs, const std::string& rel, const struct stat& st) {
    if (!seen_dirs.insert({st.st_dev, st.st_ino}).second) {
      ++stats.skipped_repeats;
      return;
    }
    DIR* dir = opendir(abs.c_str());
    if (dir == nullptr) {
      Report(abs, ErrnoStatus("cannot open folder " + abs, errno));
      return;
    }
    Frame frame;
    frame.abs_dir = abs;
    frame.rel_dir = rel;
    errno = 0;
    while (struct dirent* e = readdir(dir)) {
      const char* n = e->d_name;
      if (std::strcmp(n, ".") == 0 || std::strcmp(n, "..") == 0) continue;
      frame.names.emplace_back(n);
    }
    const int read_errno = errno;
    closedir(dir);
    if (read_errno != 0) Report(abs, ErrnoStatus("cannot list folder " + abs, read_errno));
    std::sort(frame.names.begin(), frame.names.end());
    ++stats.dirs;
    stack.push_back(std::move(frame));
  }

  SourceFile MakeFile(std::string path, std::string rel, const struct stat& st) {
    SourceFile f;
    f.path = std::move(path);
    f.relative_path = std::move(rel);
    f.root_name = root_name;
    f.size_bytes = static_cast<uint64_t>(st.st_size);
    f.mtime_ns = static_cast<int64_t>(st.st_mtim.tv_sec) * 1000000000 + st.st_mtim.tv_nsec;
    ++stats.files;
    return f;
  }

  // Starts the next root; returns a file when the root is a file.
  std::optional<SourceFile> StartRoot(const std::string& root) {
    struct stat st;
    if (stat(root.c_str(), &st) != 0) {
      Report(root, ErrnoStatus("cannot read " + root, errno));
      return std::nullopt;
    }
    if (S_ISDIR(st.st_mode)) {
      root_name = FolderName(root);
      Enter(root, "", st);
      return std::nullopt;
    }
    if (!S_ISREG(st.st_mode)) {  // became a FIFO or a device since Open
      Report(root, CheckInputRoot(root));
      return std::nullopt;
    }
    if (access(root.c_str(), R_OK) != 0) {
      Report(root, ErrnoStatus("cannot read " + root, errno));
      return std::nullopt;
    }
    root_name = ParentFolderName(root);
    return MakeFile(root, BaseName(root), st);
  }

  std::optional<SourceFile> Next() {
    for (;;) {
      if (stack.empty()) {
        if (next_root >= roots.size()) return std::nullopt;
        std::optional<SourceFile> f = StartRoot(roots[next_root++]);
        if (f) return f;
        continue;
      }
      Frame& top = stack.back();
      if (top.next >= top.names.size()) {
        stack.pop_back();
        continue;
      }
      const std::string name = std::move(top.names[top.next++]);
      if (!options.include_hidden && name[0] == '.') {
        ++stats.skipped_filtered;
        continue;
      }
      std::string rel = top.rel_dir.empty() ? name : top.rel_dir + "/" + name;
      std::string abs = top.abs_dir == "/" ? "/" + name : top.abs_dir + "/" + name;
      struct stat st;
      if (stat(abs.c_str(), &st) != 0) {
        const int err = errno;
        struct stat lst;
        const bool dangling = lstat(abs.c_str(), &lst) == 0 && S_ISLNK(lst.st_mode);
        Report(abs, ErrnoStatus(dangling ? "dangling symlink " + abs : "cannot read " + abs, err));
        continue;
      }
      if (Excluded(rel)) {
        ++stats.skipped_filtered;
        continue;
      }
      if (S_ISDIR(st.st_mode)) {
        Enter(abs, rel, st);  // may invalidate `top`
        continue;
      }
      if (!S_ISREG(st.st_mode) || !Included(rel)) {
        ++stats.skipped_filtered;
        continue;
      }
      if (access(abs.c_str(), R_OK) != 0) {
        Report(abs, ErrnoStatus("cannot read " + abs, errno));
        continue;
      }
      return MakeFile(std::move(abs), std::move(rel), st);
    }
  }
};

Status CheckInputRoot(const std::string& root) {
  struct stat st;
  if (root.empty() || stat(root.c_str(), &st) != 0) {
    const int err = root.empty() ? ENOENT : errno;
    if (err == ENOENT || err == ENOTDIR) {
      return Status::NotFound("input '" + root + "' does not exist");
    }
    return ErrnoStatus("cannot read input '" + root + "'", err);
  }
  if (S_ISDIR(st.st_mode) || S_ISREG(st.st_mode)) return Status::OK();
  const char* kind = S_ISFIFO(st.st_mode)   ? "a FIFO (named pipe)"
                     : S_ISSOCK(st.st_mode) ? "a socket"
                     : S_ISCHR(st.st_mode)  ? "a character device"
                     : S_ISBLK(st.st_mode)  ? "a block device"
                                            : "not a regular file";
  return Status::InvalidArgument("input '" + root + "' is " + kind +
                                 ": only regular files and folders are ingested (to read a "
                                 "stream, pipe it to 'sluice ingest -')");
}

Result<SourceWalker> SourceWalker::Open(std::vector<std::string> roots, WalkOptions options,
                                        WalkErrorFn on_error) {
  if (roots.empty()) return Status::InvalidArgument("no input roots given");
  for (std::string& r : roots) {
    r = StripTrailingSlashes(r);
    if (Status s = CheckInputRoot(r); !s.ok()) return s;
  }
  auto impl = std::make_unique<Impl>();
  impl->roots = std::move(roots);
  impl->options = std::move(options);
  impl->on_error = std::move(on_error);
  return SourceWalker(std::move(impl));
}

SourceWalker::SourceWalker(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
SourceWalker::SourceWalker(SourceWalker&&) noexcept = default;
SourceWalker& SourceWalker::operator=(SourceWalker&&) noexcept = default;
SourceWalker::~SourceWalker() = default;

std::optional<SourceFile> SourceWalker::Next() { return impl_->Next(); }
const WalkStats& SourceWalker::stats() const { return impl_->stats; }

}  // namespace sluice
