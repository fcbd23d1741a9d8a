// ParserRegistry: picks a parser by content sniffing first, then by the
// file's extension (case-insensitive), then falls back to "text" for content
// that looks like text (no NUL byte in the head, or a UTF-16 BOM).
#include <algorithm>
#include <cctype>

#include "sluice/parser.h"

namespace sluice {
namespace {

std::string LowerExtension(std::string_view path) {
  if (path == "-") return "-";
  const size_t slash = path.find_last_of('/');
  std::string_view name = slash == std::string_view::npos ? path : path.substr(slash + 1);
  const size_t dot = name.find_last_of('.');
  if (dot == std::string_view::npos || dot == 0) return "";
  std::string ext(name.substr(dot + 1));
  std::transform(ext.begin(), ext.end(), ext.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return ext;
}

bool LooksLikeText(std::string_view head) {
  if (head.size() >= 2 &&
      ((head[0] == '\xFF' && head[1] == '\xFE') || (head[0] == '\xFE' && head[1] == '\xFF'))) {
    return true;
  }
  return head.find('\0') == std::string_view::npos;
}

}  // namespace

void ParserRegistry::Add(std::unique_ptr<Parser> parser) { parsers_.push_back(std::move(parser)); }

const Parser* ParserRegistry::Find(std::string_view path, std::string_view head) const {
  for (const auto& p : parsers_) {
    if (p->Sniff(head)) return p.get();
  }
  const std::string ext = LowerExtension(path);
  if (!ext.empty()) {
    for (const auto& p : parsers_) {
      for (const std::string& e : p->Extensions()) {
        if (e == ext) return p.get();
      }
    }
  }
  if (path != "-" && LooksLikeText(head)) return FindByName("text");
  return nullptr;
}

const Parser* ParserRegistry::FindByName(std::string_view name) const {
  for (const auto& p : parsers_) {
    if (p->Name() == name) return p.get();
  }
  return nullptr;
}

std::vector<std::string> ParserRegistry::Names() const {
  std::vector<std::string> names;
  names.reserve(parsers_.size());
  for (const auto& p : parsers_) names.emplace_back(p->Name());
  return names;
}

}  // namespace sluice
