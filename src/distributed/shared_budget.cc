#include "distributed/shared_budget.h"

#include <cstdlib>

#include <fmt/format.h>
#include <spdlog/spdlog.h>

namespace sluice {
namespace {

// Every script starts with the time: ARGV[1] in ms, or Redis's own clock
// when it is empty. Effects replication (the default from Redis 7; asked for
// on 5 and 6) lets a script write after reading TIME.
constexpr const char* kNowPrelude = R"lua(
if redis.replicate_commands then pcall(redis.replicate_commands) end
local now = tonumber(ARGV[1])
if now == nil then
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
)lua";

// KEYS: limits, requests, tokens, cooldown, unpaced, probe, open.
// ARGV: now, requests, tokens, force (0/1), safety, burst seconds, ttl ms,
// unpaced window ms, probe ms (0: no probe gate), probe poll ms. A take while
// a limit is unknown is counted in `unpaced` (for a window from the first
// one), so the bucket learn starts can subtract what went out before anyone
// knew the limit. While no limit is known and the budget is not `open` (a
// service that announces none), an unforced take is granted only to the
// first asker (`probe`, until its answer or probe ms); the others wait.
// Returns {granted, wait_ms, rpm, tpm, requests_level, tokens_level, cooldown_ms}.
constexpr const char* kTakeBody = R"lua(
local want_requests = tonumber(ARGV[2])
local want_tokens = tonumber(ARGV[3])
local force = ARGV[4] == '1'
local safety = tonumber(ARGV[5])
local burst = tonumber(ARGV[6])
local ttl = tonumber(ARGV[7])
local limits = redis.call('HMGET', KEYS[1], 'rpm', 'tpm')
local rpm = tonumber(limits[1]) or 0
local tpm = tonumber(limits[2]) or 0
local cooldown_until = tonumber(redis.call('GET', KEYS[4]) or '0') or 0
local wait = 0
local cooldown = 0
if cooldown_until > now then
  cooldown = cooldown_until - now
  wait = cooldown
end
-- A bucket refilled to now: {level, capacity, wait for `want`}, nil without a limit.
local function bucket(key, per_minute, want)
  if per_minute <= 0 then return nil end
  local rate = per_minute * safety / 60000
  local capacity = math.max(1, per_minute * safety * burst / 60)
  local s = redis.call('HMGET', key, 'level', 'at')
  local level = tonumber(s[1])
  local at = tonumber(s[2])
  if level == nil or at == nil then
    level = capacity
    at = now
  end
  if now > at then level = math.min(capacity, level + (now - at) * rate) end
  if level > capacity then level = capacity end
  local need = math.min(want, capacity)
  local w = 0
  if want > 0 and level < need then w = math.ceil((need - level) / rate) end
  return {level, capacity, w}
end
local r = bucket(KEYS[2], rpm, want_requests)
local k = bucket(KEYS[3], tpm, want_tokens)
if r and r[3] > wait then wait = r[3] end
if k and k[3] > wait then wait = k[3] end
local probe_ms = tonumber(ARGV[9]) or 0
if rpm <= 0 and tpm <= 0 and not force and wait == 0 and probe_ms > 0
   and redis.call('EXISTS', KEYS[7]) == 0 then
  if not redis.call('SET', KEYS[6], '1', 'NX', 'PX', probe_ms) then
    wait = tonumber(ARGV[10]) or 50
  end
end
local granted = 0
if wait == 0 or force then
  granted = 1
  if r then
    r[1] = r[1] - want_requests
    redis.call('HSET', KEYS[2], 'level', tostring(r[1]), 'at', tostring(now))
    redis.call('PEXPIRE', KEYS[2], ttl)
  end
  if k then
    k[1] = k[1] - want_tokens
    redis.call('HSET', KEYS[3], 'level', tostring(k[1]), 'at', tostring(now))
    redis.call('PEXPIRE', KEYS[3], ttl)
  end
end
if granted == 1 and (rpm <= 0 or tpm <= 0) then
  local fresh = redis.call('EXISTS', KEYS[5]) == 0
  if rpm <= 0 then redis.call('HINCRBYFLOAT', KEYS[5], 'requests', want_requests) end
  if tpm <= 0 then redis.call('HINCRBYFLOAT', KEYS[5], 'tokens', want_tokens) end
  if fresh then redis.call('PEXPIRE', KEYS[5], tonumber(ARGV[8])) end
end
if rpm > 0 or tpm > 0 then redis.call('PEXPIRE', KEYS[1], ttl) end
return {granted, wait, tostring(rpm), tostring(tpm), tostring(r and r[1] or 0),
        tostring(k and k[1] or 0), cooldown}
)lua";

