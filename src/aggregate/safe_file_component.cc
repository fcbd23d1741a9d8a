// SafeFileComponent: domain and category names become one path component.
#include <string>
#include <string_view>

#include "common/hashing.h"
#include "common/utf8.h"
#include "sluice/aggregator.h"

namespace sluice {

namespace {
constexpr size_t kMaxComponentBytes = 80;

bool IsKept(char c) {
  return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '.' ||
         c == '_' || c == '-';
}
}  // namespace

std::string SafeFileComponent(std::string_view name) {
  std::string out;
  out.reserve(std::min(name.size(), kMaxComponentBytes) + 9);
  size_t i = 0;
  while (i < name.size() && out.size() < kMaxComponentBytes) {
    const char c = name[i];
    if (static_cast<unsigned char>(c) >= 0x80) {
      // One '_' per code point (or per invalid byte), so the output stays
      // ASCII and any cut is UTF-8 safe.
      const size_t len = Utf8SequenceLength(name, i);
      i += len == 0 ? 1 : len;
      out.push_back('_');
      continue;
    }
    ++i;
    if (!IsKept(c)) {
      out.push_back('_');
    } else if (c == '.' && (out.empty() || out.back() == '.')) {
      // No leading dot (hidden files, "." and "..") and no "..".
      out.push_back('_');
    } else {
      out.push_back(c);
    }
  }
  if (out.empty()) out.push_back('_');  // (not `out = "_"`: GCC 12 -Wrestrict false positive)
  if (out != name) {
    // Distinct names that sanitise alike ("a/b", "a?b", "a_b") stay distinct.
    out.push_back('-');
    out.append(Hex64(Hash64(name)).substr(0, 8));
  }
  return out;
}

}  // namespace sluice
