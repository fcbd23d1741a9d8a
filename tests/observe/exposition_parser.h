// A strict reader of the Prometheus text exposition format (0.0.4) for the
// tests: every line must be a HELP, a TYPE or a sample of the family the
// last TYPE named (a histogram's samples end in _bucket, _sum or _count).
// Anything else is a failure with the offending line.
#pragma once

#include <cctype>
#include <limits>
#include <map>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

namespace sluice::testing {

struct Sample {
  std::string name;  // as written, e.g. "x_bucket"
  std::map<std::string, std::string> labels;
  double value = 0;
};

struct Family {
  std::string help;
  std::string type;
  std::vector<Sample> samples;
};

struct Exposition {
  std::map<std::string, Family> families;
  std::string error;  // empty: the text parsed
  // The one sample of `family` (with `name`, default the family's) whose
  // labels include every pair of `labels`.
  std::optional<double> Value(const std::string& family,
                              const std::map<std::string, std::string>& labels = {},
                              const std::string& name = "") const {
    auto it = families.find(family);
    if (it == families.end()) return std::nullopt;
    for (const Sample& s : it->second.samples) {
      if (s.name != (name.empty() ? family : name)) continue;
      bool match = true;
      for (const auto& [k, v] : labels) {
        auto l = s.labels.find(k);
        if (l == s.labels.end() || l->second != v) match = false;
      }
      if (match) return s.value;
    }
    return std::nullopt;
  }
};

inline bool IsMetricName(const std::string& name) {
  if (name.empty() || !(std::isalpha(static_cast<unsigned char>(name[0])) || name[0] == '_')) {
    return false;
  }
  for (char c : name) {
    if (!std::isalnum(static_cast<unsigned char>(c)) && c != '_' && c != ':') return false;
  }
  return true;
}

inline Exposition ParseExposition(const std::string& text) {
  Exposition out;
  std::istringstream in(text);
  std::string line;
  std::string current;  // family named by the last TYPE
  auto fail = [&](const std::string& why) {
    out.error = why + ": '" + line + "'";
    return out;
  };
  while (std::getline(in, line)) {
    if (line.empty()) continue;
    if (line.rfind("# HELP ", 0) == 0 || line.rfind("# TYPE ", 0) == 0) {
      const std::string rest = line.substr(7);
      const size_t space = rest.find(' ');
      if (space == std::string::npos) return fail("comment without a value");
      const std::string name = rest.substr(0, space);
      if (!IsMetricName(name)) return fail("bad metric name");
      if (line[2] == 'H') {
        out.families[name].help = rest.substr(space + 1);
      } else {
        const std::string type = rest.substr(space + 1);
        if (type != "counter" && type != "gauge" && type != "histogram" && type != "summary" &&
            type != "untyped") {
          return fail("unknown type");
        }
        if (!out.families[name].type.empty()) return fail("second TYPE for a family");
        out.families[name].type = type;
        current = name;
      }
      continue;
    }
    if (line[0] == '#') continue;
    // name{labels} value
    size_t i = 0;
    while (i < line.size() && line[i] != '{' && line[i] != ' ') ++i;
    Sample sample;
    sample.name = line.substr(0, i);
    if (!IsMetricName(sample.name)) return fail("bad sample name");
    if (i < line.size() && line[i] == '{') {
      ++i;
      while (i < line.size() && line[i] != '}') {
        const size_t eq = line.find('=', i);
        if (eq == std::string::npos || eq + 1 >= line.size() || line[eq + 1] != '"') {
          return fail("bad label");
        }
        const std::string key = line.substr(i, eq - i);
        if (!IsMetricName(key)) return fail("bad label name");
        std::string value;
        size_t j = eq + 2;
        for (; j < line.size() && line[j] != '"'; ++j) {
          if (line[j] == '\\') {
            if (++j >= line.size()) return fail("dangling escape");
            if (line[j] == 'n') {
              value += '\n';
            } else if (line[j] == '\\' || line[j] == '"') {
              value += line[j];
            } else {
              return fail("bad escape");
            }
          } else {
            value += line[j];
          }
        }
        if (j >= line.size()) return fail("unterminated label value");
        sample.labels[key] = value;
        i = j + 1;
        if (i < line.size() && line[i] == ',') ++i;
      }
      if (i >= line.size()) return fail("unterminated labels");
      ++i;
    }
    if (i >= line.size() || line[i] != ' ') return fail("no value");
    const std::string value = line.substr(i + 1);
    if (value == "+Inf") {
      sample.value = std::numeric_limits<double>::infinity();
    } else {
      size_t used = 0;
      try {
        sample.value = std::stod(value, &used);
      } catch (...) {
        return fail("bad value");
      }
      if (used != value.size()) return fail("trailing text after the value");
    }
    if (current.empty()) return fail("sample before any TYPE");
    const Family& family = out.families[current];
    const bool own = sample.name == current ||
                     (family.type == "histogram" &&
                      (sample.name == current + "_bucket" || sample.name == current + "_sum" ||
                       sample.name == current + "_count"));
    if (!own) return fail("sample outside its family " + current);
    out.families[current].samples.push_back(std::move(sample));
  }
  return out;
}

}  // namespace sluice::testing
