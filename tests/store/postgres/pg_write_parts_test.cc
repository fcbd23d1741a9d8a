// How the PostgreSQL store splits one write into parallel transactions
// (SplitBySource, pg_store.h): whole sources per part, so no two parts wait
// on one source's advisory lock. No server needed.
#include <gtest/gtest.h>

#include <map>
#include <set>
#include <string>
#include <vector>

#include "store/postgres/pg_store.h"

namespace sluice::pg {
namespace {

// One row per entry, its source named by the entry.
std::vector<EmbeddedChunk> RowsOf(const std::vector<std::string>& sources) {
  std::vector<EmbeddedChunk> rows(sources.size());
  for (size_t i = 0; i < sources.size(); ++i) {
    rows[i].chunk.source_id = sources[i];
    rows[i].chunk.id = "c" + std::to_string(i);
  }
  return rows;
}

std::vector<size_t> AllOf(const std::vector<EmbeddedChunk>& rows) {
  std::vector<size_t> all(rows.size());
  for (size_t i = 0; i < all.size(); ++i) all[i] = i;
  return all;
}

// Every row in exactly one part, no source in two parts, rows in order
// within each part.
void ExpectWholeSourcesInOrder(const std::vector<EmbeddedChunk>& rows,
                               const std::vector<size_t>& wanted,
                               const std::vector<std::vector<size_t>>& parts) {
  std::multiset<size_t> seen;
  std::map<std::string, size_t> part_of_source;
  for (size_t p = 0; p < parts.size(); ++p) {
    EXPECT_FALSE(parts[p].empty()) << "part " << p;
    for (size_t k = 0; k < parts[p].size(); ++k) {
      const size_t i = parts[p][k];
      seen.insert(i);
      if (k > 0) {
        EXPECT_LT(parts[p][k - 1], i) << "part " << p << " out of order";
      }
      const auto [it, inserted] = part_of_source.emplace(rows[i].chunk.source_id, p);
      EXPECT_EQ(it->second, p) << "source " << rows[i].chunk.source_id << " in two parts";
    }
  }
  EXPECT_EQ(seen, std::multiset<size_t>(wanted.begin(), wanted.end()));
}

TEST(PgWritePartsTest, AFileAcrossTheFixedCutGoesWhollyIntoOnePart) {
  // 2,000 rows of 12-chunk files in 1,000-row parts: the cut at 1,000 falls
  // inside file 83 (rows 996..1007), which fixed cuts gave to both parts.
  std::vector<std::string> sources;
  for (size_t i = 0; i < 2000; ++i) sources.push_back("f" + std::to_string(i / 12));
  const auto rows = RowsOf(sources);
  const auto all = AllOf(rows);
  const auto parts = SplitBySource(rows, all, 1000);
  ASSERT_EQ(parts.size(), 2u);
  EXPECT_EQ(parts[0].size(), 1008u);  // files 0..83
  EXPECT_EQ(parts[1].size(), 992u);
  ExpectWholeSourcesInOrder(rows, all, parts);
}

TEST(PgWritePartsTest, InterleavedSourcesStayWholeAndNoMorePartsThanFixedCuts) {
  // Two readers' files interleaved row by row, plus scattered singles.
  std::vector<std::string> sources;
  for (size_t i = 0; i < 900; ++i) {
    sources.push_back("a" + std::to_string(i / 30));
    sources.push_back("b" + std::to_string(i / 45));
    if (i % 7 == 0) sources.push_back("single" + std::to_string(i));
  }
  const auto rows = RowsOf(sources);
  const auto all = AllOf(rows);
  for (size_t per_part : {1u, 50u, 400u, 1000u, 5000u}) {
    const auto parts = SplitBySource(rows, all, per_part);
    ExpectWholeSourcesInOrder(rows, all, parts);
    EXPECT_LE(parts.size(), (rows.size() + per_part - 1) / per_part) << per_part;
  }
}

TEST(PgWritePartsTest, ASourceLargerThanAPartIsOnePartAndASubsetOfRowsIsHonoured) {
  std::vector<std::string> sources(3000, "huge.txt");
  sources.insert(sources.end(), {"x", "y", "x"});
  const auto rows = RowsOf(sources);
  // Only some rows (the write's deduplicated ones), not in index order
  // of the batch alone.
  std::vector<size_t> wanted;
  for (size_t i = 0; i < rows.size(); i += 2) wanted.push_back(i);
  const auto parts = SplitBySource(rows, wanted, 1000);
  ASSERT_EQ(parts.size(), 2u);
  EXPECT_EQ(parts[0].size(), 1500u);                       // all of huge.txt's wanted rows
  EXPECT_EQ(parts[1], (std::vector<size_t>{3000, 3002}));  // x twice; y's row not wanted
  ExpectWholeSourcesInOrder(rows, wanted, parts);
}

TEST(PgWritePartsTest, NoRowsGiveNoParts) {
  const auto rows = RowsOf({"a"});
  EXPECT_TRUE(SplitBySource(rows, {}, 10).empty());
  const std::vector<size_t> one{0};
  EXPECT_EQ(SplitBySource(rows, one, 0).size(), 1u);  // a zero part size is one row's
}

}  // namespace
}  // namespace sluice::pg
