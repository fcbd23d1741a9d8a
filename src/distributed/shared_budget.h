// The shared rate budget in Redis (docs/SHARED_BUDGET.md): atomic Lua scripts
// over the keys sluice:budget:{NAME}:* that every sluice process using one API
// key shares:
//   :limits    hash  rpm, tpm (the tightest reported within limit_window) and
//                    when each was last confirmed
//   :requests  hash  level, at: the request bucket (RPM)
//   :tokens    hash  level, at: the token bucket (TPM)
//   :cooldown  string the time (ms) before which nothing may start (a 429's
//                    Retry-After)
//   :leases    zset  lease ids scored by expiry: the requests in flight under
//                    --budget-max-in-flight
//   :unpaced   hash  requests, tokens taken while the limit was unknown
// Time is Redis's (TIME, in ms) so hosts with skewed clocks agree; every
// operation also takes an explicit now (ms) for deterministic tests. Every
// key gets key_ttl, refreshed on use, so an abandoned budget disappears.
//
// SharedBudget survives an unreachable Redis: an operation that fails marks
// the budget down, logs one warning, and every operation until
// reconnect_after has passed fails at once (kUnavailable) without I/O, so
// callers fall back to local pacing.
//
// Thread safety: none; one SharedBudget per thread (it owns one connection).
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "distributed/redis_client.h"
#include "sluice/shared_budget.h"
#include "sluice/status.h"

namespace sluice {

// The answer of a take.
struct BudgetTake {
  bool granted = false;
  int64_t wait_ms = 0;  // how long until the take would be granted (0 when granted unforced)
  double rpm = 0;       // the limits in force (0: none known)
  double tpm = 0;
  double requests_level = 0;  // what the buckets hold after the take (may be < 0: a debt)
  double tokens_level = 0;
  int64_t cooldown_ms = 0;  // left of the shared cooldown
};

// What `sluice status` shows of a budget (docs/SHARED_BUDGET.md, "Keys").
struct SharedBudgetState {
  bool found = false;  // any of its keys exists (a run paced against it lately)
  double rpm = 0;      // the learned limits in force (0: none known)
  double tpm = 0;
  int64_t cooldown_left_ms = 0;  // of a shared cooldown (a 429's Retry-After); 0: none
  int64_t leases = 0;            // unexpired leases: requests in flight under the cap
};

// Reads the state of the budget `name` over `client`, changing nothing (an
// expired lease is not counted, but not removed either).
Result<SharedBudgetState> ReadSharedBudgetState(RedisClient& client, const std::string& name);

class SharedBudget {
 public:
  // Never fails for an unreachable Redis (the budget starts down and
  // retries); fails for a malformed URL or empty name.
  static Result<std::unique_ptr<SharedBudget>> Open(const SharedBudgetOptions& options);
  ~SharedBudget();
  SharedBudget(const SharedBudget&) = delete;
  SharedBudget& operator=(const SharedBudget&) = delete;

  // Takes `requests` and `tokens` from the buckets when both hold enough (a
  // cost above a bucket's capacity needs a full bucket) and no cooldown is
  // running; otherwise grants nothing and says how long to wait. `force`
  // takes even then (the level may go below zero: a debt later takes wait
  // out). A bucket whose limit is unknown never limits.
  Result<BudgetTake> Take(double requests, double tokens, bool force,
                          std::optional<int64_t> now_ms = std::nullopt);
  // Reports the limits a response announced (0: not announced) and what it
  // said is left (< 0: not announced; only starts a bucket that does not
  // exist yet, less what other requests took before any limit was known:
  // `own_tokens` is what the answered request itself took, 0 if unknown).
  // Returns the limits in force afterwards (rpm, tpm).
  Result<std::pair<double, double>> Learn(double rpm, double tpm,
                                          std::optional<int64_t> now_ms = std::nullopt,
                                          double remaining_requests = -1,
                                          double remaining_tokens = -1, double own_tokens = 0);
  // An answer that announced no limit: releases the first-request gate (see
  // SharedBudgetOptions::probe_duration); `no_limits` (a success without
  // limit headers) opens the budget for limit_window: the service has none.
  Status ProbeAnswered(bool no_limits, std::optional<int64_t> now_ms = std::nullopt);
  // Nothing may start before now + retry_after_ms (a later cooldown already
  // set stays). Returns the cooldown's end (ms).
  Result<int64_t> Cooldown(int64_t retry_after_ms, std::optional<int64_t> now_ms = std::nullopt);

  // Adds as many of `ids` as the cap `max_in_flight` leaves room for (after
  // dropping expired leases), each expiring lease_duration from now. Returns
  // how many were added (the first ones of `ids`).
  Result<size_t> AcquireLeases(const std::vector<std::string>& ids, int max_in_flight,
                               std::optional<int64_t> now_ms = std::nullopt);
  // Extends `ids`; returns those that had expired (and were dropped).
  Result<std::vector<std::string>> RenewLeases(const std::vector<std::string>& ids,
                                               std::optional<int64_t> now_ms = std::nullopt);
  Status ReleaseLeases(const std::vector<std::string>& ids);
  // Leases held now, expired ones dropped.
  Result<int64_t> LeaseCount(std::optional<int64_t> now_ms = std::nullopt);

  // The key of one part (`part`: limits, requests, tokens, cooldown, leases).
  std::string Key(const std::string& part) const;
  const SharedBudgetOptions& options() const { return options_; }
  // False while Redis is unreachable (between a failure and the next retry).
  bool up() const { return client_ != nullptr; }
  // The connection's CLIENT ID (tests kill it to lose the connection).
  Result<int64_t> ClientId();

 private:
  SharedBudget(SharedBudgetOptions options, RedisEndpoint endpoint);
  // Runs `script`, handling the down state and the one warning.
  Result<RedisReply> Run(const RedisScript& script, const std::vector<std::string>& keys,
                         std::vector<std::string> args);
  Status EnsureConnected();
  std::string NowArg(std::optional<int64_t> now_ms) const;

  struct Scripts;
  SharedBudgetOptions options_;
  RedisEndpoint endpoint_;
  std::unique_ptr<Scripts> scripts_;
  std::unique_ptr<RedisClient> client_;
  TimePoint retry_at_{};  // down: no attempt before this
  bool warned_ = false;   // the one warning of the current outage was logged
};

}  // namespace sluice
