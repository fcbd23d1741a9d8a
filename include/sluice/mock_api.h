// The simulated OpenAI-compatible embedding API (`sluice mock-api`), used by
// tests, the demo and the benchmarks. It serves POST /v1/embeddings and
// GET /stats over HTTP/1.1 on loopback, with configurable latency, RPM/TPM
// token buckets (429 + Retry-After + x-ratelimit-* headers as OpenAI sends
// them), a concurrency capacity (queue or 503), and injected faults.
//
// Vectors are deterministic (see MockEmbedding) so tests can recompute what
// the store must hold.
//
// Thread safety: MockApiServer's methods are thread-safe.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "sluice/clock.h"
#include "sluice/status.h"

namespace sluice {

enum class OverCapacityPolicy { kQueue, kReject503 };

struct MockApiOptions {
  std::string host = "127.0.0.1";
  uint16_t port = 0;  // 0: an ephemeral port (see Port())
  int dimensions = 256;
  Duration base_latency{0};       // per request
  Duration per_input_latency{0};  // per input in the request
  Duration jitter{0};             // uniform extra latency in [0, jitter)
  double rpm = 0;                 // requests per minute; 0: unlimited
  double tpm = 0;                 // tokens per minute; 0: unlimited
  // Each rate bucket holds this many seconds of its limit (the burst the
  // service admits at once). OpenAI's hold a minute's worth.
  double burst_seconds = 60;
  int capacity = 0;  // requests in service at once; 0: unlimited
  OverCapacityPolicy over_capacity = OverCapacityPolicy::kQueue;
  double fault_500_rate = 0;          // fraction of requests answered 500
  double fault_reset_rate = 0;        // fraction whose connection is reset without a response
  double fault_malformed_rate = 0;    // fraction answered 200 with a malformed JSON body
  double fault_wrong_dims_rate = 0;   // fraction answered 200 with vectors of the wrong length
  double fault_wrong_count_rate = 0;  // fraction answered 200 with one vector fewer than inputs
  // The first N embeddings requests are answered 429 (Retry-After, retry-after-ms:
  // 250 ms) as if another client on the same key had spent the request budget.
  // Deterministic, unlike racing a real competitor for the bucket.
  uint64_t fault_429_first = 0;
  // The Retry-After those 429s carry (a test of a long cooldown sets minutes).
  Duration fault_429_retry_after = std::chrono::milliseconds(250);
  // The first N admitted requests are answered 200 with vectors one component
  // too long (as --fail-wrong-dims, but deterministic).
  uint64_t fault_wrong_dims_first = 0;
  // After the first N embeddings requests, every request is answered 401 as
  // if the key had been revoked mid-run. 0: never. Deterministic.
  uint64_t revoke_key_after = 0;
  int max_inputs = 2048;
  int max_tokens_per_request = 300000;
  int max_tokens_per_input = 8191;
  // Most vector values (inputs x dimensions) in one response, else 400: the
  // response is built in memory (~11 bytes a value as JSON floats), so this
  // bounds the mock's memory per request. Default: 2048 inputs of 3072
  // dimensions (OpenAI's largest model), ~70 MB of JSON.
  int64_t max_response_values = int64_t{2048} * 3072;
  std::string
      api_key;        // when non-empty, requests must send "Authorization: Bearer <key>" (else 401)
  uint64_t seed = 1;  // for latency jitter and fault draws
  int threads = 2;    // server threads
};

struct MockApiStats {
  uint64_t requests = 0;         // every POST /v1/embeddings received
  uint64_t ok = 0;               // answered 200 with correct vectors
  uint64_t inputs_embedded = 0;  // inputs in the `ok` responses
  uint64_t tokens_embedded = 0;  // prompt tokens in the `ok` responses
  uint64_t rate_limited = 0;     // 429s
  uint64_t over_capacity = 0;    // 503s for capacity
  uint64_t bad_requests = 0;     // 400s (too many inputs/tokens, bad JSON)
  uint64_t unauthorized = 0;     // 401s
  uint64_t faults_500 = 0;
  uint64_t faults_reset = 0;
  uint64_t faults_malformed = 0;
  uint64_t faults_wrong_dims = 0;
  uint64_t faults_wrong_count = 0;
  uint64_t peak_in_service = 0;
  uint64_t peak_queued = 0;
  // Seconds from the first request received to the last answer sent (any
  // counted outcome): the span a throughput-over-ceiling ratio is taken over.
  double busy_span_s = 0;
  // The time integral of requests in service (holding a capacity slot, or
  // in their service time when capacity is unlimited): over a span of dt
  // with capacity C, service_slot_seconds / (C x dt) is the share of the
  // service's slots that were busy, measured rather than inferred from
  // requests/s x the configured latency (which assumes every answer came
  // exactly on time).
  double service_slot_seconds = 0;
};

class MockApiServer {
 public:
  virtual ~MockApiServer() = default;  // Stop()s
  // Validates `options` (InvalidArgument) and starts listening (Unavailable
  // when the address cannot be bound). Behaviour: docs/MOCK_API.md.
  static Result<std::unique_ptr<MockApiServer>> Start(const MockApiOptions& options);
  virtual uint16_t Port() const = 0;
  // "http://127.0.0.1:PORT/v1"
  virtual std::string BaseUrl() const = 0;
  virtual MockApiStats Stats() const = 0;
  virtual std::string StatsJson() const = 0;
  // Changes the rate limits while running (benchmark regime c). 0 = unlimited.
  // A limited bucket keeps its fraction of capacity; an unlimited one starts full.
  virtual void SetRateLimits(double rpm, double tpm) = 0;
  // Answers every waiting request 503 at once and stops listening. Idempotent.
  virtual void Stop() = 0;
};

// The mock's vector for `text`: component i = u_i / ||u||, where u_i is a
// uniform value in [-1, 1) drawn from splitmix64 seeded with
// XXH64(text, seed = 0x5EED) advanced i+1 times, mapped as
// (double)(x >> 11) * 2^-53 * 2 - 1. Unit length.
std::vector<float> MockEmbedding(std::string_view text, int dimensions);

// The mock's token count for `text`: ceil(bytes / 4), at least 1.
int64_t MockTokenCount(std::string_view text);

}  // namespace sluice
