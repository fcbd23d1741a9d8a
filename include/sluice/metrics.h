// Run metrics: one contract for every stage (items in/out, bytes, errors,
// dead-lettered), plus request-level counters and latency percentiles.
//
// Counters are relaxed atomics updated once per batch or per request, never
// under a lock per item. LatencyRecorder takes a mutex per recorded request
// (requests are few: one per batch).
//
// Thread safety: all members are safe to update from any thread.
#pragma once

#include <atomic>
#include <cstdint>
#include <mutex>
#include <string>
#include <vector>

#include "sluice/clock.h"

namespace sluice {

using Counter = std::atomic<uint64_t>;

inline void Add(Counter& c, uint64_t n = 1) { c.fetch_add(n, std::memory_order_relaxed); }
inline uint64_t Get(const Counter& c) { return c.load(std::memory_order_relaxed); }

struct LatencySummary {
  uint64_t count = 0;
  double p50_ms = 0, p95_ms = 0, p99_ms = 0, max_ms = 0, mean_ms = 0;
};

// Keeps every sample up to a bound, then a uniform reservoir (deterministic
// replacement), so percentiles stay accurate and memory bounded.
class LatencyRecorder {
 public:
  explicit LatencyRecorder(size_t max_samples = 100000) : max_samples_(max_samples) {}
  void Record(Duration d);
  LatencySummary Summary() const;

 private:
  mutable std::mutex mu_;
  std::vector<double> samples_ms_;
  size_t max_samples_;
  uint64_t seen_ = 0;
  double sum_ms_ = 0, max_ms_ = 0;
  uint64_t rng_state_ = 0x9E3779B97F4A7C15ull;
};

struct StageMetrics {
  Counter items_in{0};
  Counter items_out{0};
  Counter bytes{0};
  Counter errors{0};
  Counter dead_lettered{0};
  Counter busy_ns{0};                   // time the stage spent working (not waiting on a queue)
  std::atomic<int64_t> queue_depth{0};  // items waiting in the stage's input queue (a gauge)
};

struct Metrics {
  // Sources.
  Counter sources_seen{0};
  Counter sources_ok{0};
  Counter sources_skipped{0};  // unsupported or empty inputs, with a reason in the log
  Counter sources_failed{0};   // dead-lettered whole inputs
  Counter bytes_read{0};
  Counter invalid_utf8_replaced{0};
  Counter latin1_fallbacks{0};
  // Chunks.
  Counter chunks_produced{0};
  Counter chunks_embedded{0};
  Counter chunks_stored{0};
  Counter chunks_dead_lettered{0};
  // Embedding requests.
  Counter requests{0};          // requests sent (including retries)
  Counter requests_ok{0};
  Counter retries{0};           // requests re-sent after a retryable failure
  Counter rate_limited{0};      // 429 answers
  Counter server_errors{0};     // 5xx answers
  Counter transport_errors{0};  // resets, refused, timeouts
  Counter malformed_responses{0};
  Counter prompt_tokens{0};     // usage.prompt_tokens summed over OK responses
  Counter oversize_inputs{0};   // inputs split or truncated to fit the service's per-input limit
  std::atomic<int64_t> in_flight{0};
  std::atomic<int64_t> concurrency_limit{0};
  // Store.
  Counter store_batches{0};
  Counter store_retries{0};
  // Aggregator.
  Counter aggregate_files_written{0};

  StageMetrics reader, chunker, embedder, store, aggregator;
  StageMetrics cache;  // the embedding-cache lookup between the readers and the embedder
  LatencyRecorder embed_latency;
  LatencyRecorder store_latency;
};

}  // namespace sluice
