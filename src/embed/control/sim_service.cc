// The simulated service and client loop (see sim_service.h).
#include "embed/control/sim_service.h"

#include <algorithm>
#include <cmath>
#include <deque>
#include <limits>
#include <optional>
#include <queue>
#include <random>
#include <unordered_map>

namespace sluice::sim {
namespace {

using std::chrono::milliseconds;

// One minute of budget, refilled continuously (OpenAI's documented model).
struct ServerBucket {
  double limit = 0;  // per minute; 0 = none
  double level = 0;
  TimePoint updated{};

  bool active() const { return limit > 0; }
  void Refill(TimePoint now) {
    if (!active()) return;
    level = std::min(limit, level + limit / 60.0 * ToSeconds(now - updated));
    updated = now;
  }
  void SetLimit(double new_limit, TimePoint now) {
    Refill(now);
    // As the mock API does: a limited bucket keeps the same fraction of its
    // capacity; one that was unlimited starts full.
    const double fraction = active() ? level / limit : 1.0;
    limit = new_limit;
    updated = now;
    level = fraction * limit;
  }
  Duration WaitFor(double amount) const {
    if (level >= amount) return Duration(0);
    return FromSeconds((amount - level) / (limit / 60.0));
  }
  Duration Reset() const { return FromSeconds((limit - level) / (limit / 60.0)); }
};

struct Request {
  uint64_t id = 0;
  size_t inputs = 0;
  double tokens = 0;  // actual
  TimePoint arrived{};
  Duration service_time{0};
};

struct Response {
  uint64_t id = 0;
  int http_status = 200;
  RateLimitInfo rate;
  int64_t prompt_tokens = 0;
};

struct Event {
  TimePoint at;
  uint64_t seq;
  bool frees_server;  // a served request completing (vs an immediate reject)
  Response response;
  bool operator>(const Event& o) const { return at != o.at ? at > o.at : seq > o.seq; }
};

class Service {
 public:
  Service(const ServiceOptions& options, TimePoint start)
      : options_(options), start_(start), rng_(options.seed) {
    if (options_.rpm > 0) requests_.SetLimit(options_.rpm, start);
    if (options_.tpm > 0) tokens_.SetLimit(options_.tpm, start);
  }

  void Arrive(TimePoint now, Request request) {
    ApplyChanges(now);
    Response r;
    r.id = request.id;
    for (const Storm& s : options_.storms) {
      if (now >= start_ + s.from && now < start_ + s.to) {
        r.http_status = 429;
        r.rate.retry_after = s.retry_after;
        Push(now + options_.reject_latency, false, r);
        return;
      }
    }
    requests_.Refill(now);
    tokens_.Refill(now);
    const bool fits_requests = !requests_.active() || requests_.level >= 1;
    const bool fits_tokens = !tokens_.active() || tokens_.level >= request.tokens;
    if (!fits_requests || !fits_tokens) {
      r.http_status = 429;
      Duration wait{0};
      if (requests_.active()) wait = std::max(wait, requests_.WaitFor(1));
      if (tokens_.active()) wait = std::max(wait, tokens_.WaitFor(request.tokens));
      // Services round Retry-After up (retry-after-ms here).
      wait = std::chrono::ceil<milliseconds>(wait);
      r.rate = Headers();
      r.rate.retry_after = std::max<Duration>(wait, milliseconds(1));
      Push(now + options_.reject_latency, false, r);
      return;
    }
    if (requests_.active()) requests_.level -= 1;
    if (tokens_.active()) tokens_.level -= request.tokens;
    r.rate = Headers();
    if (options_.permanent_error_rate > 0 &&
        std::uniform_real_distribution<double>(0, 1)(rng_) < options_.permanent_error_rate) {
      r.http_status = 400;
      Push(now + options_.reject_latency, false, r);
      return;
    }
    r.prompt_tokens = static_cast<int64_t>(std::llround(request.tokens));
    double scale = 1;
    if (options_.jitter > 0) {
      scale =
          std::uniform_real_distribution<double>(1 - options_.jitter, 1 + options_.jitter)(rng_);
    }
    request.service_time = std::chrono::duration_cast<Duration>(
        (options_.base_latency +
         options_.per_input_latency * static_cast<int64_t>(request.inputs)) *
        scale);
    request.arrived = now;
    pending_responses_[request.id] = r;
    if (options_.reject_over_capacity && options_.capacity > 0 && busy_ >= options_.capacity) {
      pending_responses_.erase(request.id);
      r.http_status = 503;
      r.prompt_tokens = 0;
      Push(now + options_.reject_latency, false, r);
      return;
    }
    if (options_.capacity == 0 || busy_ < options_.capacity) {
      StartService(now, request);
    } else {
      waiting_.push_back(request);
    }
  }

