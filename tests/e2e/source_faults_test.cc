// Fault matrix rows that need the real binary (issue 14): the disk filling
// up under the store, and a source changed or deleted while it is read. Each
// checks its outcome, then that a plain rerun leaves a store identical (ids,
// texts, vectors) to a clean run over the final corpus.
//
// The disk fills through RLIMIT_FSIZE (`ulimit -f`, SIGXFSZ ignored), so a
// write past the limit fails with EFBIG exactly as a full disk fails one with
// ENOSPC, without mounting anything. A change "while read" is made by the
// --parser-cmd child, which edits or deletes its own source at a known point
// of the read: deterministic, unlike racing a writer against a parser thread.
#include <gtest/gtest.h>

#include <filesystem>
#include <string>

#include "testing/sqlite_dump.h"
#include "testing/test_util.h"

namespace sluice {
namespace {

using testing::ReadFile;
using testing::ReadStoredChunks;
using testing::RunCommand;
using testing::TempDir;
using testing::WriteFile;

const std::string kSluice = SLUICE_BINARY;

std::string Common(const TempDir& dir, const std::string& name) {
  return " --embedder hash --store sqlite:" + (dir / (name + ".db")) + " --out " +
         (dir / (name + "-out")) + " --dead-letter " + (dir / (name + "-dead.jsonl")) +
         " --report " + (dir / (name + "-report.json")) + " --no-progress --readers 1";
}

// Prints the file as one JSONL record (the texts here are letters, digits
// and spaces: nothing to escape). `before` and `after` are shell lines run
// around the read, with the source's path in "$1". A script file, so no
// quoting of the command line is involved.
std::string ParserCmd(const TempDir& dir, const std::string& before = "",
                      const std::string& after = "") {
  static int scripts = 0;
  const std::string script = dir / ("parse" + std::to_string(++scripts) + ".sh");
  WriteFile(script, before + "\n" + R"(t=$(cat "$1"); printf '{"id":"r","text":"%s"}\n' "$t")" +
                        "\n" + after + "\n");
  return " --parser-cmd 'sh " + script + " \"$1\"'";
}

void MakeCorpus(const std::string& root, int files) {
  for (int f = 0; f < files; ++f) {
    std::string text;
    for (int w = 0; w < 120; ++w) text += "word" + std::to_string(w * 7 + f) + " ";
    WriteFile(root + "/m" + std::to_string(10 + f) + ".txt",
              text + "end of file " + std::to_string(f));
  }
}

// A clean run over a copy of `corpus` as it is now: the store to compare with.
std::map<std::string, testing::StoredChunk> CleanRun(const TempDir& dir, const std::string& corpus,
                                                     const std::string& extra = "") {
  std::filesystem::remove_all(dir / "final");
  std::filesystem::copy(corpus, dir / "final", std::filesystem::copy_options::recursive);
  auto r = RunCommand(kSluice + " ingest " + (dir / "final") + Common(dir, "clean") + extra);
  EXPECT_EQ(r.exit_code, 0) << r.output;
  return ReadStoredChunks(dir / "clean.db");
}

TEST(SourceFaultsTest, DiskFillingUpFailsTheRunAndAPlainRerunCompletesIt) {
  TempDir dir;
  const std::string corpus = dir / "corpus";
  for (int f = 0; f < 24; ++f) {
    WriteFile(corpus + "/f" + std::to_string(f) + ".md", testing::Paragraphs(40, "pump", f * 40));
  }
  // At most 400 KiB per file written (popen's sh is dash: 512-byte blocks),
  // about a third of the store this corpus makes.
  const std::string ingest = kSluice + " ingest " + corpus + Common(dir, "store");
  auto full = RunCommand("trap '' XFSZ; ulimit -f 800; exec " + ingest);
  EXPECT_EQ(full.exit_code, 1) << full.output;  // fatal, said in one line
  EXPECT_NE(full.output.find("error: store sqlite:"), std::string::npos) << full.output;
  // Nothing here is the input's fault: abandoned for the next run, not
  // dead-lettered (they were, as "io_error", before).
  EXPECT_FALSE(std::filesystem::exists(dir / "store-dead.jsonl"))
      << ReadFile(dir / "store-dead.jsonl");
  const std::string report = ReadFile(dir / "store-report.json");
  EXPECT_NE(report.find("\"chunks_dead_lettered\":0"), std::string::npos) << report;
  EXPECT_EQ(report.find("\"chunks_abandoned\":0"), std::string::npos) << report;

  auto rerun = RunCommand(ingest);
  ASSERT_EQ(rerun.exit_code, 0) << rerun.output;
  const auto want = CleanRun(dir, corpus);
  ASSERT_GT(want.size(), 100u);
  EXPECT_TRUE(ReadStoredChunks(dir / "store.db") == want);
}

TEST(SourceFaultsTest, SourceChangedWhileReadIsReadAgainByAPlainRerun) {
  for (const bool change_before_read : {false, true}) {
    SCOPED_TRACE(change_before_read ? "changed after hashing, before parsing"
                                    : "changed after parsing, before commit");
    TempDir dir;
    const std::string corpus = dir / "corpus";
    MakeCorpus(corpus, 3);
    const std::string append = R"(printf " appended" >> "$1")";
    auto first =
        RunCommand(kSluice + " ingest " + corpus + Common(dir, "store") +
                   (change_before_read ? ParserCmd(dir, append, "") : ParserCmd(dir, "", append)));
    ASSERT_EQ(first.exit_code, 0) << first.output;

    auto rerun = RunCommand(kSluice + " ingest " + corpus + Common(dir, "store") + ParserCmd(dir));
    ASSERT_EQ(rerun.exit_code, 0) << rerun.output;
    // Every file changed after its fingerprint's hash was taken: all three
    // are read again, none is taken as unchanged.
    EXPECT_NE(ReadFile(dir / "store-report.json").find("\"sources_unchanged\":0"),
              std::string::npos)
        << ReadFile(dir / "store-report.json");
    const auto want = CleanRun(dir, corpus, ParserCmd(dir));
    ASSERT_EQ(want.size(), 3u);
    for (const auto& [id, row] : want) EXPECT_NE(row.text.find(" appended"), std::string::npos);
    EXPECT_TRUE(ReadStoredChunks(dir / "store.db") == want);
  }
}

TEST(SourceFaultsTest, SourceDeletedWhileReadOrBeforeItsTurn) {
  TempDir dir;
  const std::string corpus = dir / "corpus";
  MakeCorpus(corpus, 3);  // m10.txt, m11.txt, m12.txt, read in that order (--readers 1)
  // Reading m10 deletes m10 itself (after its read) and m12 (before its turn).
  const std::string remove =
      R"(case "$1" in */m10.txt) rm -f "$1" "$(dirname "$1")/m12.txt";; esac)";
  auto first =
      RunCommand(kSluice + " ingest " + corpus + Common(dir, "store") + ParserCmd(dir, "", remove));
  // A file gone before its turn is skipped with a warning: not a dead letter.
  ASSERT_EQ(first.exit_code, 0) << first.output;
  EXPECT_NE(first.output.find("was deleted since the scan"), std::string::npos) << first.output;
  EXPECT_FALSE(std::filesystem::exists(dir / "store-dead.jsonl"));
  const std::string report = ReadFile(dir / "store-report.json");
  EXPECT_NE(report.find("\"deleted since the scan\":1"), std::string::npos) << report;
  // m10 was read whole before it went: its chunk is stored.
  EXPECT_EQ(ReadStoredChunks(dir / "store.db").size(), 2u);

  // The default incremental rerun keeps a deleted file's chunks (docs/RESUME.md);
  // `--cleanup full` removes them: the store is then a clean run's.
  auto rerun = RunCommand(kSluice + " ingest " + corpus + Common(dir, "store") + ParserCmd(dir) +
                          " --cleanup full");
  ASSERT_EQ(rerun.exit_code, 0) << rerun.output;
  const auto want = CleanRun(dir, corpus, ParserCmd(dir));
  ASSERT_EQ(want.size(), 1u);  // m11 only
  EXPECT_TRUE(ReadStoredChunks(dir / "store.db") == want);
}

}  // namespace
}  // namespace sluice
