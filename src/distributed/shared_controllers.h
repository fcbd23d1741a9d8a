// Decorators that make one process's rate pacer and concurrency limiter obey
// the shared budget in Redis (distributed/shared_budget.h), so several sluice
// processes using one API key stay within its limits together. The local
// controllers stay pure and unchanged: the decorators add the shared answer.
//
// Calls to Redis: one take per request start (DelayFor reserves the start and
// the following OnStart spends the reservation), one while waiting each time
// the shared wait ends, a limit report when the headers change (or every
// few seconds), a cooldown on a 429 with Retry-After; lease acquisitions and
// renewals only with a global in-flight cap. A Redis that cannot be reached
// leaves the local controllers in charge (SharedBudget warns once and
// retries later).
//
// Thread safety: like the controllers they wrap, embed stage thread only.
#pragma once

#include <cstdint>
#include <deque>
#include <memory>
#include <string>
#include <vector>

#include "distributed/shared_budget.h"
#include "sluice/embed.h"

namespace sluice {

class SharedRatePacer final : public RatePacer {
 public:
  // `user_rpm`/`user_tpm`: limits the user gave (reported to the budget like
  // learned ones; 0: none).
  SharedRatePacer(std::unique_ptr<RatePacer> local, std::unique_ptr<SharedBudget> budget,
                  double user_rpm = 0, double user_tpm = 0);
  ~SharedRatePacer() override;

  // max(local delay, shared delay). A zero shared delay reserves the start
  // in the shared buckets for the next OnStart.
  Duration DelayFor(TimePoint now, uint32_t tokens) const override;
  void OnStart(TimePoint now, uint32_t estimated_tokens) override;
  void OnResponse(TimePoint now, const RateLimitInfo& rate, int http_status, uint64_t input_bytes,
                  int64_t prompt_tokens) override;
  void OnResponseTo(TimePoint started, TimePoint now, const RateLimitInfo& rate, int http_status,
                    uint64_t input_bytes, int64_t prompt_tokens) override;
  double BytesPerToken() const override { return local_->BytesPerToken(); }
  double TokensPerRequestCap() const override { return local_->TokensPerRequestCap(); }
  RateBudget Budget(TimePoint now) const override;

  // Starts taken from the shared buckets (tests, metrics).
  uint64_t shared_takes() const { return shared_takes_; }

 private:
  // `own_tokens`: what the answered request took from the budget, if it
  // started while no limit was known (0 otherwise).
  void Share(TimePoint now, const RateLimitInfo& rate, int http_status, double own_tokens);
  // An answer with no limit headers, while no limit is known: releases the
  // budget's first-request gate; a success opens the budget.
  void ReportNoLimits(TimePoint now, int http_status);

  std::unique_ptr<RatePacer> local_;
  std::unique_ptr<SharedBudget> budget_;
  double user_rpm_;
  double user_tpm_;
  // What the last shared answer said (mutable: DelayFor is const).
  mutable bool reserved_ = false;  // a take granted in DelayFor, not yet spent by OnStart
  mutable double reserved_tokens_ = 0;
  mutable TimePoint not_before_{};  // the shared wait ends; no Redis call before
  mutable double shared_rpm_ = 0;
  mutable double shared_tpm_ = 0;
  mutable uint64_t shared_takes_ = 0;
  double reported_rpm_ = 0;  // the limits last reported, and when
  double reported_tpm_ = 0;
  TimePoint reported_at_{};
  bool reported_ = false;
  std::deque<std::pair<TimePoint, double>> unpaced_starts_;  // (start, tokens taken)
  bool opened_ = false;  // told the budget the service announces no limits, and when
  TimePoint opened_at_{};
};

class SharedConcurrencyLimiter final : public ConcurrencyLimiter {
 public:
  // `max_in_flight` > 0: requests in flight across every process sharing the
  // budget. Lease ids are "<host>:<pid>:<limiter>:<n>" (no secret).
  SharedConcurrencyLimiter(std::unique_ptr<ConcurrencyLimiter> local,
                           std::unique_ptr<SharedBudget> budget, int max_in_flight,
                           const Clock& clock = SystemClock::Instance());
  // Releases the leases held.
  ~SharedConcurrencyLimiter() override;

  // min(local limit, leases held), growing the leases towards the local
  // limit when the cap leaves room and releasing those not needed. Redis
  // unreachable: the local limit.
  size_t Limit() const override;
  void OnStart(TimePoint now) override;
  void OnFinish(TimePoint now, Duration rtt, RequestOutcome outcome) override;
  void OnBatchSizeChanged(TimePoint now, double latency_ratio) override {
    local_->OnBatchSizeChanged(now, latency_ratio);
  }

  size_t leases() const { return leases_.size(); }

 private:
  void Maintain(size_t want) const;

  std::unique_ptr<ConcurrencyLimiter> local_;
  std::unique_ptr<SharedBudget> budget_;
  int max_in_flight_;
  const Clock& clock_;
  std::string lease_prefix_;
  size_t in_flight_ = 0;
  mutable std::vector<std::string> leases_;
  mutable uint64_t next_lease_ = 0;
  mutable TimePoint next_acquire_{};  // the cap was full: ask again after this
  mutable TimePoint renewed_at_{};
};

}  // namespace sluice