  // The next time something happens at the service (max() when idle).
  TimePoint NextEventTime() const { return events_.empty() ? TimePoint::max() : events_.top().at; }

  // Pops every event due at or before `now`, appending responses.
  void Deliver(TimePoint now, std::vector<Response>& out) {
    while (!events_.empty() && events_.top().at <= now) {
      Event e = events_.top();
      events_.pop();
      out.push_back(e.response);
      if (e.frees_server) {
        --busy_;
        if (!waiting_.empty()) {
          Request next = waiting_.front();
          waiting_.pop_front();
          StartService(e.at, next);
        }
      }
    }
  }

 private:
  void ApplyChanges(TimePoint now) {
    while (next_change_ < options_.changes.size() &&
           start_ + options_.changes[next_change_].at <= now) {
      const LimitChange& c = options_.changes[next_change_++];
      const TimePoint at = start_ + c.at;
      if (c.rpm > 0) {
        requests_.SetLimit(c.rpm, at);
      } else {
        requests_.limit = 0;
      }
      if (c.tpm > 0) {
        tokens_.SetLimit(c.tpm, at);
      } else {
        tokens_.limit = 0;
      }
    }
  }

  RateLimitInfo Headers() const {
    RateLimitInfo h;
    if (!options_.send_headers) return h;
    if (requests_.active()) {
      h.limit_requests = static_cast<int64_t>(requests_.limit);
      h.remaining_requests = static_cast<int64_t>(std::max(0.0, std::floor(requests_.level)));
      h.reset_requests = requests_.Reset();
    }
    if (tokens_.active()) {
      h.limit_tokens = static_cast<int64_t>(tokens_.limit);
      h.remaining_tokens = static_cast<int64_t>(std::max(0.0, std::floor(tokens_.level)));
      h.reset_tokens = tokens_.Reset();
    }
    return h;
  }

  void StartService(TimePoint now, const Request& request) {
    ++busy_;
    auto it = pending_responses_.find(request.id);
    Response r = it->second;
    pending_responses_.erase(it);
    Push(now + request.service_time, true, r);
  }

  void Push(TimePoint at, bool frees_server, const Response& r) {
    events_.push(Event{at, seq_++, frees_server, r});
  }

