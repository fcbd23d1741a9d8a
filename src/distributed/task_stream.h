// A distributed ingest job in Redis (docs/DISTRIBUTED.md): the job's options,
// one stream entry per source file, consumed by the `sluice worker`s of the
// consumer group "workers".
//
//   sluice:job:{NAME}          hash: options (canonical JSON), store (URI, no
//                              password), created, the counters total, done,
//                              dead, chunks (stored by done tasks),
//                              cancelled (tasks removed unclaimed by
//                              RemoveUnclaimed), and started_ms (first
//                              claim), last_done_ms (Redis TIME of the last
//                              ack or burial)
//   sluice:job:{NAME}:tasks    stream: one entry per source (path, rel, root,
//                              size, mtime); group "workers"
//   sluice:job:{NAME}:dead     stream: tasks given up on, with their error
//   sluice:job:{NAME}:errors   hash: task id -> the last error a worker saw
//   sluice:job:{NAME}:workers  set of consumer names; each has a key
//   sluice:job:{NAME}:worker:C hash (host, pid, tasks, heartbeat_ms) with a TTL
//
// The braces are a Redis Cluster hash tag: every key of a job lives in one
// slot, so the scripts below may touch them together. A task is claimed with
// XREADGROUP, stays in the group's pending list (PEL) until it is acked, and
// a task idle in the PEL for longer than the visibility timeout (its worker
// died) is claimed again by another worker (XAUTOCLAIM); one delivered
// `max_deliveries` times is moved to the dead stream instead. Acking, moving
// to the dead stream and retrying are Lua scripts, so the counters move
// exactly once per task even when two workers race on it.
//
// Thread safety: none; a TaskStream owns one RedisClient, so use one per
// thread.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "distributed/redis_client.h"
#include "sluice/status.h"

namespace sluice {

// One source file to ingest: what the walker of `sluice enqueue` found.
struct SourceTask {
  std::string path;           // absolute, as the workers open it
  std::string relative_path;  // the source id a single-process ingest gives it
  std::string root_name;
  uint64_t size_bytes = 0;
  int64_t mtime_ns = 0;
};

struct ClaimedTask {
  std::string id;  // the entry id in the tasks stream
  SourceTask task;
};

struct DeadTask {
  std::string id;       // the entry id in the dead stream
  std::string task_id;  // the entry id it had in the tasks stream
  SourceTask task;
  std::string error;
  int64_t deliveries = 0;
};

// What `sluice enqueue` records once per job.
struct JobRecord {
  std::string options_json;  // canonical JSON object: config key -> list of values
  std::string store_uri;     // never with a password
  std::string created;       // UTC time, for people
};

struct WorkerStatus {
  std::string consumer;
  std::string host;
  int64_t pid = 0;
  uint64_t tasks_done = 0;
  int64_t heartbeat_age_ms = 0;
};

struct JobStatus {
  uint64_t total = 0;      // tasks ever enqueued
  uint64_t pending = 0;    // not yet delivered to any worker
  uint64_t in_flight = 0;  // delivered, not yet acked (the PEL)
  uint64_t done = 0;
  uint64_t dead = 0;
  uint64_t cancelled = 0;             // removed before any worker claimed them (RemoveUnclaimed)
  uint64_t chunks_stored = 0;         // added by each task's ack, once per task
  int64_t started_ms = 0;             // Redis time of the first claim; 0: none yet
  int64_t last_done_ms = 0;           // Redis time of the last ack or burial; 0: none yet
  int64_t now_ms = 0;                 // Redis time of this summary
  std::vector<WorkerStatus> workers;  // those whose heartbeat has not expired

  // No task waiting and none in flight (done, dead and cancelled account for
  // them all).
  bool Drained() const { return pending == 0 && in_flight == 0; }
};

struct TaskStreamOptions {
  std::string job;  // [A-Za-z0-9._-], at most 100 characters
  // A task pending this long without its worker's heartbeat extending it is
  // handed to another worker.
  std::chrono::milliseconds visibility_timeout{std::chrono::seconds(60)};
  // A task delivered this many times and still not acked goes to the dead stream.
  int max_deliveries = 5;
};

// The name rules of a job (it becomes part of Redis keys).
Status ValidateJobName(const std::string& job);

class TaskStream {
 public:
  static Result<std::unique_ptr<TaskStream>> Open(const RedisEndpoint& endpoint,
                                                  TaskStreamOptions options);
  TaskStream(const TaskStream&) = delete;
  TaskStream& operator=(const TaskStream&) = delete;

  // Records the job (again: the options and store are replaced) and creates
  // the stream and its consumer group if needed.
  Status CreateJob(const JobRecord& job);
  // NotFound when no job of this name was enqueued.
  Result<JobRecord> LoadJob();
  // Appends one entry per task (in batches, each atomic with the total).
  Status Enqueue(const std::vector<SourceTask>& tasks);

  // Up to `count` new tasks for `consumer`, waiting up to `block` for the
  // first; empty when none came.
  Result<std::vector<ClaimedTask>> Claim(const std::string& consumer, int count,
                                         std::chrono::milliseconds block);
  // Done: XACK, and count it as done, with its `chunks_stored` added to the
  // job's chunks, once (false: it was acked before; nothing counted).
  Result<bool> Ack(const std::string& id, uint64_t chunks_stored = 0);
  // Given up on (a source that cannot be parsed): acked and moved to the dead
  // stream with `error`. False: it was acked before.
  Result<bool> Bury(const std::string& id, const std::string& error);
  // Remembers the last error seen on a task, for the dead stream should it die.
  Status NoteError(const std::string& id, const std::string& error);
  // Tasks idle past the visibility timeout: those delivered max_deliveries
  // times go to the dead stream; up to `count` others are claimed for
  // `consumer` (and count one more delivery).
  Result<std::vector<ClaimedTask>> ReclaimStale(const std::string& consumer, int count);
  // Resets the idle time of tasks `consumer` is still working on, so a slow
  // task of a live worker is not handed to another (XCLAIM ... JUSTID: no
  // delivery counted).
  Status Extend(const std::string& consumer, const std::vector<std::string>& ids);
  // The worker's record, expiring after `ttl` unless refreshed.
  Status Heartbeat(const WorkerStatus& worker, std::chrono::milliseconds ttl);
  // True when no task is waiting and none is pending in the group.
  Result<bool> Idle();
  Result<JobStatus> Summary();
  Result<std::vector<DeadTask>> ListDead();
  // Re-adds every dead task to the tasks stream; returns how many.
  Result<uint64_t> RetryDead();
  // Cancels what no worker has claimed yet: the tasks past the group's last
  // delivered entry leave the stream (atomically: no claim can interleave)
  // and count as cancelled; tasks workers hold stay theirs to finish and
  // ack. Returns how many were removed.
  Result<uint64_t> RemoveUnclaimed();

  const TaskStreamOptions& options() const { return options_; }
  std::string TasksKey() const { return prefix_ + ":tasks"; }
  std::string DeadKey() const { return prefix_ + ":dead"; }

 private:
  TaskStream(std::unique_ptr<RedisClient> client, TaskStreamOptions options);
  Result<uint64_t> PendingCount();
  // Records started_ms unless a claim already did (once per TaskStream).
  Status MarkStarted();

  std::unique_ptr<RedisClient> client_;
  TaskStreamOptions options_;
  std::string prefix_;  // sluice:job:{NAME}
  bool started_marked_ = false;
};

}  // namespace sluice
