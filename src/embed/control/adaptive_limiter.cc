// AdaptiveLimiter: a Vegas-style queue estimator with slow start, AIMD on
// backpressure and baseline re-probing. See docs/CONCURRENCY.md for why.
//
// Measurement windows. A window starts at every limit change; only requests
// *started* after that moment ("fresh" samples, start = now - rtt) count in
// it, so a decision is never judged on requests sent under the previous
// limit. A window closes once it holds max(min_window_samples, in_flight)
// fresh successful samples (about one round trip of requests).
//
// On close: avg = mean RTT, n = mean in-flight at completion,
// queue = n * (1 - (base + noise) / avg) is the number of our requests
// waiting at the service (Vegas), where noise is noise_sigmas standard errors
// of the two means. Below alpha and the limit was reached: grow (x2 in slow
// start, then x recovery_growth while the queue is under alpha/2 and the
// limit is below where the last cut started, else +1).
// Above beta: cut to the queue-free concurrency n * base / avg plus alpha (at
// most x min_gradient). In between: hold.
//
// Baseline. base = lowest window average; windows within confirm_tolerance
// of it confirm it but never move it up (a baseline that follows a slowly
// growing queue hides it). Window means make it robust to per-request
// jitter, unlike a minimum over single RTTs. When the baseline
// has not been confirmed for probe_interval while a queue is measured (we
// have been queueing, or the service really got slower), a probe lowers the limit to
// the queue-free estimate until enough requests started under it have
// returned, and their mean RTT becomes the baseline. A queueing server still
// runs at full throughput during a probe; a slower service gets its new
// baseline adopted.
#include <algorithm>
#include <cmath>

#include "sluice/control.h"