// KEYS: limits, requests, tokens, unpaced, probe. ARGV: now, rpm, tpm, window ms,
// ttl ms, remaining requests, remaining tokens (-1: not announced). A value
// replaces the stored one when it is as tight or tighter, or the stored one
// was not confirmed within the window. A bucket that does not exist yet
// starts with what the service said is left (not full: the requests that
// taught the limit may have spent it), less what was taken unpaced besides
// the answered request (ARGV[8]: its own tokens as taken; 0 when unknown,
// and then all are subtracted).
// Returns {rpm, tpm} in force.
constexpr const char* kLearnBody = R"lua(
local window = tonumber(ARGV[4])
local ttl = tonumber(ARGV[5])
local function learn(field, value)
  if value == nil or value <= 0 then return end
  local cur = tonumber(redis.call('HGET', KEYS[1], field))
  local at = tonumber(redis.call('HGET', KEYS[1], field .. '_at'))
  if cur == nil or at == nil or value <= cur or now - at > window then
    redis.call('HSET', KEYS[1], field, tostring(value), field .. '_at', tostring(now))
  end
end
local function seed(key, limit, remaining, field, own)
  if limit <= 0 or remaining == nil or remaining < 0 then return end
  if redis.call('HEXISTS', key, 'level') == 0 then
    local unpaced = tonumber(redis.call('HGET', KEYS[4], field) or '0') or 0
    local level = remaining - math.max(0, unpaced - own)
    redis.call('HSET', key, 'level', tostring(level), 'at', tostring(now))
    redis.call('PEXPIRE', key, ttl)
    redis.call('HDEL', KEYS[4], field)
  end
end
learn('rpm', tonumber(ARGV[2]))
learn('tpm', tonumber(ARGV[3]))
local v = redis.call('HMGET', KEYS[1], 'rpm', 'tpm')
if v[1] or v[2] then
  redis.call('PEXPIRE', KEYS[1], ttl)
  redis.call('DEL', KEYS[5])  -- the probe was answered: the buckets pace from here
end
seed(KEYS[2], tonumber(v[1]) or 0, tonumber(ARGV[6]), 'requests', 1)
seed(KEYS[3], tonumber(v[2]) or 0, tonumber(ARGV[7]), 'tokens', tonumber(ARGV[8]) or 0)
return {v[1] or '0', v[2] or '0'}
)lua";

// KEYS: probe, open. ARGV: now, open (0/1), window ms. An answer without
// limit headers: the probe gate is released (another request may probe);
// with open = 1 (a success announcing no limit) the service is taken to have
// none, and takes stay free for the window.
constexpr const char* kProbeAnsweredBody = R"lua(
redis.call('DEL', KEYS[1])
if ARGV[2] == '1' then redis.call('SET', KEYS[2], tostring(now), 'PX', tonumber(ARGV[3])) end
return 1
)lua";

// KEYS: cooldown. ARGV: now, retry-after ms, ttl ms. Returns the cooldown's end.
constexpr const char* kCooldownBody = R"lua(
local untl = now + tonumber(ARGV[2])
local cur = tonumber(redis.call('GET', KEYS[1]) or '0') or 0
if untl > cur then
  redis.call('SET', KEYS[1], tostring(untl), 'PX', math.max(tonumber(ARGV[3]), untl - now + 1000))
  return untl
end
return cur
)lua";

// KEYS: leases. ARGV: now, lease ms, max, ttl ms, ids... Returns how many of
// the ids were added, in order, while the cap allowed.
constexpr const char* kAcquireBody = R"lua(
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
local lease = tonumber(ARGV[2])
local max = tonumber(ARGV[3])
local count = redis.call('ZCARD', KEYS[1])
local added = 0
for i = 5, #ARGV do
  if count >= max then break end
  redis.call('ZADD', KEYS[1], now + lease, ARGV[i])
  count = count + 1
  added = added + 1
