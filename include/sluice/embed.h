// Embedding: the asynchronous transport seam, the limiter and pacer seams the
// embed stage drives, and the options shared by the HTTP and offline embedders.
//
// The embed stage (src/embed/embed_stage.h) owns batching, retries and
// dead-lettering; an EmbeddingTransport only moves one request at a time to a
// service and back. A transport is driven by one thread (the embed stage),
// which submits requests and polls completions; many requests may be in
// flight at once (libcurl multi).
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "sluice/clock.h"
#include "sluice/status.h"

namespace sluice {

// Rate-limit information a response carried (OpenAI-style headers). All optional.
struct RateLimitInfo {
  std::optional<int64_t> limit_requests;
  std::optional<int64_t> limit_tokens;
  std::optional<int64_t> remaining_requests;
  std::optional<int64_t> remaining_tokens;
  std::optional<Duration> reset_requests;  // time until the request budget is full again
  std::optional<Duration> reset_tokens;
  std::optional<Duration> retry_after;  // Retry-After or retry-after-ms
};

struct EmbedRequest {
  uint64_t request_id = 0;
  std::vector<std::string> inputs;  // REQUIRES: non-empty, each non-empty
  uint32_t estimated_tokens = 0;
  uint64_t input_bytes = 0;
};

struct EmbedResponse {
  uint64_t request_id = 0;
  // OK, or why the request failed: kRateLimited (429), kUnavailable (5xx,
  // connection refused/reset), kTimeout, kPermissionDenied (401/403),
  // kNotFound (404/405: no such endpoint or model), kRejected (other 4xx),
  // kCorrupt (malformed body, wrong count or dims), kInvalidArgument (a
  // configuration the transport cannot use: bad URL, TLS certificate).
  Status status;
  int http_status = 0;  // 0 when no response was received
  // No connection to the service could be made (refused, DNS, TLS): the
  // failure says nothing about the inputs, so the embed stage never
  // dead-letters them for it (docs/ARCHITECTURE.md, "Errors and retries").
  bool connect_failed = false;
  std::vector<std::vector<float>> vectors;  // one per input, in input order, when OK
  int64_t prompt_tokens = 0;                // usage.prompt_tokens, 0 if absent
  RateLimitInfo rate;
  Duration latency{0};
};

class EmbeddingTransport {
 public:
  virtual ~EmbeddingTransport() = default;
  // Starts a request. Never blocks on the network.
  virtual void Submit(EmbedRequest request) = 0;
  // Appends completed responses to `out`, waiting up to `max_wait` for at
  // least one when none is ready. Returns without waiting when nothing is in flight.
  virtual void Poll(Duration max_wait, std::vector<EmbedResponse>& out) = 0;
  virtual size_t InFlight() const = 0;
  // Model name recorded with each vector, e.g. "text-embedding-3-small" or "sluice-hash-v1".
  virtual std::string ModelName() const = 0;
  // Expected vector length; 0 when unknown until the first response.
  virtual int Dimensions() const = 0;
};

// How a finished request counts for concurrency control.
enum class RequestOutcome {
  kSuccess,
  kBackpressure,  // 429, timeout: the service (or its rate limit) is overloaded
  // 503, connection refused: turned away at the door for lack of room, which
  // also says how many requests fit (see AdaptiveLimiter).
  kOverCapacity,
  kFailure,    // other retryable failure (500, reset, malformed body)
  kPermanent,  // 400/401/403: says nothing about capacity
};

// A finished request, as the embed stage reports it to an observer (the
// controller trace, EmbedStage::SetObserver). Here, beside RequestOutcome, so
// the pure controllers see it without the stage.
struct RequestEvent {
  TimePoint start, end;
  size_t inputs = 0;
  uint32_t tokens = 0;
  int http_status = 0;
  RequestOutcome outcome = RequestOutcome::kSuccess;
  bool retry = false;
};
using RequestObserver = std::function<void(const RequestEvent&)>;

// Decides how many requests may be in flight. Pure: events and time in, limit out.
// Thread safety: used by the embed stage thread only.
class ConcurrencyLimiter {
 public:
  virtual ~ConcurrencyLimiter() = default;
  virtual size_t Limit() const = 0;
  // Called when a request is started / has finished (rtt measured by the caller).
  virtual void OnStart(TimePoint now) = 0;
  virtual void OnFinish(TimePoint now, Duration rtt, RequestOutcome outcome) = 0;
  // The batch size changed, which moves latency for reasons other than load.
  // `latency_ratio` is the expected latency of the new size over the old one
  // (BatchSizer::LatencyRatio; <= 0 when unknown). Default: ignored.
  virtual void OnBatchSizeChanged(TimePoint now, double latency_ratio) {
    (void)now;
    (void)latency_ratio;
  }
};

// Decides when the next request may start under request/token rate limits and
// Retry-After cooldowns. Pure: events and time in, delays out.
// Thread safety: used by the embed stage thread only.
// What a pacer knows of the service's rate budget (published as metrics).
struct RateBudget {
  double requests_per_minute = 0;  // the limit in use; 0: none known
  double tokens_per_minute = 0;
  double requests_remaining = 0;  // what the pacer's bucket holds now (>= 0; 0 without a limit)
  double tokens_remaining = 0;
};

class RatePacer {
 public:
  virtual ~RatePacer() = default;
  // How long to wait from `now` before a request costing `tokens` may start
  // (zero: start now).
  virtual Duration DelayFor(TimePoint now, uint32_t tokens) const = 0;
  virtual void OnStart(TimePoint now, uint32_t estimated_tokens) = 0;
  // A response arrived (any status). `input_bytes` and `prompt_tokens` let
  // the pacer learn the bytes-per-token ratio.
  virtual void OnResponse(TimePoint now, const RateLimitInfo& rate, int http_status,
                          uint64_t input_bytes, int64_t prompt_tokens) = 0;
  // OnResponse for a request that started at `started` (when it was passed
  // to OnStart). A pacer reading x-ratelimit-remaining-* uses it to tell
  // which of its own requests that count cannot include yet: those started
  // after this one. Default: OnResponse.
  virtual void OnResponseTo(TimePoint started, TimePoint now, const RateLimitInfo& rate,
                            int http_status, uint64_t input_bytes, int64_t prompt_tokens) {
    (void)started;
    OnResponse(now, rate, http_status, input_bytes, prompt_tokens);
  }
  // Current estimate of UTF-8 bytes per token.
  virtual double BytesPerToken() const = 0;
  // The largest request (estimated tokens) the pacer can pace smoothly, e.g.
  // a fraction of a token-per-minute limit; the stage keeps batches under
  // it. 0: no opinion. Default: 0.
  virtual double TokensPerRequestCap() const { return 0; }
  // The limits in use and the budget left at `now`. Default: no limit known.
  virtual RateBudget Budget(TimePoint now) const {
    (void)now;
    return {};
  }
};

// A limiter that always answers `limit` (--concurrency N).
std::unique_ptr<ConcurrencyLimiter> MakeFixedLimiter(size_t limit);
// A pacer that only honours Retry-After as one shared cooldown (no rate limits).
std::unique_ptr<RatePacer> MakeCooldownOnlyPacer();

struct HttpEmbedderOptions {
  std::string endpoint;  // base URL, e.g. "https://api.openai.com/v1"; "/embeddings" is appended
  std::string model = "text-embedding-3-small";
  // 0: do not send "dimensions"; learn the length from the responses: while
  // other requests are in flight, two must agree before any vector is
  // accepted, so one corrupt first response cannot decide it for the run.
  int dimensions = 0;
  // With dimensions 0: the length the vectors must have without asking the
  // service for it (the store's recorded dimension); 0: learn it.
  int expected_dimensions = 0;
  std::string api_key;  // never logged
  Duration request_timeout = std::chrono::seconds(60);
  Duration connect_timeout = std::chrono::seconds(10);
  bool request_base64 = true;  // falls back to floats when the server rejects it
  std::string extra_headers;   // "Name: value\n..." e.g. for Azure's api-key header
};

// The libcurl multi transport (src/embed/http_transport.cc).
Result<std::unique_ptr<EmbeddingTransport>> MakeHttpTransport(const HttpEmbedderOptions& options);

// The URL requests go to: "/embeddings" inserted at the end of the base URL's
// path, before its query string (Azure OpenAI's "...?api-version=...").
// A trailing '/' of the path and any fragment are dropped.
std::string EmbeddingsUrl(std::string_view endpoint);

// The endpoint for display (report, summary, errors): the userinfo password
// (or a lone userinfo, often a token) becomes "***", and so does every query
// value except "api-version"'s. src/embed/endpoint_url.cc.
std::string RedactEndpoint(std::string_view endpoint);

// `text` with every whole occurrence of `secret` replaced by "[redacted]":
// an occurrence counts only when the characters on either side are not
// letters, digits, '-' or '_', so a one-letter key does not mangle words.
std::string RedactSecret(std::string text, std::string_view secret);

struct HashEmbedderOptions {
  int dimensions = 384;
};
// The offline feature-hashed lexical embedder (src/embed/hash_embedder.cc):
// lexical, not semantic. Computes synchronously on Poll.
std::unique_ptr<EmbeddingTransport> MakeHashTransport(const HashEmbedderOptions& options);
// The vector the hash embedder gives `text` (for tests and `sluice search`).
std::vector<float> HashEmbed(std::string_view text, int dimensions);

}  // namespace sluice
