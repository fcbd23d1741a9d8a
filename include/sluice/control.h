// Pure controllers for the embed stage (docs/CONCURRENCY.md has the design):
//
//  - AdaptiveLimiter: how many requests may be in flight. A Vegas-style
//    queue estimator on a windowed, jitter-robust baseline RTT, with slow
//    start, multiplicative decrease on backpressure and periodic re-probing
//    of the baseline so self-inflicted queueing cannot ratchet it up.
//  - HeaderRatePacer: request and token buckets sized from --rpm/--tpm and the
//    x-ratelimit-* headers, one shared Retry-After cooldown, in-flight
//    reservations, and the learned UTF-8 bytes-per-token ratio.
//  - BatchSizer: fits latency = fixed + per_input * inputs and suggests the
//    batch size at which the fixed part stops dominating.
//  - TraceRecorder: a 1-second time series of what the controller did, for
//    --trace FILE (CSV or JSON) and the run report.
//
// None of them does I/O (except TraceRecorder::Write*), reads a clock or
// allocates per event beyond bounded buffers: events and time in, decisions
// out. Tests drive them with a simulated service and a fake clock
// (src/embed/control/sim_service.h).
//
// Thread safety: none of these classes is thread-safe; each is used by the
// embed stage thread only (the TraceRecorder by whoever serializes access).
#pragma once

#include <algorithm>
#include <array>
#include <cstdint>
#include <deque>
#include <limits>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "sluice/clock.h"
#include "sluice/embed.h"
#include "sluice/status.h"

namespace sluice {

// ---------------------------------------------------------------------------
// Concurrency limiter

struct AdaptiveLimiterOptions {
  size_t initial = 4;  // Default: 4. Limit before anything is measured.
  size_t min = 1;      // Default: 1. Floor; REQUIRES: 1 <= min <= max.
  size_t max = 256;    // Default: 256. Ceiling.
  // Multiplicative decrease on backpressure (429, timeout), applied at most
  // once per measurement window. Default: 0.9 (Vector's). A 503 or a refused
  // connection sets the limit to what fit instead (OverCapacity).
  double backoff_ratio = 0.9;
  // Vegas thresholds on the estimated number of requests queued at the
  // service: grow below alpha, shrink above beta, where
  // alpha = max(alpha_min, alpha_scale*log10(limit)) and likewise beta.
  double alpha_scale = 3.0;
  double beta_scale = 6.0;
  double alpha_min = 2.0;
  double beta_min = 4.0;
  // ...but never more than these fractions of the limit (at least 1 and 2
  // requests): a queue of log10-sized length is a small latency cost on a
  // server with 64 workers and a large one on a server with 8 (a queue of
  // 2.7-5.4 on 8 workers is +35-70% latency for everyone sharing it).
  double alpha_max_fraction = 0.15;
  double beta_max_fraction = 0.3;
  // Growth per window after slow start while the queue is under alpha/2 and
  // the limit is below the level it was cut from (recovering an over-cut).
  double recovery_growth = 1.25;
  // Largest cut a single queueing-driven decrease may make (limit * 0.5).
  double min_gradient = 0.5;
  // An RTT above the baseline counts as queueing only beyond this many
  // standard errors of the window means (jitter is not load).
  double noise_sigmas = 2.0;
  // A window must hold at least this many fresh samples before it is
  // judged (and at least as many as requests were in flight).
  size_t min_window_samples = 4;
  // A window average within this fraction of the baseline confirms it
  // (postpones the next re-probe). It never moves the baseline up: a queue
  // growing by one request per window adds less than this to the RTT each
  // time, and a baseline that followed it would hide the queue for ever.
  double confirm_tolerance = 0.1;
  // When the baseline has not been confirmed for this long, the limiter
  // briefly lowers the limit to its queue-free estimate to re-measure it.
  Duration probe_interval = std::chrono::seconds(10);
  // Double the limit per clean window until the first sign of queueing.
  bool slow_start = true;
  // After a request is turned away at the door (503, refused), windows to
  // wait at the level that fit before probing one higher again.
  size_t over_capacity_hold_windows = 3;
};

// Thread safety: embed stage thread only.
class AdaptiveLimiter final : public ConcurrencyLimiter {
 public:
  explicit AdaptiveLimiter(AdaptiveLimiterOptions options);
  AdaptiveLimiter(const AdaptiveLimiter&) = delete;
  AdaptiveLimiter& operator=(const AdaptiveLimiter&) = delete;