end
redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[4]))
return added
)lua";

// KEYS: leases. ARGV: now, lease ms, ttl ms, ids... Returns the ids no longer held.
constexpr const char* kRenewBody = R"lua(
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
local lease = tonumber(ARGV[2])
local lost = {}
for i = 4, #ARGV do
  if redis.call('ZSCORE', KEYS[1], ARGV[i]) then
    redis.call('ZADD', KEYS[1], now + lease, ARGV[i])
  else
    table.insert(lost, ARGV[i])
  end
end
redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[3]))
return lost
)lua";

// KEYS: leases. ARGV: now. Returns the leases held.
constexpr const char* kCountBody = R"lua(
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
return redis.call('ZCARD', KEYS[1])
)lua";

RedisScript MakeScript(const char* body) {
  RedisScript script;
  script.source = std::string(kNowPrelude) + body;
  return script;
}

double ToDouble(const RedisReply& r) {
  if (r.type == RedisReply::Type::kInteger) return static_cast<double>(r.integer);
  return std::strtod(r.str.c_str(), nullptr);
}

// How long takes made before any limit was known count against the first
// bucket (the service's own burst refills over about this long, or faster).
constexpr Duration kUnpacedWindow = std::chrono::seconds(10);

int64_t Millis(Duration d) {
  return std::chrono::duration_cast<std::chrono::milliseconds>(d).count();
}

}  // namespace

// Each script keeps the SHA its first run learned, per SharedBudget (so per thread).
struct SharedBudget::Scripts {
  RedisScript take = MakeScript(kTakeBody);
  RedisScript learn = MakeScript(kLearnBody);
  RedisScript cooldown = MakeScript(kCooldownBody);
  RedisScript probe_answered = MakeScript(kProbeAnsweredBody);
  RedisScript acquire = MakeScript(kAcquireBody);
  RedisScript renew = MakeScript(kRenewBody);
  RedisScript count = MakeScript(kCountBody);
};

Result<std::unique_ptr<SharedBudget>> SharedBudget::Open(const SharedBudgetOptions& options) {
  auto endpoint = ParseRedisUrl(options.redis_url);
  if (!endpoint.ok()) return endpoint.status();
  if (options.name.empty()) return Status::InvalidArgument("the shared budget needs a name");
  std::unique_ptr<SharedBudget> budget(new SharedBudget(options, *endpoint));
  (void)budget->EnsureConnected();  // unreachable: warned, retried later
  return budget;
}

SharedBudget::SharedBudget(SharedBudgetOptions options, RedisEndpoint endpoint)
    : options_(std::move(options)),
      endpoint_(std::move(endpoint)),
      scripts_(std::make_unique<Scripts>()) {}

SharedBudget::~SharedBudget() = default;

std::string SharedBudget::Key(const std::string& part) const {
  // {name} is a Redis Cluster hash tag: every key of a budget in one slot.
  return "sluice:budget:{" + options_.name + "}:" + part;
}

std::string SharedBudget::NowArg(std::optional<int64_t> now_ms) const {
  return now_ms ? std::to_string(*now_ms) : std::string();
}

Status SharedBudget::EnsureConnected() {
  if (client_ != nullptr) return Status::OK();
  const TimePoint now = SteadyClock::now();
  if (now < retry_at_) return Status::Unavailable("shared budget: Redis unreachable");
  auto client = RedisClient::Connect(
      endpoint_, std::chrono::duration_cast<std::chrono::milliseconds>(options_.redis_timeout));
  if (!client.ok()) {
    retry_at_ = now + options_.reconnect_after;
    if (!warned_) {
      // The status names the server by its redacted URL only.
      spdlog::warn(
          "shared rate budget '{}': {}; pacing this process alone, retrying every {} s",
          options_.name, client.status().message(),
          std::chrono::duration_cast<std::chrono::seconds>(options_.reconnect_after).count());
      warned_ = true;
    }
    return client.status();
  }
  client_ = std::move(*client);
  if (warned_) {
    spdlog::info("shared rate budget '{}': Redis at {} reachable again", options_.name,
                 endpoint_.Redacted());
    warned_ = false;
  }
  return Status::OK();
}

