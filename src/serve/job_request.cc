#include "serve/job_request.h"

#include <fmt/format.h>
#include <simdjson.h>

#include <CLI/CLI.hpp>
#include <cstdlib>

#include "cli/ingest_flags.h"
#include "common/json_writer.h"
#include "sluice/embed.h"
#include "sluice/store.h"

namespace sluice::serve {

namespace {

// Settings the config file accepts that a client must not set: each would
// reach past its job into the server. The reason goes into the 400.
struct RefusedKey {
  const char* key;
  const char* reason;
};
constexpr RefusedKey kRefusedKeys[] = {
    {"parser-cmd", "it would run a program on the server"},
    {"api-key-env", "it would read the server's environment (send \"api-key\" instead)"},
    {"on-complete",
     "it would run a program on the server (the server's own --on-complete runs "
     "after every job)"},
    {"on-complete-shell", "it would run a program on the server"},
    {"on-complete-timeout", "the hand-off is the server's setting (serve --on-complete)"},
    {"on-complete-url",
     "the server would POST to any address (the server's own "
     "--on-complete-url receives every job's report)"},
    {"store-env", "it would read the server's environment (give \"store\")"},
    {"budget-redis",
     "it would connect the server to any Redis and pace the server's other jobs (the shared "
     "rate budget is the server's setting)"},
    {"budget-redis-env", "it would read the server's environment"},
    {"budget-name", "the shared rate budget is the server's setting"},
    {"metrics-listen", "the server's metrics are not a job's setting"},
    {"metrics-allow-remote", "the server's metrics are not a job's setting"},
    {"log-level", "logging is the server's setting"},
    {"log-format", "logging is the server's setting"},
    {"progress", "a job's progress is served at /v1/jobs/{id}/events"},
    {"no-progress", "a job's progress is served at /v1/jobs/{id}/events"},
    {"progress-interval", "a job's progress is served at /v1/jobs/{id}/events"},
    {"quiet", "a job's progress is served at /v1/jobs/{id}/events"},
};

constexpr const char* kApiKey = "api-key";
constexpr const char* kRedacted = "[redacted]";

// The ingest flag table (names only; the values bound are thrown away).
const CLI::App& FlagTable() {
  static const CLI::App* table = [] {
    static IngestOptions options;
    static cli::IngestFlagExtras extras;
    auto* app = new CLI::App("sluice ingest");
    cli::AddIngestFlags(*app, options, extras);
    return app;
  }();
  return *table;
}

Result<std::string> ScalarText(const std::string& key, simdjson::dom::element value) {
  switch (value.type()) {
    case simdjson::dom::element_type::STRING:
      return std::string(std::string_view(value.get_string()));
    case simdjson::dom::element_type::BOOL:
      return std::string(bool(value.get_bool()) ? "true" : "false");
    case simdjson::dom::element_type::INT64:
      return std::to_string(int64_t(value.get_int64()));
    case simdjson::dom::element_type::UINT64:
      return std::to_string(uint64_t(value.get_uint64()));
    case simdjson::dom::element_type::DOUBLE:
      return fmt::format("{}", double(value.get_double()));
    default:
      return Status::InvalidArgument("option '" + key +
                                     "' must be a string, number, boolean or a list of them");
  }
}

Result<std::string> StringField(simdjson::dom::object object, const char* name,
                                const std::string& where) {
  simdjson::dom::element e;
  if (object[name].get(e) != simdjson::SUCCESS) return std::string();
  std::string_view s;
  if (e.get_string().get(s) != simdjson::SUCCESS) {
    return Status::InvalidArgument(where + ": '" + name + "' must be a string");
  }
  return std::string(s);
}

Result<std::vector<RouteRule>> ParseRoutes(simdjson::dom::element value) {
  simdjson::dom::array rules;
  if (value.get_array().get(rules) != simdjson::SUCCESS) {
    return Status::InvalidArgument("option 'route' must be a list of {glob, domain, category}");
  }
  std::vector<RouteRule> routes;
  for (simdjson::dom::element rule_element : rules) {
    simdjson::dom::object rule;
    if (rule_element.get_object().get(rule) != simdjson::SUCCESS) {
      return Status::InvalidArgument("option 'route': every entry must be an object");
    }
    for (auto field : rule) {
      if (field.key != "glob" && field.key != "domain" && field.key != "category") {
        return Status::InvalidArgument("option 'route': unknown key '" + std::string(field.key) +
                                       "' (expected glob, domain, category)");
      }
    }
    RouteRule r;
    for (auto [name, target] : {std::pair{"glob", &r.glob}, std::pair{"domain", &r.domain},
                                std::pair{"category", &r.category}}) {
      auto text = StringField(rule, name, "option 'route'");
      if (!text.ok()) return text.status();
      *target = *text;
    }
    if (r.glob.empty()) return Status::InvalidArgument("option 'route': every entry needs a glob");
    routes.push_back(std::move(r));
  }
  return routes;
}

void WriteRoutes(JsonWriter& w, const std::vector<RouteRule>& routes) {
  w.BeginArray();
  for (const RouteRule& r : routes) {
    w.BeginObject().Key("glob").String(r.glob);
    w.Key("domain").String(r.domain).Key("category").String(r.category).EndObject();
  }
  w.EndArray();
}

bool Given(const JobRequest& request, std::string_view key) {
  for (const JobSetting& s : request.settings) {
    if (s.key == key) return true;
  }
  return false;
}

}  // namespace

std::string InlineJsonlPath(const std::string& job_dir) { return job_dir + "/input.jsonl"; }

Result<ParsedJobBody> ParseJobBody(std::string_view body) {
  simdjson::dom::parser parser;
  simdjson::padded_string padded(body);
  simdjson::dom::element root;
  if (auto error = parser.parse(padded).get(root); error) {
    return Status::InvalidArgument(std::string("the body is not JSON: ") +
                                   simdjson::error_message(error));
  }
  simdjson::dom::object object;
  if (root.get_object().get(object) != simdjson::SUCCESS) {
    return Status::InvalidArgument("the body must be a JSON object");
  }
  ParsedJobBody parsed;
  JobRequest& request = parsed.request;
  bool has_paths = false, has_jsonl = false;
  for (auto [key_view, value] : object) {
    const std::string key(key_view);
    if (key == "paths") {
      simdjson::dom::array paths;
      if (value.get_array().get(paths) != simdjson::SUCCESS) {
        return Status::InvalidArgument("'paths' must be a list of strings");
      }
      for (simdjson::dom::element p : paths) {
        std::string_view path;
        if (p.get_string().get(path) != simdjson::SUCCESS || path.empty()) {
          return Status::InvalidArgument("'paths' must be a list of non-empty strings");
        }
        request.paths.emplace_back(path);
      }
      has_paths = true;
      continue;
    }
    if (key == "jsonl") {
      std::string_view records;
      if (value.get_string().get(records) != simdjson::SUCCESS) {
        return Status::InvalidArgument("'jsonl' must be a string of JSON Lines records");
      }
      parsed.jsonl = std::string(records);
      request.inline_jsonl = true;
      has_jsonl = true;
      continue;
    }
    if (key == kApiKey) {
      std::string_view api_key;
      if (value.get_string().get(api_key) != simdjson::SUCCESS) {
        return Status::InvalidArgument("'api-key' must be a string");
      }
      request.api_key = std::string(api_key);
      continue;
    }
    if (key == "route") {
      auto routes = ParseRoutes(value);
      if (!routes.ok()) return routes.status();
      request.routes = std::move(*routes);
      continue;
    }
    for (const RefusedKey& refused : kRefusedKeys) {
      if (key == refused.key) {
        return Status::InvalidArgument("option '" + key +
                                       "' is not accepted by sluice serve: " + refused.reason);
      }
    }
    if (!cli::IsConfigKey(FlagTable(), key)) {
      return Status::InvalidArgument(
          "unknown option '" + key +
          "' (options are the config file's keys: the long flag names of `sluice ingest --help`)");
    }
    JobSetting setting{key, {}, false};
    if (simdjson::dom::array list; value.get_array().get(list) == simdjson::SUCCESS) {
      setting.is_list = true;
      for (simdjson::dom::element element : list) {
        auto text = ScalarText(key, element);
        if (!text.ok()) return text.status();
        setting.values.push_back(std::move(*text));
      }
    } else {
      auto text = ScalarText(key, value);
      if (!text.ok()) return text.status();
      setting.values.push_back(std::move(*text));
    }
    request.settings.push_back(std::move(setting));
  }
  if (has_paths == has_jsonl) {
    return Status::InvalidArgument("give either 'paths' (a list) or 'jsonl' (inline records)");
  }
  if (has_paths && request.paths.empty()) {
    return Status::InvalidArgument("'paths' must not be empty");
  }
  return parsed;
}

std::string JobRequestJson(const JobRequest& request, bool redact) {
  std::string out;
  JsonWriter w(out);
  w.BeginObject();
  if (request.inline_jsonl) {
    w.Key("jsonl").Bool(true);
  } else {
    w.Key("paths").BeginArray();
    for (const std::string& p : request.paths) w.String(p);
    w.EndArray();
  }
  w.Key("options").BeginObject();
  for (const JobSetting& s : request.settings) {
    w.Key(s.key);
    auto text = [&](const std::string& value) {
      return redact && (s.key == "store" || s.key == "endpoint")
                 ? (s.key == "store" ? RedactUri(value) : RedactEndpoint(value))
                 : value;
    };
    if (s.is_list) {
      w.BeginArray();
      for (const std::string& v : s.values) w.String(text(v));
      w.EndArray();
    } else {
      w.String(s.values.empty() ? std::string() : text(s.values.front()));
    }
  }
  if (!request.routes.empty()) {
    w.Key("route");
    WriteRoutes(w, request.routes);
  }
  w.EndObject();
  if (!request.api_key.empty()) w.Key(kApiKey).String(redact ? kRedacted : request.api_key);
  w.EndObject();
  return out;
}

Result<JobRequest> ParseJobRequestJson(std::string_view json) {
  simdjson::dom::parser parser;
  simdjson::padded_string padded(json);
  simdjson::dom::object object;
  if (parser.parse(padded).get_object().get(object) != simdjson::SUCCESS) {
    return Status::Corrupt("the stored job request is not a JSON object");
  }
  JobRequest request;
  if (bool inline_jsonl; object["jsonl"].get_bool().get(inline_jsonl) == simdjson::SUCCESS) {
    request.inline_jsonl = inline_jsonl;
  }
  if (simdjson::dom::array paths; object["paths"].get_array().get(paths) == simdjson::SUCCESS) {
    for (simdjson::dom::element p : paths) {
      std::string_view s;
      if (p.get_string().get(s) != simdjson::SUCCESS) return Status::Corrupt("stored paths");
      request.paths.emplace_back(s);
    }
  }
  if (std::string_view key; object[kApiKey].get_string().get(key) == simdjson::SUCCESS) {
    request.api_key = std::string(key);
  }
  simdjson::dom::object options;
  if (object["options"].get_object().get(options) != simdjson::SUCCESS) {
    return Status::Corrupt("the stored job request has no options");
  }
  for (auto [key, value] : options) {
    if (key == "route") {
      auto routes = ParseRoutes(value);
      if (!routes.ok()) return routes.status();
      request.routes = std::move(*routes);
      continue;
    }
    JobSetting setting{std::string(key), {}, false};
    if (simdjson::dom::array list; value.get_array().get(list) == simdjson::SUCCESS) {
      setting.is_list = true;
      for (simdjson::dom::element e : list) {
        std::string_view s;
        if (e.get_string().get(s) != simdjson::SUCCESS) return Status::Corrupt("stored option");
        setting.values.emplace_back(s);
      }
    } else {
      std::string_view s;
      if (value.get_string().get(s) != simdjson::SUCCESS) return Status::Corrupt("stored option");
      setting.values.emplace_back(s);
    }
    request.settings.push_back(std::move(setting));
  }
  return request;
}

Result<IngestOptions> BuildIngestOptions(const JobRequest& request, const std::string& job_dir,
                                         const JobDefaults& defaults, const PathPolicy& policy) {
  std::vector<std::string> inputs;
  if (request.inline_jsonl) {
    inputs.push_back(InlineJsonlPath(job_dir));
  } else {
    for (const std::string& path : request.paths) {
      if (Status s = policy.CheckInput(path); !s.ok()) return s;
      inputs.push_back(path);
    }
  }
  std::vector<std::string> args;
  for (const JobSetting& s : request.settings) {
    for (const std::string& v : s.values) args.push_back(cli::ConfigSettingArg(s.key, v));
  }
  IngestOptions base;
  base.store_uri = defaults.store_uri;
  base.aggregate.out_dir = job_dir + "/out";
  base.progress = false;  // served at /events instead
  base.routes = request.routes;
  cli::IngestFlagExtras extras;
  extras.api_key_env = defaults.api_key_env;
  auto built = cli::IngestOptionsFromArgs(args, inputs, std::move(base), extras);
  if (!built.ok()) return built.status();
  IngestOptions& o = *built;

  // The server's key goes only to the server's endpoint.
  const char* server_endpoint = std::getenv("OPENAI_BASE_URL");
  const bool own_endpoint = Given(request, "endpoint") &&
                            o.http.endpoint != (server_endpoint != nullptr ? server_endpoint : "");
  if (!request.api_key.empty()) {
    o.http.api_key = request.api_key;
  } else if (own_endpoint) {
    o.http.api_key.clear();
  }

  if (!o.routes_file.empty()) {
    if (Status s = policy.CheckInput(o.routes_file); !s.ok()) return s;
  }
  if (o.store_uri != defaults.store_uri && o.store_uri.rfind("sqlite:", 0) == 0) {
    std::string path = o.store_uri.substr(7);
    if (path.rfind("//", 0) == 0) path = path.substr(2);
    if (Status s = policy.CheckOutput(path); !s.ok()) return s;
  }
  for (const std::string* output : {&o.aggregate.out_dir, &o.dead_letter_path, &o.report_path,
                                    &o.trace_path, &o.html_report_path}) {
    if (output->empty()) continue;
    if (Status s = policy.CheckOutput(*output); !s.ok()) return s;
  }
  return built;
}

}  // namespace sluice::serve