  size_t Limit() const override;
  void OnStart(TimePoint now) override;
  // kSuccess feeds the RTT window; kBackpressure cuts the limit (once per
  // window); kOverCapacity sets it to what fit (see OverCapacity); kFailure
  // and kPermanent only release the slot.
  void OnFinish(TimePoint now, Duration rtt, RequestOutcome outcome) override;

  // Forget the baseline RTT; the next window sets it again.
  void ResetBaseline();
  // The batch size changed, which moves latency for reasons other than load:
  // scale the baseline by `latency_ratio` (new / old expected latency, from
  // BatchSizer::LatencyRatio), so the change is not read as queueing. A
  // ratio <= 0 (unknown) resets the baseline and restarts the window.
  void OnBatchSizeChanged(TimePoint now, double latency_ratio) override;

  // Introspection for traces and tests.
  double limit_value() const { return limit_; }
  size_t in_flight() const { return in_flight_; }
  Duration base_rtt() const { return FromSeconds(base_rtt_s_); }
  bool in_slow_start() const { return limit_ < ssthresh_; }
  bool probing() const { return probing_; }
  uint64_t probes() const { return probes_; }

 private:
  struct Window {
    double sum_rtt_s = 0;
    double sum_sq_rtt_s = 0;
    double sum_in_flight = 0;
    size_t samples = 0;
    bool reached_limit = false;
  };
  double Alpha() const;
  double Beta() const;
  void SetLimit(double value);
  void StartWindow(TimePoint now);
  void CloseWindow(TimePoint now);
  void Backoff(TimePoint now);
  // The first cut of a backoff episode remembers where slow start may climb
  // back to (ssthresh_); later cuts of the same episode leave it.
  void BeginBackoffEpisode();
  // A request turned away at the door (kOverCapacity): see OnFinish.
  void OverCapacity(TimePoint now, size_t in_flight_before, bool after_cut);
  void NoteCut();
  // Lowers the limit to the queue-free estimate until requests started under
  // it return; their mean RTT becomes the baseline.
  void StartProbe(TimePoint now, double in_flight, double avg_rtt_s);

