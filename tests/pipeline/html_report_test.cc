// RenderHtmlReport: self-contained (nothing to load), escaped, charts with
// data, optional sections only when the run has them.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <sstream>

#include <sys/stat.h>

#include "sluice/html_report.h"

namespace sluice {
namespace {

// The points="..." values of every polyline, optionally only those after `marker`.
std::vector<std::string> PointLists(const std::string& html, const std::string& marker = "") {
  std::vector<std::string> lists;
  size_t at = marker.empty() ? 0 : html.find(marker);
  while (at != std::string::npos) {
    at = html.find(" points=\"", at);
    if (at == std::string::npos) break;
    at += 9;
    const size_t end = html.find('"', at);
    lists.push_back(html.substr(at, end - at));
    if (!marker.empty()) break;
    at = end;
  }
  return lists;
}

size_t Count(const std::string& haystack, const std::string& needle) {
  size_t n = 0;
  for (size_t at = haystack.find(needle); at != std::string::npos;
       at = haystack.find(needle, at + needle.size())) {
    ++n;
  }
  return n;
}

std::vector<TraceRow> SomeRows(size_t n) {
  std::vector<TraceRow> rows(n);
  for (size_t i = 0; i < n; ++i) {
    rows[i].second = static_cast<int64_t>(i);
    rows[i].limit = 16;
    rows[i].in_flight = static_cast<double>(i % 16);
    rows[i].chunks = 100 + i;
    rows[i].tokens = 1000 + 10 * i;
    rows[i].p50_latency_ms = 40;
    rows[i].p95_latency_ms = 90;
    rows[i].http_429 = i % 3 == 0 ? 1 : 0;
    rows[i].queue_depth = {1, 2, 3, 4, 5};
  }
  return rows;
}

TEST(HtmlReportTest, EscapesTextAndRepairsUtf8) {
  EXPECT_EQ(HtmlEscape("<script>alert(\"x\")</script> & 'y'"),
            "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt; &amp; &#39;y&#39;");
  EXPECT_EQ(HtmlEscape("caf\xc3\xa9"), "caf\xc3\xa9");
  EXPECT_EQ(HtmlEscape("bad \xff byte"), "bad \xef\xbf\xbd byte");
}

TEST(HtmlReportTest, HostileTextFromTheRunIsEscapedEverywhere) {
  IngestReport report;
  report.status = Status::IOError("cannot read <script>alert(1)</script>.txt");
  report.dead_letter_reasons["<img src=x onerror=alert(2)>"] = 3;
  report.skipped_reasons["<iframe src=//evil>"] = 1;
  report.embedder_description = "http <b>x</b>";
  report.store_description = "sqlite:\"quoted\".db";
  report.bottleneck_stage = "<embedder>";
  report.trace_summary = "<svg onload=alert(3)>";
  Metrics metrics;
  HtmlReportOptions options;
  options.inputs = {"docs/<script>alert(4)</script>", "a\"b"};
  const std::string html = RenderHtmlReport(report, metrics, SomeRows(3), options);
  // The only markup is ours: no script element, event handler or external reference.
  EXPECT_EQ(Count(html, "<script"), 0u) << html;
  EXPECT_EQ(Count(html, "<img"), 0u);
  EXPECT_EQ(Count(html, "<iframe"), 0u);
  EXPECT_EQ(Count(html, "<svg onload"), 0u);
  EXPECT_EQ(Count(html, "<embedder>"), 0u);
  EXPECT_NE(html.find("&lt;script&gt;alert(1)&lt;/script&gt;.txt"), std::string::npos);
  EXPECT_NE(html.find("&lt;img src=x onerror=alert(2)&gt;"), std::string::npos);
  EXPECT_NE(html.find("docs/&lt;script&gt;alert(4)&lt;/script&gt;, a&quot;b"), std::string::npos);
  EXPECT_NE(html.find("&lt;embedder&gt;"), std::string::npos);
  EXPECT_EQ(Count(html, "http://"), 0u);
  EXPECT_EQ(Count(html, "https://"), 0u);
}

TEST(HtmlReportTest, SelfContainedWithAContentSecurityPolicy) {
  IngestReport report;
  Metrics metrics;
  const std::string html = RenderHtmlReport(report, metrics, SomeRows(5), {});
  EXPECT_EQ(html.rfind("<!DOCTYPE html>", 0), 0u);
  EXPECT_NE(html.find("<meta http-equiv=\"Content-Security-Policy\" content=\"default-src "
                      "'none'; style-src 'unsafe-inline'"),
            std::string::npos);
  EXPECT_EQ(Count(html, "<link"), 0u);
  EXPECT_EQ(Count(html, "<script"), 0u);
  EXPECT_EQ(Count(html, "url("), 0u);
  EXPECT_EQ(Count(html, "@import"), 0u);
}

TEST(HtmlReportTest, EveryChartHasItsSeriesWithOnePointPerSecond) {
  IngestReport report;
  report.elapsed_s = 10;
  Metrics metrics;
  const std::string html = RenderHtmlReport(report, metrics, SomeRows(10), {});
  for (const char* id : {"chunks", "tokens", "in-flight", "latency", "errors", "queues"}) {
    EXPECT_NE(html.find(std::string("<figure id=\"") + id + "\">"), std::string::npos) << id;
  }
  // 1 + 1 + 2 + 2 + 3 + 5 series.
  EXPECT_EQ(Count(html, "<polyline class=\"series\""), 14u);
  for (const char* series :
       {"chunks/s", "tokens/s", "in flight", "limit", "p50", "p95", "429s", "retries", "failures",
        "reader", "cache", "embedder", "store", "aggregator"}) {
    EXPECT_NE(html.find(std::string("data-series=\"") + series + "\""), std::string::npos)
        << series;
  }
  const std::vector<std::string> lists = PointLists(html);
  EXPECT_EQ(lists.size(), 14u);
  for (const std::string& points : lists) EXPECT_EQ(Count(points, ","), 10u) << points;
}

TEST(HtmlReportTest, ALongTraceIsAveragedToBoundedPoints) {
  IngestReport report;
  Metrics metrics;
  HtmlReportOptions options;
  options.max_points = 100;
  const std::string html = RenderHtmlReport(report, metrics, SomeRows(1000), options);
  const std::vector<std::string> lists = PointLists(html, "data-series=\"chunks/s\"");
  ASSERT_EQ(lists.size(), 1u);
  EXPECT_EQ(Count(lists[0], ","), 100u);
  EXPECT_NE(html.find("averaged over 10 s per point"), std::string::npos);
}

TEST(HtmlReportTest, ASingleSecondStillDrawsAndNoTraceSaysNoData) {
  IngestReport report;
  Metrics metrics;
  const std::string one = RenderHtmlReport(report, metrics, SomeRows(1), {});
  EXPECT_EQ(Count(one, "<polyline class=\"series\""), 14u);
  const std::string none = RenderHtmlReport(report, metrics, {}, {});
  EXPECT_EQ(Count(none, "<polyline"), 0u);
  EXPECT_EQ(Count(none, ">no data</text>"), 6u);
}

TEST(HtmlReportTest, FinalCountsCostBottleneckAndDeadLetterReasons) {
  IngestReport report;
  report.elapsed_s = 4;
  report.estimated_cost_usd = 0.0123;
  report.bottleneck_stage = "embedder";
  report.dead_letter_reasons["rejected"] = 2;
  report.reconciled = true;
  report.queue_high_water["embed"] = 77;
  Metrics metrics;
  Add(metrics.chunks_stored, 40);
  Add(metrics.chunks_produced, 42);
  Add(metrics.chunks_dead_lettered, 2);
  Add(metrics.embedder.busy_ns, 3'500'000'000);
  const std::string html = RenderHtmlReport(report, metrics, SomeRows(4), {});
  EXPECT_NE(html.find("<b>$0.0123</b><span>estimated cost</span>"), std::string::npos);
  EXPECT_NE(html.find("<b>embedder</b><span>bottleneck stage</span>"), std::string::npos);
  EXPECT_NE(html.find("<b>10.0</b><span>chunks/s</span>"), std::string::npos);
  EXPECT_NE(html.find("<tr><th>rejected</th><td class=\"n\">2</td></tr>"), std::string::npos);
  EXPECT_NE(html.find("<tr><th>embedder</th><td class=\"n\">3.5 s</td><td class=\"n\">77</td>"),
            std::string::npos);
  EXPECT_NE(html.find("<tr><th>reconciled</th><td class=\"n\">yes</td></tr>"), std::string::npos);

  // Without a bottleneck or a price, neither is invented.
  IngestReport plain;
  Metrics fresh;
  const std::string bare = RenderHtmlReport(plain, fresh, {}, {});
  EXPECT_EQ(bare.find("bottleneck"), std::string::npos);
  EXPECT_NE(bare.find("<b>unknown</b><span>estimated cost</span>"), std::string::npos);
  EXPECT_NE(bare.find("nothing was dead-lettered"), std::string::npos);
}

TEST(HtmlReportTest, WritesAPrivateFileAndReportsAnUnwritablePath) {
  const std::string path = ::testing::TempDir() + "/sluice_html_report_test.html";
  std::filesystem::remove(path);
  IngestReport report;
  report.trace_rows = SomeRows(3);
  Metrics metrics;
  ASSERT_TRUE(WriteHtmlReport(path, report, metrics, {}).ok());
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  EXPECT_EQ(Count(ss.str(), "<polyline class=\"series\""), 14u);
  struct stat st {};
  ASSERT_EQ(::stat(path.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
  std::filesystem::remove(path);

  // A folder that is a regular file: unwritable even for root.
  const std::string file = ::testing::TempDir() + "/sluice_html_report_plain_file";
  std::ofstream(file) << "x";
  const Status s = WriteHtmlReport(file + "/r.html", report, metrics, {});
  std::filesystem::remove(file);
  EXPECT_EQ(s.code(), StatusCode::kIOError);
  EXPECT_NE(s.message().find("HTML report"), std::string::npos) << s.message();
}

}  // namespace
}  // namespace sluice
