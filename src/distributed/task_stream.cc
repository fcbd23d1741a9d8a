#include "distributed/task_stream.h"

#include <algorithm>
#include <cctype>

namespace sluice {

namespace {

constexpr const char* kGroup = "workers";
constexpr int kEnqueueBatch = 200;  // tasks per script call

// Enqueue: KEYS tasks, job; ARGV five values per task.
const RedisScript kEnqueueScript{R"lua(
local n = 0
for i = 1, #ARGV, 5 do
  redis.call('XADD', KEYS[1], '*', 'path', ARGV[i], 'rel', ARGV[i + 1], 'root', ARGV[i + 2],
             'size', ARGV[i + 3], 'mtime', ARGV[i + 4])
  n = n + 1
end
redis.call('HINCRBY', KEYS[2], 'total', n)
return n
)lua",
                                 {}};

// Ack: KEYS tasks, job, errors, split (the range's split record, or any
// key of the job when not a range); ARGV id, chunks stored, "1" for a range.
// Only the first ack of a task counts, its chunks with it; the first ack of
// a split's last range adds the split file's whole-file pass, once.
const RedisScript kAckScript{R"lua(
local n = redis.call('XACK', KEYS[1], 'workers', ARGV[1])
if n == 1 then
  redis.call('XDEL', KEYS[1], ARGV[1])
  redis.call('HDEL', KEYS[3], ARGV[1])
  redis.call('HINCRBY', KEYS[2], 'done', 1)
  redis.call('HINCRBY', KEYS[2], 'chunks', ARGV[2])
  local t = redis.call('TIME')
  local ms = t[1] .. string.format('%03d', math.floor(t[2] / 1000))
  redis.call('HSET', KEYS[2], 'last_done_ms', ms)
  if ARGV[3] == '1' and redis.call('EXISTS', KEYS[4]) == 1 then
    local done = redis.call('HINCRBY', KEYS[4], 'done', 1)
    local f = redis.call('HMGET', KEYS[4], 'ranges', 'path', 'rel', 'root', 'size', 'mtime')
    if done >= tonumber(f[1]) then
      redis.call('XADD', KEYS[1], '*', 'path', f[2], 'rel', f[3], 'root', f[4], 'size', f[5],
                 'mtime', f[6], 'final', '1')
      redis.call('HINCRBY', KEYS[2], 'total', 1)
      redis.call('DEL', KEYS[4])
    end
  end
end
return n
)lua",
                             {}};

// Split: KEYS tasks, job, split; ARGV split name, path, rel, root, size,
// mtime, then begin, end, line per range.
const RedisScript kSplitScript{R"lua(
local n = 0
for i = 7, #ARGV, 3 do
  redis.call('XADD', KEYS[1], '*', 'path', ARGV[2], 'rel', ARGV[3], 'root', ARGV[4],
             'size', ARGV[5], 'mtime', ARGV[6], 'split', ARGV[1], 'begin', ARGV[i],
             'end', ARGV[i + 1], 'line', ARGV[i + 2])
  n = n + 1
end
redis.call('HSET', KEYS[3], 'ranges', n, 'done', 0, 'path', ARGV[2], 'rel', ARGV[3],
           'root', ARGV[4], 'size', ARGV[5], 'mtime', ARGV[6])
redis.call('HINCRBY', KEYS[2], 'total', n)
return n
)lua",
                               {}};

// Started: KEYS job. The Redis time of the job's first claim, once.
const RedisScript kStartedScript{R"lua(
if redis.call('HEXISTS', KEYS[1], 'started_ms') == 0 then
  local t = redis.call('TIME')
  local ms = t[1] .. string.format('%03d', math.floor(t[2] / 1000))
  redis.call('HSET', KEYS[1], 'started_ms', ms)
end
return 1
)lua",
                                 {}};

