// The completion hand-off through the real binary: `sluice ingest
// --on-complete` runs the hook once with the run's outcome in its
// environment (after a clean run and after a failed one), `--on-complete-url`
// POSTs the report to a real receiver on loopback, a failing hook is
// reported but changes neither the exit status nor the data, and no secret
// reaches the hook or the posted report.
#include <gtest/gtest.h>
#include <simdjson.h>

#include <map>

#include "testing/sqlite_query.h"
#include "testing/test_util.h"
#include "testing/webhook_receiver.h"

namespace sluice {
namespace {

using testing::ReadFile;
using testing::RunCommand;
using testing::TempDir;
using testing::WebhookReceiver;
using testing::WriteFile;

const std::string kSluice = SLUICE_BINARY;

void MakeCorpus(const TempDir& dir) {
  WriteFile(dir / "corpus/ops/gates.md",
            "# Gates\n\nOpen the gate slowly. Check the seal before the flood season.\n\n"
            "## Seals\n\nA worn seal leaks. Replace it with the spare from the store room.\n");
  WriteFile(dir / "corpus/ops/pumps.txt", "Pumps are started in sequence.\n\nNever run dry.\n");
  WriteFile(dir / "corpus/hr/leave.md", testing::Paragraphs(6, "leave"));
}

// A hook that appends one line per run to count.txt and writes its
// environment to env.txt (its arguments name the files: no shell involved).
void WriteHook(const TempDir& dir) {
  WriteFile(dir / "hook.sh", "#!/bin/sh\nenv > \"$1\"\necho ran >> \"$2\"\n");
  ::chmod((dir / "hook.sh").c_str(), 0755);
}

std::string HashIngest(const TempDir& dir) {
  return kSluice + " ingest " + (dir / "corpus") +
         " --embedder hash --store sqlite:" + (dir / "s.db") + " --out " + (dir / "out") +
         " --report " + (dir / "report.json") + " --no-progress";
}

std::map<std::string, std::string> ParseEnv(const std::string& text) {
  std::map<std::string, std::string> env;
  size_t start = 0;
  while (start < text.size()) {
    size_t end = text.find('\n', start);
    if (end == std::string::npos) end = text.size();
    const std::string line = text.substr(start, end - start);
    if (const size_t eq = line.find('='); eq != std::string::npos) {
      env[line.substr(0, eq)] = line.substr(eq + 1);
    }
    start = end + 1;
  }
  return env;
}

struct Report {
  std::string text;
  simdjson::dom::parser parser;
  simdjson::dom::element doc;
  explicit Report(const std::string& path) : text(ReadFile(path)) {
    EXPECT_EQ(parser.parse(text).get(doc), simdjson::SUCCESS) << text;
  }
  uint64_t Uint(const char* pointer) {
    uint64_t v = 0;
    EXPECT_EQ(doc.at_pointer(pointer).get(v), simdjson::SUCCESS) << pointer << " in " << text;
    return v;
  }
  int64_t Int(const char* pointer) {
    int64_t v = 0;
    EXPECT_EQ(doc.at_pointer(pointer).get(v), simdjson::SUCCESS) << pointer << " in " << text;
    return v;
  }
  bool Bool(const char* pointer) {
    bool v = false;
    EXPECT_EQ(doc.at_pointer(pointer).get(v), simdjson::SUCCESS) << pointer << " in " << text;
    return v;
  }
  std::string String(const char* pointer) {
    std::string_view v;
    EXPECT_EQ(doc.at_pointer(pointer).get(v), simdjson::SUCCESS) << pointer << " in " << text;
    return std::string(v);
  }
};

TEST(HandoffE2ETest, HookRunsOnceAfterTheRunWithItsOutcomeAndNoSecrets) {
  TempDir dir;
  MakeCorpus(dir);
  WriteHook(dir);
  const auto r =
      RunCommand("OPENAI_API_KEY=sk-e2e-secret-1 MY_KEY=sk-e2e-secret-2 " + HashIngest(dir) +
                 " --api-key-env MY_KEY --on-complete '" + (dir / "hook.sh") + " " +
                 (dir / "env.txt") + " " + (dir / "count.txt") + "'");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_EQ(ReadFile(dir / "count.txt"), "ran\n");  // exactly once

  const std::string env_text = ReadFile(dir / "env.txt");
  EXPECT_EQ(env_text.find("sk-e2e-secret"), std::string::npos);
  auto env = ParseEnv(env_text);
  Report report(dir / "report.json");
  EXPECT_EQ(env["SLUICE_REPORT"], dir / "report.json");
  EXPECT_EQ(env["SLUICE_AGGREGATE_DIR"], dir / "out");
  EXPECT_EQ(env["SLUICE_EXIT_STATUS"], "0");
  EXPECT_EQ(env["SLUICE_STATUS"], "ok");
  EXPECT_EQ(env["SLUICE_SOURCES_OK"], "3");
  const uint64_t stored = report.Uint("/chunks_stored");
  EXPECT_GT(stored, 0u);
  EXPECT_EQ(env["SLUICE_CHUNKS_STORED"], std::to_string(stored));
  EXPECT_EQ(env["SLUICE_CHUNKS_PRODUCED"], std::to_string(report.Uint("/chunks_produced")));
  EXPECT_EQ(env["SLUICE_CHUNKS_DEAD_LETTERED"], "0");
  EXPECT_EQ(static_cast<uint64_t>(testing::StoredChunkCount(dir / "s.db")), stored);

  // The report was rewritten with the hook's outcome.
  EXPECT_TRUE(report.Bool("/handoff/command/ok"));
  EXPECT_EQ(report.Int("/handoff/command/exit_status"), 0);
  EXPECT_FALSE(report.Bool("/handoff/command/timed_out"));
}

TEST(HandoffE2ETest, HookRunsAfterAFailedRunWithTheFailureStatus) {
  TempDir dir;
  MakeCorpus(dir);
  WriteHook(dir);
  std::string closed_url;
  {
    WebhookReceiver gone;  // its port is closed once it is destroyed
    closed_url = gone.url();
  }
  closed_url = closed_url.substr(0, closed_url.rfind('/')) + "/v1";
  const auto r =
      RunCommand(kSluice + " ingest " + (dir / "corpus") + " --embedder http --endpoint " +
                 closed_url + " --model m --max-attempts 1 --store sqlite:" + (dir / "s.db") +
                 " --out " + (dir / "out") + " --no-progress --on-complete '" + (dir / "hook.sh") +
                 " " + (dir / "env.txt") + " " + (dir / "count.txt") + "'");
  ASSERT_EQ(r.exit_code, 1) << r.output;
  EXPECT_EQ(ReadFile(dir / "count.txt"), "ran\n");
  auto env = ParseEnv(ReadFile(dir / "env.txt"));
  EXPECT_EQ(env["SLUICE_EXIT_STATUS"], "1");
  EXPECT_EQ(env["SLUICE_STATUS"], "unavailable");
  EXPECT_EQ(env["SLUICE_CHUNKS_STORED"], "0");
  // Without --report, the hand-off's report goes to OUT/.report.json.
  EXPECT_EQ(env["SLUICE_REPORT"], dir / "out/.report.json");
  Report report(dir / "out/.report.json");
  EXPECT_EQ(report.String("/status"), "unavailable");
  EXPECT_TRUE(report.Bool("/handoff/command/ok"));
}

TEST(HandoffE2ETest, AFailingHookIsReportedAndTheDataAndExitStatusStayTheIngests) {
  TempDir dir;
  MakeCorpus(dir);
  const auto r =
      RunCommand(HashIngest(dir) + " --on-complete \"sh -c 'echo the hook failed; exit 3'\"");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("on-complete: the command failed: exited with status 3"),
            std::string::npos)
      << r.output;
  Report report(dir / "report.json");
  EXPECT_EQ(report.String("/status"), "ok");
  EXPECT_FALSE(report.Bool("/handoff/command/ok"));
  EXPECT_EQ(report.Int("/handoff/command/exit_status"), 3);
  EXPECT_EQ(report.String("/handoff/command/output_tail"), "the hook failed\n");
  EXPECT_TRUE(report.Bool("/reconciled"));
  EXPECT_EQ(static_cast<uint64_t>(testing::StoredChunkCount(dir / "s.db")),
            report.Uint("/chunks_stored"));
  EXPECT_EQ(report.Uint("/chunks_stored"), report.Uint("/chunks_produced"));
}

TEST(HandoffE2ETest, AHangingHookIsKilledAtItsTimeout) {
  TempDir dir;
  MakeCorpus(dir);
  const auto r = RunCommand(HashIngest(dir) +
                            " --on-complete-shell --on-complete 'echo waiting; sleep 600'"
                            " --on-complete-timeout 0.5");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  Report report(dir / "report.json");
  EXPECT_TRUE(report.Bool("/handoff/command/timed_out"));
  EXPECT_FALSE(report.Bool("/handoff/command/ok"));
  EXPECT_EQ(report.String("/handoff/command/output_tail"), "waiting\n");
  EXPECT_EQ(static_cast<uint64_t>(testing::StoredChunkCount(dir / "s.db")),
            report.Uint("/chunks_stored"));
}

TEST(HandoffE2ETest, ShellHookSeesTheVariables) {
  TempDir dir;
  MakeCorpus(dir);
  const auto r =
      RunCommand(HashIngest(dir) +
                 " --on-complete-shell --on-complete 'echo \"stored=$SLUICE_CHUNKS_STORED"
                 " status=$SLUICE_STATUS\" > " +
                 (dir / "shell.txt") + "'");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  Report report(dir / "report.json");
  EXPECT_EQ(ReadFile(dir / "shell.txt"),
            "stored=" + std::to_string(report.Uint("/chunks_stored")) + " status=ok\n");
}

TEST(HandoffE2ETest, WebhookReceivesTheReportJsonWithoutSecrets) {
  TempDir dir;
  MakeCorpus(dir);
  WebhookReceiver receiver({503});  // one retry first
  const auto r =
      RunCommand("MY_KEY=sk-e2e-secret-3 " + HashIngest(dir) +
                 " --api-key-env MY_KEY --on-complete 'true' --on-complete-url " + receiver.url());
  ASSERT_EQ(r.exit_code, 0) << r.output;
  const auto bodies = receiver.WaitForPosts(2);
  ASSERT_EQ(bodies.size(), 2u);
  EXPECT_EQ(bodies[0], bodies[1]);
  EXPECT_EQ(bodies[1].find("sk-e2e-secret-3"), std::string::npos);
  simdjson::dom::parser parser;
  simdjson::dom::element posted;
  ASSERT_EQ(parser.parse(bodies[1]).get(posted), simdjson::SUCCESS) << bodies[1];
  Report report(dir / "report.json");
  uint64_t posted_stored = 0;
  ASSERT_EQ(posted["chunks_stored"].get(posted_stored), simdjson::SUCCESS);
  EXPECT_EQ(posted_stored, report.Uint("/chunks_stored"));
  // The POST carries the command's outcome; the file has the POST's too.
  bool command_ok = false;
  ASSERT_EQ(posted.at_pointer("/handoff/command/ok").get(command_ok), simdjson::SUCCESS);
  EXPECT_TRUE(command_ok);
  EXPECT_TRUE(report.Bool("/handoff/webhook/ok"));
  EXPECT_EQ(report.Int("/handoff/webhook/http_status"), 200);
  EXPECT_EQ(report.Int("/handoff/webhook/attempts"), 2);
  EXPECT_EQ(report.text.find(receiver.url()), std::string::npos);
}

TEST(HandoffE2ETest, HandoffKeysAreAcceptedFromTheConfigFile) {
  TempDir dir;
  MakeCorpus(dir);
  WriteHook(dir);
  WriteFile(dir / "sluice.toml", "on-complete = \"" + (dir / "hook.sh") + " " + (dir / "env.txt") +
                                     " " + (dir / "count.txt") + "\"\non-complete-timeout = 30\n");
  const auto r = RunCommand(HashIngest(dir) + " --config " + (dir / "sluice.toml"));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_EQ(ReadFile(dir / "count.txt"), "ran\n");
}

TEST(HandoffE2ETest, BadHandoffFlagsAreUsageErrorsBeforeAnyWork) {
  TempDir dir;
  MakeCorpus(dir);
  auto r = RunCommand(HashIngest(dir) + " --on-complete \"echo 'unterminated\"");
  EXPECT_EQ(r.exit_code, 2) << r.output;
  EXPECT_NE(r.output.find("unterminated single quote"), std::string::npos) << r.output;
  r = RunCommand(HashIngest(dir) + " --on-complete-url ftp://example.invalid/x");
  EXPECT_EQ(r.exit_code, 2) << r.output;
  EXPECT_NE(r.output.find("http:// or https://"), std::string::npos) << r.output;
  EXPECT_FALSE(std::filesystem::exists(dir / "s.db"));
  r = RunCommand(kSluice + " ingest --help");
  for (const char* flag :
       {"--on-complete", "--on-complete-shell", "--on-complete-timeout", "--on-complete-url"}) {
    EXPECT_NE(r.output.find(flag), std::string::npos) << flag;
  }
}

}  // namespace
}  // namespace sluice
