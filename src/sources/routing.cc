// Router: [[route]] rules from TOML (toml++), first match wins; see
// include/sluice/routing.h.
#include "sluice/routing.h"

#include <toml++/toml.h>

#include <fstream>
#include <sstream>

#include "sluice/sources.h"

namespace sluice {
namespace {

std::string At(std::string_view source_name, const toml::source_region& where) {
  return std::string(source_name) + ":" + std::to_string(where.begin.line);
}

}  // namespace

Result<Router> Router::Parse(std::string_view toml_text, std::string_view source_name) {
  toml::table root;
  try {
    root = toml::parse(toml_text, source_name);
  } catch (const toml::parse_error& e) {
    return Status::InvalidArgument(At(source_name, e.source()) + ": " +
                                   std::string(e.description()));
  }
  std::vector<RouteRule> rules;
  for (auto&& [key, node] : root) {
    if (key.str() != "route") {
      return Status::InvalidArgument(At(source_name, key.source()) + ": unknown key '" +
                                     std::string(key.str()) + "' (expected [[route]] tables)");
    }
    const toml::array* routes = node.as_array();
    if (routes == nullptr || !routes->is_array_of_tables()) {
      return Status::InvalidArgument(At(source_name, key.source()) +
                                     ": 'route' must be written as [[route]] tables");
    }
    for (const toml::node& entry : *routes) {
      const toml::table& tbl = *entry.as_table();
      RouteRule rule;
      for (auto&& [rkey, rnode] : tbl) {
        std::string* into = nullptr;
        if (rkey.str() == "glob") {
          into = &rule.glob;
        } else if (rkey.str() == "domain") {
          into = &rule.domain;
        } else if (rkey.str() == "category") {
          into = &rule.category;
        } else {
          return Status::InvalidArgument(At(source_name, rkey.source()) + ": unknown key '" +
                                         std::string(rkey.str()) +
                                         "' in [[route]] (expected glob, domain, category)");
        }
        const std::optional<std::string> value = rnode.value<std::string>();
        if (!value || !rnode.is_string()) {
          return Status::InvalidArgument(At(source_name, rkey.source()) + ": '" +
                                         std::string(rkey.str()) + "' must be a string");
        }
        *into = *value;
      }
      if (rule.glob.empty()) {
        return Status::InvalidArgument(At(source_name, tbl.source()) +
                                       ": [[route]] needs a non-empty 'glob'");
      }
      rules.push_back(std::move(rule));
    }
  }
  return Router(std::move(rules));
}

Result<Router> Router::LoadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return Status::NotFound("cannot open routing file " + path);
  std::ostringstream text;
  text << in.rdbuf();
  if (in.bad()) return Status::IOError("cannot read routing file " + path);
  return Parse(text.str(), path);
}

RouteDecision DefaultRoute(const SourceFile& file) {
  RouteDecision d;
  const std::string& rel = file.relative_path;
  const size_t first = rel.find('/');
  if (first == std::string::npos) {
    d.domain = file.root_name;
    d.category = "general";
    return d;
  }
  d.domain = rel.substr(0, first);
  const size_t second = rel.find('/', first + 1);
  d.category = second == std::string::npos ? "general" : rel.substr(first + 1, second - first - 1);
  return d;
}

RouteDecision Router::Route(const SourceFile& file) const {
  RouteDecision d = DefaultRoute(file);
  for (const RouteRule& rule : rules_) {
    if (!GlobMatch(rule.glob, file.relative_path)) continue;
    if (!rule.domain.empty()) d.domain = rule.domain;
    if (!rule.category.empty()) d.category = rule.category;
    break;
  }
  return d;
}

}  // namespace sluice
