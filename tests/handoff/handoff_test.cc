// The completion hand-off on its own: argv splitting, a real child process
// (its environment, exit status, output tail, timeout, a missing program)
// and the POST against a real HTTP receiver on loopback (retries on 5xx, no
// retry on 4xx, an unreachable receiver), waits on a ManualClock.
#include "sluice/handoff.h"

#include <gtest/gtest.h>
#include <signal.h>
#include <stdlib.h>

#include <map>

#include "testing/test_util.h"
#include "testing/webhook_receiver.h"

namespace sluice {
namespace {

using testing::ReadFile;
using testing::TempDir;
using testing::WebhookReceiver;

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

HandoffRun SampleRun() {
  HandoffRun run;
  run.report_path = "/tmp/report.json";
  run.report_json = "{\"status\":\"ok\",\"chunks_stored\":7}\n";
  run.aggregate_dir = "/tmp/out";
  run.dead_letter_path = "/tmp/out/.dead-letter.jsonl";
  run.exit_status = 3;
  run.status = "ok";
  run.sources_ok = 2;
  run.chunks_produced = 9;
  run.chunks_stored = 7;
  run.chunks_dead_lettered = 2;
  return run;
}

TEST(SplitCommandLineTest, SplitsOnWhitespaceAndHonoursQuotes) {
  auto argv = SplitCommandLine("  notify --to 'ops team'  \"a \\\"b\\\"\" c\\ d '' ");
  ASSERT_TRUE(argv.ok()) << argv.status().ToString();
  EXPECT_EQ(*argv, (std::vector<std::string>{"notify", "--to", "ops team", "a \"b\"", "c d", ""}));
  // Nothing is expanded: no shell.
  argv = SplitCommandLine("echo $HOME * ;");
  ASSERT_TRUE(argv.ok());
  EXPECT_EQ(*argv, (std::vector<std::string>{"echo", "$HOME", "*", ";"}));
}

TEST(SplitCommandLineTest, RejectsUnterminatedQuotesAndEmptyLines) {
  EXPECT_EQ(SplitCommandLine("echo 'open").status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(SplitCommandLine("echo \"open").status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(SplitCommandLine("echo \\").status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(SplitCommandLine("   ").status().code(), StatusCode::kInvalidArgument);
}

TEST(CompletionCommandTest, NoCommandDoesNothing) {
  const CommandOutcome out = RunCompletionCommand(HandoffOptions{}, SampleRun());
  EXPECT_FALSE(out.ran);
}

TEST(CompletionCommandTest, GetsTheRunInItsEnvironmentWithoutSecrets) {
  TempDir dir;
  ::setenv("SLUICE_TEST_API_KEY_VAR", "sk-secret-value-1", 1);
  ::setenv("SLUICE_TEST_INNOCENT", "holds sk-secret-value-1 inside", 1);
  ::setenv("SLUICE_TEST_KEPT", "kept", 1);
  ::setenv("SLUICE_STATUS", "stale value from the caller", 1);
  HandoffOptions options;
  options.command = {"/bin/sh", "-c", "env > \"$0\"", dir / "env.txt"};
  options.secret_env_names = {"SLUICE_TEST_API_KEY_VAR"};
  options.secret_env_values = {"sk-secret-value-1"};
  const CommandOutcome out = RunCompletionCommand(options, SampleRun());
  ::unsetenv("SLUICE_TEST_API_KEY_VAR");
  ::unsetenv("SLUICE_TEST_INNOCENT");
  ::unsetenv("SLUICE_TEST_KEPT");
  ::unsetenv("SLUICE_STATUS");
  ASSERT_TRUE(out.ok()) << out.error;
  const std::string text = ReadFile(dir / "env.txt");
  EXPECT_EQ(text.find("sk-secret-value-1"), std::string::npos);
  auto env = ParseEnv(text);
  EXPECT_EQ(env["SLUICE_REPORT"], "/tmp/report.json");
  EXPECT_EQ(env["SLUICE_AGGREGATE_DIR"], "/tmp/out");
  EXPECT_EQ(env["SLUICE_DEAD_LETTER"], "/tmp/out/.dead-letter.jsonl");
  EXPECT_EQ(env["SLUICE_EXIT_STATUS"], "3");
  EXPECT_EQ(env["SLUICE_STATUS"], "ok");
  EXPECT_EQ(env["SLUICE_SOURCES_OK"], "2");
  EXPECT_EQ(env["SLUICE_CHUNKS_PRODUCED"], "9");
  EXPECT_EQ(env["SLUICE_CHUNKS_STORED"], "7");
  EXPECT_EQ(env["SLUICE_CHUNKS_DEAD_LETTERED"], "2");
  EXPECT_EQ(env["SLUICE_CHUNKS_ABANDONED"], "0");
  EXPECT_EQ(env["SLUICE_TEST_KEPT"], "kept");
  EXPECT_EQ(env.count("SLUICE_TEST_API_KEY_VAR"), 0u);
  EXPECT_EQ(env.count("SLUICE_TEST_INNOCENT"), 0u);
}

TEST(CompletionCommandTest, ReportsAFailingExitStatusAndTheTailOfItsOutput) {
  HandoffOptions options;
  options.command = {"/bin/sh", "-c",
                     "i=0; while [ $i -lt 2000 ]; do echo line $i; i=$((i+1)); done; "
                     "echo to stderr >&2; exit 3"};
  options.output_tail_bytes = 64;
  const CommandOutcome out = RunCompletionCommand(options, SampleRun());
  EXPECT_TRUE(out.started);
  EXPECT_FALSE(out.ok());
  EXPECT_EQ(out.exit_status, 3);
  EXPECT_FALSE(out.timed_out);
  EXPECT_LE(out.output_tail.size(), 64u);
  EXPECT_NE(out.output_tail.find("line 1999\nto stderr\n"), std::string::npos) << out.output_tail;
  EXPECT_EQ(out.output_tail.find("line 0\n"), std::string::npos);
  EXPECT_EQ(out.error, "exited with status 3");
}

TEST(CompletionCommandTest, AHangingCommandAndItsChildrenAreKilledAtTheTimeout) {
  TempDir dir;
  HandoffOptions options;
  options.use_shell = true;
  // A child in the background keeps the output pipe open too; both die.
  options.command = {"echo started; sleep 600 & sleep 600"};
  options.command_timeout = std::chrono::milliseconds(300);
  const CommandOutcome out = RunCompletionCommand(options, SampleRun());
  EXPECT_TRUE(out.started);
  EXPECT_TRUE(out.timed_out);
  EXPECT_FALSE(out.ok());
  EXPECT_EQ(out.signal, SIGKILL);
  EXPECT_LT(out.elapsed_s, 60);
  EXPECT_NE(out.error.find("timed out"), std::string::npos);
  EXPECT_EQ(out.output_tail, "started\n");
}

TEST(CompletionCommandTest, ABackgroundChildDoesNotHoldTheRunPastTheCommandsExit) {
  TempDir dir;
  HandoffOptions options;
  options.use_shell = true;
  // The child keeps the output pipe open; a hook may start such a thing on
  // purpose, so it is left running (and stopped here by the test).
  options.command = {"sleep 600 & echo $! > " + (dir / "child.pid") + "; echo done"};
  options.command_timeout = std::chrono::seconds(120);
  const CommandOutcome out = RunCompletionCommand(options, SampleRun());
  const pid_t child = static_cast<pid_t>(std::atoi(ReadFile(dir / "child.pid").c_str()));
  if (child > 0) ::kill(child, SIGKILL);
  EXPECT_TRUE(out.ok()) << out.error;
  EXPECT_FALSE(out.timed_out);
  EXPECT_LT(out.elapsed_s, 60);
  EXPECT_EQ(out.output_tail, "done\n");
}

TEST(CompletionCommandTest, AMissingProgramIsReportedNotThrown) {
  HandoffOptions options;
  options.command = {"/nonexistent/sluice-hook"};
  const CommandOutcome out = RunCompletionCommand(options, SampleRun());
  EXPECT_TRUE(out.ran);
  EXPECT_FALSE(out.started);
  EXPECT_FALSE(out.ok());
  EXPECT_NE(out.error.find("cannot start '/nonexistent/sluice-hook'"), std::string::npos)
      << out.error;
  const std::string json = HandoffResultJson({.command = out, .webhook = {}});
  EXPECT_NE(json.find("\"started\":false"), std::string::npos) << json;
  EXPECT_NE(json.find("\"exit_status\":null"), std::string::npos) << json;
}

TEST(WebhookTest, PostsTheReportJson) {
  WebhookReceiver receiver;
  HandoffOptions options;
  options.url = receiver.url();
  ManualClock clock;
  const WebhookOutcome out = PostReport(options, SampleRun(), clock);
  EXPECT_TRUE(out.ok()) << out.error;
  EXPECT_EQ(out.http_status, 200);
  EXPECT_EQ(out.attempts, 1);
  ASSERT_EQ(receiver.bodies().size(), 1u);
  EXPECT_EQ(receiver.bodies()[0], SampleRun().report_json);
  EXPECT_EQ(receiver.content_types()[0], "application/json");
  EXPECT_EQ(clock.sleeps(), 0);
}

TEST(WebhookTest, RetriesServerErrorsAndRateLimitsThenDelivers) {
  WebhookReceiver receiver({500, 429, 503});
  HandoffOptions options;
  options.url = receiver.url();
  ManualClock clock;
  const WebhookOutcome out = PostReport(options, SampleRun(), clock);
  EXPECT_TRUE(out.ok()) << out.error;
  EXPECT_EQ(out.attempts, 4);
  EXPECT_EQ(receiver.bodies().size(), 4u);
  EXPECT_EQ(clock.sleeps(), 3);  // each retry waited on the clock
}

TEST(WebhookTest, AClientErrorIsNotRetried) {
  WebhookReceiver receiver({400});
  HandoffOptions options;
  options.url = receiver.url();
  ManualClock clock;
  const WebhookOutcome out = PostReport(options, SampleRun(), clock);
  EXPECT_FALSE(out.ok());
  EXPECT_EQ(out.attempts, 1);
  EXPECT_EQ(out.http_status, 400);
  EXPECT_EQ(out.error, "the receiver answered HTTP 400");
}

TEST(WebhookTest, AnUnreachableReceiverExhaustsTheAttemptsWithoutLeakingThePath) {
  std::string url;
  {
    WebhookReceiver gone;  // a port that was free a moment ago and is closed now
    url = gone.url() + "?token=secret-token-1";
  }
  HandoffOptions options;
  options.url = url;
  options.url_retry.max_attempts = 3;
  ManualClock clock;
  const WebhookOutcome out = PostReport(options, SampleRun(), clock);
  EXPECT_FALSE(out.ok());
  EXPECT_EQ(out.attempts, 3);
  EXPECT_EQ(out.http_status, 0);
  EXPECT_FALSE(out.error.empty());
  EXPECT_EQ(out.error.find("secret-token-1"), std::string::npos) << out.error;
  const std::string json = HandoffResultJson({.command = {}, .webhook = out});
  EXPECT_EQ(json.find("secret-token-1"), std::string::npos) << json;
  EXPECT_NE(json.find("\"ok\":false"), std::string::npos) << json;
}

TEST(HandoffTest, TheCommandRunsBeforeThePostWhichCarriesItsOutcome) {
  WebhookReceiver receiver;
  HandoffOptions options;
  options.command = {"/bin/sh", "-c", "echo hook output; exit 5"};
  options.url = receiver.url();
  const HandoffOutcome out = RunHandoff(options, SampleRun(), [](const CommandOutcome& command) {
    return "{\"command_exit\":" + std::to_string(command.exit_status) + "}";
  });
  EXPECT_EQ(out.command.exit_status, 5);
  EXPECT_TRUE(out.webhook.ok()) << out.webhook.error;
  ASSERT_EQ(receiver.bodies().size(), 1u);
  EXPECT_EQ(receiver.bodies()[0], "{\"command_exit\":5}");
  const std::string json = HandoffResultJson(out);
  EXPECT_NE(json.find("\"command\":{\"ok\":false"), std::string::npos) << json;
  EXPECT_NE(json.find("\"output_tail\":\"hook output\\n\""), std::string::npos) << json;
  EXPECT_NE(json.find("\"webhook\":{\"ok\":true,\"http_status\":200,\"attempts\":1}"),
            std::string::npos)
      << json;
}

}  // namespace
}  // namespace sluice
