#include "mockapi/mock_api_flags.h"

#include <cstdlib>
#include <map>
#include <string>

#include <fmt/format.h>
#include <CLI/CLI.hpp>

namespace sluice {

namespace {

// A millisecond flag writing a Duration.
void AddMillisFlag(CLI::App& app, const std::string& name, Duration& target,
                   const std::string& help) {
  app.add_option_function<double>(
         name, [&target](double ms) { target = FromSeconds(ms / 1000.0); }, help)
      ->check(CLI::NonNegativeNumber)
      ->default_str(fmt::format("{:g}", ToSeconds(target) * 1000.0));
}

void AddRateFlag(CLI::App& app, const std::string& name, double& target, const std::string& help) {
  app.add_option(name, target, help)->check(CLI::Range(0.0, 1.0))->capture_default_str();
}

}  // namespace

void AddMockApiFlags(CLI::App& app, MockApiOptions& options) {
  app.add_option("--host", options.host, "Address to listen on (loopback by default)")
      ->capture_default_str();
  app.add_option("--port", options.port, "Port to listen on; 0 picks a free one")
      ->capture_default_str();
  app.add_option("--dimensions", options.dimensions,
                 "Vector length when a request does not ask for `dimensions`")
      ->check(CLI::Range(1, 65536))
      ->capture_default_str();
  AddMillisFlag(app, "--latency-ms", options.base_latency, "Service time of every request, ms");
  AddMillisFlag(app, "--per-input-latency-ms", options.per_input_latency,
                "Extra service time per input in a request, ms");
  AddMillisFlag(app, "--jitter-ms", options.jitter,
                "Uniform extra service time in [0, jitter), ms (seeded)");
  app.add_option("--rpm", options.rpm, "Requests per minute (token bucket); 0 = unlimited")
      ->check(CLI::NonNegativeNumber)
      ->capture_default_str();
  app.add_option("--tpm", options.tpm, "Tokens per minute (token bucket); 0 = unlimited")
      ->check(CLI::NonNegativeNumber)
      ->capture_default_str();
  app.add_option("--burst-seconds", options.burst_seconds,
                 "Each rate bucket holds this many seconds of its limit (OpenAI: 60)")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  app.add_option("--capacity", options.capacity, "Requests in service at once; 0 = unlimited")
      ->check(CLI::NonNegativeNumber)
      ->capture_default_str();
  static const std::map<std::string, OverCapacityPolicy> kPolicies = {
      {"queue", OverCapacityPolicy::kQueue}, {"reject", OverCapacityPolicy::kReject503}};
  app.add_option("--over-capacity", options.over_capacity,
                 "Beyond --capacity: queue (wait FIFO for a slot) or reject (503 at once)")
      ->transform(CLI::CheckedTransformer(kPolicies, CLI::ignore_case))
      ->default_str("queue");
  AddRateFlag(app, "--fail-500", options.fault_500_rate, "Fraction of requests answered 500");
  AddRateFlag(app, "--fail-reset", options.fault_reset_rate,
              "Fraction of requests whose connection is closed without a response");
  AddRateFlag(app, "--fail-malformed", options.fault_malformed_rate,
              "Fraction of requests answered 200 with a truncated JSON body");
  AddRateFlag(app, "--fail-wrong-count", options.fault_wrong_count_rate,
              "Fraction of requests answered 200 with one vector fewer than inputs");
  AddRateFlag(app, "--fail-wrong-dims", options.fault_wrong_dims_rate,
              "Fraction of requests answered 200 with vectors one component too long");
  app.add_option("--fail-429-first", options.fault_429_first,
                 "Answer the first N requests 429 (Retry-After: --fail-429-retry-after-ms), as "
                 "if another client had spent the key's request budget")
      ->capture_default_str();
  app.add_option_function<int64_t>(
         "--fail-429-retry-after-ms",
         [&options](int64_t ms) { options.fault_429_retry_after = std::chrono::milliseconds(ms); },
         "The Retry-After of the --fail-429-first answers, in ms (default 250)")
      ->check(CLI::Range(int64_t{0}, int64_t{3600000}));
  app.add_option("--fail-wrong-dims-first", options.fault_wrong_dims_first,
                 "Answer the first N admitted requests with vectors one component too long")
      ->capture_default_str();
  app.add_option("--revoke-key-after", options.revoke_key_after,
                 "Answer every request after the first N with 401, as if the key had been "
                 "revoked mid-run (0: never)")
      ->capture_default_str();
  app.add_option("--max-inputs", options.max_inputs, "Most inputs in one request (else 400)")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  app.add_option("--max-tokens-per-request", options.max_tokens_per_request,
                 "Most tokens in one request (else 400)")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  app.add_option("--max-tokens-per-input", options.max_tokens_per_input,
                 "Most tokens in one input (else 400)")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  app.add_option("--max-response-values", options.max_response_values,
                 "Most vector values (inputs x dimensions) in one response (else 400); bounds "
                 "the mock's memory per request")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  app.add_option_function<std::string>(
      "--api-key-env",
      [&options](const std::string& variable) {
        const char* key = std::getenv(variable.c_str());
        if (key == nullptr || *key == '\0') {
          throw CLI::ValidationError("--api-key-env",
                                     "environment variable " + variable + " is not set or empty");
        }
        options.api_key = key;
      },
      "Require `Authorization: Bearer <key>`, the key read from this environment variable");
  app.add_option("--seed", options.seed, "Seed for latency jitter and fault draws")
      ->capture_default_str();
  app.add_option("--threads", options.threads, "Server threads (epoll thread pool)")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
}

}  // namespace sluice