// Bury: KEYS tasks, dead, job, errors; ARGV id, error. Moves a pending task
// to the dead stream with its fields, the error (and the last one a worker
// noted) and its delivery count; only once.
const RedisScript kBuryScript{R"lua(
local p = redis.call('XPENDING', KEYS[1], 'workers', ARGV[1], ARGV[1], 1)
local deliveries = 0
if #p > 0 then deliveries = p[1][4] - (tonumber(ARGV[3]) or 0) end
local n = redis.call('XACK', KEYS[1], 'workers', ARGV[1])
if n == 0 then return 0 end
local fields = {}
local e = redis.call('XRANGE', KEYS[1], ARGV[1], ARGV[1])
if #e > 0 then fields = e[1][2] end
local err = ARGV[2]
local last = redis.call('HGET', KEYS[4], ARGV[1])
if last and last ~= err then err = err .. '; last error: ' .. last end
redis.call('XADD', KEYS[2], '*', 'task', ARGV[1], 'error', err, 'deliveries', deliveries,
           unpack(fields))
redis.call('XDEL', KEYS[1], ARGV[1])
redis.call('HDEL', KEYS[4], ARGV[1])
redis.call('HINCRBY', KEYS[3], 'dead', 1)
local t = redis.call('TIME')
local ms = t[1] .. string.format('%03d', math.floor(t[2] / 1000))
redis.call('HSET', KEYS[3], 'last_done_ms', ms)
return 1
)lua",
                              {}};

// Retry: KEYS dead, tasks, job; ARGV the dead entry's id. Re-adds the task.
const RedisScript kRetryScript{R"lua(
local e = redis.call('XRANGE', KEYS[1], ARGV[1], ARGV[1])
if #e == 0 then return 0 end
local f = e[1][2]
local out = {}
for i = 1, #f, 2 do
  local k = f[i]
  if k ~= 'task' and k ~= 'error' and k ~= 'deliveries' then
    out[#out + 1] = k
    out[#out + 1] = f[i + 1]
  end
end
redis.call('XADD', KEYS[2], '*', unpack(out))
redis.call('XDEL', KEYS[1], ARGV[1])
redis.call('HINCRBY', KEYS[3], 'dead', -1)
return 1
)lua",
                               {}};

// RemoveUnclaimed: KEYS tasks, job. The entries after the group's
// last-delivered-id are the ones XREADGROUP '>' would hand out next.
const RedisScript kRemoveUnclaimedScript{R"lua(
local last = '0-0'
for _, g in ipairs(redis.call('XINFO', 'GROUPS', KEYS[1])) do
  local name, id
  for i = 1, #g, 2 do
    if g[i] == 'name' then name = g[i + 1] end
    if g[i] == 'last-delivered-id' then id = g[i + 1] end
  end
  if name == 'workers' and id then last = id end
end
local removed = 0
while true do
  local entries = redis.call('XRANGE', KEYS[1], '(' .. last, '+', 'COUNT', 500)
  if #entries == 0 then break end
  for _, e in ipairs(entries) do
    redis.call('XDEL', KEYS[1], e[1])
    last = e[1]
    removed = removed + 1
  end
end
if removed > 0 then redis.call('HINCRBY', KEYS[2], 'cancelled', removed) end
return removed
)lua",
                                         {}};

uint64_t ToU64(const std::string& s) {
  try {
    return s.empty() ? 0 : std::stoull(s);
  } catch (...) {
    return 0;
  }
}
int64_t ToI64(const std::string& s) {
  try {
    return s.empty() ? 0 : std::stoll(s);
  } catch (...) {
    return 0;
  }
}

// A flat [field, value, ...] reply as (field -> value) lookups.
std::string Field(const RedisReply& fields, std::string_view name) {
  for (size_t i = 0; i + 1 < fields.elements.size(); i += 2) {
    if (fields.elements[i].str == name) return fields.elements[i + 1].str;
  }
  return {};
}

SourceTask TaskOf(const RedisReply& fields) {
  SourceTask t;
  t.path = Field(fields, "path");
  t.relative_path = Field(fields, "rel");
  t.root_name = Field(fields, "root");
  t.size_bytes = ToU64(Field(fields, "size"));
  t.mtime_ns = ToI64(Field(fields, "mtime"));
  t.split = Field(fields, "split");
  if (t.IsRange()) {
    t.range_begin = ToU64(Field(fields, "begin"));
    t.range_end = ToU64(Field(fields, "end"));
    t.first_line = std::max<uint64_t>(1, ToU64(Field(fields, "line")));
  }
  t.whole_file_pass = Field(fields, "final") == "1";
  return t;
}