namespace sluice {

AdaptiveLimiter::AdaptiveLimiter(AdaptiveLimiterOptions options) : options_(options) {
  options_.min = std::max<size_t>(1, options_.min);
  options_.max = std::max(options_.min, options_.max);
  options_.backoff_ratio = std::clamp(options_.backoff_ratio, 0.1, 0.99);
  options_.min_gradient = std::clamp(options_.min_gradient, 0.1, 1.0);
  options_.min_window_samples = std::max<size_t>(1, options_.min_window_samples);
  limit_ = std::clamp<double>(static_cast<double>(options_.initial),
                              static_cast<double>(options_.min), static_cast<double>(options_.max));
  ssthresh_ = options_.slow_start ? static_cast<double>(options_.max) : limit_;
}

size_t AdaptiveLimiter::Limit() const {
  size_t limit = static_cast<size_t>(std::floor(limit_));
  if (probing_) limit = std::min(limit, probe_limit_);
  return std::clamp(limit, options_.min, options_.max);
}

double AdaptiveLimiter::Alpha() const {
  const double vegas =
      std::max(options_.alpha_min, options_.alpha_scale * std::log10(std::max(1.0, limit_)));
  return std::min(vegas, std::max(1.0, options_.alpha_max_fraction * limit_));
}

double AdaptiveLimiter::Beta() const {
  const double vegas =
      std::max(options_.beta_min, options_.beta_scale * std::log10(std::max(1.0, limit_)));
  return std::min(vegas, std::max(2.0, options_.beta_max_fraction * limit_));
}

void AdaptiveLimiter::SetLimit(double value) {
  limit_ = std::clamp(value, static_cast<double>(options_.min), static_cast<double>(options_.max));
}

void AdaptiveLimiter::ResetBaseline() {
  base_rtt_s_ = 0;
  base_stderr_s_ = 0;
  base_stddev_s_ = 0;
}

void AdaptiveLimiter::OnBatchSizeChanged(TimePoint now, double latency_ratio) {
  if (latency_ratio > 0 && base_rtt_s_ > 0) {
    base_rtt_s_ *= latency_ratio;
    base_stderr_s_ *= latency_ratio;
    base_stddev_s_ *= latency_ratio;
  } else {
    ResetBaseline();
    StartWindow(now);
  }
}

void AdaptiveLimiter::StartWindow(TimePoint now) {
  window_ = Window{};
  window_start_ = now;
}

void AdaptiveLimiter::OnStart(TimePoint now) {
  if (window_start_ == TimePoint::min()) StartWindow(now);
  ++in_flight_;
  if (in_flight_ >= Limit()) window_.reached_limit = true;
}

void AdaptiveLimiter::NoteCut() {
  // Remember where we were before the cut, unless still climbing back to a
  // higher level from an earlier one.
  if (limit_ >= recovery_target_) recovery_target_ = limit_;
}

void AdaptiveLimiter::BeginBackoffEpisode() {
  if (in_backoff_episode_) return;
  // Where slow start may climb back to once the episode is over.
  ssthresh_ = std::max(static_cast<double>(options_.min), limit_ * options_.backoff_ratio);
  in_backoff_episode_ = true;
}

void AdaptiveLimiter::Backoff(TimePoint now) {
  BeginBackoffEpisode();
  // The level that drew the backpressure is over capacity: recover quickly
  // only to just below it, then probe upward by +1. (Recovering x1.25
  // straight back to it drew a rejection per cycle: 9% of requests 503 on
  // a 32-worker server that answers 503 beyond capacity.)
  recovery_target_ = std::max(static_cast<double>(options_.min), limit_ - 1);
  SetLimit(limit_ * options_.backoff_ratio);
  probing_ = false;
  StartWindow(now);
}

void AdaptiveLimiter::OverCapacity(TimePoint now, size_t in_flight_before, bool after_cut) {
  // A server that turns requests away at the door had the others in
  // service, so it says how many fit: of the requests out when a burst of
  // refusals began, those not refused. The limit goes there (not x0.9: a
  // +1 probe refused at 25 on 24 slots left 22.5, floored to 22, a slot
  // below capacity for a window per probe), and the next +1 probe waits
  // over_capacity_hold_windows (each probe costs a 503). Slow start past
  // capacity (16 to 32 on 24 slots) is one burst: 8 refused, limit 24
  // (it was cut by x0.9 three times, each cut's new requests refused
  // again: 13 of a 56-s run's 22 503s).
  if (after_cut) {
    // A new burst: requests sent since the last one were refused. (No
    // NoteCut: recovery_target_ is set below.)
    BeginBackoffEpisode();
    refusal_room_ = in_flight_before;
    refusal_at_ = now;
    refusal_cut_from_ = limit_;
    probing_ = false;
    StartWindow(now);
  }
  if (refusal_room_ > 0) --refusal_room_;
  const double fit = static_cast<double>(std::max(options_.min, refusal_room_));
  if (limit_ > fit) SetLimit(fit);
  // Where slow start and the fast recovery climb back to: what fit, but not
  // below half the level the burst began at, so that a burst that refused
  // everything (a restart behind a load balancer) does not leave +1 per
  // window as the only way back.
  const double climb_to = std::max(limit_, refusal_cut_from_ / 2);
  ssthresh_ = std::min(ssthresh_, climb_to);
  recovery_target_ = climb_to;
  hold_windows_ = options_.over_capacity_hold_windows;
}

void AdaptiveLimiter::OnFinish(TimePoint now, Duration rtt, RequestOutcome outcome) {
  const size_t in_flight_before = in_flight_;
  if (in_flight_ > 0) --in_flight_;
  if (window_start_ == TimePoint::min()) StartWindow(now - rtt);
  const TimePoint started = now - rtt;

  switch (outcome) {
    case RequestOutcome::kPermanent:
    case RequestOutcome::kFailure:
      return;  // says nothing about capacity; its RTT is not representative
    case RequestOutcome::kBackpressure:
      // One cut per window: a burst of 429s from requests sent under the
      // old limit is one signal, not many.
      if (started >= window_start_) Backoff(now);
      return;
    case RequestOutcome::kOverCapacity:
      OverCapacity(now, in_flight_before, /*after_cut=*/started >= refusal_at_);
      return;
    case RequestOutcome::kSuccess:
      break;
  }

  const double rtt_s = ToSeconds(rtt);
  if (probing_) {
    if (started < probe_start_) return;
    probe_sum_rtt_s_ += rtt_s;
    if (++probe_samples_ >= probe_needed_) {
      base_rtt_s_ = probe_sum_rtt_s_ / static_cast<double>(probe_samples_);
      base_confirmed_at_ = now;
      probing_ = false;
      StartWindow(now);
    }
    return;
  }
  if (started < window_start_) return;
  window_.sum_rtt_s += rtt_s;
  window_.sum_sq_rtt_s += rtt_s * rtt_s;
  window_.sum_in_flight += static_cast<double>(in_flight_before);
  ++window_.samples;
  const size_t needed = std::max(options_.min_window_samples, in_flight_before);
  if (window_.samples >= needed) CloseWindow(now);
}

void AdaptiveLimiter::CloseWindow(TimePoint now) {
  const double n = static_cast<double>(window_.samples);
  const double avg = window_.sum_rtt_s / n;
  const double in_flight = window_.sum_in_flight / n;
  // Standard error of this window's mean: the jitter we must not mistake
  // for queueing.
  const double variance = std::max(0.0, window_.sum_sq_rtt_s / n - avg * avg);
  const double stddev_s = n > 1 ? std::sqrt(variance * n / (n - 1)) : 0.0;
  const double stderr_s = n > 1 ? std::sqrt(variance / (n - 1)) : 0.0;
  if (base_rtt_s_ <= 0 || avg < base_rtt_s_) {
    base_rtt_s_ = avg;
    base_stderr_s_ = stderr_s;
    base_stddev_s_ = std::max(base_stddev_s_, stddev_s);
    base_confirmed_at_ = now;
  } else if (avg <= base_rtt_s_ * (1 + options_.confirm_tolerance)) {
    // The service's spread: the widest of the windows near the baseline
    // (one small window can show too little of it).
    base_stddev_s_ = std::max(base_stddev_s_, stddev_s);
    // Confirms the baseline (no re-probe needed yet) but does not move it.
    // It used to be relaxed 10% toward every confirming window, so that a
    // lucky low window would not pin it: but then a queue growing by one
    // request per window (each adding < 10% to the RTT, e.g. on a service
    // whose RTT is mostly client-side time) dragged the baseline up behind
    // it, the queue never showed and the limit crept to 32 on 8 workers.
    // A lucky window is covered by the noise term below and by re-probing.
    base_confirmed_at_ = now;
  }

  // RTT above the baseline by more than the noise of both means is queueing.
  // This window's noise is taken at the baseline's spread (the service's own
  // jitter), not at its own: a FIFO queue makes RTTs spread too (on a
  // service of fixed latency, capacity 8 and a queue of 5, five of every
  // eight requests wait a whole service time: RTTs of 200 and 400 ms), and
  // counting that spread as noise hid the queue it came from (the limit held
  // 13 on 8 workers, p50 400 ms). The window's own spread still counts when
  // it is smaller.
  const double window_stderr_s = std::min(stderr_s, base_stddev_s_ / std::sqrt(std::max(1.0, n)));
  const double noise = options_.noise_sigmas * std::sqrt(window_stderr_s * window_stderr_s +
                                                         base_stderr_s_ * base_stderr_s_);
  const double base = base_rtt_s_ + noise;
  const double queue = in_flight * std::max(0.0, 1.0 - base / avg);
  const double alpha = Alpha();
  const double beta = Beta();
  if (queue > beta) {
    const double queue_free = in_flight * std::min(1.0, base / avg);
    const double target = std::min(limit_, queue_free + alpha);
    NoteCut();
    SetLimit(std::max(target, limit_ * options_.min_gradient));
    ssthresh_ = std::min(ssthresh_, limit_);  // capacity found: no more doubling
    in_backoff_episode_ = false;
  } else {
    in_backoff_episode_ = false;
    if (queue >= alpha) {
      ssthresh_ = std::min(ssthresh_, limit_);  // queueing begins here
    } else if (hold_windows_ > 0) {
      --hold_windows_;  // at the level that fit, before the next probe
    } else if (window_.reached_limit) {
      if (limit_ < ssthresh_) {
        SetLimit(std::min(limit_ * 2, ssthresh_));
      } else if (queue < alpha / 2 && limit_ + 1 < recovery_target_) {
        // Clearly no queue at all below the level of the last cut (the cut
        // overshot, or the overload is gone): climb back multiplicatively,
        // not by one, up to that level.
        SetLimit(
            std::min(std::max(limit_ + 1, limit_ * options_.recovery_growth), recovery_target_));
      } else {
        SetLimit(limit_ + 1);
      }
    }
  }

  if (queue >= alpha && limit_ >= ssthresh_ &&
      now - base_confirmed_at_ >= options_.probe_interval) {
    // We seem to be queueing but the baseline is stale: re-measure it at the
    // queue-free concurrency.
    StartProbe(now, in_flight, avg);
    return;
  }
  StartWindow(now);
}

void AdaptiveLimiter::StartProbe(TimePoint now, double in_flight, double avg_rtt_s) {
  probing_ = true;
  ++probes_;
  probe_start_ = now;
  probe_limit_ = std::max<size_t>(
      options_.min,
      static_cast<size_t>(std::floor(in_flight * std::min(1.0, base_rtt_s_ / avg_rtt_s))));
  probe_limit_ = std::min(probe_limit_, Limit());
  probe_needed_ = std::max<size_t>(options_.min_window_samples, probe_limit_ / 2);
  probe_sum_rtt_s_ = 0;
  probe_samples_ = 0;
  base_confirmed_at_ = now;  // one probe per interval even if it cannot finish
  StartWindow(now);
}

std::unique_ptr<ConcurrencyLimiter> MakeAdaptiveLimiter(const AdaptiveLimiterOptions& options) {
  return std::make_unique<AdaptiveLimiter>(options);
}

}  // namespace sluice
