#include "distributed/job_rates.h"

namespace sluice {

JobRates RatesOf(const JobStatus& s) {
  JobRates r;
  if (s.started_ms <= 0) return r;
  const int64_t end_ms = s.Drained() && s.last_done_ms > 0 ? s.last_done_ms : s.now_ms;
  const double elapsed_s = static_cast<double>(end_ms - s.started_ms) / 1000.0;
  if (elapsed_s <= 0) return r;
  r.elapsed_s = elapsed_s;
  const uint64_t settled = s.done + s.dead;
  if (settled == 0) return r;
  r.known = true;
  r.chunks_per_s = static_cast<double>(s.chunks_stored) / elapsed_s;
  r.tasks_per_s = static_cast<double>(settled) / elapsed_s;
  r.eta_s = static_cast<double>(s.pending + s.in_flight) / r.tasks_per_s;
  return r;
}

}  // namespace sluice
