#include "serve/path_policy.h"

#include <cstdlib>
#include <filesystem>

namespace sluice::serve {

namespace fs = std::filesystem;

std::string ResolvePath(const std::string& path) {
  std::error_code ec;
  // weakly_canonical: canonical() (symlinks followed) of the existing prefix,
  // the missing rest normalised; a missing component cannot be a symlink.
  fs::path resolved = fs::weakly_canonical(fs::absolute(path, ec), ec);
  if (ec) return fs::absolute(path, ec).lexically_normal().string();
  return resolved.lexically_normal().string();
}

bool IsWithin(const std::string& path, const std::string& root) {
  if (root == "/") return !path.empty() && path.front() == '/';
  if (path == root) return true;
  return path.size() > root.size() && path.compare(0, root.size(), root) == 0 &&
         path[root.size()] == '/';
}

Result<PathPolicy> PathPolicy::Create(const std::vector<std::string>& roots,
                                      const std::string& state_dir) {
  std::vector<std::string> canonical_roots;
  for (const std::string& root : roots) {
    char* resolved = ::realpath(root.c_str(), nullptr);
    if (resolved == nullptr) {
      return Status::InvalidArgument("--allow-root " + root + ": no such folder");
    }
    canonical_roots.emplace_back(resolved);
    std::free(resolved);
    std::error_code ec;
    if (!fs::is_directory(canonical_roots.back(), ec)) {
      return Status::InvalidArgument("--allow-root " + root + ": not a folder");
    }
  }
  char* state = ::realpath(state_dir.c_str(), nullptr);
  if (state == nullptr) return Status::InvalidArgument("--state-dir " + state_dir + ": missing");
  std::string canonical_state(state);
  std::free(state);
  return PathPolicy(std::move(canonical_roots), std::move(canonical_state));
}

Status PathPolicy::CheckInput(const std::string& path) const {
  const std::string resolved = ResolvePath(path);
  for (const std::string& root : roots_) {
    if (IsWithin(resolved, root)) return Status::OK();
  }
  if (roots_.empty()) {
    return Status::PermissionDenied("path '" + path +
                                    "' refused: the server allows no input paths (start it "
                                    "with --allow-root DIR), only inline jsonl");
  }
  return Status::PermissionDenied("path '" + path + "' is outside the allowed roots");
}

Status PathPolicy::CheckOutput(const std::string& path) const {
  const std::string resolved = ResolvePath(path);
  if (IsWithin(resolved, state_dir_)) return Status::OK();
  for (const std::string& root : roots_) {
    if (IsWithin(resolved, root)) return Status::OK();
  }
  return Status::PermissionDenied("path '" + path +
                                  "' is outside the allowed roots and the state folder");
}

}  // namespace sluice::serve
