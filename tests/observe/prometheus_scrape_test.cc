// A real Prometheus (Debian's `prometheus` package) scrapes a real ingest's
// endpoint over loopback: the run embeds through the simulated API (with
// 429s), the endpoint stays up after the run (the test owns it), and the
// test polls Prometheus's HTTP API until a scrape with the final values has
// arrived, then checks the series' types, labels and values against the
// run's report and counters. Also: no secret (API key, store password)
// appears in what is served.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <signal.h>
#include <simdjson.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <filesystem>
#include <map>
#include <optional>
#include <set>
#include <thread>

#include "observe/exposition_parser.h"
#include "observe/grafana_queries.h"
#include "observe/http_get.h"
#include "sluice/metrics_server.h"
#include "sluice/mock_api.h"
#include "sluice/pipeline.h"
#include "store/postgres/pg_test_util.h"
#include "testing/test_util.h"

extern char** environ;

namespace sluice {
namespace {

using std::chrono::seconds;
using testing::HttpRequest;
using testing::TempDir;
using testing::WriteFile;

constexpr const char* kPrometheus = "/usr/bin/prometheus";
constexpr const char* kApiKey = "sk-prom-test-secret-7c1d";

void MakeCorpus(const TempDir& dir, int files) {
  for (int f = 0; f < files; ++f) {
    std::string text = "# Gate " + std::to_string(f) + "\n\n";
    for (int p = 0; p < 8; ++p) {
      text += "Paragraph " + std::to_string(p) + " on sluice gate " + std::to_string(f) +
              ": the operators grease hinge " + std::to_string(p * 3 + f) +
              " and log the water level before the tide turns.\n\n";
    }
    WriteFile(dir / ("corpus/d" + std::to_string(f % 2) + "/g" + std::to_string(f) + ".md"), text);
  }
}

IngestOptions Options(const TempDir& dir, const MockApiServer& api) {
  IngestOptions o;
  o.inputs = {dir / "corpus"};
  o.embedder = EmbedderKind::kHttp;
  o.http.endpoint = api.BaseUrl();
  o.http.model = "mock";
  o.http.api_key = kApiKey;
  o.http.dimensions = 32;
  o.http.request_timeout = seconds(10);
  o.store_uri = "sqlite:" + (dir / "store.db");
  o.aggregate.out_dir = dir / "out";
  o.progress = false;
  o.chunker.chunk_tokens = 40;
  o.chunker.overlap_tokens = 4;
  o.embed.batch_size = 8;
  o.embed.retry.initial_backoff = std::chrono::milliseconds(5);
  o.embed.retry.max_backoff = std::chrono::milliseconds(50);
  o.price_per_mtok = 0.02;
  return o;
}

MockApiOptions Mock() {
  MockApiOptions m;
  m.dimensions = 32;
  m.api_key = kApiKey;
  m.rpm = 60000;  // announced in x-ratelimit-* headers: the pacer learns it
  m.tpm = 50000000;
  m.fault_429_first = 3;  // some 429s to count
  return m;
}

// A port nothing listens on right now (the kernel's pick for port 0). Another
// process may take it before Prometheus binds it: the caller retries.
uint16_t FreePort() {
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof(a);
  uint16_t port = 0;
  if (bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a)) == 0 &&
      getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len) == 0) {
    port = ntohs(a.sin_port);
  }
  close(fd);
  return port;
}

std::string UrlEncode(const std::string& s) {
  std::string out;
  for (unsigned char c : s) {
    if (std::isalnum(c) || c == '-' || c == '_' || c == '.' || c == '~') {
      out += static_cast<char>(c);
    } else {
      char buf[4];
      std::snprintf(buf, sizeof(buf), "%%%02X", c);
      out += buf;
    }
  }
  return out;
}

// Prometheus as a child process; killed (SIGTERM, then SIGKILL) and reaped
// by the destructor whatever the test's outcome, so none is left behind.
class PrometheusProcess {
 public:
  ~PrometheusProcess() { Stop(); }