  AdaptiveLimiterOptions options_;
  double limit_;
  double ssthresh_;             // slow start while limit_ < ssthresh_
  double recovery_target_ = 0;  // the limit before the last cut
  size_t in_flight_ = 0;
  double base_rtt_s_ = 0;  // 0: unknown
  double base_stderr_s_ = 0;
  // The service's own RTT spread: the widest window at (or confirming) the
  // baseline. This window's noise is judged at it (see CloseWindow).
  double base_stddev_s_ = 0;
  TimePoint base_confirmed_at_{};
  TimePoint window_start_ = TimePoint::min();
  Window window_;
  bool in_backoff_episode_ = false;
  // Over-capacity refusals: of the requests out when the first of a burst
  // came back, those not refused since (what fit), and when that burst began.
  size_t refusal_room_ = 0;
  TimePoint refusal_at_{};
  double refusal_cut_from_ = 0;  // the limit when that burst began
  size_t hold_windows_ = 0;      // windows left before the next +1 probe
  bool probing_ = false;
  TimePoint probe_start_{};
  size_t probe_limit_ = 0;
  size_t probe_needed_ = 0;
  double probe_sum_rtt_s_ = 0;
  size_t probe_samples_ = 0;
  uint64_t probes_ = 0;
};

std::unique_ptr<ConcurrencyLimiter> MakeAdaptiveLimiter(const AdaptiveLimiterOptions& options);

// ---------------------------------------------------------------------------
// Rate pacer

struct RatePacerOptions {
  double rpm = 0;  // requests per minute the user knows; 0 = unknown
  double tpm = 0;  // tokens per minute the user knows; 0 = unknown
  // Pace at this fraction of the limit, leaving room for estimation error.
  double safety = 0.98;
  // Local bucket capacity in seconds of rate (how much may go out at once).
  // A request costing more tokens than the bucket holds lets the bucket fill
  // up to its cost (at most a minute's limit) and waits for that: after the
  // announced burst the service's own bucket is nearly empty, and a request
  // started in debt would be refused.
  double burst_seconds = 1.0;
  // Use the budget the service announces. OpenAI-style services (and the
  // mock API) keep buckets holding a minute's worth; when the latest
  // x-ratelimit-remaining-* says more is left than the local bucket holds,
  // the pacer may spend (remaining - burst_margin * limit - what it started
  // since the answered request started) at once, then paces at the rate
  // again. Not for a limit the user gave (--rpm/--tpm: a promise, e.g. to
  // share a quota), nor while cooling down or half-open after a 429.
  bool use_announced_budget = true;
  // Fraction of the limit held back from an announced budget: covers token
  // estimates that are still being learned and other clients of the key.
  double burst_margin = 0.05;
  // What the margin shrinks to as bytes per token is learned: the margin is
  // steady_margin + (burst_margin - steady_margin) x the weight the initial
  // guess still has in the bytes-per-token EWMA (1 at the start, x(1 - w)
  // per answer of weight w; ~0.03 after 16 full-weight answers). A 429 puts
  // it back to burst_margin (a surprise the estimates did not cover). What
  // is held back at the service is never spent: over a whole run at the
  // ceiling the 5% margin alone cost 0.05 / (1 + T / 60 s) of it (2.1% of
  // an 80 s run). Not below 2/60 (3.5%): when the limit halves, the
  // service's bucket keeps its fraction, and half the margin must still
  // admit the next request, a second of the old limit (TokensPerRequestCap).
  // At 1% that request was refused (bench_regimes c: one 429 at the halving,
  // recovery 2.5 -> 4.5 s). Clamped to at most burst_margin.
  double steady_margin = 0.035;
  // How far back starts are remembered to correct remaining-* counts
  // (older answers fall back to subtracting everything in flight).
  Duration start_log_horizon = std::chrono::minutes(5);
  size_t start_log_max = 65536;
  // Cooldown after a 429 that carried no Retry-After.
  Duration default_cooldown = std::chrono::seconds(1);
  Duration max_cooldown = std::chrono::minutes(5);
  // After a 429 and its cooldown, one request goes first; the others are
  // told to wait this long (and ask again) until it is answered.
  Duration half_open_poll = std::chrono::milliseconds(50);
  // With no limit from the user, the run's first request also goes alone
  // (as after a 429): its answer announces the limits and what is left, and
  // the rest are paced by them from the start. Without it a service with a
  // small bucket refuses the first burst and its cooldown costs a second or
  // more (measured: 2 429s and an idle second in a 15 s run). Costs one
  // round trip at the start. The pipeline turns it on; off by default here
  // so the pure controller's tests see only what they set.
  bool probe_first = false;
  // When neither the headers nor the user give a request limit, a 429 makes
  // the pacer infer one from the rate of successes over the last
  // `inference_window`, then adapts it: x inferred_decrease on a 429 that
  // follows successes, + inferred_growth per second of successes.
  bool infer_limit_from_429 = true;
  Duration inference_window = std::chrono::seconds(10);
  double inferred_decrease = 0.9;
  double inferred_growth = 0.02;
  // Learned bytes per token: EWMA starting here, each sample weighted by
  // alpha * min(1, prompt_tokens / full_weight_tokens), clamped to [min, max].
  double initial_bytes_per_token = 4.0;
  double bytes_per_token_alpha = 0.2;
  int64_t full_weight_tokens = 1000;
  double min_bytes_per_token = 0.5;
  double max_bytes_per_token = 16.0;
};

// Thread safety: embed stage thread only.
class HeaderRatePacer final : public RatePacer {
 public:
  explicit HeaderRatePacer(RatePacerOptions options);
  HeaderRatePacer(const HeaderRatePacer&) = delete;
  HeaderRatePacer& operator=(const HeaderRatePacer&) = delete;

