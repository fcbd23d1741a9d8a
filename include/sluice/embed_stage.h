// The embed stage: pulls chunks from its input queue, batches them by count
// and by tokens within the service's limits, keeps as many requests in flight
// as the ConcurrencyLimiter allows and the RatePacer permits, retries
// retryable failures with capped exponential backoff and full jitter
// (honouring Retry-After), bisects batches the service rejects as a whole to
// isolate bad inputs, and pushes embedded chunks to its output queue.
// Only failures that lie in the input are dead-lettered (a rejected input, or
// retries exhausted on a batch while the service answers others). A failure
// that says nothing about the input stops the run: a wrong key (401/403) or
// endpoint (404/405) at once; an unreachable service (refused, DNS, TLS) or
// one failing every request once retries are exhausted. Its chunks are then
// abandoned (handed to the sink as kCancelled), never dead-lettered.
//
// Thread safety: Run() is called on one thread; RequestStop() from any.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <random>
#include <string>

#include "sluice/clock.h"
#include "sluice/dead_letter.h"
#include "sluice/embed.h"
#include "sluice/metrics.h"
#include "sluice/queue.h"
#include "sluice/retry_policy.h"
#include "sluice/status.h"
#include "sluice/types.h"

namespace sluice {

enum class OversizeInputPolicy { kSplit, kTruncate };

struct EmbedStageOptions {
  size_t batch_size = 64;                    // Default: 64. Max inputs per request.
  size_t max_inputs_per_request = 2048;      // the service's hard limit (OpenAI: 2048)
  uint32_t max_tokens_per_request = 300000;  // OpenAI: 300,000
  uint32_t max_tokens_per_input = 8191;      // OpenAI: 8191
  OversizeInputPolicy oversize = OversizeInputPolicy::kSplit;
  // How long a partial batch waits for more chunks before it is sent anyway.
  Duration linger = std::chrono::milliseconds(20);
  RetryPolicyOptions retry;
  uint64_t seed = 0;           // jitter seed; 0: from std::random_device
  bool adaptive_batch = true;  // let a BatchSizer grow/shrink batches (issue 3)
  // With adaptive_batch: the chunks the stage aims to hold in requests at
  // once. Batches are capped at this over the (recent peak) concurrency
  // limit, so the limit is filled with mid-size requests instead of a few
  // huge ones that outrun the chunks upstream can supply (BENCHMARKS.md,
  // regime b). With the intake rule (unsent < batch * (free slots + 1)) this
  // also bounds what the stage holds to about twice the budget.
  // 0: no cap. Default: 4096 (32 requests of 128 inputs).
  size_t in_flight_chunk_budget = 4096;
  // After RequestStop: how long requests already in flight may still finish
  // (their chunks are then stored); past it they are cancelled and their
  // chunks abandoned. Nothing new is started and no retry waits, so a stop
  // takes at most this long in the stage whatever the Retry-After.
  Duration stop_grace = std::chrono::seconds(2);
  // A 429 says nothing about the input, so a rate-limited batch is never
  // dead-lettered and its retries do not count against retry.max_attempts:
  // it waits as long as the service asks (Retry-After, else the backoff),
  // until it has waited this long in all; then the run stops with the batch
  // abandoned for the next run.
  Duration max_rate_limited_wait = std::chrono::minutes(15);
};

class EmbedStage {
 public:
  EmbedStage(EmbedStageOptions options, EmbeddingTransport& transport, ConcurrencyLimiter& limiter,
             RatePacer& pacer, const Clock& clock, Metrics& metrics, DeadLetterSink& dead_letters);
  ~EmbedStage();
  EmbedStage(const EmbedStage&) = delete;
  EmbedStage& operator=(const EmbedStage&) = delete;

  void SetObserver(RequestObserver observer);
  // Called once, on the stage's thread, when it handles a stop: one line
  // saying what it still waits for and what it abandons (for stderr).
  void SetStopNotice(std::function<void(const std::string&)> notice);
  // Called on the stage's thread when an oversize chunk is replaced by its
  // pieces or by a truncated copy (EmbedStageOptions::oversize), before any
  // of them leaves the stage: the original's id and the ids of what replaces
  // it, in order (the pipeline's SourceTracker counts a file's chunks by it).
  void SetReplacementHook(
      std::function<void(const std::string& original_id, const std::vector<std::string>& ids)>
          hook);

  // Runs until `in` has ended and every chunk taken from it is either pushed
  // to `out` or dead-lettered. Returns non-OK only for a fatal error
  // (401/403, 404/405, an unreachable or failing service, `out` cancelled)
  // after which the caller stops the pipeline; the failing batch and the
  // chunks still held are then handed to the sink with kCancelled (abandoned).
  Status Run(BoundedQueue<Chunk>& in, BoundedQueue<EmbeddedChunk>& out);

  // Stop taking new chunks and start no request (not even a retry): chunks
  // not in flight are handed to the DeadLetterSink with kCancelled at once
  // (abandoned, not failed); requests in flight get `stop_grace` to finish,
  // then are cancelled the same way. Run() returns within about
  // `stop_grace`. Safe from any thread.
  void RequestStop();

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace sluice
