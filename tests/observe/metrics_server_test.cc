// MetricsServer over loopback: GET /metrics in the text format, 404/405
// elsewhere, port 0, loopback by default, bind failures naming the address.
#include <gtest/gtest.h>

#include "observe/exposition_parser.h"
#include "observe/http_get.h"
#include "sluice/metrics_server.h"

namespace sluice {
namespace {

using testing::HttpRequest;

std::unique_ptr<MetricsServer> MustStart(const Metrics& m, const std::string& listen) {
  MetricsServerOptions o;
  o.listen = listen;
  auto server = MetricsServer::Start(o, m);
  EXPECT_TRUE(server.ok()) << server.status().ToString();
  return server.ok() ? std::move(*server) : nullptr;
}

TEST(MetricsServerTest, ServesTheCurrentValuesAtGetMetrics) {
  Metrics m;
  Add(m.chunks_stored, 5);
  auto server = MustStart(m, "127.0.0.1:0");
  ASSERT_TRUE(server);
  ASSERT_NE(server->Port(), 0);  // port 0 picked a free one
  EXPECT_EQ(server->Url(), "http://127.0.0.1:" + std::to_string(server->Port()) + "/metrics");

  testing::HttpAnswer a = HttpRequest(server->Url());
  ASSERT_EQ(a.status, 200) << a.error;
  EXPECT_EQ(a.content_type.rfind("text/plain; version=0.0.4", 0), 0u) << a.content_type;
  testing::Exposition e = testing::ParseExposition(a.body);
  ASSERT_EQ(e.error, "");
  EXPECT_EQ(e.Value("sluice_chunks_stored_total"), 5);

  Add(m.chunks_stored, 10);  // read at scrape time, not at start
  a = HttpRequest(server->Url());
  ASSERT_EQ(a.status, 200) << a.error;
  EXPECT_EQ(testing::ParseExposition(a.body).Value("sluice_chunks_stored_total"), 15);
  EXPECT_EQ(HttpRequest(server->Url(), "HEAD").status, 200);
}

TEST(MetricsServerTest, OtherPathsAre404AndOtherMethods405) {
  Metrics m;
  auto server = MustStart(m, "localhost:0");
  ASSERT_TRUE(server);
  const std::string base = "http://127.0.0.1:" + std::to_string(server->Port());
  EXPECT_EQ(HttpRequest(base + "/").status, 404);
  EXPECT_EQ(HttpRequest(base + "/metrics/x").status, 404);
  EXPECT_EQ(HttpRequest(base + "/metrics", "POST").status, 405);
  EXPECT_EQ(HttpRequest(base + "/metrics", "DELETE").status, 405);
}

TEST(MetricsServerTest, StopReleasesThePortAndIsIdempotent) {
  Metrics m;
  auto server = MustStart(m, "127.0.0.1:0");
  ASSERT_TRUE(server);
  const std::string url = server->Url();
  ASSERT_EQ(HttpRequest(url).status, 200);
  server->Stop();
  server->Stop();
  EXPECT_EQ(HttpRequest(url).status, 0);  // refused: nothing listens any more
}

TEST(MetricsServerTest, NonLoopbackAddressNeedsAllowRemote) {
  Metrics m;
  MetricsServerOptions o;
  o.listen = "0.0.0.0:0";
  auto refused = MetricsServer::Start(o, m);
  ASSERT_FALSE(refused.ok());
  EXPECT_EQ(refused.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(refused.status().message().find("0.0.0.0:0"), std::string::npos);
  EXPECT_NE(refused.status().message().find("--metrics-allow-remote"), std::string::npos);

  o.allow_remote = true;
  auto allowed = MetricsServer::Start(o, m);
  ASSERT_TRUE(allowed.ok()) << allowed.status().ToString();
  // Every interface, loopback included.
  EXPECT_EQ(
      HttpRequest("http://127.0.0.1:" + std::to_string((*allowed)->Port()) + "/metrics").status,
      200);
}

TEST(MetricsServerTest, AddressInUseIsAClearErrorNamingIt) {
  Metrics m;
  auto first = MustStart(m, "127.0.0.1:0");
  ASSERT_TRUE(first);
  const std::string taken = "127.0.0.1:" + std::to_string(first->Port());
  MetricsServerOptions o;
  o.listen = taken;
  auto second = MetricsServer::Start(o, m);
  ASSERT_FALSE(second.ok());
  EXPECT_EQ(second.status().code(), StatusCode::kUnavailable);
  EXPECT_NE(second.status().message().find(taken), std::string::npos) << second.status().message();
  EXPECT_NE(second.status().message().find("in use"), std::string::npos)
      << second.status().message();
  EXPECT_EQ(HttpRequest(first->Url()).status, 200);  // the first one is untouched
}

TEST(MetricsServerTest, AnAddressNotOfThisMachineIsAClearError) {
  Metrics m;
  MetricsServerOptions o;
  o.listen = "192.0.2.1:9464";  // TEST-NET-1: never assigned to a host
  o.allow_remote = true;
  auto server = MetricsServer::Start(o, m);
  ASSERT_FALSE(server.ok());
  EXPECT_EQ(server.status().code(), StatusCode::kUnavailable);
  EXPECT_NE(server.status().message().find("192.0.2.1:9464"), std::string::npos);
}

TEST(ListenAddressTest, ParsesHostAndPort) {
  auto a = ParseListenAddress("127.0.0.1:9464");
  ASSERT_TRUE(a.ok());
  EXPECT_EQ(a->host, "127.0.0.1");
  EXPECT_EQ(a->port, 9464);
  EXPECT_TRUE(a->loopback);
  EXPECT_FALSE(a->ipv6);

  a = ParseListenAddress("[::1]:0");
  ASSERT_TRUE(a.ok());
  EXPECT_EQ(a->host, "::1");
  EXPECT_TRUE(a->ipv6);
  EXPECT_TRUE(a->loopback);

  a = ParseListenAddress("localhost:80");
  ASSERT_TRUE(a.ok());
  EXPECT_EQ(a->host, "127.0.0.1");
  EXPECT_TRUE(a->loopback);

  EXPECT_TRUE(ParseListenAddress("127.1.2.3:1")->loopback);
  EXPECT_FALSE(ParseListenAddress("0.0.0.0:1")->loopback);
  EXPECT_FALSE(ParseListenAddress("10.0.0.5:9464")->loopback);
  EXPECT_FALSE(ParseListenAddress("[::]:9464")->loopback);
  EXPECT_TRUE(ParseListenAddress("[::ffff:127.0.0.1]:9464")->loopback);
}

TEST(ListenAddressTest, RejectsWhatIsNotHostColonPort) {
  for (const char* bad :
       {"9464", "", ":9464", "127.0.0.1:", "127.0.0.1:70000", "127.0.0.1:x", "127.0.0.1:-1",
        "example.com:9464", "::1:9464", "[::1]9464", "[::1", "[nothost]:1"}) {
    SCOPED_TRACE(bad);
    auto a = ParseListenAddress(bad);
    ASSERT_FALSE(a.ok());
    EXPECT_EQ(a.status().code(), StatusCode::kInvalidArgument);
    EXPECT_NE(a.status().message().find("--metrics-listen"), std::string::npos);
  }
}

}  // namespace
}  // namespace sluice