  Duration DelayFor(TimePoint now, uint32_t tokens) const override;
  void OnStart(TimePoint now, uint32_t estimated_tokens) override;
  // Limits in the headers replace what was learned before (capped by the
  // user's --rpm/--tpm); remaining-* lowers the local buckets after
  // subtracting requests still in flight; 429/503 with Retry-After (and 429
  // without) set one cooldown shared by every request.
  void OnResponse(TimePoint now, const RateLimitInfo& rate, int http_status, uint64_t input_bytes,
                  int64_t prompt_tokens) override;
  // As OnResponse; remaining-* is corrected by exactly the requests started
  // after `started` (they cannot be in the count; earlier ones are), and a
  // count above the local level raises it (use_announced_budget).
  void OnResponseTo(TimePoint started, TimePoint now, const RateLimitInfo& rate, int http_status,
                    uint64_t input_bytes, int64_t prompt_tokens) override;
  double BytesPerToken() const override { return bytes_per_token_; }
  // One second of the token limit (at least two requests' share of the
  // request limit); 0 when no token limit is known.
  double TokensPerRequestCap() const override;
  RateBudget Budget(TimePoint now) const override;

  // Effective limits in use (0 = unknown) and the shared cooldown's end.
  double effective_rpm() const { return requests_.per_minute; }
  double effective_tpm() const { return tokens_.per_minute; }
  bool rpm_inferred() const { return rpm_inferred_; }
  TimePoint cooldown_until() const { return cooldown_until_; }
  size_t pending_requests() const { return pending_requests_; }
  bool half_open() const { return half_open_; }
  // What the local buckets hold now (may exceed a bucket's capacity while an
  // announced budget is being spent).
  double request_budget(TimePoint now) const { return requests_.LevelAt(now); }
  double token_budget(TimePoint now) const { return tokens_.LevelAt(now); }

 private:
  struct Bucket {
    double per_minute = 0;  // 0: no limit known
    double rate = 0;        // units per second we pace at
    double capacity = 0;
    double level = 0;  // above capacity only when a header announced it
    TimePoint updated{};
    TimePoint changed{};  // when the limit last changed after the first
    // The cost of the request waiting to start (DelayFor), when it exceeds
    // the capacity: the bucket may fill up to it, so the request starts with
    // the budget in hand instead of leaving a debt the service's own
    // (drained) bucket would refuse. Reset by OnStart.
    mutable double wanted = 0;
    bool active() const { return per_minute > 0; }
    double Top() const;  // max(capacity, min(wanted, per_minute))
    double LevelAt(TimePoint now) const;
    void Refill(TimePoint now);
    void SetLimit(double per_minute, double safety, double burst_seconds, TimePoint now);
    Duration WaitFor(TimePoint now, double amount) const;
  };

  // A start, with the running totals of requests and estimated tokens
  // started before it. The first record of the starts sharing one instant
  // also keeps what their answers said (see KnownFromAnswer).
  struct StartRecord {
    TimePoint at;
    double requests_before = 0;
    double tokens_before = 0;
    double answered = 0;
    double answered_tokens = 0;
    double min_remaining_requests = std::numeric_limits<double>::infinity();
    double min_remaining_tokens = std::numeric_limits<double>::infinity();
  };
  void Respond(std::optional<TimePoint> started, TimePoint now, const RateLimitInfo& rate,
               int http_status, uint64_t input_bytes, int64_t prompt_tokens);
  // What the service can still take (requests, tokens) according to an
  // answer to the request started at `started` (estimated cost
  // `own_tokens`): the lowest count among the answers to the requests started
  // at that instant, less those of them not answered yet and everything
  // started after. nullopt when the log does not hold that start.
  std::optional<std::pair<double, double>> KnownFromAnswer(TimePoint started,
                                                           const RateLimitInfo& rate,
                                                           double own_tokens);
  // Lowers the bucket to `known`, or (when `may_raise` and the pacer is not
  // cooling down) raises it to the announced burst or out of a debt.
  void ApplyRemaining(Bucket& bucket, double known, bool may_raise, TimePoint now);

