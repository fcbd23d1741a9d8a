// The progress line (src/pipeline/progress.h): its pure formatting, the ETA
// and cost arithmetic, and the reporter's timing without a real clock race.
#include "pipeline/progress.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

namespace sluice {
namespace {

ProgressSnapshot Running() {
  ProgressSnapshot s;
  s.elapsed_s = 75;
  s.sources_done = 40;
  s.bytes_done = 25'000'000;
  s.chunks_produced = 12'500;
  s.chunks_stored = 12'000;
  s.chunks_per_s = 160;
  s.tokens = 3'000'000;
  s.tokens_per_s = 40'000;
  s.in_flight = 12;
  s.concurrency_limit = 16;
  s.rate_limited = 3;
  return s;
}

TEST(ProgressTest, DurationsReadLikeAClock) {
  EXPECT_EQ(FormatDuration(0), "0s");
  EXPECT_EQ(FormatDuration(45.4), "45s");
  EXPECT_EQ(FormatDuration(200), "3m20s");
  EXPECT_EQ(FormatDuration(3900), "1h05m");
  EXPECT_EQ(FormatDuration(-1), "?");
}

TEST(ProgressTest, EstimatingUntilTheScanHasTheTotals) {
  ProgressSnapshot s = Running();
  EXPECT_FALSE(EtaSeconds(s));
  const std::string line = FormatProgressLine(s);
  EXPECT_EQ(line,
            "1m15s | sources 40 | chunks 12000 stored | 160 chunks/s, 40000 tokens/s | ETA "
            "estimating | in flight 12/16 | 429s 3");
}

TEST(ProgressTest, EtaFromTheBytesLeftAndCostSoFarAndProjected) {
  ProgressSnapshot s = Running();
  s.totals_known = true;
  s.sources_total = 160;
  s.bytes_total = 100'000'000;
  s.price_per_mtok = 0.02;
  // A quarter of the bytes read gave 12,500 chunks: 50,000 in all, 38,000
  // still to store at 160 chunks/s.
  ASSERT_TRUE(EstimatedTotalChunks(s));
  EXPECT_DOUBLE_EQ(*EstimatedTotalChunks(s), 50'000.0);
  ASSERT_TRUE(EtaSeconds(s));
  EXPECT_DOUBLE_EQ(*EtaSeconds(s), 237.5);
  EXPECT_EQ(FormatProgressLine(s),
            "1m15s | sources 40/160 (24%) | chunks 12000 stored | 160 chunks/s, 40000 tokens/s "
            "| ETA 3m58s | $0.0600 (~$0.2500 projected) | in flight 12/16 | 429s 3");
  // Everything read: the total is what was produced.
  s.bytes_done = s.bytes_total;
  EXPECT_DOUBLE_EQ(*EstimatedTotalChunks(s), 12'500.0);
  EXPECT_DOUBLE_EQ(*EtaSeconds(s), 500.0 / 160.0);
}

TEST(ProgressTest, OfflineRunShowsNoRequestsAndNoCost) {
  ProgressSnapshot s;
  s.elapsed_s = 2;
  s.sources_done = 1;
  s.totals_known = true;
  s.sources_total = 1;
  s.chunks_stored = 5;
  s.chunks_dead_lettered = 1;
  EXPECT_EQ(FormatProgressLine(s),
            "2s | sources 1/1 | chunks 5 stored, 1 dead | 0 chunks/s | ETA estimating");
}

TEST(ProgressTest, BuiltInPricesOnlyForModelsWithAPublishedOne) {
  EXPECT_EQ(BuiltInPricePerMillionTokens("text-embedding-3-small"), 0.02);
  EXPECT_EQ(BuiltInPricePerMillionTokens("text-embedding-3-large"), 0.13);
  EXPECT_FALSE(BuiltInPricePerMillionTokens("nomic-embed-text"));
  EXPECT_FALSE(BuiltInPricePerMillionTokens(""));
}

TEST(ProgressTest, RatesCountTheFirstIntervalWholeThenSmooth) {
  ProgressSnapshot start;
  ProgressSnapshot first;
  first.elapsed_s = 2;
  first.chunks_stored = 90;
  first.chunks_dead_lettered = 10;
  first.tokens = 4000;
  UpdateRates(start, first);
  EXPECT_DOUBLE_EQ(first.chunks_per_s, 50.0);  // 100 in 2 s, taken whole
  EXPECT_DOUBLE_EQ(first.tokens_per_s, 2000.0);
  ProgressSnapshot second = first;
  second.elapsed_s = 3;
  second.chunks_stored = 100;  // 10 more in 1 s, no more tokens
  UpdateRates(first, second);
  EXPECT_DOUBLE_EQ(second.chunks_per_s, 0.7 * 50 + 0.3 * 10);
  EXPECT_DOUBLE_EQ(second.tokens_per_s, 0.7 * 2000);
  ProgressSnapshot same_time = second;  // no time passed: the rates stay
  same_time.chunks_stored = 500;
  UpdateRates(second, same_time);
  EXPECT_DOUBLE_EQ(same_time.chunks_per_s, second.chunks_per_s);
}

TEST(ProgressReporterTest, PrintsOneLinePerSampleUntilStopped) {
  std::vector<std::string> lines;
  ProgressReporter* self = nullptr;
  int samples = 0;
  ProgressReporter reporter(
      [&] {
        if (++samples == 3) self->Stop();  // the third sample is the last line
        ProgressSnapshot s;
        s.sources_done = static_cast<uint64_t>(samples);
        return s;
      },
      [&](const std::string& line, bool terminal) {
        EXPECT_FALSE(terminal);
        lines.push_back(line);
      },
      /*terminal=*/false, std::chrono::microseconds(1));
  self = &reporter;
  reporter.Run();  // on this thread: returns once stopped
  // Three interval lines, then the final one a log always gets.
  ASSERT_EQ(lines.size(), 4u);
  EXPECT_EQ(lines[2], "0s | sources 3 | chunks 0 stored | 0 chunks/s | ETA estimating");
  EXPECT_EQ(lines[3], "0s | sources 4 | chunks 0 stored | 0 chunks/s | ETA estimating");
}

// A run shorter than one interval still leaves its final counts in a log, so
// a log never ends without saying where the run got to...
TEST(ProgressReporterTest, ALogGetsTheFinalLineEvenBeforeTheFirstInterval) {
  std::vector<std::string> lines;
  ProgressReporter reporter(
      [] {
        ProgressSnapshot s;
        s.sources_done = 7;
        return s;
      },
      [&](const std::string& line, bool) { lines.push_back(line); },
      /*terminal=*/false, std::chrono::hours(1));
  reporter.Stop();
  reporter.Run();  // returns at once: the stop is seen before any wait
  ASSERT_EQ(lines.size(), 1u);
  EXPECT_EQ(lines[0], "0s | sources 7 | chunks 0 stored | 0 chunks/s | ETA estimating");
}

// ...while a terminal line, erased at the end, is not drawn once more only to
// be replaced by the report.
TEST(ProgressReporterTest, ATerminalGetsNoFinalLine) {
  int printed = 0;
  ProgressReporter reporter([] { return ProgressSnapshot{}; },
                            [&](const std::string&, bool) { ++printed; },
                            /*terminal=*/true, std::chrono::hours(1));
  reporter.Stop();
  reporter.Run();
  EXPECT_EQ(printed, 0);
}

}  // namespace
}  // namespace sluice
