// contrib/grafana/sluice.json: valid JSON, a job/instance template for a
// fleet, and every query names series the endpoint really serves, filtered
// by the template variables. (prometheus_scrape_test runs each query against
// a real Prometheus.)
#include <gtest/gtest.h>
#include <simdjson.h>

#include <cctype>
#include <cstring>
#include <set>

#include "observe/exposition_parser.h"
#include "observe/grafana_queries.h"
#include "sluice/metrics_server.h"

namespace sluice {
namespace {

TEST(GrafanaDashboardTest, IsValidJsonWithJobAndInstanceVariables) {
  simdjson::dom::parser parser;
  simdjson::dom::element doc;
  ASSERT_EQ(parser.load(testing::kDashboardPath).get(doc), simdjson::SUCCESS);
  std::string_view title;
  ASSERT_EQ(doc["title"].get(title), simdjson::SUCCESS);
  EXPECT_FALSE(title.empty());
  std::set<std::string> variables;
  simdjson::dom::array list;
  ASSERT_EQ(doc["templating"]["list"].get(list), simdjson::SUCCESS);
  for (simdjson::dom::element v : list) {
    std::string_view name;
    ASSERT_EQ(v["name"].get(name), simdjson::SUCCESS);
    variables.insert(std::string(name));
  }
  EXPECT_TRUE(variables.count("job"));
  EXPECT_TRUE(variables.count("instance"));
  EXPECT_TRUE(variables.count("datasource"));
}

TEST(GrafanaDashboardTest, EveryQueryUsesServedSeriesAndTheFleetFilters) {
  const std::vector<std::string> queries = testing::DashboardQueries();
  ASSERT_GE(queries.size(), 15u);
  // Everything the endpoint can serve (price and limits known).
  Metrics m;
  m.price_per_mtok_usd = 0.02;
  m.rate_limit_requests_per_minute = 1;
  m.rate_limit_tokens_per_minute = 1;
  const testing::Exposition served = testing::ParseExposition(PrometheusText(m));
  ASSERT_EQ(served.error, "");
  std::set<std::string> wanted;
  // Every sluice_[a-z0-9_]+ in a query (no std::regex: GCC 12 warns inside it at -O1).
  const auto metric_names = [](const std::string& q) {
    std::vector<std::string> names;
    for (size_t at = q.find("sluice_"); at != std::string::npos; at = q.find("sluice_", at)) {
      size_t end = at;
      while (end < q.size() &&
             (std::islower(static_cast<unsigned char>(q[end])) ||
              std::isdigit(static_cast<unsigned char>(q[end])) || q[end] == '_')) {
        ++end;
      }
      names.push_back(q.substr(at, end - at));
      at = end;
    }
    return names;
  };
  for (const std::string& q : queries) {
    SCOPED_TRACE(q);
    EXPECT_NE(q.find("instance=~\"$instance\""), std::string::npos);
    EXPECT_NE(q.find("job=~\"$job\""), std::string::npos);
    for (std::string metric : metric_names(q)) {
      for (const char* suffix : {"_bucket", "_sum", "_count"}) {
        const std::string base = metric.substr(0, metric.size() - std::strlen(suffix));
        if (metric.size() > std::strlen(suffix) && metric.ends_with(suffix) &&
            served.families.count(base) && served.families.at(base).type == "histogram") {
          metric = base;
        }
      }
      EXPECT_TRUE(served.families.count(metric)) << metric;
      wanted.insert(metric);
    }
  }
  // The list: throughput, tokens, in flight vs limit, latency, 429s
  // and retries, queue depths, cost.
  for (const char* metric :
       {"sluice_chunks_stored_total", "sluice_embed_prompt_tokens_total",
        "sluice_embed_requests_in_flight", "sluice_embed_concurrency_limit",
        "sluice_embed_request_duration_seconds", "sluice_embed_request_errors_total",
        "sluice_embed_retries_total", "sluice_stage_queue_depth", "sluice_estimated_cost_usd"}) {
    EXPECT_TRUE(wanted.count(metric)) << metric;
  }
}

}  // namespace
}  // namespace sluice