  // Successes per second over the inference window: (second, count).
  double RecentSuccessRate(TimePoint now) const;
  void RecordSuccess(TimePoint now);
  // `cooling_down`: the 429 arrived during an earlier 429's cooldown.
  void InferRequestLimit(TimePoint now, bool cooling_down);

  RatePacerOptions options_;
  std::deque<std::pair<int64_t, uint32_t>> success_seconds_;  // bounded by the window
  TimePoint first_success_{};
  TimePoint last_success_{};
  bool any_success_ = false;
  bool rpm_inferred_ = false;
  bool success_since_429_ = true;
  Bucket requests_;
  Bucket tokens_;
  TimePoint cooldown_until_{};
  bool half_open_ =
      false;  // a 429 was seen (or nothing yet, probe_first): one request until answered
  bool probe_started_ = false;  // that one request is in flight
  size_t pending_requests_ = 0;
  double pending_tokens_ = 0;
  std::deque<StartRecord> starts_;  // bounded by start_log_horizon and start_log_max
  double started_requests_ = 0;     // running totals over every start
  double started_tokens_ = 0;
  double bytes_per_token_;
  // The initial guess's remaining weight in bytes_per_token_ (1: nothing
  // learned yet); 1 again after a 429. Scales the margin (see steady_margin).
  double margin_weight_ = 1.0;
};

std::unique_ptr<RatePacer> MakeRatePacer(const RatePacerOptions& options);

// ---------------------------------------------------------------------------
// Batch sizer

struct BatchSizerOptions {
  size_t min_inputs = 1;                     // Default: 1
  size_t max_inputs = 2048;                  // the service's limit (OpenAI: 2048)
  uint32_t max_tokens_per_request = 300000;  // OpenAI: 300,000
  size_t initial_inputs = 64;                // Default: 64
  // Grow until the fixed part is at most this fraction of a request's latency.
  double fixed_fraction = 0.2;
  size_t window = 64;                 // observations kept for the fit
  size_t observations_per_step = 32;  // observations between two changes
  double max_step = 2.0;              // at most x2 (or /2) per change
  // A fit whose fixed part is below min_resolved_fixed cannot tell where
  // per-request overhead stops dominating: against an instant service the
  // RTT is CPU time proportional to the inputs (encoding, decoding, the
  // stage's own loop), the intercept is ~0 and the rule below would give
  // 1-3 inputs, while the per-request costs the RTT does not show (HTTP,
  // framing, the service's scheduling) then dominate. The sizer then keeps
  // at least unresolved_floor_inputs (64): a hidden per-request overhead up
  // to 16 inputs' worth of per-input time stays <= fixed_fraction (20%).
  // Defaults: 1 ms, 64 (never above max_inputs).
  Duration min_resolved_fixed = std::chrono::milliseconds(1);
  size_t unresolved_floor_inputs = 64;
  // Chunks the caller means to hold in requests at once; 0: no bound.
  // The suggestion is capped at in_flight_budget / L, where L is the highest
  // concurrency limit among the last `window` ObserveConcurrencyLimit calls,
  // so a limit of 32 is filled with 32 mid-size requests rather than a few
  // huge ones the caller cannot supply enough chunks for. Never below
  // min_inputs. Default: 0 (the embed stage passes
  // EmbedStageOptions::in_flight_chunk_budget).
  size_t in_flight_budget = 0;
};

// Fits latency = fixed + per_input * inputs (least squares through the
// fastest request of each size among the last `window` successful ones:
// queueing only adds delay, so minima track service time) and suggests the batch size where
// fixed / latency == fixed_fraction, i.e. inputs = fixed*(1-f)/(f*per_input).
// Latency is noisy and each change disturbs the limiter, so targets within
// x1.5 of the current size are ignored; others are approached at most x2
// per step of observations_per_step requests.
// When the fit's fixed part is below min_resolved_fixed (an instant service:
// the RTT is CPU time per input), the target is at least
// unresolved_floor_inputs, not the 1-3 inputs the bare rule gives.
// Before any usable fit (all requests the same size) it grows x2: larger
// batches never lower throughput when part of the latency is fixed; with
// no per-input cost it grows to max_inputs.
// With an in_flight_budget the suggestion is further capped by the budget
// over the recent peak concurrency limit (see BatchSizerOptions): the peak,
// not the current value, so a limiter's brief probe down to a few requests
// does not make huge batches. The cap moves only when the new value is
// outside x1.25 of the current one (each change disturbs the limiter). Pure.
// Thread safety: embed stage thread only.
class BatchSizer {
 public:
  explicit BatchSizer(BatchSizerOptions options);

