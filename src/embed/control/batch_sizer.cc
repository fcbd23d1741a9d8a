// BatchSizer: least-squares fit of latency against inputs per request.
#include <algorithm>
#include <cmath>

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
}

size_t BatchSizer::InputsFor(double tokens_per_input) const {
  if (tokens_per_input <= 0) return suggested_;
  const double by_tokens = std::floor(options_.max_tokens_per_request / tokens_per_input);
  return std::max<size_t>(1, std::min(suggested_, static_cast<size_t>(std::max(1.0, by_tokens))));
}

BatchSizer::Fit BatchSizer::CurrentFit() const {
  Fit fit;
  const double n = static_cast<double>(observations_.size());
  if (observations_.size() < 4) return fit;
  double sx = 0, sy = 0;
  double min_x = observations_.front().inputs, max_x = min_x;
  for (const Observation& o : observations_) {
    sx += o.inputs;
    sy += o.rtt_s;
    min_x = std::min(min_x, o.inputs);
    max_x = std::max(max_x, o.inputs);
  }
  // Sizes must differ by at least 25% for the slope to mean anything.
  if (max_x < min_x * 1.25) return fit;
  const double mx = sx / n, my = sy / n;
  double sxx = 0, sxy = 0;
  for (const Observation& o : observations_) {
    sxx += (o.inputs - mx) * (o.inputs - mx);
    sxy += (o.inputs - mx) * (o.rtt_s - my);
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
  double target = static_cast<double>(options_.max_inputs);
  const Fit fit = CurrentFit();
  if (fit.valid && fit.per_input_s > 0) {
    // fixed / (fixed + per_input * x) == f  <=>  x = fixed * (1 - f) / (f * per_input)
    const double f = options_.fixed_fraction;
    target = fit.fixed_s * (1 - f) / (f * fit.per_input_s);
  }
  target = std::clamp(target, current / options_.max_step, current * options_.max_step);
  const size_t next = std::clamp(static_cast<size_t>(std::llround(target)), options_.min_inputs,
                                 options_.max_inputs);
  // Ignore moves under 10%: they cost a baseline reset in the limiter for nothing.
  if (std::fabs(static_cast<double>(next) - current) >= 0.1 * current) {
    suggested_ = next;
    since_change_ = 0;
  }
}

}  // namespace sluice
