#include "sluice/metrics.h"

#include <algorithm>
#include <cmath>
#include <utility>

#include "common/hashing.h"

namespace sluice {

Histogram::Histogram(std::vector<double> upper_bounds)
    : upper_bounds_(std::move(upper_bounds)),
      counts_(std::make_unique<Counter[]>(upper_bounds_.size() + 1)) {}

void Histogram::Observe(double value) {
  const size_t bucket = static_cast<size_t>(
      std::lower_bound(upper_bounds_.begin(), upper_bounds_.end(), value) - upper_bounds_.begin());
  Add(counts_[bucket]);
  sum_.fetch_add(value, std::memory_order_relaxed);
}

Histogram::Snapshot Histogram::Read() const {
  Snapshot s;
  s.upper_bounds = upper_bounds_;
  s.cumulative_counts.reserve(upper_bounds_.size() + 1);
  // Each bucket is read once and summed here, so the snapshot's buckets and
  // count agree however many observations land while it is taken.
  uint64_t running = 0;
  for (size_t i = 0; i <= upper_bounds_.size(); ++i) {
    running += Get(counts_[i]);
    s.cumulative_counts.push_back(running);
  }
  s.count = running;
  s.sum = sum_.load(std::memory_order_relaxed);
  return s;
}

const std::vector<double>& LatencyBucketsSeconds() {
  static const std::vector<double> kBounds = {0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
                                              1,     2.5,  5,     10,   30,  60,   120};
  return kBounds;
}

void LatencyRecorder::Record(Duration d) {
  histogram_.Observe(std::chrono::duration<double>(d).count());
  const double ms = std::chrono::duration<double, std::milli>(d).count();
  MutexLock lock(mu_);
  ++seen_;
  sum_ms_ += ms;
  max_ms_ = std::max(max_ms_, ms);
  if (samples_ms_.size() < max_samples_) {
    samples_ms_.push_back(ms);
    return;
  }
  // Reservoir sampling (Algorithm R) with a deterministic generator.
  const uint64_t slot = SplitMix64(rng_state_) % seen_;
  if (slot < max_samples_) samples_ms_[slot] = ms;
}

LatencySummary LatencyRecorder::Summary() const {
  std::vector<double> sorted;
  LatencySummary s;
  {
    MutexLock lock(mu_);
    sorted = samples_ms_;
    s.count = seen_;
    s.max_ms = max_ms_;
    s.mean_ms = seen_ ? sum_ms_ / static_cast<double>(seen_) : 0;
  }
  if (sorted.empty()) return s;
  std::sort(sorted.begin(), sorted.end());
  auto pct = [&](double p) {
    const size_t idx = static_cast<size_t>(std::ceil(p * static_cast<double>(sorted.size()))) - 1;
    return sorted[std::min(idx, sorted.size() - 1)];
  };
  s.p50_ms = pct(0.50);
  s.p95_ms = pct(0.95);
  s.p99_ms = pct(0.99);
  return s;
}

}  // namespace sluice
