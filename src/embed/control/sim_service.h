// A deterministic discrete-event simulation of an OpenAI-compatible
// embeddings service and of the embed stage's request loop, for testing and
// benchmarking the pure controllers (limiter, pacer, batch sizer) in
// simulated time: a minute of traffic runs in milliseconds, no sleeping.
//
// The service: `capacity` requests in service at once (0 = unlimited), the
// excess queued FIFO (a self-hosted server); service time = base +
// per_input * inputs, times a seeded uniform jitter in [1-j, 1+j]; RPM/TPM
// token buckets holding one minute of budget and refilling continuously
// (OpenAI's model), answering 429 with Retry-After when a request does not
// fit and x-ratelimit-* headers on every response (a limited bucket keeps its
// fraction when the limit changes, as in the mock API); limits that change at
// given times; optionally 503 at once instead of queueing over capacity; "storms" during which
// every request is answered 429; and a fraction of requests rejected with 400.
//
// The client mirrors EmbedStage: it starts requests while
// in_flight < limiter.Limit() and pacer.DelayFor(now, tokens) == 0, feeds
// every completion to the limiter, the pacer, the batch sizer and a
// TraceRecorder, and retries 429s after Retry-After and 503s after capped
// exponential backoff with full jitter (up to max_attempts).
//
// Thread safety: Run is a pure function of its arguments (and the seeds).
#pragma once

#include <cstdint>
#include <vector>

#include "sluice/clock.h"
#include "sluice/control.h"
#include "sluice/embed.h"

namespace sluice::sim {

struct LimitChange {
  Duration at{0};  // since the start of the run
  double rpm = 0;  // new limits (0 = none)
  double tpm = 0;
};

struct Storm {
  Duration from{0}, to{0};
  Duration retry_after = std::chrono::seconds(1);
};

struct ServiceOptions {
  size_t capacity = 0;                // requests in service at once; 0 = unlimited
  bool reject_over_capacity = false;  // 503 at once instead of queueing
  Duration base_latency = std::chrono::milliseconds(200);
  Duration per_input_latency{0};
  double jitter = 0;  // service time scaled by uniform [1-jitter, 1+jitter]
  double rpm = 0;     // 0 = no request limit
  double tpm = 0;     // 0 = no token limit
  bool send_headers = true;
  Duration reject_latency = std::chrono::milliseconds(10);  // 429/400 answer time
  double permanent_error_rate = 0;                          // fraction of requests answered 400
  std::vector<LimitChange> changes;
  std::vector<Storm> storms;
  uint64_t seed = 1;
};

struct ClientOptions {
  Duration duration = std::chrono::seconds(60);
  size_t batch_inputs = 64;  // 0: ask the BatchSizer
  double tokens_per_input = 200;
  double token_variation = 0.1;  // per batch, uniform +-
  double bytes_per_token = 4.0;  // true ratio of the simulated text
  Duration sample_period = std::chrono::milliseconds(100);
  Duration warmup = std::chrono::seconds(10);
  int max_attempts = 8;
  uint64_t seed = 2;
  // A finite corpus: the run ends when this many inputs are embedded (or
  // given up), or at `duration`, whichever comes first. 0: unlimited supply.
  uint64_t total_inputs = 0;
};

struct Result {
  std::vector<TraceRow> rows;  // one per simulated second
  TraceSummary summary;
  std::vector<double> ceiling_chunks_per_s;  // the service's ceiling, per second
  uint64_t requests = 0, requests_after_warmup = 0;
  uint64_t http_429 = 0, http_429_after_warmup = 0;
  uint64_t http_503 = 0;
  uint64_t permanent_errors = 0, exhausted = 0;
  // Over [warmup, end): achieved chunks / ceiling chunks, and the limit.
  double throughput_ratio = 0;
  double limit_min = 0, limit_max = 0, limit_mean = 0;
  // Median latency of the successful requests finished after warmup.
  double p50_latency_ms_after_warmup = 0;
  double final_bytes_per_token = 0;
  // The whole run, as the mock API's busy_span_s measures it: from the first
  // request to the last answer. Tokens of successful requests over the
  // service's token ceiling for that span, tpm + tpm / 60 x span (its bucket
  // holds a minute and starts full); 0 without a token limit.
  double busy_span_s = 0;
  double tokens_ok = 0;
  double whole_run_ratio = 0;
  bool corpus_done = false;  // total_inputs were all embedded before `duration`
};

// The ceiling in chunks/s at time `t` for batches of `inputs` inputs.
double CeilingChunksPerSecond(const ServiceOptions& service, Duration t, double inputs,
                              double tokens_per_input);

// Runs the simulation. `sizer` may be null (fixed batch_inputs).
// REQUIRES: client.batch_inputs > 0 || sizer != nullptr.
Result Run(const ServiceOptions& service, const ClientOptions& client, ConcurrencyLimiter& limiter,
           RatePacer& pacer, BatchSizer* sizer);

}  // namespace sluice::sim