  // A successful request of `inputs` inputs took `rtt`.
  void Observe(size_t inputs, Duration rtt);
  // The concurrency limit now (call after each Observe). Only matters with
  // an in_flight_budget.
  void ObserveConcurrencyLimit(size_t limit);
  // The suggested number of inputs, in [min_inputs, max_inputs]: the
  // latency fit's suggestion, capped by InFlightCap().
  size_t SuggestedInputs() const { return std::min(suggested_, cap_); }
  // The latency fit's suggestion alone (before the in-flight cap).
  size_t FitSuggestion() const { return suggested_; }
  // in_flight_budget / recent peak limit, in [min_inputs, max_inputs];
  // max_inputs when there is no budget or no limit was observed yet.
  size_t InFlightCap() const { return cap_; }
  // Lowers (or restores) the token cap, e.g. to a fraction of the TPM limit
  // the pacer learned: a request costing more than a whole minute's tokens
  // is refused as too large and one costing much of it stalls the pacer.
  void SetMaxTokensPerRequest(uint32_t tokens) {
    options_.max_tokens_per_request = std::max<uint32_t>(1, tokens);
  }
  // The suggestion further capped so that inputs averaging
  // `tokens_per_input` stay within max_tokens_per_request (at least 1).
  size_t InputsFor(double tokens_per_input) const;

  // Expected latency of `to` inputs over that of `from` inputs under the
  // current fit; 0 when there is no fit yet. Feed it to
  // AdaptiveLimiter::OnBatchSizeChanged whenever SuggestedInputs() changes.
  double LatencyRatio(size_t from, size_t to) const;

  struct Fit {
    bool valid = false;
    double fixed_s = 0;
    double per_input_s = 0;
  };
  // The fit over the current window, or the last valid one when the window
  // holds a single size.
  Fit CurrentFit() const;

