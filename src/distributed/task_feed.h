// The worker's side of a task stream (docs/DISTRIBUTED.md): a SourceFeed
// that claims tasks from the job's stream for one Pipeline, acks each once
// the pipeline reports its source done (IngestOptions::on_source_done), and a
// heartbeat thread that keeps the worker's record alive and the idle time of
// its tasks short, so only a dead worker's tasks are handed to others.
//
// At most `max_in_flight` tasks are claimed and not yet done at a time, so a
// worker never hoards tasks that sit in its queues while others are idle.
// A task whose source was dropped by a stop is never acked: it stays pending
// and another worker claims it after the visibility timeout.
//
// A byte range of a split file is only handed on if the file still has the
// size and mtime it had at the enqueue; otherwise its ranges would mix two
// versions of the file, so the range is buried ("changed since the
// enqueue") and its split never completes: the user enqueues the file again.
//
// Thread safety: Next() on the pipeline's walker thread; OnSourceDone() from
// any thread; Start()/Stop() from the thread that owns the feed. Each thread
// talks to Redis over its own connection.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <deque>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <unordered_map>

#include "distributed/redis_outage.h"
#include "distributed/task_stream.h"
#include "sluice/clock.h"
#include "sluice/pipeline.h"

namespace sluice {

struct TaskFeedOptions {
  RedisEndpoint endpoint;
  TaskStreamOptions stream;
  std::string consumer;  // unique per worker process: host-pid
  std::string host;
  int64_t pid = 0;
  // No more work (no task waiting, none pending anywhere): Next() returns false.
  bool exit_when_idle = false;
  size_t max_in_flight = 16;
  std::chrono::milliseconds claim_block{500};  // how long one XREADGROUP waits
  // A Redis that stops answering is retried (with backoff) this long before
  // the feed ends with its error; a restart or failover is ridden out.
  RedisOutageOptions outage;
  const Clock* clock = &SystemClock::Instance();  // the outage's waits
};

class TaskFeed final : public SourceFeed {
 public:
  static Result<std::unique_ptr<TaskFeed>> Open(TaskFeedOptions options);
  ~TaskFeed() override;
  TaskFeed(const TaskFeed&) = delete;
  TaskFeed& operator=(const TaskFeed&) = delete;

  bool Next(SourceFile& file, const std::atomic<bool>& stopping) override;
  // IngestOptions::on_source_done: acks the task, adding `chunks_stored` to
  // the job's chunk count (once, with the done count). A dead-lettered source is
  // moved to the job's dead stream with `why`, and so is a skipped one whose
  // file this worker cannot see: more likely a missing mount on this host
  // than a file deleted since the enqueue, and never to be acked as done.
  void OnSourceDone(const std::string& source_id, SourceOutcome outcome, const Status& why,
                    uint64_t chunks_stored = 0);

  // Starts / stops the heartbeat thread.
  void Start();
  void Stop();

  uint64_t tasks_done() const { return tasks_done_.load(std::memory_order_relaxed); }
  // A Redis failure that ended the feed early (OK otherwise).
  Status error() const;

 private:
  TaskFeed(TaskFeedOptions options, std::unique_ptr<TaskStream> claim,
           std::unique_ptr<TaskStream> ack, std::unique_ptr<TaskStream> beat);
  void HeartbeatLoop();
  // Waits `d` on the clock, less if the run stops.
  void Pause(Duration d, const std::atomic<bool>& stopping);

  const TaskFeedOptions options_;
  std::unique_ptr<TaskStream> claim_;  // the walker thread's connection
  std::unique_ptr<TaskStream> beat_;   // the heartbeat thread's connection
  RedisOutage claim_outage_;           // the walker thread's failed claims

  std::mutex ack_mu_;
  std::unique_ptr<TaskStream> ack_;  // GUARDED_BY(ack_mu_)

  mutable std::mutex mu_;
  std::condition_variable room_;  // a task was done: room for another
  struct Handed {
    std::string entry;  // the task's id in the stream
    std::string path;
    std::string split;             // a range's split (empty: not a range)
    bool whole_file_pass = false;  // its chunks were counted by its ranges
  };
  // Source id -> the tasks handed to the pipeline for it, oldest first.
  std::unordered_map<std::string, std::deque<Handed>> in_flight_;  // GUARDED_BY(mu_)
  size_t in_flight_count_ = 0;                                     // GUARDED_BY(mu_)
  Status error_;                                                   // GUARDED_BY(mu_)
  bool stop_heartbeat_ = false;                                    // GUARDED_BY(mu_)
  std::condition_variable heartbeat_wake_;

  std::atomic<uint64_t> tasks_done_{0};
  std::thread heartbeat_;
};

}  // namespace sluice