  // Starts Prometheus scraping `target` every second and waits until it is
  // ready. Empty on success, else why (with its log).
  std::string Start(const std::string& dir, const std::string& target) {
    WriteFile(dir + "/prometheus.yml",
              "global:\n"
              "  scrape_interval: 1s\n"
              "  scrape_timeout: 1s\n"
              "scrape_configs:\n"
              "  - job_name: sluice\n"
              "    static_configs:\n"
              "      - targets: ['" +
                  target + "']\n");
    log_ = dir + "/prometheus.log";
    std::string why;
    for (int attempt = 0; attempt < 5; ++attempt) {  // another process may take the port
      port_ = FreePort();
      const std::vector<std::string> args = {
          kPrometheus,
          "--config.file=" + dir + "/prometheus.yml",
          "--storage.tsdb.path=" + dir + "/tsdb",
          "--web.listen-address=127.0.0.1:" + std::to_string(port_),
          "--log.level=warn",
      };
      std::vector<char*> argv;
      for (const auto& a : args) argv.push_back(const_cast<char*>(a.c_str()));
      argv.push_back(nullptr);
      posix_spawn_file_actions_t actions;
      posix_spawn_file_actions_init(&actions);
      posix_spawn_file_actions_addopen(&actions, 1, log_.c_str(), O_WRONLY | O_CREAT | O_APPEND,
                                       0600);
      posix_spawn_file_actions_adddup2(&actions, 1, 2);
      posix_spawn_file_actions_addclose(&actions, 0);
      const int rc = posix_spawn(&pid_, kPrometheus, &actions, nullptr, argv.data(), environ);
      posix_spawn_file_actions_destroy(&actions);
      if (rc != 0) return std::string("posix_spawn prometheus: ") + std::strerror(rc);
      const auto deadline = std::chrono::steady_clock::now() + seconds(60);
      while (std::chrono::steady_clock::now() < deadline) {
        int status = 0;
        if (waitpid(pid_, &status, WNOHANG) == pid_) {  // exited: e.g. the port was taken
          pid_ = -1;
          why = "prometheus exited at start:\n" + testing::ReadFile(log_);
          break;
        }
        if (HttpRequest(Url("/-/ready")).status == 200) return "";
        std::this_thread::sleep_for(std::chrono::milliseconds(100));  // poll interval
      }
      if (pid_ > 0) return "prometheus not ready within 60 s:\n" + testing::ReadFile(log_);
    }
    return why;
  }

  std::string Url(const std::string& path) const {
    return "http://127.0.0.1:" + std::to_string(port_) + path;
  }
  std::string Log() const { return testing::ReadFile(log_); }

  void Stop() {
    if (pid_ <= 0) return;
    kill(pid_, SIGTERM);
    const auto deadline = std::chrono::steady_clock::now() + seconds(30);
    int status = 0;
    while (waitpid(pid_, &status, WNOHANG) == 0) {
      if (std::chrono::steady_clock::now() > deadline) {
        kill(pid_, SIGKILL);
        waitpid(pid_, &status, 0);
        break;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    pid_ = -1;
  }

 private:
  pid_t pid_ = -1;
  uint16_t port_ = 0;
  std::string log_;
};

struct Series {
  std::map<std::string, std::string> labels;
  double value = 0;
};

// Runs an instant query; nullopt when Prometheus did not answer "success".
std::optional<std::vector<Series>> Query(const PrometheusProcess& prom, const std::string& q) {
  const testing::HttpAnswer a = HttpRequest(prom.Url("/api/v1/query?query=" + UrlEncode(q)));
  if (a.status != 200) return std::nullopt;
  simdjson::dom::parser parser;
  simdjson::dom::element doc;
  if (parser.parse(a.body).get(doc) != simdjson::SUCCESS) return std::nullopt;
  std::string_view status;
  if (doc["status"].get(status) != simdjson::SUCCESS || status != "success") return std::nullopt;
  std::vector<Series> out;
  simdjson::dom::array result;
  if (doc["data"]["result"].get(result) != simdjson::SUCCESS) return std::nullopt;
  for (simdjson::dom::element item : result) {
    Series s;
    simdjson::dom::object metric;
    if (item["metric"].get(metric) != simdjson::SUCCESS) return std::nullopt;
    for (auto [key, value] : metric) {
      std::string_view label;
      if (value.get(label) != simdjson::SUCCESS) return std::nullopt;
      s.labels[std::string(key)] = std::string(label);
    }
    std::string_view text;
    if (item["value"].at(1).get(text) != simdjson::SUCCESS) return std::nullopt;
    s.value = std::stod(std::string(text));
    out.push_back(std::move(s));
  }
  return out;
}

std::optional<double> One(const PrometheusProcess& prom, const std::string& q) {
  auto r = Query(prom, q);
  if (!r || r->size() != 1) return std::nullopt;
  return r->front().value;
}

// The metric type Prometheus recorded from the scrape's # TYPE lines.
std::string MetadataType(const PrometheusProcess& prom, const std::string& metric) {
  const testing::HttpAnswer a = HttpRequest(prom.Url("/api/v1/metadata?metric=" + metric));
  simdjson::dom::parser parser;
  simdjson::dom::element doc;
  if (a.status != 200 || parser.parse(a.body).get(doc) != simdjson::SUCCESS) return "";
  std::string_view type;
  if (doc["data"][metric].at(0)["type"].get(type) != simdjson::SUCCESS) return "";
  return std::string(type);
}

TEST(PrometheusScrapeTest, RealPrometheusScrapesTheRunsFinalValues) {
  ASSERT_TRUE(std::filesystem::exists(kPrometheus))
      << kPrometheus << " not found: install Debian's prometheus package (listed in "
      << "scripts/install-deps.sh; `make test` installs it)";
  TempDir dir;
  MakeCorpus(dir, 12);
  auto api = MockApiServer::Start(Mock());
  ASSERT_TRUE(api.ok()) << api.status().ToString();

  const IngestOptions options = Options(dir, **api);
  Pipeline pipeline(options);
  MetricsServerOptions listen;
  listen.listen = "127.0.0.1:0";
  auto endpoint = MetricsServer::Start(listen, pipeline.metrics());
  ASSERT_TRUE(endpoint.ok()) << endpoint.status().ToString();
  const std::string target = "127.0.0.1:" + std::to_string((*endpoint)->Port());

  PrometheusProcess prom;
  const std::string started = prom.Start(dir.path(), target);
  ASSERT_EQ(started, "");

  const IngestReport report = pipeline.Run();
  ASSERT_TRUE(report.status.ok()) << report.status.ToString();
  ASSERT_TRUE(report.reconciled);
  const Metrics& m = pipeline.metrics();
  const double stored = static_cast<double>(Get(m.chunks_stored));
  ASSERT_GT(stored, 50);
  ASSERT_GE(Get(m.rate_limited), 3u);

  // The run is over and the endpoint still up: wait for a scrape of the
  // final count (scrapes are 1 s apart; 60 s allows for a loaded machine).
  const std::string selector = "{job=\"sluice\",instance=\"" + target + "\"}";
  const auto deadline = std::chrono::steady_clock::now() + seconds(60);
  std::optional<double> seen;
  while (std::chrono::steady_clock::now() < deadline) {
    seen = One(prom, "sluice_chunks_stored_total" + selector);
    if (seen && *seen == stored) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(200));  // poll interval
  }
  ASSERT_EQ(seen, stored) << "no scrape with the final count within 60 s; prometheus log:\n"
                          << prom.Log();
  // rate() in the dashboard's queries needs two samples in its window.
  std::optional<double> samples;
  while (std::chrono::steady_clock::now() < deadline) {
    samples = One(prom, "count_over_time(sluice_chunks_stored_total" + selector + "[1m])");
    if (samples && *samples >= 2) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(200));  // poll interval
  }
  ASSERT_GE(samples.value_or(0), 2) << prom.Log();

