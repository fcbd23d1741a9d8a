// Routing: decides a file's domain and category from its path before it is
// parsed. Rules come from a TOML file:
//
//   [[route]]
//   glob = "manuals/pumps/**"   # GlobMatch (see sources.h) on the relative path
//   domain = "engineering"
//   category = "pumps"          # optional
//
// The first rule whose glob matches wins; a field a rule leaves out takes the
// default. Default: domain = the first folder under the root (the root's name
// for a file directly in the root), category = the second folder if there is
// one, else "general". A document's own metadata (Markdown front matter, JSONL
// fields) overrides the route later, in the parser.
//
// Thread safety: a Router is immutable after loading; Route() is thread-safe.
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "sluice/parser.h"
#include "sluice/status.h"

namespace sluice {

struct RouteRule {
  std::string glob;      // required
  std::string domain;    // empty = default
  std::string category;  // empty = default
};

struct RouteDecision {
  std::string domain;
  std::string category;
};

class Router {
 public:
  explicit Router(std::vector<RouteRule> rules = {}) : rules_(std::move(rules)) {}

  // Parses rules from TOML text. Only [[route]] tables with the keys glob,
  // domain, category (strings) are accepted; anything else is an
  // InvalidArgument naming the key and its line ("routes.toml:7: unknown key
  // 'domian' in [[route]]"). `source_name` prefixes messages.
  static Result<Router> Parse(std::string_view toml_text, std::string_view source_name);
  // Reads and parses a TOML file (NotFound/IOError when it cannot be read).
  static Result<Router> LoadFile(const std::string& path);

  RouteDecision Route(const SourceFile& file) const;
  const std::vector<RouteRule>& rules() const { return rules_; }

 private:
  std::vector<RouteRule> rules_;
};

// The default decision (no rule matched), see the header comment.
RouteDecision DefaultRoute(const SourceFile& file);

}  // namespace sluice