// Entries [[id, [fields]], ...]; deleted entries (nil fields) are left out.
std::vector<ClaimedTask> EntriesOf(const RedisReply& entries) {
  std::vector<ClaimedTask> out;
  for (const RedisReply& e : entries.elements) {
    if (e.elements.size() < 2 || e.elements[1].type != RedisReply::Type::kArray) continue;
    out.push_back(ClaimedTask{e.elements[0].str, TaskOf(e.elements[1])});
  }
  return out;
}

}  // namespace

Status ValidateJobName(const std::string& job) {
  if (job.empty() || job.size() > 100) {
    return Status::InvalidArgument("--job must have 1 to 100 characters");
  }
  for (char c : job) {
    if (!std::isalnum(static_cast<unsigned char>(c)) && c != '.' && c != '_' && c != '-') {
      return Status::InvalidArgument("--job '" + job +
                                     "': only letters, digits, '.', '_' and '-' are allowed");
    }
  }
  return Status::OK();
}

TaskStream::TaskStream(std::unique_ptr<RedisClient> client, TaskStreamOptions options)
    : client_(std::move(client)),
      options_(std::move(options)),
      prefix_("sluice:job:{" + options_.job + "}") {}

Result<std::unique_ptr<TaskStream>> TaskStream::Open(const RedisEndpoint& endpoint,
                                                     TaskStreamOptions options) {
  if (Status s = ValidateJobName(options.job); !s.ok()) return s;
  if (options.max_deliveries < 1) return Status::InvalidArgument("--max-deliveries must be >= 1");
  if (options.visibility_timeout.count() < 1) {
    return Status::InvalidArgument("--visibility-timeout must be > 0");
  }
  auto client = RedisClient::Connect(endpoint);
  if (!client.ok()) return client.status();
  return std::unique_ptr<TaskStream>(new TaskStream(std::move(*client), std::move(options)));
}

Status TaskStream::CreateJob(const JobRecord& job) {
  auto set = client_->Command({"HSET", prefix_, "options", job.options_json, "store", job.store_uri,
                               "created", job.created});
  if (!set.ok()) return set.status();
  auto group = client_->Command({"XGROUP", "CREATE", TasksKey(), kGroup, "0", "MKSTREAM"});
  if (!group.ok() && group.status().message().find("BUSYGROUP") == std::string::npos) {
    return group.status();
  }
  return Status::OK();
}

Result<JobRecord> TaskStream::LoadJob() {
  auto r = client_->Command({"HMGET", prefix_, "options", "store", "created"});
  if (!r.ok()) return r.status();
  if (r->elements.size() != 3 || r->elements[0].IsNil()) {
    return Status::NotFound("no job '" + options_.job + "' in " + client_->endpoint().Redacted() +
                            " (create it with sluice enqueue)");
  }
  return JobRecord{r->elements[0].str, r->elements[1].str, r->elements[2].str};
}

Status TaskStream::Enqueue(const std::vector<SourceTask>& tasks) {
  for (size_t from = 0; from < tasks.size(); from += kEnqueueBatch) {
    std::vector<std::string> args;
    const size_t to = std::min(tasks.size(), from + kEnqueueBatch);
    for (size_t i = from; i < to; ++i) {
      const SourceTask& t = tasks[i];
      args.insert(args.end(), {t.path, t.relative_path, t.root_name, std::to_string(t.size_bytes),
                               std::to_string(t.mtime_ns)});
    }
    auto r = client_->Eval(kEnqueueScript, {TasksKey(), prefix_}, args);
    if (!r.ok()) return r.status();
  }
  return Status::OK();
}

