// A job as a client submits it to `sluice serve` (POST /v1/jobs), and how it
// becomes the IngestOptions of a run.
//
// The body is one JSON object: "paths" (a list of files or folders) or
// "jsonl" (JSON Lines records inline, written to the job's folder), an
// optional "api-key" (the job's own key for the embeddings API) and any
// setting the config file accepts, under the same key with the same meaning
// (`sluice ingest --help`'s long flag names; "route" a list of
// {glob, domain, category} objects). The settings go through the ingest
// flag table itself (cli/ingest_flags.h), so a value is checked exactly as
// on the command line. Unknown keys are refused, and so are the few settings
// that would reach past the job into the server (running a program, reading
// the server's environment, server-wide logging and metrics).
//
// Thread safety: plain data and pure functions.
#pragma once

#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "serve/path_policy.h"
#include "sluice/pipeline.h"
#include "sluice/routing.h"
#include "sluice/status.h"

namespace sluice::serve {

// One config setting: a key and its value(s) as text ("true", "64", "a.md").
struct JobSetting {
  std::string key;
  std::vector<std::string> values;
  bool is_list = false;  // given as a JSON array
};

struct JobRequest {
  std::vector<std::string> paths;  // as given; empty when inline_jsonl
  bool inline_jsonl = false;       // the input is the job folder's input.jsonl
  std::vector<JobSetting> settings;
  std::vector<RouteRule> routes;
  std::string api_key;  // secret: never in a response or a log
};

struct ParsedJobBody {
  JobRequest request;
  std::string jsonl;  // the inline records when request.inline_jsonl
};

// Parses a POST /v1/jobs body. InvalidArgument naming the offending key (an
// unknown key, a refused one, a value of the wrong JSON type, neither or both
// of "paths" and "jsonl").
Result<ParsedJobBody> ParseJobBody(std::string_view body);

// The request as stored in the job's file (`redact`: false, secrets kept; the
// file is private) or shown in a response (`redact`: true: the API key
// replaced, a store URI's password removed).
std::string JobRequestJson(const JobRequest& request, bool redact);
// Reads JobRequestJson(request, /*redact=*/false) back.
Result<JobRequest> ParseJobRequestJson(std::string_view json);

// What every job starts from: the server's settings.
struct JobDefaults {
  std::string store_uri;    // when the job names no "store"
  std::string api_key_env;  // the server's variable holding the API key
};

// The run's options: the job's settings over `defaults`, its outputs in
// `job_dir` unless it names others. InvalidArgument (400) for a value the
// flag table refuses; PermissionDenied (403) naming a path outside the
// policy. The server's API key is used only with the server's endpoint
// (OPENAI_BASE_URL): a job naming another endpoint brings its own "api-key",
// so a client cannot send the server's key elsewhere.
Result<IngestOptions> BuildIngestOptions(const JobRequest& request, const std::string& job_dir,
                                         const JobDefaults& defaults, const PathPolicy& policy);

// The file an inline-jsonl job reads, in its folder.
std::string InlineJsonlPath(const std::string& job_dir);

}  // namespace sluice::serve