  // Values match the report and the run's counters.
  EXPECT_EQ(One(prom, "sluice_chunks_produced_total" + selector),
            static_cast<double>(Get(m.chunks_produced)));
  EXPECT_EQ(One(prom, "sluice_chunks_dead_lettered_total" + selector), 0);
  EXPECT_EQ(One(prom, "sluice_embed_requests_total" + selector),
            static_cast<double>(Get(m.requests)));
  EXPECT_EQ(One(prom, "sluice_embed_retries_total" + selector),
            static_cast<double>(Get(m.retries)));
  EXPECT_EQ(One(prom, "sluice_embed_request_errors_total{kind=\"rate_limited\",instance=\"" +
                          target + "\"}"),
            static_cast<double>(Get(m.rate_limited)));
  EXPECT_EQ(One(prom, "sluice_embed_prompt_tokens_total" + selector),
            static_cast<double>(Get(m.prompt_tokens)));
  ASSERT_TRUE(report.estimated_cost_usd);
  const std::optional<double> cost = One(prom, "sluice_estimated_cost_usd" + selector);
  ASSERT_TRUE(cost);
  EXPECT_NEAR(*cost, *report.estimated_cost_usd, 1e-12);
  EXPECT_EQ(One(prom, "sluice_embed_requests_in_flight" + selector), 0);
  EXPECT_GT(One(prom, "sluice_embed_concurrency_limit" + selector).value_or(0), 0);
  // The limits the mock announced, learned from its headers.
  EXPECT_EQ(One(prom, "sluice_rate_limit_requests_per_minute" + selector), 60000);
  EXPECT_EQ(One(prom, "sluice_rate_limit_tokens_per_minute" + selector), 50000000);
  EXPECT_TRUE(One(prom, "sluice_rate_budget_tokens_remaining" + selector));

  // Types as Prometheus read them from the # TYPE lines.
  EXPECT_EQ(MetadataType(prom, "sluice_chunks_stored_total"), "counter");
  EXPECT_EQ(MetadataType(prom, "sluice_embed_requests_in_flight"), "gauge");
  EXPECT_EQ(MetadataType(prom, "sluice_estimated_cost_usd"), "gauge");
  EXPECT_EQ(MetadataType(prom, "sluice_stage_items_in_total"), "counter");
  EXPECT_EQ(MetadataType(prom, "sluice_embed_request_duration_seconds"), "histogram");
  EXPECT_EQ(MetadataType(prom, "sluice_store_transaction_duration_seconds"), "histogram");

