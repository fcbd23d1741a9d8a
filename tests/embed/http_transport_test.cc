// The libcurl multi transport over real loopback HTTP: against the mock API
// (sluice_mockapi) for the OpenAI behaviours, and against a tiny canned
// responder (raw sockets, below) for what the mock does not do: rejecting
// base64, never answering, closing without a reply.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <atomic>
#include <functional>
#include <map>
#include <string>
#include <thread>

#include "sluice/embed.h"
#include "sluice/mock_api.h"

namespace sluice {
namespace {

using std::chrono::milliseconds;

// Submits one request and polls until its response arrives (or 10 s pass).
EmbedResponse RoundTrip(EmbeddingTransport& transport, std::vector<std::string> inputs,
                        uint64_t id = 1) {
  EmbedRequest request;
  request.request_id = id;
  request.inputs = std::move(inputs);
  transport.Submit(std::move(request));
  std::vector<EmbedResponse> out;
  const auto deadline = SteadyClock::now() + std::chrono::seconds(10);
  while (out.empty() && SteadyClock::now() < deadline) transport.Poll(milliseconds(100), out);
  EXPECT_EQ(out.size(), 1u);
  if (out.empty()) return EmbedResponse{};
  EXPECT_EQ(out[0].request_id, id);
  return std::move(out[0]);
}

std::unique_ptr<MockApiServer> StartMock(MockApiOptions options) {
  auto server = MockApiServer::Start(options);
  EXPECT_TRUE(server.ok()) << server.status().ToString();
  return server.ok() ? std::move(server).value() : nullptr;
}

HttpEmbedderOptions Opts(std::string endpoint) {
  HttpEmbedderOptions o;
  o.endpoint = std::move(endpoint);
  return o;
}

std::unique_ptr<EmbeddingTransport> Transport(HttpEmbedderOptions options) {
  auto transport = MakeHttpTransport(options);
  EXPECT_TRUE(transport.ok()) << transport.status().ToString();
  return transport.ok() ? std::move(transport).value() : nullptr;
}

TEST(HttpTransportTest, EmbedsAgainstMockWithBase64AndFloat) {
  MockApiOptions mock;
  mock.dimensions = 16;
  auto server = StartMock(mock);
  ASSERT_NE(server, nullptr);
  for (bool base64 : {true, false}) {
    HttpEmbedderOptions o;
    o.endpoint = server->BaseUrl();
    o.model = "text-embedding-3-small";
    o.request_base64 = base64;
    auto transport = Transport(o);
    ASSERT_NE(transport, nullptr);
    EXPECT_EQ(transport->Dimensions(), 0);
    const std::vector<std::string> inputs = {"alpha", "béta \"quoted\"", "gamma\nnewline"};
    EmbedResponse r = RoundTrip(*transport, inputs);
    ASSERT_TRUE(r.status.ok()) << r.status.ToString();
    EXPECT_EQ(r.http_status, 200);
    ASSERT_EQ(r.vectors.size(), 3u);
    int64_t tokens = 0;
    for (size_t i = 0; i < inputs.size(); ++i) {
      const std::vector<float> expected = MockEmbedding(inputs[i], 16);
      if (base64) {
        EXPECT_EQ(r.vectors[i], expected);  // bit-exact
      } else {
        ASSERT_EQ(r.vectors[i].size(), expected.size());
        for (size_t k = 0; k < expected.size(); ++k)
          EXPECT_NEAR(r.vectors[i][k], expected[k], 1e-6);
      }
      tokens += MockTokenCount(inputs[i]);
    }
    EXPECT_EQ(r.prompt_tokens, tokens);
    EXPECT_EQ(transport->Dimensions(), 16);  // learned from the first response
    EXPECT_GT(r.latency, Duration(0));
    EXPECT_EQ(transport->InFlight(), 0u);
  }
}

TEST(HttpTransportTest, ManyRequestsInFlightAtOnce) {
  MockApiOptions mock;
  mock.dimensions = 8;
  // Long enough that starting 16 requests on a loaded machine is quick
  // beside it: served one after another they would take 8 s.
  mock.base_latency = milliseconds(500);
  mock.threads = 2;
  auto server = StartMock(mock);
  ASSERT_NE(server, nullptr);
  HttpEmbedderOptions o;
  o.endpoint = server->BaseUrl();
  o.dimensions = 8;
  auto transport = Transport(o);
  constexpr int kRequests = 16;
  for (int i = 0; i < kRequests; ++i) {
    EmbedRequest request;
    request.request_id = 100 + i;
    request.inputs = {"text " + std::to_string(i)};
    transport->Submit(std::move(request));
  }
  EXPECT_EQ(transport->InFlight(), size_t{kRequests});
  const auto start = SteadyClock::now();
  std::vector<EmbedResponse> out;
  while (out.size() < kRequests && SteadyClock::now() - start < std::chrono::seconds(60)) {
    transport->Poll(milliseconds(50), out);
  }
  const Duration elapsed = SteadyClock::now() - start;
  ASSERT_EQ(out.size(), size_t{kRequests});
  std::map<uint64_t, std::string> ids;
  for (const EmbedResponse& r : out) {
    ASSERT_TRUE(r.status.ok()) << r.status.ToString();
    EXPECT_EQ(r.vectors[0], MockEmbedding("text " + std::to_string(r.request_id - 100), 8));
    ids[r.request_id] = "";
  }
  EXPECT_EQ(ids.size(), size_t{kRequests});
  // 16 x 500 ms served concurrently, not one after another (8 s).
  EXPECT_LT(elapsed, milliseconds(4000));
  EXPECT_EQ(server->Stats().requests, uint64_t{kRequests});
}

TEST(HttpTransportTest, RateLimitedWithHeadersParsed) {
  MockApiOptions mock;
  mock.dimensions = 8;
  mock.rpm = 1;
  auto server = StartMock(mock);
  ASSERT_NE(server, nullptr);
  HttpEmbedderOptions o;
  o.endpoint = server->BaseUrl();
  auto transport = Transport(o);
  EmbedResponse first = RoundTrip(*transport, {"one"}, 1);
  ASSERT_TRUE(first.status.ok()) << first.status.ToString();
  EXPECT_EQ(first.rate.limit_requests, 1);
  EXPECT_EQ(first.rate.remaining_requests, 0);
  EmbedResponse second = RoundTrip(*transport, {"two"}, 2);
  EXPECT_EQ(second.status.code(), StatusCode::kRateLimited) << second.status.ToString();
  EXPECT_EQ(second.http_status, 429);
  EXPECT_NE(second.status.message().find("Rate limit reached"), std::string::npos);
  ASSERT_TRUE(second.rate.retry_after.has_value());
  EXPECT_GT(*second.rate.retry_after, Duration(0));
  EXPECT_LE(*second.rate.retry_after, std::chrono::seconds(60));
  EXPECT_EQ(second.rate.limit_requests, 1);
  EXPECT_EQ(second.rate.remaining_requests, 0);
  ASSERT_TRUE(second.rate.reset_requests.has_value());
  EXPECT_GT(*second.rate.reset_requests, Duration(0));
  EXPECT_TRUE(second.vectors.empty());
}

TEST(HttpTransportTest, RequestLargerThanTheTokenBudgetIsRejectedNotRetried) {
  MockApiOptions mock;
  mock.dimensions = 8;
  mock.tpm = 100;
  auto server = StartMock(mock);
  ASSERT_NE(server, nullptr);
  auto transport = Transport(Opts(server->BaseUrl()));
  // 2 x 60 tokens > 100 TPM: no wait makes this request fit; halves would.
  EmbedResponse r = RoundTrip(*transport, {std::string(240, 'a'), std::string(240, 'b')});
  EXPECT_EQ(r.http_status, 429);
  EXPECT_EQ(r.status.code(), StatusCode::kRejected) << r.status.ToString();
  EXPECT_NE(r.status.message().find("Request too large"), std::string::npos);
}

TEST(HttpTransportTest, ServerErrorIsUnavailable) {
  MockApiOptions mock;
  mock.fault_500_rate = 1.0;
  auto server = StartMock(mock);
  ASSERT_NE(server, nullptr);
  auto transport = Transport(Opts(server->BaseUrl()));
  EmbedResponse r = RoundTrip(*transport, {"x"});
  EXPECT_EQ(r.status.code(), StatusCode::kUnavailable);
  EXPECT_EQ(r.http_status, 500);
  EXPECT_NE(r.status.message().find("The server had an error"), std::string::npos)
      << r.status.message();
}

TEST(HttpTransportTest, ResetConnectionIsUnavailable) {
  MockApiOptions mock;
  mock.fault_reset_rate = 1.0;
  auto server = StartMock(mock);
  ASSERT_NE(server, nullptr);
  auto transport = Transport(Opts(server->BaseUrl()));
  EmbedResponse r = RoundTrip(*transport, {"x"});
  EXPECT_EQ(r.status.code(), StatusCode::kUnavailable) << r.status.ToString();
  EXPECT_EQ(r.http_status, 0);
}

TEST(HttpTransportTest, MalformedAndWrongDimensionBodiesAreCorrupt) {
  for (bool wrong_dims : {false, true}) {
    MockApiOptions mock;
    mock.dimensions = 8;
    (wrong_dims ? mock.fault_wrong_dims_rate : mock.fault_malformed_rate) = 1.0;
    auto server = StartMock(mock);
    ASSERT_NE(server, nullptr);
    auto transport = Transport([&] {
      auto o = Opts(server->BaseUrl());
      o.dimensions = 8;
      return o;
    }());
    EmbedResponse r = RoundTrip(*transport, {"x", "y"});
    EXPECT_EQ(r.status.code(), StatusCode::kCorrupt) << r.status.ToString();
    EXPECT_EQ(r.http_status, 200);
    EXPECT_TRUE(r.vectors.empty());
  }
}

// Without --dimensions, one corrupt first response must not decide the
// length for the run: with other requests in flight, a response is held until
// a second agrees, and the odd one out fails as Corrupt (the stage retries it).
TEST(HttpTransportTest, CorruptFirstResponseDoesNotDecideTheLearnedDimension) {
  MockApiOptions mock;
  mock.dimensions = 8;
  mock.fault_wrong_dims_first = 1;
  mock.base_latency = milliseconds(20);
  auto server = StartMock(mock);
  ASSERT_NE(server, nullptr);
  auto transport = Transport(Opts(server->BaseUrl()));
  constexpr int kRequests = 4;
  for (int i = 0; i < kRequests; ++i) {
    EmbedRequest request;
    request.request_id = 1 + i;
    request.inputs = {"text " + std::to_string(i)};
    transport->Submit(std::move(request));
  }
  std::vector<EmbedResponse> out;
  const auto deadline = SteadyClock::now() + std::chrono::seconds(10);
  while (out.size() < kRequests && SteadyClock::now() < deadline) {
    transport->Poll(milliseconds(50), out);
  }
  ASSERT_EQ(out.size(), size_t{kRequests});
  EXPECT_EQ(transport->InFlight(), 0u);
  EXPECT_EQ(transport->Dimensions(), 8);
  EXPECT_EQ(server->Stats().faults_wrong_dims, 1u);
  int ok = 0;
  for (const EmbedResponse& r : out) {
    if (!r.status.ok()) {
      EXPECT_EQ(r.status.code(), StatusCode::kCorrupt) << r.status.ToString();
      EXPECT_TRUE(r.vectors.empty());
      continue;
    }
    ++ok;
    ASSERT_EQ(r.vectors.size(), 1u);
    EXPECT_EQ(r.vectors[0].size(), 8u);
  }
  // The wrong one always fails; a correct one fails too when it was held
  // before the wrong one arrived. At least the last two agree.
  EXPECT_GE(ok, kRequests - 2);
  EXPECT_LE(ok, kRequests - 1);
}

// The store's recorded length (expected_dimensions) is checked without
// being sent, so even a lone first response cannot change it.
TEST(HttpTransportTest, ExpectedDimensionsAreCheckedNotLearned) {
  MockApiOptions mock;
  mock.dimensions = 8;
  mock.fault_wrong_dims_first = 1;
  auto server = StartMock(mock);
  ASSERT_NE(server, nullptr);
  auto o = Opts(server->BaseUrl());
  o.expected_dimensions = 8;
  auto transport = Transport(o);
  EXPECT_EQ(transport->Dimensions(), 8);
  EmbedResponse r = RoundTrip(*transport, {"x"}, 1);
  EXPECT_EQ(r.status.code(), StatusCode::kCorrupt) << r.status.ToString();
  r = RoundTrip(*transport, {"x"}, 2);
  ASSERT_TRUE(r.status.ok()) << r.status.ToString();
  EXPECT_EQ(r.vectors[0].size(), 8u);
}

TEST(HttpTransportTest, UnauthorizedNeverShowsTheKey) {
  MockApiOptions mock;
  mock.api_key = "sk-right-key";
  mock.dimensions = 8;
  auto server = StartMock(mock);
  ASSERT_NE(server, nullptr);
  const std::string secret = "sk-wrong-secret-1234567890";
  auto wrong = Transport([&] {
    auto o = Opts(server->BaseUrl());
    o.api_key = secret;
    return o;
  }());
  EmbedResponse r = RoundTrip(*wrong, {"x"});
  EXPECT_EQ(r.status.code(), StatusCode::kPermissionDenied);
  EXPECT_EQ(r.http_status, 401);
  EXPECT_EQ(r.status.ToString().find(secret), std::string::npos) << r.status.ToString();
  EXPECT_EQ(r.status.ToString().find("sk-"), std::string::npos) << r.status.ToString();
  EXPECT_NE(r.status.message().find("Incorrect API key"), std::string::npos);

  auto right = Transport([&] {
    auto o = Opts(server->BaseUrl());
    o.api_key = "sk-right-key";
    return o;
  }());
  EXPECT_TRUE(RoundTrip(*right, {"x"}).status.ok());
}

TEST(HttpTransportTest, ConnectionRefused) {
  // Take a free port, then close it so nothing listens there.
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ASSERT_EQ(bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0);
  socklen_t len = sizeof(addr);
  getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len);
  const int port = ntohs(addr.sin_port);
  close(fd);
  auto transport = Transport(Opts("http://127.0.0.1:" + std::to_string(port) + "/v1"));
  EmbedResponse r = RoundTrip(*transport, {"x"});
  EXPECT_EQ(r.status.code(), StatusCode::kUnavailable);
  EXPECT_EQ(r.http_status, 0);
  EXPECT_NE(r.status.message().find("connection refused"), std::string::npos) << r.status.message();
  EXPECT_TRUE(r.connect_failed);  // says nothing about the inputs (issue 14)
}

// Issue 14: a wrong endpoint path is a 404 for every request: kNotFound (fatal
// for the run), one line naming the URL without its credentials.
TEST(HttpTransportTest, WrongEndpointPathIsNotFoundNamingTheUrlWithoutCredentials) {
  MockApiOptions mock;
  mock.dimensions = 8;
  auto server = StartMock(mock);
  ASSERT_NE(server, nullptr);
  const std::string v2 =
      "http://user:hunter2@127.0.0.1:" + std::to_string(server->Port()) + "/v2?api-key=sk-q";
  auto transport = Transport(Opts(v2));
  EmbedResponse r = RoundTrip(*transport, {"x"});
  EXPECT_EQ(r.status.code(), StatusCode::kNotFound) << r.status.ToString();
  EXPECT_EQ(r.http_status, 404);
  EXPECT_FALSE(r.connect_failed);
  const std::string& message = r.status.message();
  EXPECT_NE(message.find("http://127.0.0.1:" + std::to_string(server->Port()) + "/v2"),
            std::string::npos)
      << message;
  EXPECT_NE(message.find("check --endpoint"), std::string::npos) << message;
  EXPECT_EQ(message.find("hunter2"), std::string::npos) << message;
  EXPECT_EQ(message.find("sk-q"), std::string::npos) << message;
  EXPECT_EQ(message.find('\n'), std::string::npos) << message;
}

TEST(HttpTransportTest, RejectsBadOptions) {
  EXPECT_EQ(MakeHttpTransport(Opts("ftp://x")).status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(MakeHttpTransport([&] {
              auto o = Opts("http://127.0.0.1:1/v1");
              o.model = "";
              return o;
            }())
                .status()
                .code(),
            StatusCode::kInvalidArgument);
  EXPECT_EQ(MakeHttpTransport([&] {
              auto o = Opts("http://127.0.0.1:1/v1");
              o.extra_headers = "nocolon";
              return o;
            }())
                .status()
                .code(),
            StatusCode::kInvalidArgument);
  auto ok = MakeHttpTransport(Opts("http://127.0.0.1:1/v1/"));
  ASSERT_TRUE(ok.ok());
  std::vector<EmbedResponse> out;
  const auto start = SteadyClock::now();
  (*ok)->Poll(std::chrono::seconds(5), out);  // nothing in flight: returns at once
  // Far under the 5 s asked for (a loaded machine may deschedule us a while).
  EXPECT_LT(SteadyClock::now() - start, milliseconds(2000));
  EXPECT_TRUE(out.empty());
}

// ---- A canned loopback responder for what the mock does not simulate. ----

struct SeenRequest {
  std::string head;
  std::string body;
};

// Serves one connection at a time on 127.0.0.1; `handler` returns the raw
// response bytes, "" to close without replying, or "HANG" to keep the
// connection open without answering until the server stops.
class CannedServer {
 public:
  using Handler = std::function<std::string(const SeenRequest&)>;
  explicit CannedServer(Handler handler) : handler_(std::move(handler)) {
    listen_fd_ = socket(AF_INET, SOCK_STREAM, 0);
    int one = 1;
    setsockopt(listen_fd_, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    bind(listen_fd_, reinterpret_cast<sockaddr*>(&addr), sizeof(addr));
    listen(listen_fd_, 16);
    socklen_t len = sizeof(addr);
    getsockname(listen_fd_, reinterpret_cast<sockaddr*>(&addr), &len);
    port_ = ntohs(addr.sin_port);
    thread_ = std::thread([this] { Serve(); });
  }
  ~CannedServer() {
    stop_ = true;
    shutdown(listen_fd_, SHUT_RDWR);
    close(listen_fd_);
    thread_.join();
  }
  std::string BaseUrl() const { return "http://127.0.0.1:" + std::to_string(port_) + "/v1"; }
  std::vector<SeenRequest> Seen() {
    std::lock_guard lock(mu_);
    return seen_;
  }

  static std::string Response(int status, const std::string& body,
                              const std::string& extra_headers = "") {
    return "HTTP/1.1 " + std::to_string(status) + " X\r\nContent-Type: application/json\r\n" +
           extra_headers + "Content-Length: " + std::to_string(body.size()) +
           "\r\nConnection: close\r\n\r\n" + body;
  }

 private:
  void Serve() {
    while (!stop_) {
      const int fd = accept(listen_fd_, nullptr, nullptr);
      if (fd < 0) return;
      SeenRequest request;
      std::string data;
      char buf[65536];
      size_t header_end = std::string::npos;
      size_t content_length = 0;
      while (true) {
        const ssize_t n = read(fd, buf, sizeof(buf));
        if (n <= 0) break;
        data.append(buf, static_cast<size_t>(n));
        if (header_end == std::string::npos) {
          header_end = data.find("\r\n\r\n");
          if (header_end == std::string::npos) continue;
          request.head = data.substr(0, header_end);
          std::string lower = request.head;
          for (char& c : lower) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
          const size_t cl = lower.find("content-length:");
          if (cl != std::string::npos) content_length = std::stoul(lower.substr(cl + 15));
        }
        if (data.size() >= header_end + 4 + content_length) break;
      }
      if (header_end != std::string::npos) request.body = data.substr(header_end + 4);
      {
        std::lock_guard lock(mu_);
        seen_.push_back(request);
      }
      const std::string reply = handler_(request);
      if (reply == "HANG") {
        while (!stop_) std::this_thread::sleep_for(milliseconds(5));
      } else if (!reply.empty()) {
        (void)!write(fd, reply.data(), reply.size());
      }
      close(fd);
    }
  }

  Handler handler_;
  int listen_fd_ = -1;
  int port_ = 0;
  std::atomic<bool> stop_{false};
  std::thread thread_;
  std::mutex mu_;
  std::vector<SeenRequest> seen_;
};

TEST(HttpTransportTest, FallsBackToFloatWhenBase64IsRejected) {
  CannedServer server([](const SeenRequest& r) {
    if (r.body.find("\"encoding_format\":\"base64\"") != std::string::npos) {
      return CannedServer::Response(
          400, R"({"error":{"message":"Invalid value for 'encoding_format': 'base64'."}})");
    }
    return CannedServer::Response(
        200, R"({"data":[{"index":0,"embedding":[0.5,0.25]}],"usage":{"prompt_tokens":3}})");
  });
  auto transport = Transport([&] {
    auto o = Opts(server.BaseUrl());
    o.api_key = "sk-test";
    return o;
  }());
  EmbedResponse first = RoundTrip(*transport, {"x"}, 1);
  EXPECT_EQ(first.status.code(), StatusCode::kUnavailable);  // retryable: the stage resends
  EXPECT_EQ(first.http_status, 400);
  EXPECT_NE(first.status.message().find("switched to float"), std::string::npos);
  EmbedResponse second = RoundTrip(*transport, {"x"}, 2);
  ASSERT_TRUE(second.status.ok()) << second.status.ToString();
  EXPECT_EQ(second.vectors[0], (std::vector<float>{0.5f, 0.25f}));
  EXPECT_EQ(second.prompt_tokens, 3);
  const auto seen = server.Seen();
  ASSERT_EQ(seen.size(), 2u);
  EXPECT_NE(seen[1].body.find("\"encoding_format\":\"float\""), std::string::npos);
  EXPECT_NE(seen[0].head.find("POST /v1/embeddings HTTP/1.1"), std::string::npos);
  EXPECT_NE(seen[0].head.find("Authorization: Bearer sk-test"), std::string::npos);
  EXPECT_NE(seen[0].head.find("Content-Type: application/json"), std::string::npos);
}

TEST(HttpTransportTest, OtherClientErrorsAreRejectedWithTheServiceMessage) {
  CannedServer server([](const SeenRequest&) {
    return CannedServer::Response(
        400, R"({"error":{"message":"This model's maximum context length is 8192 tokens"}})");
  });
  auto transport = Transport(Opts(server.BaseUrl()));
  EmbedResponse r = RoundTrip(*transport, {"x"});
  EXPECT_EQ(r.status.code(), StatusCode::kRejected);
  EXPECT_EQ(r.status.message(), "HTTP 400: This model's maximum context length is 8192 tokens");
}

// OpenAI's quota 429 is billing, not pace: waiting cannot help, so it is a
// fatal PermissionDenied (the run stops, nothing dead-lettered), unlike a
// pacing 429 (RateLimited, waited out).
TEST(HttpTransportTest, QuotaExhaustedIsFatalNotRateLimited) {
  CannedServer server([](const SeenRequest&) {
    return CannedServer::Response(
        429, R"({"error":{"message":"You exceeded your current quota, please check your plan and )"
             R"(billing details.","type":"insufficient_quota","code":"insufficient_quota"}})");
  });
  auto transport = Transport(Opts(server.BaseUrl()));
  EmbedResponse r = RoundTrip(*transport, {"x"});
  EXPECT_EQ(r.status.code(), StatusCode::kPermissionDenied) << r.status.ToString();
  EXPECT_NE(r.status.message().find("quota is exhausted"), std::string::npos);
}

TEST(HttpTransportTest, ServiceUnavailableWithRetryAfterAndExtraHeaders) {
  CannedServer server([](const SeenRequest&) {
    return CannedServer::Response(503, "<html>busy</html>", "Retry-After: 3\r\n");
  });
  auto transport = Transport([&] {
    auto o = Opts(server.BaseUrl());
    o.extra_headers = "api-key: azure-1\r\nX-Team: a\n";
    return o;
  }());
  EmbedResponse r = RoundTrip(*transport, {"x"});
  EXPECT_EQ(r.status.code(), StatusCode::kUnavailable);
  EXPECT_EQ(r.http_status, 503);
  EXPECT_NE(r.status.message().find("<html>busy</html>"), std::string::npos);
  EXPECT_EQ(r.rate.retry_after, std::chrono::seconds(3));
  const auto seen = server.Seen();
  ASSERT_EQ(seen.size(), 1u);
  EXPECT_NE(seen[0].head.find("api-key: azure-1"), std::string::npos);
  EXPECT_NE(seen[0].head.find("X-Team: a"), std::string::npos);
}

TEST(HttpTransportTest, EmptyReplyIsUnavailable) {
  CannedServer server([](const SeenRequest&) { return std::string(); });
  auto transport = Transport(Opts(server.BaseUrl()));
  EmbedResponse r = RoundTrip(*transport, {"x"});
  EXPECT_EQ(r.status.code(), StatusCode::kUnavailable) << r.status.ToString();
  EXPECT_EQ(r.http_status, 0);
}

TEST(HttpTransportTest, SlowServerTimesOut) {
  CannedServer server([](const SeenRequest&) { return std::string("HANG"); });
  auto transport = Transport([&] {
    auto o = Opts(server.BaseUrl());
    o.request_timeout = milliseconds(200);
    return o;
  }());
  const auto start = SteadyClock::now();
  EmbedResponse r = RoundTrip(*transport, {"x"});
  EXPECT_EQ(r.status.code(), StatusCode::kTimeout) << r.status.ToString();
  EXPECT_LT(SteadyClock::now() - start, std::chrono::seconds(3));
}

}  // namespace
}  // namespace sluice