 private:
  struct Observation {
    double inputs;
    double rtt_s;
  };
  Fit ComputeFit() const;
  BatchSizerOptions options_;
  std::deque<Observation> observations_;
  Fit last_fit_;  // the last valid fit, used while recent sizes are all equal
  size_t suggested_;
  size_t since_change_ = 0;
  std::deque<size_t> recent_limits_;  // the last `window` observed limits
  size_t cap_;                        // InFlightCap()
};

// ---------------------------------------------------------------------------
// Trace recorder

// The stage input queues a trace samples, in pipeline order: the readers'
// file queue, the cache stage's chunk queue, the embedder's queue, the store
// writer's vector queue and the aggregator's queue (StageMetrics::queue_depth).
inline constexpr size_t kTraceQueues = 5;
inline constexpr const char* kTraceQueueNames[kTraceQueues] = {"reader", "cache", "embedder",
                                                               "store", "aggregator"};
using QueueDepths = std::array<double, kTraceQueues>;

struct TraceRow {
  int64_t second = 0;         // since the recorder's start
  double limit = 0;           // mean of the samples in this second (carried when none)
  double in_flight = 0;       // idem
  uint32_t requests = 0;      // requests finished in this second (any outcome)
  uint64_t chunks = 0;        // inputs embedded successfully
  uint64_t tokens = 0;        // tokens of successful requests
  double p50_latency_ms = 0;  // median latency of requests finished (0: none)
  uint32_t http_429 = 0;
  uint32_t retries = 0;       // finished requests that were retries
  uint32_t failures = 0;      // non-success outcomes other than 429
  double p95_latency_ms = 0;  // 95th percentile of the same latencies (0: none)
  QueueDepths queue_depth{};  // mean items waiting per stage queue (kTraceQueueNames order)
};

struct TraceSummary {
  int64_t seconds = 0;
  double mean_limit = 0, min_limit = 0, max_limit = 0;
  double peak_requests_per_s = 0;
  double steady_chunks_per_s = 0;  // mean after warmup, last partial second excluded
  double p50_latency_ms = 0;       // median of the per-second medians
  uint64_t requests = 0, chunks = 0, tokens = 0, http_429 = 0, retries = 0, failures = 0;
  bool truncated = false;  // more seconds than max_rows: later rows only in totals
};

struct TraceRecorderOptions {
  // 86,400 rows = 24 hours at 1 s; ~80 bytes each (~7 MB). Later seconds are
  // counted in the totals but get no row.
  size_t max_rows = 86400;
  int64_t warmup_seconds = 10;  // excluded from steady_chunks_per_s when the run is longer
  size_t max_latency_samples_per_second = 65536;  // beyond: p50 of the first ones
};

// The summary as one JSON object (the "summary" of WriteJson and the report's
// "controller" object).
std::string TraceSummaryJson(const TraceSummary& summary);

// The format of a trace file, chosen by its extension (case-insensitive):
// .csv, .json, or .html (the HTML run report, whose charts are the trace).
enum class TraceFormat { kCsv, kJson, kHtml };
// nullopt for any other extension: the caller refuses the path rather than
// guess (a .html file silently holding CSV helps nobody).
std::optional<TraceFormat> TraceFormatForPath(std::string_view path);

// Thread safety: not thread-safe. A caller feeding it from two threads (the
// embed thread's request observer and a sampler) holds one mutex around
// every call.
class TraceRecorder {
 public:
  TraceRecorder(TimePoint start, TraceRecorderOptions options = {});

  // A finished request (EmbedStage::SetObserver). Bucketed by its end time.
  void OnRequest(const RequestEvent& event);
  // A periodic sample of the controller's state (call a few times a second).
  void Sample(TimePoint now, size_t limit, size_t in_flight);
  // A periodic sample of the stage queues' depths (averaged per second).
  void SampleQueues(TimePoint now, const QueueDepths& depths);

  // Rows so far (the current second's p50 included).
  std::vector<TraceRow> Rows() const;
  TraceSummary Summary() const;
  // columns: t_s,limit,in_flight,requests_per_s,chunks_per_s,tokens_per_s,
  //          p50_latency_ms,http_429,retries,failures,p95_latency_ms,
  //          queue_reader,queue_cache,queue_embedder,queue_store,queue_aggregator
  // (columns are only ever appended, so older readers keep working)
  Status WriteCsv(const std::string& path) const;
  // {"resolution_s":1,"summary":{...},"rows":[{...},...]}
  Status WriteJson(const std::string& path) const;

 private:
  struct Accum {
    TraceRow row;
    double limit_sum = 0, in_flight_sum = 0;
    uint32_t samples = 0;
    QueueDepths queue_sum{};
    uint32_t queue_samples = 0;
  };
  Accum* RowFor(TimePoint t);  // nullptr when beyond max_rows or before start
  void FinishLatencies();

  TimePoint start_;
  TraceRecorderOptions options_;
  std::vector<Accum> rows_;
  int64_t latency_row_ = -1;  // the row latencies_ belongs to
  std::vector<double> latencies_ms_;
  TraceSummary totals_;
  double last_limit_ = 0, last_in_flight_ = 0;
  QueueDepths last_queue_depth_{};
};

}  // namespace sluice