Result<RedisReply> SharedBudget::Run(const RedisScript& script,
                                     const std::vector<std::string>& keys,
                                     std::vector<std::string> args) {
  if (Status s = EnsureConnected(); !s.ok()) return s;
  auto reply = client_->Eval(script, keys, args);
  if (!reply.ok()) {
    client_.reset();
    retry_at_ = SteadyClock::now() + options_.reconnect_after;
    if (!warned_) {
      spdlog::warn(
          "shared rate budget '{}': {}; pacing this process alone, retrying every {} s",
          options_.name, reply.status().message(),
          std::chrono::duration_cast<std::chrono::seconds>(options_.reconnect_after).count());
      warned_ = true;
    }
  }
  return reply;
}

Result<BudgetTake> SharedBudget::Take(double requests, double tokens, bool force,
                                      std::optional<int64_t> now_ms) {
  auto reply =
      Run(scripts_->take,
          {Key("limits"), Key("requests"), Key("tokens"), Key("cooldown"), Key("unpaced"),
           Key("probe"), Key("open")},
          {NowArg(now_ms), fmt::format("{}", requests), fmt::format("{}", tokens),
           force ? "1" : "0", fmt::format("{}", options_.safety),
           fmt::format("{}", options_.burst_seconds), std::to_string(Millis(options_.key_ttl)),
           std::to_string(Millis(kUnpacedWindow)), std::to_string(Millis(options_.probe_duration)),
           std::to_string(Millis(options_.probe_poll))});
  if (!reply.ok()) return reply.status();
  const auto& e = reply->elements;
  if (e.size() != 7) return Status::Corrupt("shared budget: unexpected reply to take");
  BudgetTake take;
  take.granted = e[0].AsInteger() == 1;
  take.wait_ms = e[1].AsInteger();
  take.rpm = ToDouble(e[2]);
  take.tpm = ToDouble(e[3]);
  take.requests_level = ToDouble(e[4]);
  take.tokens_level = ToDouble(e[5]);
  take.cooldown_ms = e[6].AsInteger();
  return take;
}

Result<std::pair<double, double>> SharedBudget::Learn(double rpm, double tpm,
                                                      std::optional<int64_t> now_ms,
                                                      double remaining_requests,
                                                      double remaining_tokens, double own_tokens) {
  auto reply = Run(scripts_->learn,
                   {Key("limits"), Key("requests"), Key("tokens"), Key("unpaced"), Key("probe")},
                   {NowArg(now_ms), fmt::format("{}", rpm), fmt::format("{}", tpm),
                    std::to_string(Millis(options_.limit_window)),
                    std::to_string(Millis(options_.key_ttl)), fmt::format("{}", remaining_requests),
                    fmt::format("{}", remaining_tokens), fmt::format("{}", own_tokens)});
  if (!reply.ok()) return reply.status();
  if (reply->elements.size() != 2) return Status::Corrupt("shared budget: unexpected reply");
  return std::make_pair(ToDouble(reply->elements[0]), ToDouble(reply->elements[1]));
}

Status SharedBudget::ProbeAnswered(bool no_limits, std::optional<int64_t> now_ms) {
  auto reply =
      Run(scripts_->probe_answered, {Key("probe"), Key("open")},
          {NowArg(now_ms), no_limits ? "1" : "0", std::to_string(Millis(options_.limit_window))});
  return reply.ok() ? Status::OK() : reply.status();
}

Result<int64_t> SharedBudget::Cooldown(int64_t retry_after_ms, std::optional<int64_t> now_ms) {
  auto reply = Run(
      scripts_->cooldown, {Key("cooldown")},
      {NowArg(now_ms), std::to_string(retry_after_ms), std::to_string(Millis(options_.key_ttl))});
  if (!reply.ok()) return reply.status();
  return static_cast<int64_t>(reply->AsInteger());
}

