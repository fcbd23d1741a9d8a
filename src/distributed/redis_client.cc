#include "distributed/redis_client.h"

#include <hiredis/hiredis.h>

#include <fmt/format.h>
#include <charconv>

namespace sluice {
namespace {

RedisReply Convert(const redisReply* r) {
  RedisReply out;
  switch (r->type) {
    case REDIS_REPLY_INTEGER:
      out.type = RedisReply::Type::kInteger;
      out.integer = r->integer;
      break;
    case REDIS_REPLY_STRING:
      out.type = RedisReply::Type::kString;
      out.str.assign(r->str, r->len);
      break;
    case REDIS_REPLY_STATUS:
      out.type = RedisReply::Type::kStatus;
      out.str.assign(r->str, r->len);
      break;
    case REDIS_REPLY_ARRAY:
      out.type = RedisReply::Type::kArray;
      out.elements.reserve(r->elements);
      for (size_t i = 0; i < r->elements; ++i) out.elements.push_back(Convert(r->element[i]));
      break;
    default:
      out.type = RedisReply::Type::kNil;
  }
  return out;
}

bool ParsePort(std::string_view text, int& port) {
  auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), port);
  return ec == std::errc() && end == text.data() + text.size() && port > 0 && port < 65536;
}

}  // namespace

long long RedisReply::AsInteger(long long fallback) const {
  if (type == Type::kInteger) return integer;
  if (type == Type::kString || type == Type::kStatus) {
    long long v = 0;
    auto [end, ec] = std::from_chars(str.data(), str.data() + str.size(), v);
    if (ec == std::errc() && end == str.data() + str.size()) return v;
  }
  return fallback;
}

std::string RedisEndpoint::Redacted() const {
  std::string auth;
  if (!username.empty() || !password.empty()) {
    auth = username + (password.empty() ? "" : ":***") + "@";
  }
  return fmt::format("redis://{}{}:{}/{}", auth, host, port, db);
}

Result<RedisEndpoint> ParseRedisUrl(std::string_view url) {
  constexpr std::string_view kScheme = "redis://";
  if (url.substr(0, kScheme.size()) != kScheme) {
    return Status::InvalidArgument("a Redis URL starts with redis:// (redis://host:port/db)");
  }
  RedisEndpoint e;
  std::string_view rest = url.substr(kScheme.size());
  if (size_t at = rest.rfind('@'); at != std::string_view::npos) {
    std::string_view auth = rest.substr(0, at);
    rest = rest.substr(at + 1);
    if (size_t colon = auth.find(':'); colon != std::string_view::npos) {
      e.username = auth.substr(0, colon);
      e.password = auth.substr(colon + 1);
    } else {
      e.password = auth;  // redis://secret@host: a password alone
    }
  }
  std::string_view hostport = rest;
  if (size_t slash = rest.find('/'); slash != std::string_view::npos) {
    hostport = rest.substr(0, slash);
    std::string_view db = rest.substr(slash + 1);
    if (!db.empty()) {
      auto [end, ec] = std::from_chars(db.data(), db.data() + db.size(), e.db);
      if (ec != std::errc() || end != db.data() + db.size() || e.db < 0) {
        return Status::InvalidArgument("the Redis database after / must be a number");
      }
    }
  }
  if (size_t colon = hostport.rfind(':'); colon != std::string_view::npos) {
    if (!ParsePort(hostport.substr(colon + 1), e.port)) {
      return Status::InvalidArgument("the Redis port must be a number from 1 to 65535");
    }
    hostport = hostport.substr(0, colon);
  }
  if (!hostport.empty()) e.host = hostport;
  return e;
}

Result<std::unique_ptr<RedisClient>> RedisClient::Connect(const RedisEndpoint& endpoint,
                                                          std::chrono::milliseconds timeout) {
  std::unique_ptr<RedisClient> client(new RedisClient(endpoint, timeout));
  if (Status s = client->Reconnect(); !s.ok()) return s;
  return client;
}

