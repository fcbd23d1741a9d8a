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
//                              size, mtime), or per byte range of a split
//                              JSONL file (plus begin, end, line, split), or
//                              a split file's whole-file pass (plus
//                              final=1); group "workers"
//   sluice:job:{NAME}:splits   counter naming each split file
//   sluice:job:{NAME}:split:N  hash: ranges (how many), done (acked so
//                              far), and the whole file's path, rel, root,
//                              size, mtime; deleted when the last range's
//                              ack adds the whole-file pass
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
#include <utility>
#include <vector>

#include "distributed/redis_client.h"
#include "sluice/status.h"

namespace sluice {

// One source file to ingest: what the walker of `sluice enqueue` found.
struct SourceTask {
  SourceTask() = default;
  // A whole file (the range fields are set one by one, for the few that are ranges).
  SourceTask(std::string path_, std::string relative_path_, std::string root_name_,
             uint64_t size_bytes_, int64_t mtime_ns_)
      : path(std::move(path_)),
        relative_path(std::move(relative_path_)),
        root_name(std::move(root_name_)),
        size_bytes(size_bytes_),
        mtime_ns(mtime_ns_) {}

  std::string path;           // absolute, as the workers open it
  std::string relative_path;  // the source id a single-process ingest gives it
  std::string root_name;
  uint64_t size_bytes = 0;
  int64_t mtime_ns = 0;
  // A byte range of a split JSONL file (SourceFile::range_*): `split` names
  // the split (empty: not a range), [range_begin, range_end) its bytes,
  // first_line the number of its first line.
  std::string split;
  uint64_t range_begin = 0;
  uint64_t range_end = 0;
  uint64_t first_line = 1;
  // The whole-file pass of a split file, added by its last range's ack: it
  // commits the file (fingerprint, stale chunks); its chunks were counted by
  // the ranges, so its ack adds none.
  bool whole_file_pass = false;
  bool IsRange() const { return !split.empty(); }
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
  // Appends the byte ranges of one file as range tasks of a new split
  // (atomically with the total and the split's record). When the last of
  // them is acked, that ack adds the file's whole-file pass (`whole`, with
  // whole_file_pass set). REQUIRES: ranges not empty, range fields set.
  Status EnqueueSplit(const SourceTask& whole, const std::vector<SourceTask>& ranges);

  // Up to `count` new tasks for `consumer`, waiting up to `block` for the
  // first; empty when none came.
  Result<std::vector<ClaimedTask>> Claim(const std::string& consumer, int count,
                                         std::chrono::milliseconds block);
  // Done: XACK, and count it as done, with its `chunks_stored` added to the
  // job's chunks, once (false: it was acked before; nothing counted). The
  // first ack of a range (`split`: its task's) counts it in its split, and
  // the split's last one adds its file's whole-file pass.
  Result<bool> Ack(const std::string& id, uint64_t chunks_stored = 0,
                   const std::string& split = "");
  // Given up on (a source that cannot be parsed): acked and moved to the dead
  // stream with `error`. False: it was acked before. The dead entry's
  // `deliveries` is the group's count less `claims_not_delivered` (claims made
  // only to bury it, never handed to a worker).
  Result<bool> Bury(const std::string& id, const std::string& error, int claims_not_delivered = 0);
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
  // The job's counters: tasks, chunks, the rate's clock (no workers, no now_ms).
  Result<JobStatus> Counts();
  // Counts() plus Redis's time and every live worker's record.
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
