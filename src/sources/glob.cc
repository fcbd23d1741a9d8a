// GlobMatch: fnmatch per path component plus "**" (see sources.h).
#include <fnmatch.h>

#include <string>
#include <vector>

#include "sluice/sources.h"

namespace sluice {
namespace {

std::vector<std::string> SplitPath(std::string_view s) {
  std::vector<std::string> parts;
  size_t start = 0;
  while (start <= s.size()) {
    size_t slash = s.find('/', start);
    if (slash == std::string_view::npos) slash = s.size();
    if (slash > start) parts.emplace_back(s.substr(start, slash - start));
    start = slash + 1;
  }
  return parts;
}

bool MatchComponents(const std::vector<std::string>& pat, size_t pi,
                     const std::vector<std::string>& path, size_t si) {
  while (pi < pat.size()) {
    if (pat[pi] == "**") {
      // Collapse consecutive "**" and try every split point.
      while (pi < pat.size() && pat[pi] == "**") ++pi;
      if (pi == pat.size()) return true;
      for (size_t k = si; k <= path.size(); ++k) {
        if (MatchComponents(pat, pi, path, k)) return true;
      }
      return false;
    }
    if (si >= path.size()) return false;
    if (fnmatch(pat[pi].c_str(), path[si].c_str(), 0) != 0) return false;
    ++pi;
    ++si;
  }
  return si == path.size();
}

}  // namespace

bool GlobMatch(std::string_view pattern, std::string_view relative_path) {
  while (pattern.starts_with("./")) pattern.remove_prefix(2);
  while (pattern.starts_with("/")) pattern.remove_prefix(1);
  if (pattern.empty()) return false;
  if (pattern.find('/') == std::string_view::npos) {
    const size_t slash = relative_path.find_last_of('/');
    const std::string name(slash == std::string_view::npos ? relative_path
                                                           : relative_path.substr(slash + 1));
    return fnmatch(std::string(pattern).c_str(), name.c_str(), 0) == 0;
  }
  return MatchComponents(SplitPath(pattern), 0, SplitPath(relative_path), 0);
}

}  // namespace sluice
