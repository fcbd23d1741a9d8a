// Input defects seen through the sluice binary (issue 14): JSONL record
// identity across files and within one, and roots that are no file or folder.
#include <sys/stat.h>

#include <gtest/gtest.h>

#include "testing/sqlite_dump.h"
#include "testing/test_util.h"

namespace sluice {
namespace {

using testing::DumpSqliteRows;
using testing::ReadFile;
using testing::RunCommand;
using testing::TempDir;
using testing::WriteFile;

const std::string kSluice = SLUICE_BINARY;

std::string Common(const TempDir& dir) {
  return " --embedder hash --store sqlite:" + (dir / "s.db") + " --out " + (dir / "out") +
         " --dead-letter " + (dir / "dead.jsonl") + " --report " + (dir / "report.json") +
         " --no-progress";
}

std::string Record(const std::string& id, const std::string& text) {
  return "{\"id\":\"" + id + "\",\"text\":\"" + text + "\",\"domain\":\"d\",\"category\":\"c\"}\n";
}

size_t Count(const std::string& haystack, const std::string& needle) {
  size_t n = 0;
  for (size_t at = haystack.find(needle); at != std::string::npos;
       at = haystack.find(needle, at + 1)) {
    ++n;
  }
  return n;
}

// Defect 3: a.jsonl and b.jsonl both hold ids 1..3. Appending a record to
// a.jsonl and rerunning dropped every record of b.jsonl from the aggregate
// (chunk_count 4) while the store held 7 and the run said OK.
TEST(SourcesE2eTest, JsonlIdsRepeatedAcrossFilesKeepEveryRecord) {
  TempDir dir;
  std::string a, b;
  for (const char* id : {"1", "2", "3"}) {
    a += Record(id, std::string("alpha record ") + id);
    b += Record(id, std::string("beta record ") + id);
  }
  WriteFile(dir / "corpus/a.jsonl", a);
  WriteFile(dir / "corpus/b.jsonl", b);
  auto r = RunCommand(kSluice + " ingest " + (dir / "corpus") + Common(dir));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  std::string aggregate = ReadFile(dir / "out/d/c.json");
  EXPECT_NE(aggregate.find("\"chunk_count\":6"), std::string::npos) << aggregate;

  WriteFile(dir / "corpus/a.jsonl", a + Record("4", "alpha record 4"));
  r = RunCommand(kSluice + " ingest " + (dir / "corpus") + Common(dir));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  aggregate = ReadFile(dir / "out/d/c.json");
  EXPECT_NE(aggregate.find("\"chunk_count\":7"), std::string::npos) << aggregate;
  EXPECT_EQ(Count(aggregate, "beta record"), 3u) << aggregate;
  EXPECT_EQ(Count(aggregate, "alpha record"), 4u) << aggregate;
  EXPECT_NE(aggregate.find("\"source_id\":\"b.jsonl#1\""), std::string::npos) << aggregate;
  const auto rows = DumpSqliteRows(dir / "s.db", {"SELECT source_id FROM chunks"});
  EXPECT_EQ(rows, (std::vector<std::string>{"a.jsonl#1|", "a.jsonl#2|", "a.jsonl#3|", "a.jsonl#4|",
                                            "b.jsonl#1|", "b.jsonl#2|", "b.jsonl#3|"}));
  r = RunCommand(kSluice + " verify --store sqlite:" + (dir / "s.db") + " " + (dir / "corpus"));
  EXPECT_EQ(r.exit_code, 0) << r.output;
}

// Three records with one id in one file were all kept with ordinal 0, one
// overwriting the other, without a word. The repeats are dead-lettered with
// their line and the first one's; the first record is stored.
TEST(SourcesE2eTest, RepeatedIdInOneFileIsDeadLetteredNamingBothLines) {
  TempDir dir;
  WriteFile(dir / "corpus/dup.jsonl",
            Record("7", "first seven") + Record("7", "second seven") + Record("7", "third seven"));
  auto r = RunCommand(kSluice + " ingest " + (dir / "corpus") + Common(dir));
  EXPECT_EQ(r.exit_code, 3) << r.output;  // something was dead-lettered
  const std::string dead = ReadFile(dir / "dead.jsonl");
  EXPECT_NE(dead.find("line 2: duplicate id \\\"7\\\" (first on line 1)"), std::string::npos)
      << dead;
  EXPECT_NE(dead.find("line 3: duplicate id \\\"7\\\" (first on line 1)"), std::string::npos)
      << dead;
  const auto rows = DumpSqliteRows(dir / "s.db", {"SELECT source_id, text FROM chunks"});
  EXPECT_EQ(rows, (std::vector<std::string>{"dup.jsonl#7|first seven|"}));
}

// Defect 10: a FIFO (or a device) given as a root was ignored with exit 0.
// It is refused like a missing root: exit 1, a message naming it, no work.
TEST(SourcesE2eTest, FifoOrDeviceRootFailsLikeAMissingRoot) {
  TempDir dir;
  const std::string fifo = dir / "pipe";
  ASSERT_EQ(::mkfifo(fifo.c_str(), 0600), 0);
  auto missing = RunCommand(kSluice + " ingest " + (dir / "nope") + Common(dir));
  EXPECT_EQ(missing.exit_code, 1) << missing.output;
  EXPECT_NE(missing.output.find("does not exist"), std::string::npos) << missing.output;

  auto r = RunCommand(kSluice + " ingest " + fifo + Common(dir));
  EXPECT_EQ(r.exit_code, missing.exit_code) << r.output;
  EXPECT_NE(r.output.find("input '" + fifo + "' is a FIFO"), std::string::npos) << r.output;

  r = RunCommand(kSluice + " ingest /dev/null" + Common(dir));
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_NE(r.output.find("input '/dev/null' is a character device"), std::string::npos)
      << r.output;
}

}  // namespace
}  // namespace sluice
