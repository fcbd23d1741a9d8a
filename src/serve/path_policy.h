// Which filesystem paths a `sluice serve` job may name: its inputs must lie
// under one of the configured roots (--allow-root), its outputs (store file,
// aggregate folder, dead letters, reports) under a root or the server's state
// folder. Paths are resolved the way the kernel will open them (realpath of
// the longest existing prefix, the rest normalised), so neither ".." nor a
// symlink inside a root can reach outside it.
//
// What it cannot stop: a symlink swapped in after the check (the job then
// opens what the link points to at that moment). Roots should not be
// writable by the API's clients through other means.
//
// Thread safety: immutable after construction; every method is const.
#pragma once

#include <string>
#include <vector>

#include "sluice/status.h"

namespace sluice::serve {

class PathPolicy {
 public:
  // REQUIRES: every root and `state_dir` exist. InvalidArgument naming a
  // root that cannot be resolved.
  static Result<PathPolicy> Create(const std::vector<std::string>& roots,
                                   const std::string& state_dir);

  // OK when `path` resolves inside a root; PermissionDenied naming `path`
  // otherwise (also when no root is configured).
  Status CheckInput(const std::string& path) const;
  // OK when `path` resolves inside a root or the state folder; else
  // PermissionDenied naming it.
  Status CheckOutput(const std::string& path) const;

  const std::vector<std::string>& roots() const { return roots_; }

 private:
  PathPolicy(std::vector<std::string> roots, std::string state_dir)
      : roots_(std::move(roots)), state_dir_(std::move(state_dir)) {}

  std::vector<std::string> roots_;  // canonical
  std::string state_dir_;           // canonical
};

// The path as the kernel would reach it: the realpath of its longest existing
// prefix, followed by the rest lexically normalised (relative paths against
// the working directory).
std::string ResolvePath(const std::string& path);

// Whether canonical `path` is `root` or below it.
bool IsWithin(const std::string& path, const std::string& root);

}  // namespace sluice::serve