Status TaskStream::EnqueueSplit(const SourceTask& whole, const std::vector<SourceTask>& ranges) {
  if (ranges.empty()) return Status::InvalidArgument("a split needs at least one range");
  auto id = client_->Command({"INCR", prefix_ + ":splits"});
  if (!id.ok()) return id.status();
  const std::string split = std::to_string(id->AsInteger());
  std::vector<std::string> args = {split,
                                   whole.path,
                                   whole.relative_path,
                                   whole.root_name,
                                   std::to_string(whole.size_bytes),
                                   std::to_string(whole.mtime_ns)};
  for (const SourceTask& r : ranges) {
    args.insert(args.end(), {std::to_string(r.range_begin), std::to_string(r.range_end),
                             std::to_string(r.first_line)});
  }
  auto r = client_->Eval(kSplitScript, {TasksKey(), prefix_, prefix_ + ":split:" + split}, args);
  return r.ok() ? Status::OK() : r.status();
}

Result<std::vector<ClaimedTask>> TaskStream::Claim(const std::string& consumer, int count,
                                                   std::chrono::milliseconds block) {
  auto r = client_->Command({"XREADGROUP", "GROUP", kGroup, consumer, "COUNT",
                             std::to_string(std::max(1, count)), "BLOCK",
                             std::to_string(block.count()), "STREAMS", TasksKey(), ">"});
  if (!r.ok()) return r.status();
  if (r->IsNil() || r->elements.empty() || r->elements[0].elements.size() < 2) {
    return std::vector<ClaimedTask>();
  }
  std::vector<ClaimedTask> claimed = EntriesOf(r->elements[0].elements[1]);
  if (!claimed.empty()) {
    // Only the rate in `sluice status` needs it: a failure here is no reason
    // to drop the claim (the tasks are in this consumer's PEL already).
    (void)MarkStarted();
  }
  return claimed;
}

Status TaskStream::MarkStarted() {
  if (started_marked_) return Status::OK();
  auto r = client_->Eval(kStartedScript, {prefix_}, {});
  if (!r.ok()) return r.status();
  started_marked_ = true;
  return Status::OK();
}

Result<bool> TaskStream::Ack(const std::string& id, uint64_t chunks_stored,
                             const std::string& split) {
  // Not a range: the fourth key is only named (the script leaves it alone).
  const std::string split_key = prefix_ + ":split:" + (split.empty() ? "none" : split);
  auto r = client_->Eval(kAckScript, {TasksKey(), prefix_, prefix_ + ":errors", split_key},
                         {id, std::to_string(chunks_stored), split.empty() ? "0" : "1"});
  if (!r.ok()) return r.status();
  return r->AsInteger() == 1;
}

Result<bool> TaskStream::Bury(const std::string& id, const std::string& error,
                              int claims_not_delivered) {
  auto r = client_->Eval(kBuryScript, {TasksKey(), DeadKey(), prefix_, prefix_ + ":errors"},
                         {id, error, std::to_string(claims_not_delivered)});
  if (!r.ok()) return r.status();
  return r->AsInteger() == 1;
}

Status TaskStream::NoteError(const std::string& id, const std::string& error) {
  auto r = client_->Command({"HSET", prefix_ + ":errors", id, error});
  return r.ok() ? Status::OK() : r.status();
}

