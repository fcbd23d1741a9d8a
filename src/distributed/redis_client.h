// A small synchronous Redis client over hiredis: one connection, commands as
// argument vectors (binary-safe, never formatted into a string), Lua scripts
// by SHA with a fallback to EVAL, and one reconnect after a lost connection.
// The distributed workers (docs/DISTRIBUTED.md) build their task streams and
// the shared rate budget on it.
//
// Thread safety: none; one client per thread.
#pragma once

#include <chrono>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "sluice/status.h"

struct redisContext;

namespace sluice {

// redis://[[user]:password@]host[:port][/db]. The password is a secret: it is
// never logged; Redacted() gives the URL with it replaced by ***.
struct RedisEndpoint {
  std::string host = "127.0.0.1";
  int port = 6379;
  int db = 0;
  std::string username;
  std::string password;
  std::string Redacted() const;
};
Result<RedisEndpoint> ParseRedisUrl(std::string_view url);

struct RedisReply {
  enum class Type { kNil, kInteger, kString, kStatus, kArray };
  Type type = Type::kNil;
  long long integer = 0;
  std::string str;  // kString and kStatus
  std::vector<RedisReply> elements;

  bool IsNil() const { return type == Type::kNil; }
  // The integer of kInteger, or a kString holding a number; `fallback` otherwise.
  long long AsInteger(long long fallback = 0) const;
};

// A Lua script and its SHA1 (computed once by Redis on first use).
struct RedisScript {
  std::string source;
  mutable std::string sha;  // filled by the first SCRIPT LOAD
};

class RedisClient {
 public:
  static Result<std::unique_ptr<RedisClient>> Connect(
      const RedisEndpoint& endpoint,
      std::chrono::milliseconds timeout = std::chrono::milliseconds(5000));
  ~RedisClient();
  RedisClient(const RedisClient&) = delete;
  RedisClient& operator=(const RedisClient&) = delete;

  // One command. A reply that is a Redis error becomes a Status (kInvalidArgument,
  // message "redis: <error>"); a lost or refused connection is kUnavailable
  // after one reconnect attempt (the command is not re-sent: it may have run).
  Result<RedisReply> Command(const std::vector<std::string>& argv);
  // EVALSHA, loading the script on NOSCRIPT (after a Redis restart, say).
  Result<RedisReply> Eval(const RedisScript& script, const std::vector<std::string>& keys,
                          const std::vector<std::string>& args);

  const RedisEndpoint& endpoint() const { return endpoint_; }

 private:
  RedisClient(RedisEndpoint endpoint, std::chrono::milliseconds timeout)
      : endpoint_(std::move(endpoint)), timeout_(timeout) {}
  Status Reconnect();
  // Closes the connection; the next command connects again.
  void Drop();
  Result<RedisReply> Send(const std::vector<std::string>& argv);

  RedisEndpoint endpoint_;
  std::chrono::milliseconds timeout_;
  redisContext* context_ = nullptr;
};

}  // namespace sluice
