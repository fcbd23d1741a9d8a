// The HTTP/JSON face of `sluice serve` (docs/openapi.yaml): routes, the
// bearer token, the body limit, server-sent events. HTTP itself is
// cpp-httplib's (Debian's libcpp-httplib-dev): its listener thread accepts,
// a pool of `http_threads` workers serves the requests, one request (or one
// open event stream) per worker at a time.
//
// Thread safety: Start and Stop from one thread; the handlers run on the
// pool and only call the JobManager's thread-safe methods.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>
#include <thread>

#include "serve/job_manager.h"
#include "sluice/status.h"

namespace httplib {
class Server;
}

namespace sluice::serve {

struct ApiOptions {
  std::string listen = "127.0.0.1:8700";  // HOST:PORT; port 0: any free port
  // Bearer token every request but GET /healthz must send; empty: none, which
  // only a loopback address accepts.
  std::string token;
  size_t max_body_bytes = size_t{8} << 20;  // a larger request body is answered 413
  int http_threads = 16;                    // requests (and event streams) served at once
};

// True for addresses only this machine can reach.
bool IsLoopbackHost(std::string_view host);

// Splits "HOST:PORT" ("[::1]:8700" for IPv6). InvalidArgument when malformed.
Status SplitListenAddress(const std::string& listen, std::string& host, int& port);

class ApiServer {
 public:
  // Binds and starts serving `jobs` (which must outlive the server).
  // InvalidArgument for a bad address or a non-loopback one without a token;
  // Unavailable when the address cannot be bound.
  static Result<std::unique_ptr<ApiServer>> Start(const ApiOptions& options, JobManager& jobs);
  ~ApiServer();  // Stop()
  ApiServer(const ApiServer&) = delete;
  ApiServer& operator=(const ApiServer&) = delete;

  // "http://HOST:PORT"
  std::string Url() const;
  // Stops accepting, ends the event streams, waits for the workers. Idempotent.
  void Stop();

 private:
  ApiServer(const ApiOptions& options, JobManager& jobs);
  void Route();

  const ApiOptions options_;
  JobManager& jobs_;
  std::unique_ptr<httplib::Server> http_;
  std::string host_;
  int port_ = 0;
  std::atomic<bool> stopping_{false};
  std::thread listener_;
};

}  // namespace sluice::serve