Result<size_t> SharedBudget::AcquireLeases(const std::vector<std::string>& ids, int max_in_flight,
                                           std::optional<int64_t> now_ms) {
  std::vector<std::string> args = {NowArg(now_ms), std::to_string(Millis(options_.lease_duration)),
                                   std::to_string(max_in_flight),
                                   std::to_string(Millis(options_.key_ttl))};
  args.insert(args.end(), ids.begin(), ids.end());
  auto reply = Run(scripts_->acquire, {Key("leases")}, std::move(args));
  if (!reply.ok()) return reply.status();
  return static_cast<size_t>(reply->AsInteger());
}

Result<std::vector<std::string>> SharedBudget::RenewLeases(const std::vector<std::string>& ids,
                                                           std::optional<int64_t> now_ms) {
  std::vector<std::string> args = {NowArg(now_ms), std::to_string(Millis(options_.lease_duration)),
                                   std::to_string(Millis(options_.key_ttl))};
  args.insert(args.end(), ids.begin(), ids.end());
  auto reply = Run(scripts_->renew, {Key("leases")}, std::move(args));
  if (!reply.ok()) return reply.status();
  std::vector<std::string> lost;
  for (const RedisReply& e : reply->elements) lost.push_back(e.str);
  return lost;
}

Status SharedBudget::ReleaseLeases(const std::vector<std::string>& ids) {
  if (ids.empty()) return Status::OK();
  if (Status s = EnsureConnected(); !s.ok()) return s;
  std::vector<std::string> argv = {"ZREM", Key("leases")};
  argv.insert(argv.end(), ids.begin(), ids.end());
  auto reply = client_->Command(argv);
  if (!reply.ok()) {
    client_.reset();
    retry_at_ = SteadyClock::now() + options_.reconnect_after;
    return reply.status();
  }
  return Status::OK();
}

Result<int64_t> SharedBudget::ClientId() {
  if (Status s = EnsureConnected(); !s.ok()) return s;
  auto reply = client_->Command({"CLIENT", "ID"});
  if (!reply.ok()) return reply.status();
  return static_cast<int64_t>(reply->AsInteger());
}

Result<int64_t> SharedBudget::LeaseCount(std::optional<int64_t> now_ms) {
  auto reply = Run(scripts_->count, {Key("leases")}, {NowArg(now_ms)});
  if (!reply.ok()) return reply.status();
  return static_cast<int64_t>(reply->AsInteger());
}

Result<SharedBudgetState> ReadSharedBudgetState(RedisClient& client, const std::string& name) {
  const std::string prefix = "sluice:budget:{" + name + "}:";
  auto time = client.Command({"TIME"});
  if (!time.ok()) return time.status();
  if (time->elements.size() != 2) return Status::Corrupt("redis: TIME gave no time");
  const int64_t now_ms =
      time->elements[0].AsInteger() * 1000 + time->elements[1].AsInteger() / 1000;
  SharedBudgetState state;
  auto exists = client.Command({"EXISTS", prefix + "limits", prefix + "requests", prefix + "tokens",
                                prefix + "cooldown", prefix + "leases"});
  if (!exists.ok()) return exists.status();
  state.found = exists->AsInteger() > 0;
  if (!state.found) return state;
  auto limits = client.Command({"HMGET", prefix + "limits", "rpm", "tpm"});
  if (!limits.ok()) return limits.status();
  if (limits->elements.size() == 2) {
    state.rpm = std::atof(limits->elements[0].str.c_str());
    state.tpm = std::atof(limits->elements[1].str.c_str());
  }
  auto cooldown = client.Command({"GET", prefix + "cooldown"});
  if (!cooldown.ok()) return cooldown.status();
  if (!cooldown->IsNil()) {
    const int64_t until = static_cast<int64_t>(std::atof(cooldown->str.c_str()));
    state.cooldown_left_ms = until > now_ms ? until - now_ms : 0;
  }
  auto leases = client.Command({"ZCOUNT", prefix + "leases", "(" + std::to_string(now_ms), "+inf"});
  if (!leases.ok()) return leases.status();
  state.leases = static_cast<int64_t>(leases->AsInteger());
  return state;
}

}  // namespace sluice
