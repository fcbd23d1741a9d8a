// HeaderRatePacer: request and token buckets, one shared cooldown, learned
// bytes per token. See docs/CONCURRENCY.md.
//
// Buckets. Each known limit (per minute) becomes a local bucket refilled at
// safety * limit / 60 per second and holding burst_seconds of that rate; a
// request may start when the request bucket holds 1 and the token bucket
// holds its estimated cost; for a cost larger than the bucket, the bucket may
// fill up to that cost (at most a minute's limit) while the request waits.
//
// Headers. x-ratelimit-limit-* replaces the limit (capped by the user's).
// x-ratelimit-remaining-* is what the service had left when it counted the
// request that carried it. Requests started after that one are not in it;
// those started before are. With the request's start time (OnResponseTo)
// the pacer subtracts exactly the later starts, from a log of starts; without
// it, everything still in flight (and a late answer to an early request
// could then overstate the budget, so only the lowering applies). Either way
// the result is conservative: the service also refilled during the round trip.
// A count below the local level lowers it. A count above it raises it, less
// a margin (use_announced_budget): a service holding a minute's budget is
// used at line speed until the budget is spent, then at the paced rate. The
// margin (5% of the limit) shrinks to 3.5% as bytes per token is learned.
// Above its capacity a bucket does not refill locally: only the service's
// count can put it there.
//
// Cooldown. A 429 (or a 503 with Retry-After) sets cooldown_until to
// max(cooldown_until, now + Retry-After); every request waits for it, so a
// burst of 429s is one pause, not a storm of individual retries. A 429 also
// empties the local buckets so the restart is paced, not a burst, and makes
// the pacer half-open: after the cooldown a single request goes first and
// the others wait (polling every half_open_poll) until an answer other than
// 429 comes back.
#include <algorithm>
#include <cmath>

#include "sluice/control.h"

