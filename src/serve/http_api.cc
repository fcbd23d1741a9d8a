#include "serve/http_api.h"

#include <httplib.h>
#include <spdlog/spdlog.h>
#include <sys/socket.h>

#include "common/json_writer.h"

namespace sluice::serve {

namespace {

// How often an event stream looks up from its wait (to notice Stop), and how
// many such turns pass between keep-alive comments.
constexpr auto kEventWait = std::chrono::milliseconds(250);
constexpr int kKeepAliveTurns = 60;  // 15 s

std::string ErrorJson(const std::string& message) {
  std::string out;
  JsonWriter w(out);
  w.BeginObject().Key("error").String(message).EndObject();
  return out;
}

int HttpStatusFor(const Status& status) {
  switch (status.code()) {
    case StatusCode::kInvalidArgument:
      return 400;
    case StatusCode::kPermissionDenied:
      return 403;
    case StatusCode::kNotFound:
      return 404;
    case StatusCode::kBusy:
      return 409;
    case StatusCode::kUnavailable:
      return 503;
    default:
      return 500;
  }
}

void Reply(httplib::Response& res, int status, const std::string& json) {
  res.status = status;
  res.set_content(json, "application/json");
}

void ReplyError(httplib::Response& res, const Status& status) {
  Reply(res, HttpStatusFor(status), ErrorJson(status.message()));
}

// Compares every byte whatever the first difference, so the time taken says
// nothing about how much of a guessed token was right.
bool ConstantTimeEquals(std::string_view a, std::string_view b) {
  unsigned char diff = a.size() == b.size() ? 0 : 1;
  const size_t n = std::max(a.size(), b.size());
  for (size_t i = 0; i < n; ++i) {
    const unsigned char x = i < a.size() ? static_cast<unsigned char>(a[i]) : 0;
    const unsigned char y = i < b.size() ? static_cast<unsigned char>(b[i]) : 0;
    diff |= static_cast<unsigned char>(x ^ y);
  }
  return diff == 0;
}

std::string SseEvent(const char* name, const std::string& data) {
  return std::string("event: ") + name + "\ndata: " + data + "\n\n";
}

}  // namespace

bool IsLoopbackHost(std::string_view host) {
  return host == "localhost" || host == "::1" || host.starts_with("127.");
}

Status SplitListenAddress(const std::string& listen, std::string& host, int& port) {
  const size_t colon = listen.rfind(':');
  if (colon == std::string::npos || colon == 0 || colon + 1 == listen.size()) {
    return Status::InvalidArgument("--listen " + listen + ": expected HOST:PORT");
  }
  host = listen.substr(0, colon);
  if (host.size() >= 2 && host.front() == '[' && host.back() == ']') {
    host = host.substr(1, host.size() - 2);
  }
  const std::string port_text = listen.substr(colon + 1);
  char* end = nullptr;
  const long value = std::strtol(port_text.c_str(), &end, 10);
  if (*end != '\0' || value < 0 || value > 65535) {
    return Status::InvalidArgument("--listen " + listen + ": the port must be 0-65535");
  }
  port = static_cast<int>(value);
  return Status::OK();
}

ApiServer::ApiServer(const ApiOptions& options, JobManager& jobs)
    : options_(options), jobs_(jobs), http_(std::make_unique<httplib::Server>()) {}

ApiServer::~ApiServer() { Stop(); }

Result<std::unique_ptr<ApiServer>> ApiServer::Start(const ApiOptions& options, JobManager& jobs) {
  std::string host;
  int port = 0;
  if (Status s = SplitListenAddress(options.listen, host, port); !s.ok()) return s;
  if (!IsLoopbackHost(host) && options.token.empty()) {
    return Status::InvalidArgument(
        "--listen " + options.listen +
        " is reachable from other machines: refusing to start without a bearer token (set "
        "--token-env VAR, the variable holding the token, or listen on 127.0.0.1)");
  }
  std::unique_ptr<ApiServer> server(new ApiServer(options, jobs));
  server->host_ = host;
  httplib::Server& http = *server->http_;
  const int threads = std::max(2, options.http_threads);
  http.new_task_queue = [threads] { return new httplib::ThreadPool(threads); };
  http.set_payload_max_length(options.max_body_bytes);
  // cpp-httplib's default sets SO_REUSEPORT, with which a second server on
  // the same port starts and the kernel shares the connections between two
  // state folders. SO_REUSEADDR only: a busy port is an error.
  http.set_socket_options([](socket_t sock) {
    int yes = 1;
    ::setsockopt(sock, SOL_SOCKET, SO_REUSEADDR, &yes, sizeof(yes));
  });
  // An idle keep-alive connection holds a worker until this passes, and Stop
  // waits for the workers.
  http.set_keep_alive_timeout(1);
  server->Route();
  if (port == 0) {
    port = http.bind_to_any_port(host);
    if (port < 0) port = 0;
  } else if (!http.bind_to_port(host, port)) {
    port = 0;
  }
  if (port == 0) return Status::Unavailable("cannot listen on " + options.listen);
  server->port_ = port;
  server->listener_ = std::thread([s = server.get()] { s->http_->listen_after_bind(); });
  return server;
}

std::string ApiServer::Url() const {
  const bool v6 = host_.find(':') != std::string::npos;
  return "http://" + (v6 ? "[" + host_ + "]" : host_) + ":" + std::to_string(port_);
}

void ApiServer::Stop() {
  if (stopping_.exchange(true)) return;
  http_->stop();  // the event streams notice `stopping_` within kEventWait
  if (listener_.joinable()) listener_.join();
}

void ApiServer::Route() {
  httplib::Server& http = *http_;
  // The token is checked before the body is read (pre-routing).
  http.set_pre_routing_handler([this](const httplib::Request& req, httplib::Response& res) {
    if (options_.token.empty() || req.path == "/healthz") {
      return httplib::Server::HandlerResponse::Unhandled;
    }
    const std::string header = req.get_header_value("Authorization");
    constexpr std::string_view kBearer = "Bearer ";
    if (header.starts_with(kBearer) &&
        ConstantTimeEquals(std::string_view(header).substr(kBearer.size()), options_.token)) {
      return httplib::Server::HandlerResponse::Unhandled;
    }
    res.set_header("WWW-Authenticate", "Bearer");
    Reply(res, 401, ErrorJson("missing or wrong bearer token (Authorization: Bearer <token>)"));
    return httplib::Server::HandlerResponse::Handled;
  });
  http.set_error_handler([](const httplib::Request&, httplib::Response& res) {
    if (!res.body.empty()) return;
    const char* what = res.status == 413   ? "the request body is larger than --max-body"
                       : res.status == 404 ? "no such route (see docs/openapi.yaml)"
                                           : "the request cannot be served";
    Reply(res, res.status, ErrorJson(what));
  });
  http.set_exception_handler(
      [](const httplib::Request&, httplib::Response& res, std::exception_ptr) {
        Reply(res, 500, ErrorJson("internal error"));
      });

  http.Get("/healthz", [](const httplib::Request&, httplib::Response& res) {
    Reply(res, 200, R"({"status":"ok"})");
  });

  // Behind the token like the jobs (unlike /healthz): the counts say what
  // the server is doing. A Prometheus scrape config passes the token with
  // `authorization: {credentials_file: ...}`.
  http.Get("/metrics", [this](const httplib::Request&, httplib::Response& res) {
    res.status = 200;
    res.set_content(jobs_.PrometheusText(), "text/plain; version=0.0.4; charset=utf-8");
  });

  http.Post("/v1/jobs", [this](const httplib::Request& req, httplib::Response& res) {
    // A browser page cannot send application/json to another origin without
    // a preflight this server never answers: no cross-site job submission.
    if (!req.get_header_value("Content-Type").starts_with("application/json")) {
      Reply(res, 415, ErrorJson("the body must be JSON (Content-Type: application/json)"));
      return;
    }
    auto body = ParseJobBody(req.body);
    if (!body.ok()) return ReplyError(res, body.status());
    auto view = jobs_.Submit(std::move(*body));
    if (!view.ok()) return ReplyError(res, view.status());
    res.set_header("Location", "/v1/jobs/" + view->id);
    Reply(res, 201, JobViewJson(*view));
  });

  http.Get("/v1/jobs", [this](const httplib::Request&, httplib::Response& res) {
    std::string out = R"({"jobs":[)";
    bool first = true;
    for (const JobView& v : jobs_.List()) {
      if (!first) out += ',';
      first = false;
      out += JobViewJson(v, /*with_report=*/false);
    }
    out += "]}";
    Reply(res, 200, out);
  });

  http.Get(R"(/v1/jobs/([A-Za-z0-9_-]+))",
           [this](const httplib::Request& req, httplib::Response& res) {
             auto view = jobs_.Get(req.matches[1]);
             if (!view.ok()) return ReplyError(res, view.status());
             Reply(res, 200, JobViewJson(*view));
           });

  http.Delete(R"(/v1/jobs/([A-Za-z0-9_-]+))",
              [this](const httplib::Request& req, httplib::Response& res) {
                auto view = jobs_.Cancel(req.matches[1]);
                if (!view.ok()) return ReplyError(res, view.status());
                // 202: a running job stops at its next safe point; GET or the
                // events say when it is cancelled.
                Reply(res, IsFinished(view->state) ? 200 : 202, JobViewJson(*view));
              });

  http.Get(R"(/v1/jobs/([A-Za-z0-9_-]+)/events)", [this](const httplib::Request& req,
                                                         httplib::Response& res) {
    const std::string id = req.matches[1];
    auto first = jobs_.Get(id);
    if (!first.ok()) return ReplyError(res, first.status());
    res.set_header("Cache-Control", "no-cache");
    auto seen = std::make_shared<uint64_t>(0);
    auto quiet_turns = std::make_shared<int>(0);
    res.set_chunked_content_provider(
        "text/event-stream", [this, id, seen, quiet_turns](size_t, httplib::DataSink& sink) {
          if (stopping_) {
            sink.done();
            return true;
          }
          auto view = jobs_.WaitForChange(id, *seen, kEventWait);
          if (!view.ok() || stopping_) {
            sink.done();
            return true;
          }
          std::string event;
          if (view->version > *seen) {
            *seen = view->version;
            *quiet_turns = 0;
            const bool finished = IsFinished(view->state);
            event = SseEvent(finished ? "final" : "progress",
                             JobViewJson(*view, /*with_report=*/finished));
          } else if (++*quiet_turns >= kKeepAliveTurns) {
            *quiet_turns = 0;
            event = ": keep-alive\n\n";
          }
          if (!event.empty() && !sink.write(event.data(), event.size())) return false;
          if (IsFinished(view->state) || jobs_.shutting_down()) sink.done();
          return true;
        });
  });
}

}  // namespace sluice::serve
