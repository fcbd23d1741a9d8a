// How fast a distributed job goes, from its counters alone (task_stream.h's
// JobStatus): what `sluice status` prints and what `sluice serve` shows as a
// Redis job's progress.
//
// Thread safety: a pure function.
#pragma once

#include "distributed/task_stream.h"

namespace sluice {

struct JobRates {
  bool known = false;    // a task was settled after the first claim
  double elapsed_s = 0;  // from the first claim to the last ack once drained, else to now
  double chunks_per_s = 0;
  double tasks_per_s = 0;  // done and dead
  double eta_s = 0;        // the tasks left at tasks_per_s; valid when known
};

// Measured from the job's first claim to its last ack once drained (so the
// rate of a finished job stays what it was), else to the summary's now.
JobRates RatesOf(const JobStatus& status);

}  // namespace sluice
