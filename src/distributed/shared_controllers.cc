#include "distributed/shared_controllers.h"

#include <unistd.h>

#include <algorithm>
#include <atomic>

#include "common/hashing.h"
#include "sluice/shared_budget.h"

namespace sluice {
namespace {

Duration Millis(int64_t ms) { return std::chrono::milliseconds(ms); }

int64_t ToMillis(Duration d) {
  return std::chrono::duration_cast<std::chrono::milliseconds>(d + std::chrono::microseconds(999))
      .count();
}

// The tighter of two limits where 0 means unknown.
double Tightest(double a, double b) {
  if (a <= 0) return b;
  if (b <= 0) return a;
  return std::min(a, b);
}

// The longest shared cooldown one response may set (as the local pacer's
// RatePacerOptions::max_cooldown): a broken Retry-After cannot stop every
// process for hours.
constexpr Duration kMaxSharedCooldown = std::chrono::minutes(5);

// Starts remembered while no limit is known (a few at most: the first
// request goes alone until its answer).
constexpr size_t kMaxUnpacedStarts = 1024;

// While the cap is full, how often a process asks for a slot again.
constexpr Duration kLeasePoll = std::chrono::milliseconds(10);

}  // namespace

std::string DefaultBudgetName(const std::string& endpoint, const std::string& model) {
  return "api-" + Hex64(Hash64(RedactEndpoint(endpoint) + "\n" + model));
}

// ---------------------------------------------------------------------------
// SharedRatePacer

SharedRatePacer::SharedRatePacer(std::unique_ptr<RatePacer> local,
                                 std::unique_ptr<SharedBudget> budget, double user_rpm,
                                 double user_tpm)
    : local_(std::move(local)),
      budget_(std::move(budget)),
      user_rpm_(user_rpm),
      user_tpm_(user_tpm) {
  if (user_rpm_ > 0 || user_tpm_ > 0) {
    Share(SteadyClock::now(), RateLimitInfo{}, 0, 0);
  }
}

SharedRatePacer::~SharedRatePacer() = default;

Duration SharedRatePacer::DelayFor(TimePoint now, uint32_t tokens) const {
  const Duration local = local_->DelayFor(now, tokens);
  if (local > Duration(0) || reserved_) return local;
  if (now < not_before_) return not_before_ - now;
  auto take = budget_->Take(1, tokens, /*force=*/false);
  if (!take.ok()) return local;  // Redis unreachable: the local pacer decides
  shared_rpm_ = take->rpm;
  shared_tpm_ = take->tpm;
  if (take->granted) {
    reserved_ = true;
    reserved_tokens_ = tokens;
    ++shared_takes_;
    return Duration(0);
  }
  const Duration wait = Millis(std::max<int64_t>(1, take->wait_ms));
  not_before_ = now + wait;
  return wait;
}

void SharedRatePacer::OnStart(TimePoint now, uint32_t estimated_tokens) {
  local_->OnStart(now, estimated_tokens);
  double taken = estimated_tokens;
  if (reserved_) {
    reserved_ = false;
    const double extra = estimated_tokens - reserved_tokens_;
    if (extra > 0) (void)budget_->Take(0, extra, /*force=*/true);
    taken = std::max<double>(estimated_tokens, reserved_tokens_);
  } else if (budget_->up() && budget_->Take(1, estimated_tokens, /*force=*/true).ok()) {
    // Started without a reservation (the shared budget was not asked, e.g.
    // while Redis was unreachable): counted anyway.
    ++shared_takes_;
  }
  // While no limit is known, what each start took: the answer that teaches
  // the limit seeds the buckets with what it says is left, less what the
  // *other* starts took (docs/SHARED_BUDGET.md).
  if (shared_rpm_ <= 0 && shared_tpm_ <= 0) {
    if (unpaced_starts_.size() >= kMaxUnpacedStarts) unpaced_starts_.pop_front();
    unpaced_starts_.emplace_back(now, taken);
  }
}

void SharedRatePacer::OnResponse(TimePoint now, const RateLimitInfo& rate, int http_status,
                                 uint64_t input_bytes, int64_t prompt_tokens) {
  local_->OnResponse(now, rate, http_status, input_bytes, prompt_tokens);
  Share(now, rate, http_status, /*own_tokens=*/0);
}

void SharedRatePacer::OnResponseTo(TimePoint started, TimePoint now, const RateLimitInfo& rate,
                                   int http_status, uint64_t input_bytes, int64_t prompt_tokens) {
  local_->OnResponseTo(started, now, rate, http_status, input_bytes, prompt_tokens);
  double own_tokens = 0;
  for (auto it = unpaced_starts_.begin(); it != unpaced_starts_.end(); ++it) {
    if (it->first == started) {
      own_tokens = it->second;
      unpaced_starts_.erase(it);
      break;
    }
  }
  Share(now, rate, http_status, own_tokens);
}

void SharedRatePacer::Share(TimePoint now, const RateLimitInfo& rate, int http_status,
                            double own_tokens) {
  if ((http_status == 429 || http_status == 503) && rate.retry_after &&
      *rate.retry_after > Duration(0)) {
    // Every process stops until the service's cooldown has passed.
    const Duration cooldown = std::min<Duration>(*rate.retry_after, kMaxSharedCooldown);
    if (budget_->Cooldown(ToMillis(cooldown)).ok()) {
      not_before_ = std::max(not_before_, now + cooldown);
    }
  }
  const double rpm =
      Tightest(user_rpm_, rate.limit_requests ? static_cast<double>(*rate.limit_requests) : 0);
  const double tpm =
      Tightest(user_tpm_, rate.limit_tokens ? static_cast<double>(*rate.limit_tokens) : 0);
  if (rpm <= 0 && tpm <= 0) {
    ReportNoLimits(now, http_status);
    return;
  }
  // Report a change at once, the same limits a few times per window (a
  // limit not confirmed within the window may be replaced by a higher one).
  const Duration refresh = budget_->options().limit_window / 4;
  if (reported_ && rpm == reported_rpm_ && tpm == reported_tpm_ && now - reported_at_ < refresh) {
    return;
  }
  auto learned = budget_->Learn(
      rpm, tpm, std::nullopt,
      rate.remaining_requests ? static_cast<double>(*rate.remaining_requests) : -1,
      rate.remaining_tokens ? static_cast<double>(*rate.remaining_tokens) : -1, own_tokens);
  if (!learned.ok()) return;
  reported_ = true;
  reported_rpm_ = rpm;
  reported_tpm_ = tpm;
  reported_at_ = now;
  shared_rpm_ = learned->first;
  shared_tpm_ = learned->second;
  if (shared_rpm_ > 0 || shared_tpm_ > 0) unpaced_starts_.clear();
}

void SharedRatePacer::ReportNoLimits(TimePoint now, int http_status) {
  // Only while the budget knows no limit: then the first request is gated
  // (SharedBudgetOptions::probe_duration) and this answer releases the gate.
  if (shared_rpm_ > 0 || shared_tpm_ > 0) return;
  const bool success = http_status >= 200 && http_status < 300;
  // A success without limit headers: the service announces none and the
  // budget stays open; said again a few times per window, not per response.
  if (success && opened_ && now - opened_at_ < budget_->options().limit_window / 4) return;
  if (!budget_->ProbeAnswered(success).ok()) return;
  if (success) {
    opened_ = true;
    opened_at_ = now;
  }
}

RateBudget SharedRatePacer::Budget(TimePoint now) const {
  RateBudget budget = local_->Budget(now);
  // The limits in force are the tightest any process sharing the budget saw.
  budget.requests_per_minute = Tightest(budget.requests_per_minute, shared_rpm_);
  budget.tokens_per_minute = Tightest(budget.tokens_per_minute, shared_tpm_);
  return budget;
}

// ---------------------------------------------------------------------------
// SharedConcurrencyLimiter

SharedConcurrencyLimiter::SharedConcurrencyLimiter(std::unique_ptr<ConcurrencyLimiter> local,
                                                   std::unique_ptr<SharedBudget> budget,
                                                   int max_in_flight, const Clock& clock)
    : local_(std::move(local)),
      budget_(std::move(budget)),
      max_in_flight_(max_in_flight),
      clock_(clock) {
  char host[256] = {};
  if (gethostname(host, sizeof(host) - 1) != 0) host[0] = '\0';
  // Unique per limiter: one process may run several pipelines (sluice serve).
  static std::atomic<uint64_t> instances{0};
  lease_prefix_ = std::string(host) + ":" + std::to_string(getpid()) + ":" +
                  std::to_string(instances.fetch_add(1)) + ":";
}

SharedConcurrencyLimiter::~SharedConcurrencyLimiter() {
  if (!leases_.empty()) (void)budget_->ReleaseLeases(leases_);
}

size_t SharedConcurrencyLimiter::Limit() const {
  const size_t want = local_->Limit();
  if (max_in_flight_ <= 0) return want;
  Maintain(want);
  if (!budget_->up()) return want;  // Redis unreachable: the local limit alone
  return std::min(want, leases_.size());
}

void SharedConcurrencyLimiter::Maintain(size_t want) const {
  const TimePoint now = clock_.Now();
  // Renew what is held well before it lapses; drop what lapsed anyway (a
  // stall longer than the lease: another process may hold the slot now).
  if (!leases_.empty() && now - renewed_at_ >= budget_->options().lease_duration / 3) {
    renewed_at_ = now;
    if (auto lost = budget_->RenewLeases(leases_); lost.ok()) {
      for (const std::string& id : *lost) std::erase(leases_, id);
    }
  }
  // Hold a lease per request in flight and one spare (so the next start
  // needs no round trip); give back what is beyond two spares.
  const size_t target = std::min(want, in_flight_ + 1);
  if (leases_.size() > std::max(target, in_flight_ + 2)) {
    std::vector<std::string> excess(leases_.begin() + static_cast<std::ptrdiff_t>(target),
                                    leases_.end());
    if (budget_->ReleaseLeases(excess).ok()) leases_.resize(target);
  }
  if (leases_.size() < target && now >= next_acquire_) {
    std::vector<std::string> ids;
    for (size_t i = leases_.size(); i < target; ++i) {
      ids.push_back(lease_prefix_ + std::to_string(next_lease_++));
    }
    auto added = budget_->AcquireLeases(ids, max_in_flight_);
    if (!added.ok() || *added < ids.size()) next_acquire_ = now + kLeasePoll;
    if (added.ok()) {
      if (leases_.empty()) renewed_at_ = now;
      leases_.insert(leases_.end(), ids.begin(), ids.begin() + static_cast<std::ptrdiff_t>(*added));
    }
  }
}

void SharedConcurrencyLimiter::OnStart(TimePoint now) {
  ++in_flight_;
  local_->OnStart(now);
}

void SharedConcurrencyLimiter::OnFinish(TimePoint now, Duration rtt, RequestOutcome outcome) {
  if (in_flight_ > 0) --in_flight_;
  local_->OnFinish(now, rtt, outcome);
}

}  // namespace sluice