RedisClient::~RedisClient() {
  if (context_ != nullptr) redisFree(context_);
}

void RedisClient::Drop() {
  if (context_ != nullptr) {
    redisFree(context_);
    context_ = nullptr;
  }
}

Status RedisClient::Reconnect() {
  Drop();
  const timeval tv{static_cast<time_t>(timeout_.count() / 1000),
                   static_cast<suseconds_t>((timeout_.count() % 1000) * 1000)};
  context_ = redisConnectWithTimeout(endpoint_.host.c_str(), endpoint_.port, tv);
  if (context_ == nullptr || context_->err != 0) {
    std::string why = context_ != nullptr ? context_->errstr : "out of memory";
    if (context_ != nullptr) redisFree(context_);
    context_ = nullptr;
    return Status::Unavailable(
        fmt::format("cannot reach Redis at {}: {}", endpoint_.Redacted(), why));
  }
  redisSetTimeout(context_, tv);
  if (!endpoint_.password.empty()) {
    std::vector<std::string> auth = {"AUTH"};
    if (!endpoint_.username.empty()) auth.push_back(endpoint_.username);
    auth.push_back(endpoint_.password);
    if (auto r = Send(auth); !r.ok()) {
      // Not kept: the next command would reconnect-free run on a connection
      // that is not logged in as the configured user (as `default`, where
      // that user is enabled).
      Drop();
      // Never echo the AUTH arguments: the error says only that it failed.
      return Status::PermissionDenied(
          fmt::format("Redis at {} refused the credentials", endpoint_.Redacted()));
    }
  }
  if (endpoint_.db != 0) {
    if (auto r = Send({"SELECT", std::to_string(endpoint_.db)}); !r.ok()) {
      Drop();  // not kept: it would serve commands on db 0
      return r.status();
    }
  }
  return Status::OK();
}

Result<RedisReply> RedisClient::Send(const std::vector<std::string>& argv) {
  std::vector<const char*> args;
  std::vector<size_t> lens;
  args.reserve(argv.size());
  lens.reserve(argv.size());
  for (const std::string& a : argv) {
    args.push_back(a.data());
    lens.push_back(a.size());
  }
  auto* reply = static_cast<redisReply*>(
      redisCommandArgv(context_, static_cast<int>(args.size()), args.data(), lens.data()));
  if (reply == nullptr) {
    std::string why = context_->errstr;
    redisFree(context_);
    context_ = nullptr;
    return Status::Unavailable(
        fmt::format("lost the connection to Redis at {}: {}", endpoint_.Redacted(), why));
  }
  std::unique_ptr<redisReply, decltype(&freeReplyObject)> owned(reply, freeReplyObject);
  if (reply->type == REDIS_REPLY_ERROR) {
    return Status::InvalidArgument(
        fmt::format("redis: {}", std::string_view(reply->str, reply->len)));
  }
  return Convert(reply);
}

Result<RedisReply> RedisClient::Command(const std::vector<std::string>& argv) {
  if (context_ == nullptr) {
    if (Status s = Reconnect(); !s.ok()) return s;
  }
  return Send(argv);
}

Result<RedisReply> RedisClient::Eval(const RedisScript& script,
                                     const std::vector<std::string>& keys,
                                     const std::vector<std::string>& args) {
  auto with = [&](std::string verb, const std::string& body) {
    std::vector<std::string> argv = {std::move(verb), body, std::to_string(keys.size())};
    argv.insert(argv.end(), keys.begin(), keys.end());
    argv.insert(argv.end(), args.begin(), args.end());
    return argv;
  };
  if (script.sha.empty()) {
    auto loaded = Command({"SCRIPT", "LOAD", script.source});
    if (!loaded.ok()) return loaded.status();
    script.sha = loaded->str;
  }
  auto r = Command(with("EVALSHA", script.sha));
  if (!r.ok() && r.status().message().find("NOSCRIPT") != std::string::npos) {
    return Command(with("EVAL", script.source));  // Redis restarted: its script cache is empty
  }
  return r;
}

}  // namespace sluice