  ServiceOptions options_;
  TimePoint start_;
  std::mt19937_64 rng_;
  ServerBucket requests_, tokens_;
  size_t next_change_ = 0;
  size_t busy_ = 0;
  std::deque<Request> waiting_;
  std::priority_queue<Event, std::vector<Event>, std::greater<Event>> events_;
  std::unordered_map<uint64_t, Response> pending_responses_;
  uint64_t seq_ = 0;
};

struct Batch {
  size_t inputs = 0;
  double tokens = 0;  // actual
  uint64_t bytes = 0;
  int attempts = 0;
  TimePoint ready{};
};

struct InFlight {
  Batch batch;
  TimePoint started{};
  uint32_t estimated_tokens = 0;
};

}  // namespace

double CeilingChunksPerSecond(const ServiceOptions& service, Duration t, double inputs,
                              double tokens_per_input) {
  double rpm = service.rpm, tpm = service.tpm;
  for (const LimitChange& c : service.changes) {
    if (c.at <= t) {
      rpm = c.rpm;
      tpm = c.tpm;
    }
  }
  double ceiling = std::numeric_limits<double>::infinity();
  if (service.capacity > 0) {
    const double latency =
        ToSeconds(service.base_latency) + ToSeconds(service.per_input_latency) * inputs;
    ceiling = std::min(ceiling, static_cast<double>(service.capacity) * inputs / latency);
  }
  if (rpm > 0) ceiling = std::min(ceiling, rpm / 60.0 * inputs);
  if (tpm > 0) ceiling = std::min(ceiling, tpm / 60.0 / tokens_per_input);
  return ceiling;
}

Result Run(const ServiceOptions& service_options, const ClientOptions& client,
           ConcurrencyLimiter& limiter, RatePacer& pacer, BatchSizer* sizer) {
  ManualClock clock(TimePoint{} + std::chrono::hours(1));
  const TimePoint start = clock.Now();
  const TimePoint end = start + client.duration;
  Service service(service_options, start);
  TraceRecorder trace(
      start, TraceRecorderOptions{
                 .max_rows = 100000,
                 .warmup_seconds =
                     std::chrono::duration_cast<std::chrono::seconds>(client.warmup).count()});
  std::mt19937_64 rng(client.seed);
  std::unordered_map<uint64_t, InFlight> in_flight;
  std::deque<Batch> retries;  // kept sorted by ready time
  Result result;
  uint64_t next_id = 1;
  uint64_t issued_inputs = 0;    // inputs put into fresh batches (finite corpus)
  uint64_t finished_inputs = 0;  // embedded or given up
  TimePoint next_sample = start;
  std::vector<Response> responses;
  std::vector<double> inputs_per_second;  // successful inputs / successful requests
  std::vector<double> ok_requests_per_second;
  std::vector<double> latencies_after_warmup_ms;  // successful requests only

  auto new_batch = [&]() {
    Batch b;
    // As the stage: requests stay within the pacer's token cap per request.
    const double cap = pacer.TokensPerRequestCap();
    b.inputs = client.batch_inputs;
    if (sizer != nullptr) b.inputs = sizer->SuggestedInputs();
    b.inputs = std::min<size_t>(b.inputs, BatchSizerOptions{}.max_tokens_per_request /
                                              std::max(1.0, client.tokens_per_input));
    if (cap >= 1) {
      b.inputs = std::min<size_t>(
          b.inputs, static_cast<size_t>(cap / std::max(1.0, client.tokens_per_input)));
    }
    b.inputs = std::max<size_t>(1, b.inputs);
    if (client.total_inputs > 0) {
      b.inputs =
          static_cast<size_t>(std::min<uint64_t>(b.inputs, client.total_inputs - issued_inputs));
      issued_inputs += b.inputs;
    }
    double variation = 1;
    if (client.token_variation > 0) {
      variation = std::uniform_real_distribution<double>(1 - client.token_variation,
                                                         1 + client.token_variation)(rng);
    }
    b.tokens = std::max(
        1.0, std::round(client.tokens_per_input * variation * static_cast<double>(b.inputs)));
    b.bytes = static_cast<uint64_t>(std::llround(b.tokens * client.bytes_per_token));
    return b;
  };
  std::optional<Batch> fresh;
  std::optional<TimePoint> first_start;
  TimePoint last_answer{};

  while (true) {
    const TimePoint now = clock.Now();
    if (now >= end) break;
    if (client.total_inputs > 0 && finished_inputs >= client.total_inputs) {
      result.corpus_done = true;
      break;
    }

    // 1. Completions due now.
    responses.clear();
    service.Deliver(now, responses);
    for (const Response& r : responses) {
      auto it = in_flight.find(r.id);
      if (it == in_flight.end()) continue;
      InFlight f = it->second;
      in_flight.erase(it);
      last_answer = now;
      const Duration rtt = now - f.started;
      RequestOutcome outcome = RequestOutcome::kSuccess;
      if (r.http_status == 429) outcome = RequestOutcome::kBackpressure;
      if (r.http_status == 503) outcome = RequestOutcome::kOverCapacity;
      if (r.http_status == 400) outcome = RequestOutcome::kPermanent;
      limiter.OnFinish(now, rtt, outcome);
      pacer.OnResponseTo(f.started, now, r.rate, r.http_status, f.batch.bytes, r.prompt_tokens);
      RequestEvent event;
      event.start = f.started;
      event.end = now;
      event.inputs = f.batch.inputs;
      event.tokens = static_cast<uint32_t>(r.prompt_tokens);
      event.http_status = r.http_status;
      event.outcome = outcome;
      event.retry = f.batch.attempts > 1;
      trace.OnRequest(event);
      ++result.requests;
      const bool after_warmup = now >= start + client.warmup;
      if (after_warmup) ++result.requests_after_warmup;
      const size_t second = static_cast<size_t>(
          std::chrono::duration_cast<std::chrono::seconds>(now - start).count());
      if (inputs_per_second.size() <= second) {
        inputs_per_second.resize(second + 1, 0);
        ok_requests_per_second.resize(second + 1, 0);
      }
      if (outcome == RequestOutcome::kSuccess) {
        if (sizer != nullptr) {
          // As the embed stage should: keep the limiter's baseline in step
          // with the batch size.
          const size_t before = sizer->SuggestedInputs();
          sizer->Observe(f.batch.inputs, rtt);
          sizer->ObserveConcurrencyLimit(limiter.Limit());
          const size_t after = sizer->SuggestedInputs();
          if (after != before) limiter.OnBatchSizeChanged(now, sizer->LatencyRatio(before, after));
        }
        if (after_warmup) latencies_after_warmup_ms.push_back(ToSeconds(rtt) * 1000.0);
        result.tokens_ok += static_cast<double>(r.prompt_tokens);
        finished_inputs += f.batch.inputs;
        inputs_per_second[second] += static_cast<double>(f.batch.inputs);
        ok_requests_per_second[second] += 1;
      } else if (outcome == RequestOutcome::kPermanent) {
        ++result.permanent_errors;
        finished_inputs += f.batch.inputs;
      } else {
        if (r.http_status == 429) {
          ++result.http_429;
          if (after_warmup) ++result.http_429_after_warmup;
        } else {
          ++result.http_503;
        }
        Batch retry = f.batch;
        if (retry.attempts >= client.max_attempts) {
          ++result.exhausted;
          finished_inputs += retry.inputs;
        } else {
          Duration wait = std::chrono::seconds(1);
          if (r.rate.retry_after) {
            wait = *r.rate.retry_after;
          } else if (r.http_status == 503) {
            // The stage's retry policy: full jitter up to 250 ms * 2^(n-1), max 30 s.
            const double cap = std::min(30.0, 0.25 * std::pow(2.0, retry.attempts - 1));
            wait = FromSeconds(std::uniform_real_distribution<double>(0, cap)(rng));
          }
          retry.ready = now + wait;
          auto pos = std::upper_bound(retries.begin(), retries.end(), retry.ready,
                                      [](TimePoint t, const Batch& b) { return t < b.ready; });
          retries.insert(pos, retry);
        }
      }
    }

    // 2. Start what the limiter and the pacer allow, as EmbedStage does.
    TimePoint wake = TimePoint::max();
    while (in_flight.size() < limiter.Limit()) {
      Batch* next = nullptr;
      const bool from_retry = !retries.empty() && retries.front().ready <= now;
      if (from_retry) {
        next = &retries.front();
      } else {
        if (!fresh && client.total_inputs > 0 && issued_inputs >= client.total_inputs) break;
        if (!fresh) fresh = new_batch();
        next = &*fresh;
      }
      const uint32_t estimated = static_cast<uint32_t>(
          std::ceil(static_cast<double>(next->bytes) / pacer.BytesPerToken()));
      const Duration delay = pacer.DelayFor(now, estimated);
      if (delay > Duration(0)) {
        wake = now + delay;
        break;
      }
      InFlight f;
      f.batch = *next;
      ++f.batch.attempts;
      f.started = now;
      f.estimated_tokens = estimated;
      if (from_retry) {
        retries.pop_front();
      } else {
        fresh.reset();
      }
      if (!first_start) first_start = now;
      limiter.OnStart(now);
      pacer.OnStart(now, estimated);
      const uint64_t id = next_id++;
      Request req;
      req.id = id;
      req.inputs = f.batch.inputs;
      req.tokens = f.batch.tokens;
      in_flight.emplace(id, f);
      service.Arrive(now, req);
    }

    // 3. Sample the controller.
    if (now >= next_sample) {
      trace.Sample(now, limiter.Limit(), in_flight.size());
      while (next_sample <= now) next_sample += client.sample_period;
    }

    // 4. Advance to the next thing that can happen.
    TimePoint next = std::min({service.NextEventTime(), wake, next_sample, end});
    if (!retries.empty() && retries.front().ready > now)
      next = std::min(next, retries.front().ready);
    if (next <= now) next = now + Duration(1);
    clock.Set(next);
  }

  result.rows = trace.Rows();
  result.summary = trace.Summary();
  result.final_bytes_per_token = pacer.BytesPerToken();
  const size_t seconds = static_cast<size_t>(
      std::chrono::duration_cast<std::chrono::seconds>(client.duration).count());
  result.rows.resize(std::min(result.rows.size(), seconds));
  inputs_per_second.resize(seconds, 0);
  ok_requests_per_second.resize(seconds, 0);
  double achieved = 0, ceiling = 0, limit_sum = 0;
  size_t limit_rows = 0;
  result.limit_min = std::numeric_limits<double>::infinity();
  result.limit_max = 0;
  const size_t warmup =
      static_cast<size_t>(std::chrono::duration_cast<std::chrono::seconds>(client.warmup).count());
  double last_inputs = static_cast<double>(client.batch_inputs > 0 ? client.batch_inputs : 64);
  for (size_t s = 0; s < seconds; ++s) {
    if (ok_requests_per_second[s] > 0)
      last_inputs = inputs_per_second[s] / ok_requests_per_second[s];
    const double c = CeilingChunksPerSecond(service_options, std::chrono::seconds(s), last_inputs,
                                            client.tokens_per_input);
    result.ceiling_chunks_per_s.push_back(c);
    if (s >= warmup && s < result.rows.size()) {
      achieved += static_cast<double>(result.rows[s].chunks);
      ceiling += c;
      limit_sum += result.rows[s].limit;
      ++limit_rows;
      result.limit_min = std::min(result.limit_min, result.rows[s].limit);
      result.limit_max = std::max(result.limit_max, result.rows[s].limit);
    }
  }
  result.throughput_ratio = ceiling > 0 ? achieved / ceiling : 0;
  if (first_start && last_answer > *first_start) {
    result.busy_span_s = ToSeconds(last_answer - *first_start);
    if (service_options.tpm > 0 && service_options.changes.empty()) {
      const double token_ceiling =
          service_options.tpm + service_options.tpm / 60.0 * result.busy_span_s;
      result.whole_run_ratio = result.tokens_ok / token_ceiling;
    }
  }
  result.limit_mean = limit_rows > 0 ? limit_sum / static_cast<double>(limit_rows) : 0;
  if (limit_rows == 0) result.limit_min = 0;
  if (!latencies_after_warmup_ms.empty()) {
    auto middle = latencies_after_warmup_ms.begin() + latencies_after_warmup_ms.size() / 2;
    std::nth_element(latencies_after_warmup_ms.begin(), middle, latencies_after_warmup_ms.end());
    result.p50_latency_ms_after_warmup = *middle;
  }
  return result;
}

}  // namespace sluice::sim
