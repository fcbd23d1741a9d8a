// The exposition of a run's Metrics: read back with a strict parser of the
// text format; names, types, labels and values as docs/OBSERVABILITY.md says.
#include <gtest/gtest.h>

#include <cmath>
#include <set>

#include "observe/exposition_parser.h"
#include "sluice/metrics_server.h"

namespace sluice {
namespace {

using testing::Exposition;
using testing::ParseExposition;

Exposition Parse(const Metrics& m) {
  const std::string text = PrometheusText(m);
  Exposition e = ParseExposition(text);
  EXPECT_EQ(e.error, "") << text;
  return e;
}

TEST(PrometheusExpositionTest, EveryFamilyHasHelpTypeAndAConventionalName) {
  Metrics m;
  m.price_per_mtok_usd = 0.02;
  m.rate_limit_requests_per_minute = 600;
  m.rate_limit_tokens_per_minute = 1e6;
  const Exposition e = Parse(m);
  ASSERT_GT(e.families.size(), 20u);
  for (const auto& [name, family] : e.families) {
    SCOPED_TRACE(name);
    EXPECT_EQ(name.rfind("sluice_", 0), 0u);
    EXPECT_FALSE(family.help.empty());
    EXPECT_FALSE(family.samples.empty());
    // Counters end in _total; histograms are in seconds; nothing else claims _total.
    const bool total = name.size() > 6 && name.compare(name.size() - 6, 6, "_total") == 0;
    EXPECT_EQ(family.type == "counter", total) << family.type;
    if (family.type == "histogram") {
      EXPECT_EQ(name.compare(name.size() - 8, 8, "_seconds"), 0);
    }
  }
}

TEST(PrometheusExpositionTest, CountersAndGaugesCarryTheMetricsValues) {
  Metrics m;
  Add(m.chunks_stored, 1234);
  Add(m.chunks_produced, 1300);
  Add(m.requests, 40);
  Add(m.retries, 3);
  Add(m.rate_limited, 5);
  Add(m.server_errors, 2);
  Add(m.prompt_tokens, 500000);
  m.in_flight = 7;
  m.concurrency_limit = 12;
  const Exposition e = Parse(m);
  EXPECT_EQ(e.Value("sluice_chunks_stored_total"), 1234);
  EXPECT_EQ(e.Value("sluice_chunks_produced_total"), 1300);
  EXPECT_EQ(e.Value("sluice_embed_requests_total"), 40);
  EXPECT_EQ(e.Value("sluice_embed_retries_total"), 3);
  EXPECT_EQ(e.Value("sluice_embed_request_errors_total", {{"kind", "rate_limited"}}), 5);
  EXPECT_EQ(e.Value("sluice_embed_request_errors_total", {{"kind", "server_error"}}), 2);
  EXPECT_EQ(e.Value("sluice_embed_prompt_tokens_total"), 500000);
  EXPECT_EQ(e.Value("sluice_embed_requests_in_flight"), 7);
  EXPECT_EQ(e.Value("sluice_embed_concurrency_limit"), 12);
  EXPECT_EQ(e.families.at("sluice_embed_requests_in_flight").type, "gauge");
  EXPECT_EQ(e.families.at("sluice_chunks_stored_total").type, "counter");
}

TEST(PrometheusExpositionTest, CostAndRateBudgetOnlyWhenKnown) {
  Metrics m;
  Add(m.prompt_tokens, 2000000);
  Exposition e = Parse(m);
  // Unknown price, no limits: no series rather than a guessed or zero value.
  EXPECT_EQ(e.families.count("sluice_estimated_cost_usd"), 0u);
  EXPECT_EQ(e.families.count("sluice_rate_limit_requests_per_minute"), 0u);
  EXPECT_EQ(e.families.count("sluice_rate_budget_tokens_remaining"), 0u);

  m.price_per_mtok_usd = 0.13;
  m.rate_limit_requests_per_minute = 3000;
  m.rate_requests_remaining = 41.5;
  m.rate_limit_tokens_per_minute = 1000000;
  m.rate_tokens_remaining = 250000;
  e = Parse(m);
  ASSERT_TRUE(e.Value("sluice_estimated_cost_usd"));
  EXPECT_DOUBLE_EQ(*e.Value("sluice_estimated_cost_usd"), 0.26);
  EXPECT_EQ(e.Value("sluice_rate_limit_requests_per_minute"), 3000);
  EXPECT_EQ(e.Value("sluice_rate_budget_requests_remaining"), 41.5);
  EXPECT_EQ(e.Value("sluice_rate_limit_tokens_per_minute"), 1000000);
  EXPECT_EQ(e.Value("sluice_rate_budget_tokens_remaining"), 250000);
  EXPECT_EQ(e.families.at("sluice_estimated_cost_usd").type, "gauge");
}

TEST(PrometheusExpositionTest, StageSeriesHaveAStageLabelPerStage) {
  Metrics m;
  Add(m.reader.items_in, 3);
  Add(m.embedder.items_out, 99);
  Add(m.store.dead_lettered, 2);
  Add(m.cache.busy_ns, 1500000000);
  Add(m.reader.blocked_ns, 2500000000);
  m.store.queue_depth = 17;
  const Exposition e = Parse(m);
  for (const char* family : {"sluice_stage_items_in_total", "sluice_stage_items_out_total",
                             "sluice_stage_bytes_total", "sluice_stage_errors_total",
                             "sluice_stage_dead_lettered_total", "sluice_stage_busy_seconds_total",
                             "sluice_stage_blocked_seconds_total", "sluice_stage_queue_depth"}) {
    SCOPED_TRACE(family);
    std::set<std::string> stages;
    for (const auto& s : e.families.at(family).samples) stages.insert(s.labels.at("stage"));
    EXPECT_EQ(stages, (std::set<std::string>{"read", "cache", "embed", "store", "aggregate"}));
  }
  EXPECT_EQ(e.Value("sluice_stage_items_in_total", {{"stage", "read"}}), 3);
  EXPECT_EQ(e.Value("sluice_stage_items_out_total", {{"stage", "embed"}}), 99);
  EXPECT_EQ(e.Value("sluice_stage_dead_lettered_total", {{"stage", "store"}}), 2);
  EXPECT_EQ(e.Value("sluice_stage_busy_seconds_total", {{"stage", "cache"}}), 1.5);
  EXPECT_EQ(e.Value("sluice_stage_blocked_seconds_total", {{"stage", "read"}}), 2.5);
  EXPECT_EQ(e.Value("sluice_stage_queue_depth", {{"stage", "store"}}), 17);
  EXPECT_EQ(e.families.at("sluice_stage_queue_depth").type, "gauge");
}

TEST(PrometheusExpositionTest, ParseTimeIsExportedPerFormat) {
  Metrics m;
  m.parse_times.Record("markdown", 1000, 500000000);
  m.parse_times.Record("markdown", 3000, 500000000);
  m.parse_times.Record("pdf", 7, 2000000000);
  const Exposition e = Parse(m);
  EXPECT_EQ(e.Value("sluice_parse_files_total", {{"format", "markdown"}}), 2);
  EXPECT_EQ(e.Value("sluice_parse_bytes_total", {{"format", "markdown"}}), 4000);
  EXPECT_EQ(e.Value("sluice_parse_seconds_total", {{"format", "markdown"}}), 1.0);
  EXPECT_EQ(e.Value("sluice_parse_seconds_total", {{"format", "pdf"}}), 2.0);
  EXPECT_EQ(e.families.at("sluice_parse_seconds_total").type, "counter");
}

TEST(PrometheusExpositionTest, HistogramsHaveCumulativeBucketsInfSumAndCount) {
  Metrics m;
  for (int ms : {2, 7, 40, 40, 300, 1200, 200000}) {
    m.embed_latency.Record(std::chrono::milliseconds(ms));
  }
  const Exposition e = Parse(m);
  const auto& family = e.families.at("sluice_embed_request_duration_seconds");
  EXPECT_EQ(family.type, "histogram");
  std::vector<std::pair<double, double>> buckets;  // (le, count)
  for (const auto& s : family.samples) {
    if (s.name == "sluice_embed_request_duration_seconds_bucket") {
      const std::string& le = s.labels.at("le");
      buckets.emplace_back(le == "+Inf" ? std::numeric_limits<double>::infinity() : std::stod(le),
                           s.value);
    }
  }
  ASSERT_EQ(buckets.size(), LatencyBucketsSeconds().size() + 1);
  for (size_t i = 1; i < buckets.size(); ++i) {
    EXPECT_LT(buckets[i - 1].first, buckets[i].first);
    EXPECT_LE(buckets[i - 1].second, buckets[i].second);
  }
  EXPECT_TRUE(std::isinf(buckets.back().first));
  EXPECT_EQ(buckets.back().second, 7);
  EXPECT_EQ(e.Value("sluice_embed_request_duration_seconds", {{"le", "0.005"}},
                    "sluice_embed_request_duration_seconds_bucket"),
            1);
  EXPECT_EQ(e.Value("sluice_embed_request_duration_seconds", {{"le", "0.05"}},
                    "sluice_embed_request_duration_seconds_bucket"),
            4);
  EXPECT_EQ(e.Value("sluice_embed_request_duration_seconds", {{"le", "120"}},
                    "sluice_embed_request_duration_seconds_bucket"),
            6);
  EXPECT_EQ(e.Value("sluice_embed_request_duration_seconds", {},
                    "sluice_embed_request_duration_seconds_count"),
            7);
  EXPECT_NEAR(*e.Value("sluice_embed_request_duration_seconds", {},
                       "sluice_embed_request_duration_seconds_sum"),
              201.589, 1e-9);
  EXPECT_EQ(e.families.at("sluice_store_transaction_duration_seconds").type, "histogram");
}

TEST(ExpositionParserTest, RejectsMalformedText) {
  EXPECT_NE(ParseExposition("x 1\n").error, "");  // no TYPE
  EXPECT_NE(ParseExposition("# TYPE x counter\ny 1\n").error, "");
  EXPECT_NE(ParseExposition("# TYPE x counter\nx{a=\"b} 1\n").error, "");
  EXPECT_NE(ParseExposition("# TYPE x counter\nx 1z\n").error, "");
  const auto ok = ParseExposition("# TYPE x gauge\nx{a=\"q\\\"\\\\\\n\"} 2\n");
  EXPECT_EQ(ok.error, "");
  EXPECT_EQ(ok.Value("x", {{"a", "q\"\\\n"}}), 2);
}

TEST(PrometheusExpositionTest, SeveralRunsShareOneFamilyPerNameEachSeriesLabelled) {
  Metrics first, second;
  Add(first.chunks_stored, 10);
  Add(second.chunks_stored, 25);
  Add(second.rate_limited, 4);
  const LabelledGauge jobs{
      "sluice_serve_jobs", "Jobs by state.", "state", {{"running", 2}, {"queued", 1}}};
  const std::string text = PrometheusText({{"j1", &first}, {"j2", &second}}, "sluice_job", {jobs});
  const Exposition e = ParseExposition(text);
  ASSERT_EQ(e.error, "") << text;
  // One HELP and TYPE per name, whatever the number of runs.
  size_t helps = 0;
  for (size_t at = text.find("# HELP sluice_chunks_stored_total "); at != std::string::npos;
       at = text.find("# HELP sluice_chunks_stored_total ", at + 1)) {
    ++helps;
  }
  EXPECT_EQ(helps, 1u);
  EXPECT_EQ(e.Value("sluice_chunks_stored_total", {{"sluice_job", "j1"}}), 10);
  EXPECT_EQ(e.Value("sluice_chunks_stored_total", {{"sluice_job", "j2"}}), 25);
  EXPECT_EQ(e.Value("sluice_embed_request_errors_total",
                    {{"sluice_job", "j2"}, {"kind", "rate_limited"}}),
            4);
  EXPECT_EQ(e.Value("sluice_serve_jobs", {{"state", "running"}}), 2);
  EXPECT_EQ(e.Value("sluice_serve_jobs", {{"state", "queued"}}), 1);
  // Every run's series carries its label: none is left unlabelled.
  for (const auto& [name, family] : e.families) {
    if (name == "sluice_serve_jobs") continue;
    for (const auto& sample : family.samples) {
      EXPECT_EQ(sample.labels.count("sluice_job"), 1u) << sample.name;
    }
  }

  // No run: the gauges alone, still a valid page.
  const Exposition idle = ParseExposition(PrometheusText({}, "sluice_job", {jobs}));
  EXPECT_EQ(idle.error, "");
  EXPECT_EQ(idle.families.size(), 1u);
}

}  // namespace
}  // namespace sluice