  // One series per stage.
  auto stages = Query(prom, "sluice_stage_items_in_total" + selector);
  ASSERT_TRUE(stages);
  std::set<std::string> names;
  for (const Series& s : *stages) names.insert(s.labels.at("stage"));
  EXPECT_EQ(names, (std::set<std::string>{"read", "cache", "embed", "store", "aggregate"}));
  EXPECT_EQ(One(prom, "sluice_stage_items_out_total{stage=\"store\",instance=\"" + target + "\"}"),
            static_cast<double>(Get(m.store.items_out)));

  // Histogram buckets: every bound and +Inf; +Inf and _count are the
  // requests whose latency was recorded; quantiles compute.
  auto buckets = Query(prom, "sluice_embed_request_duration_seconds_bucket" + selector);
  ASSERT_TRUE(buckets);
  EXPECT_EQ(buckets->size(), LatencyBucketsSeconds().size() + 1);
  const double answered = static_cast<double>(m.embed_latency.Summary().count);
  EXPECT_EQ(One(prom, "sluice_embed_request_duration_seconds_bucket{le=\"+Inf\",instance=\"" +
                          target + "\"}"),
            answered);
  EXPECT_EQ(One(prom, "sluice_embed_request_duration_seconds_count" + selector), answered);
  EXPECT_EQ(One(prom, "sluice_store_transaction_duration_seconds_count" + selector),
            static_cast<double>(m.store_latency.Summary().count));
  const std::optional<double> p95 =
      One(prom,
          "histogram_quantile(0.95, sluice_embed_request_duration_seconds_bucket" + selector + ")");
  ASSERT_TRUE(p95);
  EXPECT_TRUE(std::isfinite(*p95) && *p95 > 0) << *p95;

  // Every query of the Grafana dashboard is valid PromQL that finds data
  // (with the template variables set to this target).
  const std::vector<std::string> queries = testing::DashboardQueries();
  ASSERT_FALSE(queries.empty());
  for (std::string q : queries) {
    for (const auto& [var, value] :
         {std::pair<std::string, std::string>{"$job", "sluice"}, {"$instance", target}}) {
      for (size_t at; (at = q.find(var)) != std::string::npos;) q.replace(at, var.size(), value);
    }
    const auto result = Query(prom, q);
    ASSERT_TRUE(result) << "prometheus refused the dashboard query: " << q;
    EXPECT_FALSE(result->empty()) << "no data for the dashboard query: " << q;
  }

  prom.Stop();
  (*endpoint)->Stop();
}

// The endpoint serves counts, never configuration: a run with an API key and
// a password in its PostgreSQL URI serves neither (nor the user or the URI).
TEST(PrometheusScrapeTest, NoSecretInTheServedMetrics) {
  SLUICE_REQUIRE_DSN(dsn, "SLUICE_TEST_PG_DSN");
  const std::string password = "pw-metrics-9f3e";
  // postgres://postgres@host:port/db -> postgres://postgres:PASSWORD@host:port/db
  // (the test cluster trusts loopback, so any password connects).
  const size_t at = dsn.find('@');
  ASSERT_NE(at, std::string::npos) << dsn;
  const std::string with_password = dsn.substr(0, at) + ":" + password + dsn.substr(at);

  TempDir dir;
  MakeCorpus(dir, 4);
  auto api = MockApiServer::Start(Mock());
  ASSERT_TRUE(api.ok()) << api.status().ToString();
  IngestOptions o = Options(dir, **api);
  o.store_uri = with_password;
  o.store.table = pgtest::UniqueTable("prom_secret");
  Pipeline pipeline(o);
  MetricsServerOptions listen;
  listen.listen = "127.0.0.1:0";
  auto endpoint = MetricsServer::Start(listen, pipeline.metrics());
  ASSERT_TRUE(endpoint.ok()) << endpoint.status().ToString();
  const IngestReport report = pipeline.Run();
  ASSERT_TRUE(report.status.ok()) << report.status.ToString();
  ASSERT_GT(Get(pipeline.metrics().chunks_stored), 0u);

  const testing::HttpAnswer a = HttpRequest((*endpoint)->Url());
  ASSERT_EQ(a.status, 200) << a.error;
  EXPECT_EQ(testing::ParseExposition(a.body).error, "");
  for (const std::string& secret :
       {std::string(kApiKey), password, with_password, dsn, (*api)->BaseUrl()}) {
    EXPECT_EQ(a.body.find(secret), std::string::npos) << secret;
  }
}

}  // namespace
}  // namespace sluice