Result<std::vector<ClaimedTask>> TaskStream::ReclaimStale(const std::string& consumer, int count) {
  const std::string idle = std::to_string(options_.visibility_timeout.count());
  // The poison ones first, so they are never delivered again.
  auto pending = client_->Command({"XPENDING", TasksKey(), kGroup, "IDLE", idle, "-", "+", "100"});
  if (!pending.ok()) return pending.status();
  for (const RedisReply& p : pending->elements) {
    if (p.elements.size() < 4) continue;
    const long long deliveries = p.elements[3].AsInteger();
    if (deliveries < options_.max_deliveries) continue;
    auto buried = Bury(p.elements[0].str, "delivered " + std::to_string(deliveries) +
                                              " times and never acknowledged (its workers died, "
                                              "stopped or timed out on it)");
    if (!buried.ok()) return buried.status();
  }
  auto r = client_->Command({"XAUTOCLAIM", TasksKey(), kGroup, consumer, idle, "0-0", "COUNT",
                             std::to_string(std::max(1, count))});
  if (!r.ok()) return r.status();
  if (r->elements.size() < 2) return std::vector<ClaimedTask>();
  // A task can pass the visibility timeout between the XPENDING above and the
  // XAUTOCLAIM: then the claim just made is one delivery too many. Each claimed
  // entry's count is read back and such a task buried, so no task is ever
  // handed out more than max_deliveries times, however the calls interleave.
  std::vector<ClaimedTask> claimed;
  for (ClaimedTask& task : EntriesOf(r->elements[1])) {
    auto one = client_->Command({"XPENDING", TasksKey(), kGroup, task.id, task.id, "1"});
    if (!one.ok()) return one.status();
    long long deliveries = 0;
    if (!one->elements.empty() && one->elements[0].elements.size() >= 4) {
      deliveries = one->elements[0].elements[3].AsInteger();
    }
    if (deliveries <= options_.max_deliveries) {
      claimed.push_back(std::move(task));
      continue;
    }
    // The last claim was ours, not a worker's: the task was delivered
    // deliveries - 1 times.
    auto buried = Bury(task.id,
                       "delivered " + std::to_string(deliveries - 1) +
                           " times and never acknowledged (its workers died, "
                           "stopped or timed out on it)",
                       /*claims_not_delivered=*/1);
    if (!buried.ok()) return buried.status();
  }
  return claimed;
}

Status TaskStream::Extend(const std::string& consumer, const std::vector<std::string>& ids) {
  if (ids.empty()) return Status::OK();
  // Only the tasks still this consumer's: one already handed to another
  // worker is not taken back.
  auto mine = client_->Command({"XPENDING", TasksKey(), kGroup, "-", "+", "10000", consumer});
  if (!mine.ok()) return mine.status();
  std::vector<std::string> argv = {"XCLAIM", TasksKey(), kGroup, consumer, "0"};
  for (const RedisReply& p : mine->elements) {
    if (p.elements.empty()) continue;
    if (std::find(ids.begin(), ids.end(), p.elements[0].str) != ids.end()) {
      argv.push_back(p.elements[0].str);
    }
  }
  if (argv.size() == 5) return Status::OK();
  argv.push_back("JUSTID");
  auto r = client_->Command(argv);
  return r.ok() ? Status::OK() : r.status();
}

Status TaskStream::Heartbeat(const WorkerStatus& worker, std::chrono::milliseconds ttl) {
  auto now = client_->Command({"TIME"});
  if (!now.ok()) return now.status();
  const int64_t now_ms = now->elements.size() == 2 ? ToI64(now->elements[0].str) * 1000 +
                                                         ToI64(now->elements[1].str) / 1000
                                                   : 0;
  const std::string key = prefix_ + ":worker:" + worker.consumer;
  for (const std::vector<std::string>& argv : std::vector<std::vector<std::string>>{
           {"HSET", key, "host", worker.host, "pid", std::to_string(worker.pid), "tasks",
            std::to_string(worker.tasks_done), "heartbeat_ms", std::to_string(now_ms)},
           {"PEXPIRE", key, std::to_string(std::max<int64_t>(1, ttl.count()))},
           {"SADD", prefix_ + ":workers", worker.consumer}}) {
    auto r = client_->Command(argv);
    if (!r.ok()) return r.status();
  }
  return Status::OK();
}

Result<uint64_t> TaskStream::PendingCount() {
  auto r = client_->Command({"XPENDING", TasksKey(), kGroup});
  if (!r.ok()) return r.status();
  if (r->elements.empty()) return uint64_t{0};
  return static_cast<uint64_t>(std::max(0LL, r->elements[0].AsInteger()));
}

