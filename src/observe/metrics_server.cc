// MetricsServer: libmicrohttpd on a socket sluice binds itself, so a bind
// failure reports its errno (in use, not an address of this machine) and
// port 0 reads back the port the kernel picked.
#include "sluice/metrics_server.h"

#include <arpa/inet.h>
#include <fmt/format.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <charconv>
#include <cstring>

namespace sluice {
namespace {

constexpr const char* kContentType = "text/plain; version=0.0.4; charset=utf-8";

class MetricsServerImpl final : public MetricsServer {
 public:
  MetricsServerImpl(const Metrics& metrics, ListenAddress address)
      : metrics_(metrics), address_(std::move(address)) {}
  ~MetricsServerImpl() override { Stop(); }

  Status Listen();
  uint16_t Port() const override { return address_.port; }
  std::string Url() const override {
    const std::string host = address_.ipv6 ? "[" + address_.host + "]" : address_.host;
    return fmt::format("http://{}:{}/metrics", host, address_.port);
  }
  void Stop() override {
    if (daemon_ != nullptr) MHD_stop_daemon(daemon_);  // also closes the listening socket
    daemon_ = nullptr;
  }

 private:
  static MHD_Result Handle(void* cls, MHD_Connection* connection, const char* url,
                           const char* method, const char* version, const char* upload_data,
                           size_t* upload_data_size, void** con_cls);
  MHD_Result Reply(MHD_Connection* connection, unsigned status, const std::string& body,
                   const char* content_type, bool allow_header);

  const Metrics& metrics_;
  ListenAddress address_;
  MHD_Daemon* daemon_ = nullptr;
};

Status MetricsServerImpl::Listen() {
  const std::string where = address_.ipv6 ? fmt::format("[{}]:{}", address_.host, address_.port)
                                          : fmt::format("{}:{}", address_.host, address_.port);
  sockaddr_storage storage{};
  socklen_t length = 0;
  if (address_.ipv6) {
    auto* a = reinterpret_cast<sockaddr_in6*>(&storage);
    a->sin6_family = AF_INET6;
    a->sin6_port = htons(address_.port);
    inet_pton(AF_INET6, address_.host.c_str(), &a->sin6_addr);  // validated by the parser
    length = sizeof(sockaddr_in6);
  } else {
    auto* a = reinterpret_cast<sockaddr_in*>(&storage);
    a->sin_family = AF_INET;
    a->sin_port = htons(address_.port);
    inet_pton(AF_INET, address_.host.c_str(), &a->sin_addr);
    length = sizeof(sockaddr_in);
  }
  const int fd = socket(storage.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) {
    return Status::Unavailable(
        fmt::format("metrics: cannot listen on {}: socket: {}", where, std::strerror(errno)));
  }
  const int one = 1;
  setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));  // restart after TIME_WAIT
  if (address_.ipv6) setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one));
  if (bind(fd, reinterpret_cast<sockaddr*>(&storage), length) != 0 || listen(fd, 64) != 0) {
    const int error = errno;
    close(fd);
    return Status::Unavailable(
        fmt::format("metrics: cannot listen on {}: {}", where, std::strerror(error)));
  }
  if (getsockname(fd, reinterpret_cast<sockaddr*>(&storage), &length) == 0) {
    address_.port = ntohs(address_.ipv6 ? reinterpret_cast<sockaddr_in6*>(&storage)->sin6_port
                                        : reinterpret_cast<sockaddr_in*>(&storage)->sin_port);
  }
  unsigned flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_AUTO;
  if (address_.ipv6) flags |= MHD_USE_IPv6;
  // A scraper that stalls is dropped after 10 s; a few scrapers at once
  // are plenty (one Prometheus per environment, a person with curl).
  daemon_ = MHD_start_daemon(flags, 0, nullptr, nullptr, &MetricsServerImpl::Handle, this,
                             MHD_OPTION_LISTEN_SOCKET, fd, MHD_OPTION_CONNECTION_TIMEOUT,
                             static_cast<unsigned>(10), MHD_OPTION_CONNECTION_LIMIT,
                             static_cast<unsigned>(32), MHD_OPTION_END);
  if (daemon_ == nullptr) {
    close(fd);
    return Status::Unavailable(
        fmt::format("metrics: cannot serve on {}: the HTTP server did not start", where));
  }
  return Status::OK();
}

MHD_Result MetricsServerImpl::Reply(MHD_Connection* connection, unsigned status,
                                    const std::string& body, const char* content_type,
                                    bool allow_header) {
  MHD_Response* response = MHD_create_response_from_buffer(
      body.size(), const_cast<char*>(body.data()), MHD_RESPMEM_MUST_COPY);
  if (response == nullptr) return MHD_NO;
  MHD_add_response_header(response, MHD_HTTP_HEADER_CONTENT_TYPE, content_type);
  if (allow_header) MHD_add_response_header(response, MHD_HTTP_HEADER_ALLOW, "GET, HEAD");
  const MHD_Result result = MHD_queue_response(connection, status, response);
  MHD_destroy_response(response);
  return result;
}

