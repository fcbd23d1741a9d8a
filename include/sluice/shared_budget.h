// Options of the shared rate budget: several sluice processes using one API
// key pace against one request/token budget, one Retry-After cooldown and
// (optionally) one cap on requests in flight, all kept in Redis
// (docs/SHARED_BUDGET.md). Plain data; the running budget is in
// src/distributed/shared_budget.h.
//
// Thread safety: plain data.
#pragma once

#include <string>

#include "sluice/clock.h"

namespace sluice {

struct SharedBudgetOptions {
  // redis://[[user]:password@]host[:port][/db]; empty: no shared budget.
  // The password is never logged nor stored.
  std::string redis_url;
  // Keys are sluice:budget:{name}:*. Empty: derived from the endpoint (its
  // secrets redacted) and the model, so processes using one API share it.
  std::string name;
  // Requests in flight across every process sharing the budget; 0: no cap.
  int max_in_flight = 0;
  // The shared buckets pace at this fraction of the limit and hold this many
  // seconds of it (the burst every process together may send at once).
  double safety = 0.98;
  double burst_seconds = 1.0;
  // An abandoned budget's keys disappear after this long unused.
  Duration key_ttl = std::chrono::minutes(10);
  // A learned limit is the tightest reported within this window; older,
  // any new report replaces it (so a raised limit is picked up).
  Duration limit_window = std::chrono::seconds(60);
  // An in-flight lease lapses this long after its last renewal (a dead
  // process's slots come back).
  Duration lease_duration = std::chrono::seconds(30);
  // While no process knows a limit (no answer yet), one request goes first
  // and the others wait (asking again every probe_poll) for its answer: its
  // headers seed the buckets before anyone else spends the service's burst.
  // A probe whose answer never comes (its process died) lapses after
  // probe_duration; 0 turns the gate off. An answer without limit headers
  // opens the budget for limit_window (renewed by later such answers).
  Duration probe_duration = std::chrono::seconds(10);
  Duration probe_poll = std::chrono::milliseconds(50);
  // Redis unreachable: pace locally, try again after this long.
  Duration reconnect_after = std::chrono::seconds(5);
  Duration redis_timeout = std::chrono::milliseconds(500);
};

// The default budget name for an endpoint and model: "api-" and 16 hex
// digits of a hash of the redacted endpoint and the model (never the key).
std::string DefaultBudgetName(const std::string& endpoint, const std::string& model);

}  // namespace sluice
