// The cut points of a split JSONL file (sources/jsonl_ranges.h), and that
// reading its ranges one by one gives every record, and every record error,
// exactly what reading the file whole gives.
#include "sources/jsonl_ranges.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <string>
#include <vector>

#include "sluice/parser.h"
#include "sources/test_util.h"

namespace sluice {
namespace {

using testing::FileFor;
using testing::RecordingErrors;
using testing::RecordingSink;
using testing::TempDir;

JsonlRangePlan Plan(const std::string& bytes, uint64_t range_bytes, size_t feed_bytes = 7) {
  JsonlRangePlanner planner(range_bytes);
  // In small pieces, so cuts fall across Feed calls too.
  for (size_t at = 0; at < bytes.size(); at += feed_bytes) {
    planner.Feed(std::string_view(bytes).substr(at, feed_bytes));
  }
  return planner.Finish();
}

// The ranges cover [0, size) once, in order, each but the last ending just
// after a '\n', and each first_line is 1 + the newlines before it.
void ExpectCovers(const std::string& bytes, const std::vector<JsonlRange>& ranges) {
  ASSERT_FALSE(ranges.empty());
  uint64_t at = 0;
  for (size_t i = 0; i < ranges.size(); ++i) {
    const JsonlRange& r = ranges[i];
    EXPECT_EQ(r.begin, at) << i;
    EXPECT_LT(r.begin, r.end) << i;
    if (i + 1 < ranges.size()) {
      EXPECT_EQ(bytes[r.end - 1], '\n') << i;
    }
    const uint64_t newlines_before = static_cast<uint64_t>(
        std::count(bytes.begin(), bytes.begin() + static_cast<ptrdiff_t>(r.begin), '\n'));
    EXPECT_EQ(r.first_line, newlines_before + 1) << i;
    at = r.end;
  }
  EXPECT_EQ(at, bytes.size());
}

std::string Record(int i, size_t text_bytes = 20) {
  return "{\"id\":\"r" + std::to_string(i) + "\",\"text\":\"" + std::string(text_bytes, 'x') +
         "\"}";
}

TEST(JsonlRangesTest, CutsJustAfterTheFirstNewlineAtOrPastTheRangeSize) {
  std::string bytes;
  for (int i = 0; i < 10; ++i) bytes += Record(i) + "\n";  // 10 lines of 42 bytes
  ASSERT_EQ(bytes.size(), 420u);
  const JsonlRangePlan plan = Plan(bytes, 100);
  EXPECT_FALSE(plan.repeated_id);
  // 100 bytes reached inside line 3: the cut is after it (126), and so on.
  const std::vector<JsonlRange> want = {{0, 126, 1}, {126, 252, 4}, {252, 378, 7}, {378, 420, 10}};
  EXPECT_EQ(plan.ranges, want);
  ExpectCovers(bytes, plan.ranges);
  // A newline exactly at the range size ends the range there.
  EXPECT_EQ(Plan(bytes, 42).ranges.size(), 10u);
  ExpectCovers(bytes, Plan(bytes, 42).ranges);
  // Fed in one piece or in many, the same cuts.
  EXPECT_EQ(Plan(bytes, 100, bytes.size()).ranges, want);
}

TEST(JsonlRangesTest, ALineLongerThanTheRangeMakesItsRangeLonger) {
  const std::string bytes =
      Record(0) + "\n" + Record(1, 500) + "\n" + Record(2) + "\n" + Record(3) + "\n";
  const JsonlRangePlan plan = Plan(bytes, 50);
  ExpectCovers(bytes, plan.ranges);
  ASSERT_EQ(plan.ranges.size(), 2u);
  // Line 1 (42 bytes) is short of 50: the range runs on to the end of the
  // long line 2 (522 bytes); lines 3 and 4 make the last range.
  EXPECT_EQ(plan.ranges[0].end, 42u + 522u);
  EXPECT_EQ(plan.ranges[1].first_line, 3u);
}

TEST(JsonlRangesTest, AFileWithoutTrailingNewlineEndsItsLastRangeAtItsSize) {
  const std::string bytes = Record(0) + "\n" + Record(1) + "\n" + Record(2);
  const JsonlRangePlan plan = Plan(bytes, 30);
  ExpectCovers(bytes, plan.ranges);
  ASSERT_EQ(plan.ranges.size(), 3u);
  EXPECT_EQ(plan.ranges.back().end, bytes.size());
  EXPECT_EQ(plan.ranges.back().first_line, 3u);
  // No newline at all: one range, the whole file.
  const JsonlRangePlan one = Plan(Record(0, 200), 10);
  ASSERT_EQ(one.ranges.size(), 1u);
  EXPECT_EQ(one.ranges[0], (JsonlRange{0, Record(0, 200).size(), 1}));
  EXPECT_TRUE(Plan("", 10).ranges.empty());
}

TEST(JsonlRangesTest, EmptyLinesCountAsLinesAndMayStartOrEndARange) {
  const std::string bytes =
      "\n\n" + Record(0) + "\n\n\r\n" + Record(1) + "\n\n\n" + Record(2) + "\n" + "\n";
  for (uint64_t size : {1, 2, 3, 10, 37, 40, 80, 1000}) {
    const JsonlRangePlan plan = Plan(bytes, size);
    ExpectCovers(bytes, plan.ranges);
    EXPECT_FALSE(plan.repeated_id) << size;
  }
  // Range size 1: every line its own range, empty ones too.
  EXPECT_EQ(Plan(bytes, 1).ranges.size(), 10u);
}

TEST(JsonlRangesTest, ARepeatedIdAnywhereInTheFileIsReported) {
  std::string bytes;
  for (int i = 0; i < 50; ++i) bytes += Record(i) + "\n";
  EXPECT_FALSE(Plan(bytes, 100).repeated_id);
  // The same id as the first record, far away (another range), as a number
  // spelling would not match a string: "7" and 7 are the same JSONL id.
  const JsonlRangePlan repeated = Plan(bytes + Record(3) + "\n", 100);
  EXPECT_TRUE(repeated.repeated_id);
  EXPECT_EQ(repeated.repeated_example, "r3");
  EXPECT_TRUE(Plan("{\"id\":7,\"text\":\"a\"}\n{\"id\":\"7\",\"text\":\"b\"}\n", 10).repeated_id);
  // The reader's reading of a line: a BOM on line 1 and invalid UTF-8 do not
  // hide an id; a line that is not JSON or has no id claims none.
  EXPECT_TRUE(Plan("\xEF\xBB\xBF{\"id\":\"a\",\"text\":\"x\"}\n{\"id\":\"a\",\"text\":\"y\"}\n", 10)
                  .repeated_id);
  EXPECT_TRUE(
      Plan("{\"id\":\"\xFF\",\"text\":\"x\"}\n{\"id\":\"\xFE\",\"text\":\"y\"}\n", 10).repeated_id);
  EXPECT_FALSE(
      Plan("{not json \"id\":\"a\"}\n{\"id\":\"a\",\"text\":\"y\"}\n{\"text\":\"z\"}\n", 10)
          .repeated_id);
}

// Reading the ranges one after the other gives the documents and the record
// errors (with the file's own line numbers) of reading the file whole.
TEST(JsonlRangesTest, RangesReadOneByOneGiveWhatTheWholeFileGives) {
  TempDir dir;
  std::string bytes = "\xEF\xBB\xBF" + Record(0) + "\n";
  for (int i = 1; i < 40; ++i) {
    if (i % 7 == 0) bytes += "{broken\n";
    if (i % 9 == 0) bytes += "\n";
    if (i % 11 == 0) bytes += "{\"id\":\"e" + std::to_string(i) + "\",\"text\":5}\n";
    bytes += Record(i, static_cast<size_t>(10 + i * 3)) + "\r\n";
  }
  bytes += Record(99);  // no trailing newline
  const std::string path = dir.Write("data/big.jsonl", bytes);
  ParserRegistry registry;
  RegisterTextParsers(registry);
  const Parser* jsonl = registry.FindByName("jsonl");

  RecordingSink whole_docs;
  RecordingErrors whole_errors;
  ParseStats whole_stats;
  ASSERT_TRUE(
      jsonl->Parse(FileFor(path, "data/big.jsonl"), {}, whole_docs, whole_errors, whole_stats)
          .ok());
  ASSERT_EQ(whole_docs.docs.size(), 41u);
  ASSERT_EQ(whole_errors.calls.size(), 8u);

  auto plan = PlanJsonlRangesOfFile(path, 150);
  ASSERT_TRUE(plan.ok()) << plan.status().ToString();
  ASSERT_GT(plan->ranges.size(), 5u);
  ExpectCovers(bytes, plan->ranges);
  RecordingSink docs;
  RecordingErrors errors;
  ParseStats stats;
  for (const JsonlRange& r : plan->ranges) {
    SourceFile file = FileFor(path, "data/big.jsonl");
    file.range_begin = r.begin;
    file.range_end = r.end;
    file.first_line = r.first_line;
    Status s = jsonl->Parse(file, {}, docs, errors, stats);
    ASSERT_TRUE(s.ok()) << s.ToString();
  }
  ASSERT_EQ(docs.docs.size(), whole_docs.docs.size());
  for (size_t i = 0; i < docs.docs.size(); ++i) {
    EXPECT_EQ(docs.docs[i].info.source_id, whole_docs.docs[i].info.source_id);
    ASSERT_EQ(docs.docs[i].blocks.size(), whole_docs.docs[i].blocks.size());
    for (size_t b = 0; b < docs.docs[i].blocks.size(); ++b) {
      EXPECT_EQ(docs.docs[i].blocks[b].text, whole_docs.docs[i].blocks[b].text);
    }
  }
  ASSERT_EQ(errors.calls.size(), whole_errors.calls.size());
  for (size_t i = 0; i < errors.calls.size(); ++i) {
    EXPECT_EQ(errors.calls[i].first, whole_errors.calls[i].first);
    EXPECT_EQ(errors.calls[i].second.ToString(), whole_errors.calls[i].second.ToString());
  }
  EXPECT_EQ(stats.records_skipped, whole_stats.records_skipped);
}

}  // namespace
}  // namespace sluice