namespace sluice {

double HeaderRatePacer::Bucket::Top() const {
  return std::max(capacity, std::min(wanted, per_minute));
}

double HeaderRatePacer::Bucket::LevelAt(TimePoint now) const {
  const double top = Top();
  if (now <= updated || level >= top) return level;
  return std::min(top, level + rate * ToSeconds(now - updated));
}

void HeaderRatePacer::Bucket::Refill(TimePoint now) {
  level = LevelAt(now);
  if (now > updated) updated = now;
}

void HeaderRatePacer::Bucket::SetLimit(double limit_per_minute, double safety, double burst_seconds,
                                       TimePoint now) {
  if (limit_per_minute == per_minute) return;
  const bool first = !active();
  Refill(now);
  per_minute = limit_per_minute;
  rate = per_minute * safety / 60.0;
  capacity = std::max(1.0, rate * burst_seconds);
  if (first) {
    level = capacity;
    updated = now;
  } else {
    level = std::min(level, capacity);
    changed = now;
  }
}

Duration HeaderRatePacer::Bucket::WaitFor(TimePoint now, double amount) const {
  // A request costing more than the bucket's capacity lets it fill up to its
  // cost (at most a minute's budget: more is refused as too large anyway).
  wanted = std::max(wanted, amount);
  const double need = std::min(amount, per_minute);
  const double have = LevelAt(now);
  if (have >= need) return Duration(0);
  // Round up so that waiting exactly this long is enough.
  return std::chrono::duration_cast<Duration>(std::chrono::duration<double>((need - have) / rate)) +
         Duration(1);
}

HeaderRatePacer::HeaderRatePacer(RatePacerOptions options) : options_(options) {
  options_.safety = std::clamp(options_.safety, 0.1, 1.0);
  options_.burst_seconds = std::max(0.01, options_.burst_seconds);
  options_.min_bytes_per_token = std::max(0.1, options_.min_bytes_per_token);
  options_.max_bytes_per_token =
      std::max(options_.min_bytes_per_token, options_.max_bytes_per_token);
  options_.full_weight_tokens = std::max<int64_t>(1, options_.full_weight_tokens);
  options_.burst_margin = std::clamp(options_.burst_margin, 0.0, 1.0);
  options_.steady_margin = std::clamp(options_.steady_margin, 0.0, options_.burst_margin);
  bytes_per_token_ = std::clamp(options_.initial_bytes_per_token, options_.min_bytes_per_token,
                                options_.max_bytes_per_token);
  // The buckets start full at the first use; TimePoint{} is fine for a
  // steady clock (monotonic from an arbitrary origin, in the past).
  if (options_.rpm > 0)
    requests_.SetLimit(options_.rpm, options_.safety, options_.burst_seconds, {});
  if (options_.tpm > 0) tokens_.SetLimit(options_.tpm, options_.safety, options_.burst_seconds, {});
  // The first request goes alone and its answer opens the pacer, as a
  // half-open probe after a 429 does.
  if (options_.probe_first && options_.rpm <= 0 && options_.tpm <= 0) half_open_ = true;
}

RateBudget HeaderRatePacer::Budget(TimePoint now) const {
  RateBudget budget;
  budget.requests_per_minute = requests_.per_minute;
  budget.tokens_per_minute = tokens_.per_minute;
  // A bucket in debt (spent ahead of a header's correction) has nothing left.
  if (requests_.active()) budget.requests_remaining = std::max(0.0, requests_.LevelAt(now));
  if (tokens_.active()) budget.tokens_remaining = std::max(0.0, tokens_.LevelAt(now));
  return budget;
}

Duration HeaderRatePacer::DelayFor(TimePoint now, uint32_t tokens) const {
  Duration delay = cooldown_until_ > now ? cooldown_until_ - now : Duration(0);
  if (requests_.active()) delay = std::max(delay, requests_.WaitFor(now, 1.0));
  if (tokens_.active()) delay = std::max(delay, tokens_.WaitFor(now, static_cast<double>(tokens)));
  if (delay == Duration(0) && half_open_ && probe_started_) delay = options_.half_open_poll;
  return delay;
}

void HeaderRatePacer::OnStart(TimePoint now, uint32_t estimated_tokens) {
  if (half_open_ && now >= cooldown_until_) probe_started_ = true;
  ++pending_requests_;
  pending_tokens_ += estimated_tokens;
  // Kept sorted by time even if a caller's clock stepped back.
  const TimePoint at = !starts_.empty() && starts_.back().at > now ? starts_.back().at : now;
  StartRecord record;
  record.at = at;
  record.requests_before = started_requests_;
  record.tokens_before = started_tokens_;
  starts_.push_back(record);
  started_requests_ += 1;
  started_tokens_ += estimated_tokens;
  while (!starts_.empty() && (starts_.size() > std::max<size_t>(1, options_.start_log_max) ||
                              starts_.front().at < now - options_.start_log_horizon)) {
    starts_.pop_front();
  }
  if (requests_.active()) {
    requests_.Refill(now);
    requests_.level -= 1;
    requests_.wanted = 0;
  }
  if (tokens_.active()) {
    tokens_.Refill(now);
    tokens_.level -= estimated_tokens;
    tokens_.wanted = 0;
  }
}

std::optional<std::pair<double, double>> HeaderRatePacer::KnownFromAnswer(TimePoint started,
                                                                          const RateLimitInfo& rate,
                                                                          double own_tokens) {
  if (starts_.empty() || started < starts_.front().at) return std::nullopt;
  auto first = std::lower_bound(starts_.begin(), starts_.end(), started,
                                [](const StartRecord& r, TimePoint t) { return r.at < t; });
  if (first == starts_.end() || first->at != started) return std::nullopt;
  auto after = std::upper_bound(first, starts_.end(), started,
                                [](TimePoint t, const StartRecord& r) { return t < r.at; });
  const double requests_to_group_end =
      after == starts_.end() ? started_requests_ : after->requests_before;
  const double tokens_to_group_end =
      after == starts_.end() ? started_tokens_ : after->tokens_before;
  // The requests started at this instant form a group whose order at the
  // service is unknown. Each answer carries the count after its own request;
  // the lowest count among the group's answers is the latest, and includes
  // every answered member (one counted later would have answered lower).
  // Members not answered yet may or may not be in it: subtracted.
  StartRecord& group = *first;
  group.answered += 1;
  group.answered_tokens += own_tokens;
  if (rate.remaining_requests) {
    group.min_remaining_requests =
        std::min(group.min_remaining_requests, static_cast<double>(*rate.remaining_requests));
  }
  if (rate.remaining_tokens) {
    group.min_remaining_tokens =
        std::min(group.min_remaining_tokens, static_cast<double>(*rate.remaining_tokens));
  }
  const double group_requests = requests_to_group_end - group.requests_before;
  const double group_tokens = tokens_to_group_end - group.tokens_before;
  const double unanswered_requests = std::max(0.0, group_requests - group.answered);
  const double unanswered_tokens =
      unanswered_requests > 0 ? std::max(0.0, group_tokens - group.answered_tokens) : 0.0;
  // Everything started after the instant is missing from the count.
  return std::make_pair(
      group.min_remaining_requests - (started_requests_ - requests_to_group_end) -
          unanswered_requests,
      group.min_remaining_tokens - (started_tokens_ - tokens_to_group_end) - unanswered_tokens);
}

void HeaderRatePacer::ApplyRemaining(Bucket& bucket, double known, bool may_raise, TimePoint now) {
  bucket.Refill(now);
  // `known` is at most what the service can still take (it refilled
  // meanwhile, too): a lower count lowers the budget.
  if (known < bucket.level) {
    bucket.level = known;
    return;
  }
  if (!may_raise || !options_.use_announced_budget || half_open_ || now < cooldown_until_) return;
  // What the service has beyond the margin: a minute's budget at the start
  // (the announced burst), later whatever the local pacing at `safety` left
  // unused. The margin stays at the service as a cushion for surprises (a
  // halved limit, another client, token estimates still being learned); it
  // shrinks as the estimates are learned, since what it holds back at the
  // end of a run is never spent.
  const double margin =
      options_.steady_margin + (options_.burst_margin - options_.steady_margin) * margin_weight_;
  const double spendable = std::min(bucket.per_minute, known - margin * bucket.per_minute);
  if (spendable > bucket.level) bucket.level = spendable;
}

void HeaderRatePacer::OnResponse(TimePoint now, const RateLimitInfo& rate, int http_status,
                                 uint64_t input_bytes, int64_t prompt_tokens) {
  Respond(std::nullopt, now, rate, http_status, input_bytes, prompt_tokens);
}

void HeaderRatePacer::OnResponseTo(TimePoint started, TimePoint now, const RateLimitInfo& rate,
                                   int http_status, uint64_t input_bytes, int64_t prompt_tokens) {
  Respond(started, now, rate, http_status, input_bytes, prompt_tokens);
}

void HeaderRatePacer::Respond(std::optional<TimePoint> started, TimePoint now,
                              const RateLimitInfo& rate, int http_status, uint64_t input_bytes,
                              int64_t prompt_tokens) {
  // Release this request's reservation (its own cost is unknown here: use
  // the mean of what is pending).
  if (pending_requests_ > 0) {
    pending_tokens_ -= pending_tokens_ / static_cast<double>(pending_requests_);
    --pending_requests_;
  }
  if (pending_requests_ == 0) pending_tokens_ = 0;

  auto effective = [](double user, int64_t header) {
    const double h = static_cast<double>(header);
    return user > 0 ? std::min(user, h) : h;
  };
  if (rate.limit_requests && *rate.limit_requests > 0) {
    rpm_inferred_ = false;
    requests_.SetLimit(effective(options_.rpm, *rate.limit_requests), options_.safety,
                       options_.burst_seconds, now);
  }
  if (rate.limit_tokens && *rate.limit_tokens > 0) {
    tokens_.SetLimit(effective(options_.tpm, *rate.limit_tokens), options_.safety,
                     options_.burst_seconds, now);
  }
  if ((rate.remaining_requests && requests_.active()) ||
      (rate.remaining_tokens && tokens_.active())) {
    // What the count cannot include: the requests started after this one
    // (exact, from the log of starts), or (start unknown) everything still
    // in flight, which cannot be used to raise the budget (a late answer to
    // an early request overstates it).
    std::optional<std::pair<double, double>> known;
    if (started) {
      known = KnownFromAnswer(*started, rate, static_cast<double>(input_bytes) / bytes_per_token_);
    }
    const bool exact = known.has_value();
    if (!exact) {
      known =
          std::make_pair(static_cast<double>(rate.remaining_requests.value_or(0)) -
                             static_cast<double>(pending_requests_),
                         static_cast<double>(rate.remaining_tokens.value_or(0)) - pending_tokens_);
    }
    // A limit the user gave is a promise (e.g. a share of the key's quota):
    // never spend the key's whole announced budget on it. A request started
    // before the limit last changed may carry a count from before the
    // change (a halved service scales its bucket): it only lowers.
    if (rate.remaining_requests && requests_.active()) {
      ApplyRemaining(requests_, known->first,
                     exact && options_.rpm <= 0 && *started >= requests_.changed, now);
    }
    if (rate.remaining_tokens && tokens_.active()) {
      ApplyRemaining(tokens_, known->second,
                     exact && options_.tpm <= 0 && *started >= tokens_.changed, now);
    }
  }

  // "Request too large" (OpenAI, and the mock API): a 429 without
  // Retry-After for a request costing more than a whole minute's tokens.
  // Waiting cannot help (the stage must split it), so it is no reason to
  // pause everyone else.
  if (http_status == 429 && !rate.retry_after && rate.limit_tokens && *rate.limit_tokens > 0 &&
      static_cast<double>(input_bytes) / bytes_per_token_ >
          static_cast<double>(*rate.limit_tokens)) {
    if (half_open_ && probe_started_) {
      half_open_ = false;  // the probe was answered; the service is not refusing work
      probe_started_ = false;
    }
    return;
  }
  const bool cooling_down = now < cooldown_until_;
  if (http_status == 429 || (http_status == 503 && rate.retry_after)) {
    Duration cooldown = rate.retry_after ? *rate.retry_after : options_.default_cooldown;
    cooldown = std::clamp(cooldown, Duration(0), options_.max_cooldown);
    cooldown_until_ = std::max(cooldown_until_, now + cooldown);
  }
  if (http_status == 429) {
    InferRequestLimit(now, cooling_down);
    margin_weight_ = 1.0;  // the full margin again until the estimates are confirmed
    success_since_429_ = false;
    // Half-open: after the cooldown one request goes first; the rest wait
    // for its answer, so a service still refusing costs one 429, not one
    // per request in flight.
    half_open_ = true;
    probe_started_ = false;
    for (Bucket* bucket : {&requests_, &tokens_}) {
      if (!bucket->active()) continue;
      bucket->Refill(now);
      bucket->level = std::min(bucket->level, 0.0);
    }
  } else if (half_open_ && probe_started_) {
    // An answer other than 429 after the cooldown: the service takes work again.
    half_open_ = false;
    probe_started_ = false;
  }
  if (half_open_ && probe_started_ && pending_requests_ == 0) {
    // Nothing in flight, so the probe has been answered (whatever it was):
    // never leave the pacer waiting for an answer that cannot come.
    half_open_ = false;
    probe_started_ = false;
  }

  if (http_status >= 200 && http_status < 300) {
    RecordSuccess(now);
    success_since_429_ = true;
  }
  if (http_status >= 200 && http_status < 300 && prompt_tokens > 0 && input_bytes > 0) {
    const double sample =
        std::clamp(static_cast<double>(input_bytes) / static_cast<double>(prompt_tokens),
                   options_.min_bytes_per_token, options_.max_bytes_per_token);
    const double weight = options_.bytes_per_token_alpha *
                          std::min(1.0, static_cast<double>(prompt_tokens) /
                                            static_cast<double>(options_.full_weight_tokens));
    bytes_per_token_ += weight * (sample - bytes_per_token_);
    margin_weight_ *= 1.0 - weight;
  }
}

void HeaderRatePacer::RecordSuccess(TimePoint now) {
  const int64_t second =
      std::chrono::duration_cast<std::chrono::seconds>(now.time_since_epoch()).count();
  if (!any_success_) {
    any_success_ = true;
    first_success_ = now;
  }
  if (!success_seconds_.empty() && success_seconds_.back().first == second) {
    ++success_seconds_.back().second;
  } else {
    success_seconds_.emplace_back(second, 1);
  }
  const int64_t window = std::max<int64_t>(
      1, std::chrono::duration_cast<std::chrono::seconds>(options_.inference_window).count());
  while (!success_seconds_.empty() && success_seconds_.front().first <= second - window) {
    success_seconds_.pop_front();
  }
  if (rpm_inferred_ && now > last_success_) {
    // Probe upward while answers are 2xx: inferred_growth per second.
    const double dt = std::min(1.0, ToSeconds(now - last_success_));
    requests_.SetLimit(requests_.per_minute * (1 + options_.inferred_growth * dt), options_.safety,
                       options_.burst_seconds, now);
  }
  last_success_ = now;
}

double HeaderRatePacer::RecentSuccessRate(TimePoint now) const {
  if (!any_success_ || success_seconds_.empty()) return 0;
  uint64_t count = 0;
  for (const auto& [second, n] : success_seconds_) count += n;
  const double span = std::clamp(ToSeconds(now - first_success_), 1.0,
                                 std::max(1.0, ToSeconds(options_.inference_window)));
  return static_cast<double>(count) / span;
}

void HeaderRatePacer::InferRequestLimit(TimePoint now, bool cooling_down) {
  if (!options_.infer_limit_from_429) return;
  if (requests_.active() && !rpm_inferred_) return;  // a real limit is known
  const double measured_per_minute = RecentSuccessRate(now) * 60.0;
  if (measured_per_minute <= 0) return;
  double next = measured_per_minute;
  if (rpm_inferred_) {
    // Only a 429 after some successes says the rate is too high; a run of
    // 429s with nothing in between is an outage the cooldown already covers.
    if (!success_since_429_) return;
    // A 429 during the cooldown of another answers a request sent before
    // the pacer knew: one cut per cooldown, as the limiter cuts once per
    // window. (Answers to requests already in service when a storm began
    // are successes between its 429s; each used to cut the limit again.)
    if (cooling_down) return;
    next = std::min(next, requests_.per_minute * options_.inferred_decrease);
  }
  requests_.SetLimit(std::max(1.0, next), options_.safety, options_.burst_seconds, now);
  rpm_inferred_ = true;
}

double HeaderRatePacer::TokensPerRequestCap() const {
  if (!tokens_.active()) return 0;
  // One second of the token rate keeps a request within the local bucket
  // (no wait for room, smooth pacing, quick response to a limit change);
  // but at least two requests' share of the request limit, so that the
  // request limit does not bind first.
  double cap = tokens_.per_minute / 60.0;
  if (requests_.active()) cap = std::max(cap, 2.0 * tokens_.per_minute / requests_.per_minute);
  return cap;
}

std::unique_ptr<RatePacer> MakeRatePacer(const RatePacerOptions& options) {
  return std::make_unique<HeaderRatePacer>(options);
}

}  // namespace sluice
