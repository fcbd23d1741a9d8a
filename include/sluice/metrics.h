// Run metrics: one contract for every stage (items in/out, bytes, errors,
// dead-lettered), plus request-level counters, latency percentiles and
// fixed-bucket latency histograms (for the Prometheus endpoint,
// src/observe/).
//
// Counters are relaxed atomics updated once per batch or per request, never
// under a lock per item. LatencyRecorder takes a mutex per recorded request
// (requests are few: one per batch); Histogram is lock-free.
//
// Thread safety: all members are safe to update from any thread.
#pragma once

#include <array>
#include <atomic>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "sluice/clock.h"
#include "sluice/thread_annotations.h"

namespace sluice {

using Counter = std::atomic<uint64_t>;

inline void Add(Counter& c, uint64_t n = 1) { c.fetch_add(n, std::memory_order_relaxed); }
inline uint64_t Get(const Counter& c) { return c.load(std::memory_order_relaxed); }

struct LatencySummary {
  uint64_t count = 0;
  double p50_ms = 0, p95_ms = 0, p99_ms = 0, max_ms = 0, mean_ms = 0;
};

// Counts of observations per fixed bucket, read as Prometheus's cumulative
// buckets. Bounds are fixed at construction (a histogram's buckets must not
// change during a scrape series), so Observe is two relaxed atomic adds.
class Histogram {
 public:
  // REQUIRES: `upper_bounds` finite and strictly ascending; the +Inf bucket
  // is implicit.
  explicit Histogram(std::vector<double> upper_bounds);
  Histogram(const Histogram&) = delete;
  Histogram& operator=(const Histogram&) = delete;

  // Counts `value` in the first bucket whose upper bound is >= value
  // (Prometheus's `le`: less than or equal).
  void Observe(double value);

  struct Snapshot {
    std::vector<double> upper_bounds;         // finite bounds, ascending
    std::vector<uint64_t> cumulative_counts;  // one per bound, then +Inf (== count)
    uint64_t count = 0;
    double sum = 0;
  };
  // Consistent in itself (count is the +Inf bucket, buckets never decrease
  // along the bounds) even while other threads observe.
  Snapshot Read() const;

 private:
  std::vector<double> upper_bounds_;
  std::unique_ptr<Counter[]> counts_;  // upper_bounds_.size() + 1 (the last is +Inf)
  std::atomic<double> sum_{0};
};

// Bucket bounds in seconds for request and transaction latencies: 5 ms to
// 2 minutes, roughly x2.5 apart (a local model answers in milliseconds, a
// remote API under load in tens of seconds).
const std::vector<double>& LatencyBucketsSeconds();

// Keeps every sample up to a bound, then a uniform reservoir (deterministic
// replacement), so percentiles stay accurate and memory bounded.
class LatencyRecorder {
 public:
  explicit LatencyRecorder(size_t max_samples = 100000)
      : histogram_(LatencyBucketsSeconds()), max_samples_(max_samples) {}
  // Also observed, in seconds, by histogram().
  void Record(Duration d);
  LatencySummary Summary() const;
  const Histogram& histogram() const { return histogram_; }

 private:
  Histogram histogram_;
  mutable Mutex mu_;
  std::vector<double> samples_ms_ SLUICE_GUARDED_BY(mu_);
  size_t max_samples_;
  uint64_t seen_ SLUICE_GUARDED_BY(mu_) = 0;
  double sum_ms_ SLUICE_GUARDED_BY(mu_) = 0;
  double max_ms_ SLUICE_GUARDED_BY(mu_) = 0;
  uint64_t rng_state_ SLUICE_GUARDED_BY(mu_) = 0x9E3779B97F4A7C15ull;
};

// The parse stage per format (parser name): files, bytes and the time spent
// parsing and chunking them, so a slow format shows. Recorded once per file
// (a mutex per file is nothing next to parsing it).
struct FormatParseStats {
  uint64_t files = 0;
  uint64_t bytes = 0;
  uint64_t busy_ns = 0;
};
class ParseTimes {
 public:
  void Record(const std::string& format, uint64_t bytes, uint64_t busy_ns) {
    MutexLock lock(mu_);
    FormatParseStats& s = by_format_[format];
    ++s.files;
    s.bytes += bytes;
    s.busy_ns += busy_ns;
  }
  std::map<std::string, FormatParseStats> Snapshot() const {
    MutexLock lock(mu_);
    return by_format_;
  }

 private:
  mutable Mutex mu_;
  std::map<std::string, FormatParseStats> by_format_ SLUICE_GUARDED_BY(mu_);
};

// The contract every stage reports in (read, cache, embed, store,
// aggregate): what it took and passed on, the bytes it read, its errors and
// dead letters, the time its threads spent working (not waiting on a queue;
// for the embed stage, the time it had requests in flight) and the depth of
// its input queue (read off the queues 4 times a second by the run's trace
// sampler, not by the stages: a queue's size takes its lock). busy_ns over the run's length
// and threads names the bottleneck (IngestReport::bottleneck_stage).
struct StageMetrics {
  Counter items_in{0};
  Counter items_out{0};
  Counter bytes{0};
  Counter errors{0};
  Counter dead_lettered{0};
  Counter busy_ns{0};     // working: not blocked on a full output queue
  Counter blocked_ns{0};  // blocked handing items on (the next stage's queue was full)
  Counter cpu_ns{0};      // CPU (user + system) of the stage's threads, added as each ends
  std::atomic<int64_t> queue_depth{0};  // gauge: items waiting in the stage's input queue
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
  Counter requests{0};  // requests sent (including retries)
  Counter requests_ok{0};
  Counter retries{0};           // requests re-sent after a retryable failure
  Counter rate_limited{0};      // 429 answers
  Counter server_errors{0};     // 5xx answers
  Counter transport_errors{0};  // resets, refused, timeouts
  Counter malformed_responses{0};
  Counter prompt_tokens{0};    // usage.prompt_tokens summed over OK responses
  Counter oversize_inputs{0};  // inputs split or truncated to fit the service's per-input limit
  std::atomic<int64_t> in_flight{0};
  std::atomic<int64_t> concurrency_limit{0};
  // The rate pacer's budget (RatePacer::Budget), published by the embed
  // stage: the limits in use (from --rpm/--tpm or learned from the
  // x-ratelimit-* headers; 0: no limit known) and what the local buckets
  // hold now (meaningless while the limit is 0).
  std::atomic<double> rate_limit_requests_per_minute{0};
  std::atomic<double> rate_limit_tokens_per_minute{0};
  std::atomic<double> rate_requests_remaining{0};
  std::atomic<double> rate_tokens_remaining{0};
  // USD per million prompt tokens, set once the embedder is known and only
  // when its price is (built in or --price-per-mtok); negative: unknown, so
  // no cost is published (a cost is never guessed).
  std::atomic<double> price_per_mtok_usd{-1};
  // Store.
  Counter store_batches{0};
  Counter store_retries{0};
  // Aggregator.
  Counter aggregate_files_written{0};

  StageMetrics reader, cache, embedder, store, aggregator;
  ParseTimes parse_times;  // the read stage, per format
  LatencyRecorder embed_latency;
  LatencyRecorder store_latency;
};

// The stages in pipeline order, by the names reports and metrics use.
struct NamedStageMetrics {
  const char* name;
  const StageMetrics& stage;
};
inline std::array<NamedStageMetrics, 5> StagesOf(const Metrics& m) {
  return {{{"read", m.reader},
           {"cache", m.cache},
           {"embed", m.embedder},
           {"store", m.store},
           {"aggregate", m.aggregator}}};
}

}  // namespace sluice