MHD_Result MetricsServerImpl::Handle(void* cls, MHD_Connection* connection, const char* url,
                                     const char* method, const char* /*version*/,
                                     const char* /*upload_data*/, size_t* upload_data_size,
                                     void** con_cls) {
  auto* self = static_cast<MetricsServerImpl*>(cls);
  // First call per request: headers only. Answer on the second, after any
  // body has been discarded (a GET has none).
  static int seen_marker;
  if (*con_cls == nullptr) {
    *con_cls = &seen_marker;
    return MHD_YES;
  }
  if (*upload_data_size != 0) {
    *upload_data_size = 0;
    return MHD_YES;
  }
  const std::string_view m(method);
  if (m != MHD_HTTP_METHOD_GET && m != MHD_HTTP_METHOD_HEAD) {
    return self->Reply(connection, MHD_HTTP_METHOD_NOT_ALLOWED, "method not allowed\n",
                       "text/plain; charset=utf-8", true);
  }
  if (std::string_view(url) != "/metrics") {
    return self->Reply(connection, MHD_HTTP_NOT_FOUND, "not found: the metrics are at /metrics\n",
                       "text/plain; charset=utf-8", false);
  }
  return self->Reply(connection, MHD_HTTP_OK, PrometheusText(self->metrics_), kContentType, false);
}

bool IsLoopback(const std::string& host, bool ipv6) {
  if (!ipv6) {
    in_addr a{};
    inet_pton(AF_INET, host.c_str(), &a);
    return (ntohl(a.s_addr) >> 24) == 127;
  }
  in6_addr a{};
  inet_pton(AF_INET6, host.c_str(), &a);
  if (IN6_IS_ADDR_LOOPBACK(&a)) return true;
  // ::ffff:127.x.y.z
  return IN6_IS_ADDR_V4MAPPED(&a) && a.s6_addr[12] == 127;
}

}  // namespace

Result<ListenAddress> ParseListenAddress(std::string_view text) {
  const auto bad = [&](std::string_view why) {
    return Status::InvalidArgument(
        fmt::format("--metrics-listen '{}': {} (expected HOST:PORT, e.g. 127.0.0.1:9464 or "
                    "[::1]:9464)",
                    text, why));
  };
  ListenAddress address;
  std::string_view host;
  std::string_view port;
  if (!text.empty() && text.front() == '[') {
    const size_t close = text.find(']');
    if (close == std::string_view::npos || close + 1 >= text.size() || text[close + 1] != ':') {
      return bad("an IPv6 address goes in brackets, then ':PORT'");
    }
    host = text.substr(1, close - 1);
    port = text.substr(close + 2);
    address.ipv6 = true;
  } else {
    const size_t colon = text.rfind(':');
    if (colon == std::string_view::npos) return bad("no port");
    host = text.substr(0, colon);
    port = text.substr(colon + 1);
    if (host.find(':') != std::string_view::npos) return bad("put an IPv6 address in brackets");
  }
  unsigned value = 0;
  const auto [end, error] = std::from_chars(port.data(), port.data() + port.size(), value);
  if (port.empty() || error != std::errc() || end != port.data() + port.size() || value > 65535) {
    return bad("the port must be a number from 0 to 65535");
  }
  address.port = static_cast<uint16_t>(value);
  address.host = host == "localhost" ? "127.0.0.1" : std::string(host);
  unsigned char buffer[sizeof(in6_addr)];
  if (inet_pton(address.ipv6 ? AF_INET6 : AF_INET, address.host.c_str(), buffer) != 1) {
    return bad("the host must be an IP address or 'localhost'");
  }
  address.loopback = IsLoopback(address.host, address.ipv6);
  return address;
}

Result<std::unique_ptr<MetricsServer>> MetricsServer::Start(const MetricsServerOptions& options,
                                                            const Metrics& metrics) {
  Result<ListenAddress> address = ParseListenAddress(options.listen);
  if (!address.ok()) return address.status();
  if (!address->loopback && !options.allow_remote) {
    return Status::InvalidArgument(fmt::format(
        "--metrics-listen {}: not a loopback address; the metrics would be readable from other "
        "machines. Add --metrics-allow-remote to serve them there",
        options.listen));
  }
  auto server = std::make_unique<MetricsServerImpl>(metrics, std::move(*address));
  if (Status s = server->Listen(); !s.ok()) return s;
  return std::unique_ptr<MetricsServer>(std::move(server));
}

}  // namespace sluice