Result<JobStatus> TaskStream::Counts() {
  JobStatus s;
  auto counts = client_->Command({"HMGET", prefix_, "total", "done", "dead", "options", "chunks",
                                  "started_ms", "last_done_ms", "cancelled"});
  if (!counts.ok()) return counts.status();
  if (counts->elements.size() != 8 || counts->elements[3].IsNil()) {
    return Status::NotFound("no job '" + options_.job + "' in " + client_->endpoint().Redacted());
  }
  s.total = ToU64(counts->elements[0].str);
  s.done = ToU64(counts->elements[1].str);
  s.dead = ToU64(counts->elements[2].str);
  s.chunks_stored = ToU64(counts->elements[4].str);
  s.started_ms = ToI64(counts->elements[5].str);
  s.last_done_ms = ToI64(counts->elements[6].str);
  s.cancelled = ToU64(counts->elements[7].str);
  auto in_flight = PendingCount();
  if (!in_flight.ok()) return in_flight.status();
  s.in_flight = *in_flight;
  const uint64_t settled = s.done + s.dead + s.in_flight + s.cancelled;
  s.pending = s.total > settled ? s.total - settled : 0;
  return s;
}

Result<JobStatus> TaskStream::Summary() {
  auto counted = Counts();
  if (!counted.ok()) return counted.status();
  JobStatus& s = *counted;
  auto now = client_->Command({"TIME"});
  if (!now.ok()) return now.status();
  const int64_t now_ms = now->elements.size() == 2 ? ToI64(now->elements[0].str) * 1000 +
                                                         ToI64(now->elements[1].str) / 1000
                                                   : 0;
  s.now_ms = now_ms;
  auto names = client_->Command({"SMEMBERS", prefix_ + ":workers"});
  if (!names.ok()) return names.status();
  for (const RedisReply& name : names->elements) {
    auto w = client_->Command({"HGETALL", prefix_ + ":worker:" + name.str});
    if (!w.ok()) return w.status();
    if (w->elements.empty()) {  // its heartbeat expired: gone
      client_->Command({"SREM", prefix_ + ":workers", name.str});
      continue;
    }
    WorkerStatus ws;
    ws.consumer = name.str;
    ws.host = Field(*w, "host");
    ws.pid = ToI64(Field(*w, "pid"));
    ws.tasks_done = ToU64(Field(*w, "tasks"));
    ws.heartbeat_age_ms = std::max<int64_t>(0, now_ms - ToI64(Field(*w, "heartbeat_ms")));
    s.workers.push_back(std::move(ws));
  }
  std::sort(s.workers.begin(), s.workers.end(),
            [](const WorkerStatus& a, const WorkerStatus& b) { return a.consumer < b.consumer; });
  return counted;
}

Result<bool> TaskStream::Idle() {
  // Two round trips, not the whole summary (the workers' records grow with
  // their number): every waiting worker asks this each claim_block.
  auto s = Counts();
  if (!s.ok()) return s.status();
  return s->pending == 0 && s->in_flight == 0;
}

Result<std::vector<DeadTask>> TaskStream::ListDead() {
  auto r = client_->Command({"XRANGE", DeadKey(), "-", "+"});
  if (!r.ok()) return r.status();
  std::vector<DeadTask> out;
  for (const RedisReply& e : r->elements) {
    if (e.elements.size() < 2) continue;
    DeadTask d;
    d.id = e.elements[0].str;
    d.task_id = Field(e.elements[1], "task");
    d.task = TaskOf(e.elements[1]);
    d.error = Field(e.elements[1], "error");
    d.deliveries = ToI64(Field(e.elements[1], "deliveries"));
    out.push_back(std::move(d));
  }
  return out;
}

Result<uint64_t> TaskStream::RetryDead() {
  auto dead = ListDead();
  if (!dead.ok()) return dead.status();
  uint64_t retried = 0;
  for (const DeadTask& d : *dead) {
    auto r = client_->Eval(kRetryScript, {DeadKey(), TasksKey(), prefix_}, {d.id});
    if (!r.ok()) return r.status();
    retried += static_cast<uint64_t>(r->AsInteger());
  }
  return retried;
}

Result<uint64_t> TaskStream::RemoveUnclaimed() {
  auto r = client_->Eval(kRemoveUnclaimedScript, {TasksKey(), prefix_}, {});
  if (!r.ok()) return r.status();
  return static_cast<uint64_t>(std::max(0LL, r->AsInteger()));
}

}  // namespace sluice
