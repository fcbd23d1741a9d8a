#include "sources/formats/format_util.h"

#include <sys/stat.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <memory>
#include <vector>

#include <fmt/format.h>

namespace sluice::formats {

Result<std::string> ReadFileBounded(const std::string& path, uint64_t max_bytes) {
  struct stat st;
  if (::stat(path.c_str(), &st) != 0) {
    if (errno == ENOENT) return Status::NotFound(fmt::format("{}: no such file", path));
    return Status::IOError(fmt::format("{}: {}", path, std::strerror(errno)));
  }
  if (static_cast<uint64_t>(st.st_size) > max_bytes) {
    return Status::InvalidArgument(
        fmt::format("{}: file of {} bytes exceeds the {} byte limit for this format", path,
                    static_cast<uint64_t>(st.st_size), max_bytes));
  }
  std::unique_ptr<FILE, int (*)(FILE*)> f(std::fopen(path.c_str(), "rb"), &std::fclose);
  if (!f) return Status::IOError(fmt::format("{}: {}", path, std::strerror(errno)));
  std::string data;
  data.reserve(static_cast<size_t>(st.st_size));
  char buf[64 * 1024];
  for (;;) {
    const size_t n = std::fread(buf, 1, sizeof(buf), f.get());
    if (n > 0) {
      if (data.size() + n > max_bytes) {
        return Status::InvalidArgument(
            fmt::format("{}: file exceeds the {} byte limit for this format", path, max_bytes));
      }
      data.append(buf, n);
    }
    if (n < sizeof(buf)) {
      if (std::ferror(f.get())) return Status::IOError(fmt::format("{}: read error", path));
      break;
    }
  }
  return data;
}

SourceInfo BaseSourceInfo(const SourceFile& file) {
  SourceInfo info;
  info.source_id = file.relative_path.empty() ? file.path : file.relative_path;
  info.path = file.path == "-" ? std::string() : file.path;
  info.domain = file.domain;
  info.category = file.category;
  info.size_bytes = file.size_bytes;
  info.mtime_ns = file.mtime_ns;
  return info;
}

static bool IsAsciiSpace(char c) {
  return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v';
}

void AppendCollapsed(std::string_view text, std::string& out) {
  for (size_t i = 0; i < text.size(); ++i) {
    const char c = text[i];
    // U+00A0 (no-break space) counts as a space: "1.&nbsp;Introduction" is
    // searched and embedded as "1. Introduction".
    const bool nbsp = c == '\xC2' && i + 1 < text.size() && text[i + 1] == '\xA0';
    if (IsAsciiSpace(c) || nbsp) {
      if (nbsp) ++i;
      if (!out.empty() && out.back() != ' ' && out.back() != '\n') out.push_back(' ');
    } else {
      out.push_back(c);
    }
  }
}

std::string_view TrimAscii(std::string_view s) {
  while (!s.empty() && IsAsciiSpace(s.front())) s.remove_prefix(1);
  while (!s.empty() && IsAsciiSpace(s.back())) s.remove_suffix(1);
  return s;
}

bool StartsWithNoCase(std::string_view head, std::string_view prefix) {
  if (head.size() < prefix.size()) return false;
  for (size_t i = 0; i < prefix.size(); ++i) {
    char a = head[i], b = prefix[i];
    if (a >= 'A' && a <= 'Z') a = static_cast<char>(a - 'A' + 'a');
    if (b >= 'A' && b <= 'Z') b = static_cast<char>(b - 'A' + 'a');
    if (a != b) return false;
  }
  return true;
}

static int HexValue(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

std::string_view ArchiveDirName(std::string_view path) {
  const size_t slash = path.rfind('/');
  return slash == std::string_view::npos ? std::string_view() : path.substr(0, slash + 1);
}

std::string ResolveArchivePath(std::string_view base_dir, std::string_view href) {
  const size_t hash = href.find('#');
  if (hash != std::string_view::npos) href = href.substr(0, hash);
  std::string decoded;
  for (size_t i = 0; i < href.size(); ++i) {
    if (href[i] == '%' && i + 2 < href.size() && HexValue(href[i + 1]) >= 0 &&
        HexValue(href[i + 2]) >= 0) {
      decoded.push_back(static_cast<char>(HexValue(href[i + 1]) * 16 + HexValue(href[i + 2])));
      i += 2;
    } else {
      decoded.push_back(href[i]);
    }
  }
  std::string joined;
  if (!decoded.empty() && decoded.front() == '/') {
    joined = decoded.substr(1);
  } else {
    joined.assign(base_dir);
    joined += decoded;
  }
  std::vector<std::string_view> segments;
  std::string_view rest(joined);
  while (!rest.empty()) {
    const size_t slash = rest.find('/');
    std::string_view seg = rest.substr(0, slash);
    rest = slash == std::string_view::npos ? std::string_view() : rest.substr(slash + 1);
    if (seg.empty() || seg == ".") continue;
    if (seg == "..") {
      if (segments.empty()) return std::string();
      segments.pop_back();
      continue;
    }
    segments.push_back(seg);
  }
  std::string out;
  for (size_t i = 0; i < segments.size(); ++i) {
    if (i > 0) out.push_back('/');
    out.append(segments[i]);
  }
  return out;
}

}  // namespace sluice::formats
