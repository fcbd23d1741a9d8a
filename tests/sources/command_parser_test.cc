#include <unistd.h>

#include <chrono>
#include <filesystem>

#include "sluice/sources.h"
#include "sources/test_util.h"

namespace sluice {
namespace {

using namespace std::chrono_literals;
using testing::FileFor;
using testing::RecordingErrors;
using testing::RecordingSink;
using testing::TempDir;

struct Run {
  Status status;
  RecordingSink sink;
  RecordingErrors errors;
  ParseStats stats;
};

std::unique_ptr<Run> RunCommand(const std::string& command, const std::string& path,
                                Duration timeout = std::chrono::seconds(10)) {
  auto parser = MakeCommandParser(command, timeout);
  auto run = std::make_unique<Run>();
  run->status = parser->Parse(FileFor(path, "in/file.bin"), {}, run->sink, run->errors, run->stats);
  return run;
}

TEST(CommandParserTest, RecordsFromStdout) {
  auto run = RunCommand(
      R"(printf '{"id":"a","text":"hello"}\n{"id":"b","text":"world","domain":"ops"}\nnot json\n')",
      "/dev/null");
  ASSERT_TRUE(run->status.ok()) << run->status.ToString();
  ASSERT_EQ(run->sink.docs.size(), 2u);
  EXPECT_EQ(run->sink.docs[0].info.source_id, "in/file.bin#a");  // the file is part of it
  EXPECT_EQ(run->sink.docs[0].info.domain, "dom");               // default from the SourceFile
  EXPECT_EQ(run->sink.docs[0].info.category, "cat");
  ASSERT_EQ(run->sink.docs[0].blocks.size(), 1u);
  EXPECT_EQ(run->sink.docs[0].blocks[0].text, "hello");
  EXPECT_EQ(run->sink.docs[1].info.domain, "ops");
  ASSERT_EQ(run->errors.calls.size(), 1u);  // the malformed line
  EXPECT_EQ(run->errors.calls[0].first, "in/file.bin:3");
  EXPECT_EQ(run->stats.records_skipped, 1u);
  EXPECT_EQ(MakeCommandParser("true", 1s)->Name(), "command");
}

TEST(CommandParserTest, PathIsAnArgumentNeverShellText) {
  TempDir dir;
  const std::string marker = dir.path() + "/PWNED";
  const std::string name = "a b $(touch " + marker + ") `touch " + marker + "`;.jsonl";
  const std::string path = dir.Write(name, "{\"id\":\"x\",\"text\":\"from file\"}\n");
  auto run = RunCommand("cat \"$1\"", path);
  ASSERT_TRUE(run->status.ok()) << run->status.ToString();
  ASSERT_EQ(run->sink.docs.size(), 1u);
  EXPECT_EQ(run->sink.docs[0].blocks[0].text, "from file");
  EXPECT_FALSE(std::filesystem::exists(marker));
}

TEST(CommandParserTest, InheritsNoDescriptorsBeyondStdio) {
  const int leaked = dup(STDOUT_FILENO);  // without O_CLOEXEC
  ASSERT_GE(leaked, 3);
  auto run = RunCommand("test -e /proc/self/fd/" + std::to_string(leaked) +
                            " && exit 9; echo '{\"id\":\"ok\",\"text\":\"t\"}'",
                        "/dev/null");
  close(leaked);
  EXPECT_TRUE(run->status.ok()) << run->status.ToString();
  EXPECT_EQ(run->sink.docs.size(), 1u);
}

TEST(CommandParserTest, NonZeroExitFailsWithCodeAndStderrTail) {
  auto run = RunCommand("echo 'first'; echo 'cannot parse this file' >&2; exit 3", "/dev/null");
  ASSERT_FALSE(run->status.ok());
  EXPECT_EQ(run->status.code(), StatusCode::kCorrupt);
  EXPECT_NE(run->status.message().find("exited with code 3"), std::string::npos)
      << run->status.message();
  EXPECT_NE(run->status.message().find("cannot parse this file"), std::string::npos);
}

TEST(CommandParserTest, StderrKeptBounded) {
  auto run =
      RunCommand("head -c 100000 /dev/zero | tr '\\0' 'e' >&2; echo END >&2; exit 1", "/dev/null");
  ASSERT_FALSE(run->status.ok());
  EXPECT_LT(run->status.message().size(), 5000u);
  EXPECT_NE(run->status.message().find("END"), std::string::npos);
}

TEST(CommandParserTest, TimeoutKillsTheCommand) {
  const auto start = std::chrono::steady_clock::now();
  auto run = RunCommand("echo '{\"id\":\"early\",\"text\":\"t\"}'; sleep 30", "/dev/null", 300ms);
  const auto took = std::chrono::steady_clock::now() - start;
  EXPECT_EQ(run->status.code(), StatusCode::kTimeout) << run->status.ToString();
  EXPECT_NE(run->status.message().find("300 ms"), std::string::npos);
  EXPECT_LT(took, 5s);
  ASSERT_EQ(run->sink.docs.size(), 1u);  // records read before the timeout stay
}

TEST(CommandParserTest, TimeoutAlsoCoversBackgroundChildrenHoldingThePipe) {
  const auto start = std::chrono::steady_clock::now();
  auto run = RunCommand("(sleep 30) & exit 0", "/dev/null", 300ms);
  EXPECT_EQ(run->status.code(), StatusCode::kTimeout);
  EXPECT_LT(std::chrono::steady_clock::now() - start, 5s);
}

}  // namespace
}  // namespace sluice
