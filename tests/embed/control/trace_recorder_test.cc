// TraceRecorder: bucketing, medians, summary, files, bounds.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <sstream>

#include "sluice/control.h"

namespace sluice {
namespace {

using std::chrono::milliseconds;
using std::chrono::seconds;

const TimePoint kTraceStart = TimePoint{} + std::chrono::hours(2);

RequestEvent Event(TimePoint end, Duration latency, size_t inputs, int status = 200,
                   bool retry = false) {
  RequestEvent e;
  e.start = end - latency;
  e.end = end;
  e.inputs = inputs;
  e.tokens = static_cast<uint32_t>(inputs * 10);
  e.http_status = status;
  e.outcome = status == 200   ? RequestOutcome::kSuccess
              : status == 429 ? RequestOutcome::kBackpressure
                              : RequestOutcome::kPermanent;
  e.retry = retry;
  return e;
}

std::string ReadAll(const std::string& path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

TEST(TraceRecorderTest, BucketsBySecondWithMediansAndCounts) {
  TraceRecorder trace(kTraceStart);
  trace.Sample(kTraceStart, 4, 0);
  trace.Sample(kTraceStart + milliseconds(500), 8, 6);
  trace.OnRequest(Event(kTraceStart + milliseconds(100), milliseconds(100), 10));
  trace.OnRequest(Event(kTraceStart + milliseconds(200), milliseconds(300), 10));
  trace.OnRequest(Event(kTraceStart + milliseconds(300), milliseconds(200), 10));
  trace.OnRequest(Event(kTraceStart + milliseconds(900), milliseconds(50), 10, 429));
  trace.OnRequest(Event(kTraceStart + milliseconds(1500), milliseconds(400), 20, 200, true));
  trace.OnRequest(Event(kTraceStart + milliseconds(1600), milliseconds(10), 20, 400));
  // Nothing sampled in second 1: the limit is carried over.
  const std::vector<TraceRow> rows = trace.Rows();
  ASSERT_EQ(rows.size(), 2u);
  EXPECT_DOUBLE_EQ(rows[0].limit, 6);
  EXPECT_DOUBLE_EQ(rows[0].in_flight, 3);
  EXPECT_EQ(rows[0].requests, 4u);
  EXPECT_EQ(rows[0].chunks, 30u);
  EXPECT_EQ(rows[0].tokens, 300u);
  EXPECT_EQ(rows[0].http_429, 1u);
  EXPECT_DOUBLE_EQ(rows[0].p50_latency_ms, 150);  // median of 50, 100, 200, 300
  EXPECT_DOUBLE_EQ(rows[1].limit, 8);
  EXPECT_EQ(rows[1].retries, 1u);
  EXPECT_EQ(rows[1].failures, 1u);
  EXPECT_EQ(rows[1].chunks, 20u);
  EXPECT_DOUBLE_EQ(rows[1].p50_latency_ms, 205);

  const TraceSummary s = trace.Summary();
  EXPECT_EQ(s.seconds, 2);
  EXPECT_EQ(s.requests, 6u);
  EXPECT_EQ(s.chunks, 50u);
  EXPECT_EQ(s.http_429, 1u);
  EXPECT_EQ(s.retries, 1u);
  EXPECT_EQ(s.failures, 1u);
  EXPECT_DOUBLE_EQ(s.min_limit, 6);
  EXPECT_DOUBLE_EQ(s.max_limit, 8);
  EXPECT_DOUBLE_EQ(s.peak_requests_per_s, 4);
  EXPECT_DOUBLE_EQ(s.steady_chunks_per_s, 30);  // the last (partial) second excluded
}

TEST(TraceRecorderTest, P95IsTheNearestRankOfTheSecondsLatencies) {
  TraceRecorder trace(kTraceStart);
  // 20 requests finishing in second 0 with latencies 10, 20, ..., 200 ms:
  // the nearest-rank p95 is the 19th smallest (190 ms).
  for (int i = 1; i <= 20; ++i) {
    trace.OnRequest(Event(kTraceStart + milliseconds(500), milliseconds(10 * i), 1));
  }
  trace.OnRequest(Event(kTraceStart + milliseconds(1500), milliseconds(70), 1));  // closes second 0
  const std::vector<TraceRow> rows = trace.Rows();
  ASSERT_EQ(rows.size(), 2u);
  EXPECT_DOUBLE_EQ(rows[0].p95_latency_ms, 190);
  EXPECT_DOUBLE_EQ(rows[0].p50_latency_ms, 105);
  EXPECT_DOUBLE_EQ(rows[1].p95_latency_ms, 70);  // the open second, from Rows()
}

TEST(TraceRecorderTest, QueueDepthsAreAveragedPerSecondAndCarried) {
  TraceRecorder trace(kTraceStart);
  trace.SampleQueues(kTraceStart, {10, 0, 4, 0, 2});
  trace.SampleQueues(kTraceStart + milliseconds(500), {20, 2, 8, 0, 0});
  // Second 1 gets no sample; second 2 one.
  trace.SampleQueues(kTraceStart + milliseconds(2100), {1, 1, 1, 1, 1});
  const std::vector<TraceRow> rows = trace.Rows();
  ASSERT_EQ(rows.size(), 3u);
  EXPECT_DOUBLE_EQ(rows[0].queue_depth[0], 15);
  EXPECT_DOUBLE_EQ(rows[0].queue_depth[1], 1);
  EXPECT_DOUBLE_EQ(rows[0].queue_depth[2], 6);
  EXPECT_DOUBLE_EQ(rows[0].queue_depth[4], 1);
  EXPECT_DOUBLE_EQ(rows[1].queue_depth[0], 20);  // carried: the last sample seen
  EXPECT_DOUBLE_EQ(rows[2].queue_depth[3], 1);
}

TEST(TraceRecorderTest, SteadyStateSkipsTheWarmup) {
  TraceRecorderOptions o;
  o.warmup_seconds = 10;
  TraceRecorder trace(kTraceStart, o);
  for (int s = 0; s < 40; ++s) {
    trace.OnRequest(
        Event(kTraceStart + seconds(s) + milliseconds(500), milliseconds(100), s < 10 ? 1 : 100));
  }
  EXPECT_DOUBLE_EQ(trace.Summary().steady_chunks_per_s, 100);
}

TEST(TraceRecorderTest, MemoryIsBoundedByMaxRows) {
  TraceRecorderOptions o;
  o.max_rows = 5;
  TraceRecorder trace(kTraceStart, o);
  for (int s = 0; s < 100; ++s) {
    trace.Sample(kTraceStart + seconds(s), 10, 1);
    trace.OnRequest(Event(kTraceStart + seconds(s), milliseconds(10), 1));
  }
  EXPECT_EQ(trace.Rows().size(), 5u);
  const TraceSummary s = trace.Summary();
  EXPECT_TRUE(s.truncated);
  EXPECT_EQ(s.requests, 100u);  // totals still count everything
  EXPECT_EQ(s.chunks, 100u);
}

TEST(TraceRecorderTest, EventsBeforeTheStartLandInTheFirstSecond) {
  TraceRecorder trace(kTraceStart);
  trace.OnRequest(Event(kTraceStart - seconds(5), milliseconds(10), 3));
  ASSERT_EQ(trace.Rows().size(), 1u);
  EXPECT_EQ(trace.Rows()[0].chunks, 3u);
}

TEST(TraceRecorderTest, WritesCsvAndJson) {
  TraceRecorder trace(kTraceStart);
  trace.Sample(kTraceStart, 16, 3);
  trace.OnRequest(Event(kTraceStart + milliseconds(100), milliseconds(100), 64));
  const std::string dir = ::testing::TempDir();
  const std::string csv = dir + "/sluice_trace_test.csv";
  const std::string json = dir + "/sluice_trace_test.json";
  ASSERT_TRUE(trace.WriteCsv(csv).ok());
  ASSERT_TRUE(trace.WriteJson(json).ok());
  EXPECT_EQ(ReadAll(csv),
            "t_s,limit,in_flight,requests_per_s,chunks_per_s,tokens_per_s,p50_latency_ms,"
            "http_429,retries,failures,p95_latency_ms,queue_reader,queue_cache,queue_embedder,"
            "queue_store,queue_aggregator\n"
            "0,16.00,3.00,1,64,640,100.000,0,0,0,100.000,0.00,0.00,0.00,0.00,0.00\n");
  const std::string j = ReadAll(json);
  EXPECT_NE(j.find("\"resolution_s\":1"), std::string::npos) << j;
  EXPECT_NE(j.find("\"chunks_per_s\":64"), std::string::npos) << j;
  EXPECT_NE(j.find("\"summary\":{"), std::string::npos) << j;
  EXPECT_NE(j.find("\"truncated\":false"), std::string::npos) << j;
  EXPECT_NE(j.find("\"p95_latency_ms\":100"), std::string::npos) << j;
  EXPECT_NE(j.find("\"queue_depth\":{\"reader\":0"), std::string::npos) << j;
  std::filesystem::remove(csv);
  std::filesystem::remove(json);
}

TEST(TraceRecorderTest, FormatIsChosenByExtensionOrRefused) {
  EXPECT_EQ(TraceFormatForPath("run/trace.csv"), TraceFormat::kCsv);
  EXPECT_EQ(TraceFormatForPath("trace.JSON"), TraceFormat::kJson);
  EXPECT_EQ(TraceFormatForPath("/tmp/x/trace.html"), TraceFormat::kHtml);
  EXPECT_EQ(TraceFormatForPath("trace.htm"), TraceFormat::kHtml);
  EXPECT_EQ(TraceFormatForPath("trace.txt"), std::nullopt);
  EXPECT_EQ(TraceFormatForPath("trace"), std::nullopt);
  EXPECT_EQ(TraceFormatForPath("dir.csv/trace"), std::nullopt);
  EXPECT_EQ(TraceFormatForPath("trace.csv.gz"), std::nullopt);
}

TEST(TraceRecorderTest, UnwritablePathIsAnIOError) {
  TraceRecorder trace(kTraceStart);
  const Status s = trace.WriteCsv("/nonexistent-dir/for/sure/trace.csv");
  EXPECT_EQ(s.code(), StatusCode::kIOError);
  EXPECT_EQ(trace.WriteJson("/nonexistent-dir/for/sure/trace.json").code(), StatusCode::kIOError);
}

}  // namespace
}  // namespace sluice
