// A running job's counters as `sluice serve` shows them (GET /v1/jobs/{id},
// the events stream), whichever runner carries the job out (job_runner.h).
//
// Thread safety: plain data.
#pragma once

#include <cstdint>
#include <optional>

namespace sluice::serve {

// A Redis job's tasks (one per source file; distributed/task_stream.h).
struct TaskCounts {
  uint64_t total = 0;      // ever enqueued
  uint64_t pending = 0;    // not yet claimed by a worker
  uint64_t in_flight = 0;  // claimed, not yet acked
  uint64_t done = 0;
  uint64_t dead = 0;       // given up on: `sluice dead-letter list`
  uint64_t cancelled = 0;  // removed unclaimed by a cancel
};

// A running job's counters (its current run's; a resumed job's earlier runs
// are in its attempts). A Redis job knows only what its workers report to
// Redis: its tasks, the chunks stored, the rate and the ETA; the other
// counters stay 0.
struct JobProgress {
  double elapsed_s = 0;
  uint64_t sources_done = 0;
  uint64_t bytes_read = 0;
  uint64_t chunks_produced = 0;
  uint64_t chunks_embedded = 0;  // vectors back from the embedder (or the cache)
  // Committed to the store: moves in steps of the store's transaction size
  // (SQLite: 200 rows unless the job sets "store-batch").
  uint64_t chunks_stored = 0;
  uint64_t chunks_dead_lettered = 0;
  uint64_t tokens = 0;
  int64_t in_flight = 0;  // chunks in the pipeline (a Redis job: tasks held by workers)
  double chunks_per_s = 0;
  std::optional<double> eta_s;      // while it can be estimated
  std::optional<double> cost_usd;   // when the model's price is known
  std::optional<TaskCounts> tasks;  // a Redis job's tasks; none for an in-process run
};

}  // namespace sluice::serve
