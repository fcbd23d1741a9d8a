// BatchSizer: least-squares fit of latency against inputs per request.
#include <algorithm>
#include <cmath>
#include <vector>

#include "sluice/control.h"

namespace sluice {

BatchSizer::BatchSizer(BatchSizerOptions options) : options_(options) {
  options_.min_inputs = std::max<size_t>(1, options_.min_inputs);
  options_.max_inputs = std::max(options_.min_inputs, options_.max_inputs);
  options_.fixed_fraction = std::clamp(options_.fixed_fraction, 0.01, 0.99);
  options_.window = std::max<size_t>(4, options_.window);
  options_.observations_per_step = std::max<size_t>(1, options_.observations_per_step);
  options_.max_step = std::max(1.1, options_.max_step);
  suggested_ = std::clamp(options_.initial_inputs, options_.min_inputs, options_.max_inputs);
  cap_ = options_.max_inputs;
}

void BatchSizer::ObserveConcurrencyLimit(size_t limit) {
  if (options_.in_flight_budget == 0) return;
  recent_limits_.push_back(std::max<size_t>(1, limit));
  if (recent_limits_.size() > options_.window) recent_limits_.pop_front();
  // The peak, not the latest: a probe that lowers the limit for a few
  // requests must not let a burst of huge batches out.
  const size_t peak = *std::max_element(recent_limits_.begin(), recent_limits_.end());
  const size_t target =
      std::clamp(options_.in_flight_budget / peak, options_.min_inputs, options_.max_inputs);
  // Small moves of the limit (AIMD steps) are not worth a new batch size:
  // each one disturbs the limiter's RTT baseline.
  const double current = static_cast<double>(cap_);
  const double wanted = static_cast<double>(target);
  if (wanted * 1.25 < current || wanted > current * 1.25) cap_ = target;
}

size_t BatchSizer::InputsFor(double tokens_per_input) const {
  if (tokens_per_input <= 0) return SuggestedInputs();
  const double by_tokens = std::floor(options_.max_tokens_per_request / tokens_per_input);
  return std::max<size_t>(
      1, std::min(SuggestedInputs(), static_cast<size_t>(std::max(1.0, by_tokens))));
}

BatchSizer::Fit BatchSizer::CurrentFit() const {
  const Fit fit = ComputeFit();
  return fit.valid ? fit : last_fit_;
}

double BatchSizer::LatencyRatio(size_t from, size_t to) const {
  const Fit fit = CurrentFit();
  if (!fit.valid || from == 0) return 0;
  const double old_latency = fit.fixed_s + fit.per_input_s * static_cast<double>(from);
  if (old_latency <= 0) return 0;
  return (fit.fixed_s + fit.per_input_s * static_cast<double>(to)) / old_latency;
}

BatchSizer::Fit BatchSizer::ComputeFit() const {
  // Queueing at the service only ever adds delay, so the fastest request of
  // each size is the best estimate of its service time: fit the line through
  // the per-size minima, not through every (queue-inflated) sample.
  Fit fit;
  if (observations_.size() < 4) return fit;
  std::vector<Observation> minima;
  for (const Observation& o : observations_) {
    auto it = std::find_if(minima.begin(), minima.end(),
                           [&](const Observation& m) { return m.inputs == o.inputs; });
    if (it == minima.end()) {
      minima.push_back(o);
    } else {
      it->rtt_s = std::min(it->rtt_s, o.rtt_s);
    }
  }
  if (minima.size() < 2) return fit;
  double min_x = minima.front().inputs, max_x = min_x, sx = 0, sy = 0;
  for (const Observation& m : minima) {
    sx += m.inputs;
    sy += m.rtt_s;
    min_x = std::min(min_x, m.inputs);
    max_x = std::max(max_x, m.inputs);
  }
  // Sizes must differ by at least 25% for the slope to mean anything.
  if (max_x < min_x * 1.25) return fit;
  const double n = static_cast<double>(minima.size());
  const double mx = sx / n, my = sy / n;
  double sxx = 0, sxy = 0;
  for (const Observation& m : minima) {
    sxx += (m.inputs - mx) * (m.inputs - mx);
    sxy += (m.inputs - mx) * (m.rtt_s - my);
  }
  if (sxx <= 0) return fit;
  fit.per_input_s = std::max(0.0, sxy / sxx);
  fit.fixed_s = std::max(0.0, my - fit.per_input_s * mx);
  fit.valid = true;
  return fit;
}

void BatchSizer::Observe(size_t inputs, Duration rtt) {
  if (inputs == 0) return;
  observations_.push_back({static_cast<double>(inputs), ToSeconds(rtt)});
  if (observations_.size() > options_.window) observations_.pop_front();
  if (++since_change_ < options_.observations_per_step) return;

  const double current = static_cast<double>(suggested_);
  // All recent requests the same size: keep what was learned before.
  const Fit fit = CurrentFit();
  last_fit_ = fit;
  double target = static_cast<double>(options_.max_inputs);
  if (fit.valid && fit.per_input_s > 0) {
    // fixed / (fixed + per_input * x) == f  <=>  x = fixed * (1 - f) / (f * per_input)
    const double f = options_.fixed_fraction;
    target = fit.fixed_s * (1 - f) / (f * fit.per_input_s);
    if (fit.fixed_s < ToSeconds(options_.min_resolved_fixed)) {
      // No fixed part the RTT can resolve: the per-request overhead is
      // invisible here, not absent (see BatchSizerOptions).
      target = std::max(target, static_cast<double>(options_.unresolved_floor_inputs));
    }
  }
  target = std::clamp(target, static_cast<double>(options_.min_inputs),
                      static_cast<double>(options_.max_inputs));
  // Latency samples are noisy (queueing, jitter) and every change disturbs
  // the concurrency limiter: ignore targets within x1.5 of the current size
  // and move to the others, at most max_step at a time.
  if (target <= current * 1.5 && target >= current / 1.5) return;
  const double next = std::clamp(target, current / options_.max_step, current * options_.max_step);
  suggested_ =
      std::clamp(static_cast<size_t>(std::llround(next)), options_.min_inputs, options_.max_inputs);
  since_change_ = 0;
}

}  // namespace sluice
