#include "sluice/metrics.h"

#include <algorithm>
#include <cmath>

#include "common/hashing.h"

namespace sluice {

void LatencyRecorder::Record(Duration d) {
  const double ms = std::chrono::duration<double, std::milli>(d).count();
  std::lock_guard lock(mu_);
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
    std::lock_guard lock(mu_);
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
