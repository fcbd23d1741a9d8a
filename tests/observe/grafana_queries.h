// The PromQL queries of contrib/grafana/sluice.json (every panel target's
// "expr"), for the dashboard tests. Tests run with the repository root as
// working directory.
#pragma once

#include <simdjson.h>

#include <string>
#include <vector>

namespace sluice::testing {

inline constexpr const char* kDashboardPath = "contrib/grafana/sluice.json";

// Empty when the file does not parse (the JSON test says why).
inline std::vector<std::string> DashboardQueries() {
  std::vector<std::string> out;
  simdjson::dom::parser parser;
  simdjson::dom::element doc;
  if (parser.load(kDashboardPath).get(doc) != simdjson::SUCCESS) return out;
  simdjson::dom::array panels;
  if (doc["panels"].get(panels) != simdjson::SUCCESS) return out;
  for (simdjson::dom::element panel : panels) {
    simdjson::dom::array targets;
    if (panel["targets"].get(targets) != simdjson::SUCCESS) continue;
    for (simdjson::dom::element target : targets) {
      std::string_view expr;
      if (target["expr"].get(expr) == simdjson::SUCCESS) out.emplace_back(expr);
    }
  }
  return out;
}

}  // namespace sluice::testing
