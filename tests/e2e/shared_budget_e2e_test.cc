// End to end over loopback: several real `sluice ingest` processes, each on
// its own folder and store, against one simulated API with a request limit
// and a small burst. With one shared budget in Redis (--budget-redis) they
// stay within the API's limit together; paced alone, each spends the whole
// limit and the API refuses the excess. Judged by the mock's own counters.
#include <fcntl.h>
#include <spawn.h>
#include <sys/wait.h>

#include <gtest/gtest.h>

#include <chrono>
#include <csignal>
#include <string>
#include <vector>

#include "distributed/redis_client.h"
#include "distributed/redis_test_util.h"
#include "sluice/mock_api.h"
#include "testing/sqlite_dump.h"
#include "testing/test_util.h"
#include "testing/wait.h"

extern char** environ;

namespace sluice {
namespace {

using testing::TempDir;
using testing::WriteFile;

const std::string kSluice = SLUICE_BINARY;

// 1200 requests/minute: 20 a second, and a burst of one second's worth.
constexpr double kRpm = 1200;
constexpr double kBurstSeconds = 1;

void MakeCorpus(const TempDir& dir, const std::string& folder, int files) {
  for (int f = 0; f < files; ++f) {
    WriteFile(dir / (folder + "/doc" + std::to_string(f) + ".md"),
              testing::Paragraphs(6, folder + "w" + std::to_string(f)));
  }
}

pid_t Spawn(std::vector<std::string> args, const std::string& log) {
  std::vector<char*> argv;
  for (auto& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_addopen(&actions, 1, "/dev/null", O_WRONLY, 0);
  posix_spawn_file_actions_addopen(&actions, 2, log.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
  pid_t pid = -1;
  posix_spawn(&pid, argv[0], &actions, nullptr, argv.data(), environ);
  posix_spawn_file_actions_destroy(&actions);
  return pid;
}

int Wait(pid_t pid) {
  int status = 0;
  ::waitpid(pid, &status, 0);
  return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

uint64_t ReportCount(const std::string& report, const std::string& key) {
  const size_t at = report.find("\"" + key + "\":");
  if (at == std::string::npos) return 0;
  return std::stoull(report.substr(at + key.size() + 3));
}

struct FleetResult {
  MockApiStats stats;
  double seconds = 0;
};

class SharedBudgetE2eTest : public ::testing::Test {
 protected:
  void SetUp() override {
    for (int p = 0; p < kProcesses; ++p) MakeCorpus(dir_, "corpus" + std::to_string(p), 10);
  }

  // One ingest of `corpus` into its own SQLite store, report and log named by `id`.
  std::vector<std::string> IngestArgs(const std::string& id, const std::string& corpus,
                                      const std::string& endpoint,
                                      const std::vector<std::string>& budget_flags) const {
    std::vector<std::string> args = {kSluice,
                                     "ingest",
                                     dir_ / corpus,
                                     "--endpoint",
                                     endpoint,
                                     "--model",
                                     "mock-model",
                                     "--store",
                                     "sqlite:" + (dir_ / (id + ".db")),
                                     "--out",
                                     dir_ / (id + "-out"),
                                     "--report",
                                     dir_ / (id + "-report.json"),
                                     "--no-progress",
                                     "--concurrency",
                                     "4",
                                     "--batch-size",
                                     "2",
                                     "--chunk-tokens",
                                     "32",
                                     "--chunk-overlap",
                                     "0",
                                     "--max-attempts",
                                     "50",
                                     "--log-level",
                                     "warn"};
    args.insert(args.end(), budget_flags.begin(), budget_flags.end());
    return args;
  }

  // Runs kProcesses ingests at once against a fresh mock; `budget_flags`
  // appended to each. Every process must exit 0 and store every chunk.
  FleetResult RunFleet(const std::string& run, const std::vector<std::string>& budget_flags,
                       double rpm, Duration latency) {
    MockApiOptions mock;
    mock.dimensions = 16;
    mock.rpm = rpm;
    mock.burst_seconds = kBurstSeconds;
    mock.base_latency = latency;
    mock.seed = 11;
    auto server = MockApiServer::Start(mock);
    EXPECT_TRUE(server.ok()) << server.status().ToString();
    if (!server.ok()) return {};
    const auto start = std::chrono::steady_clock::now();
    std::vector<pid_t> pids;
    for (int p = 0; p < kProcesses; ++p) {
      const std::string id = run + std::to_string(p);
      pids.push_back(
          Spawn(IngestArgs(id, "corpus" + std::to_string(p), (*server)->BaseUrl(), budget_flags),
                dir_ / (id + ".log")));
    }
    for (int p = 0; p < kProcesses; ++p) {
      const std::string id = run + std::to_string(p);
      EXPECT_EQ(Wait(pids[p]), 0) << testing::ReadFile(dir_ / (id + ".log"));
    }
    FleetResult result;
    result.seconds =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    result.stats = (*server)->Stats();
    for (int p = 0; p < kProcesses; ++p) {
      const std::string id = run + std::to_string(p);
      const std::string report = testing::ReadFile(dir_ / (id + "-report.json"));
      const uint64_t produced = ReportCount(report, "chunks_produced");
      EXPECT_GT(produced, 30u) << report;
      EXPECT_EQ(ReportCount(report, "chunks_stored"), produced) << report;
      EXPECT_EQ(testing::ReadStoredChunks(dir_ / (id + ".db")).size(), produced) << id;
    }
    return result;
  }

  static constexpr int kProcesses = 3;
  TempDir dir_;
};

TEST_F(SharedBudgetE2eTest, ProcessesSharingABudgetStayWithinTheApiLimitTogether) {
  SLUICE_REQUIRE_REDIS(redis);
  const std::string name = redistest::UniqueName("e2e");
  const FleetResult shared =
      RunFleet("shared", {"--budget-redis", redis, "--budget-name", name}, kRpm, Duration(0));
  const FleetResult alone = RunFleet("alone", {}, kRpm, Duration(0));
  const MockApiStats& s = shared.stats;
  const MockApiStats& a = alone.stats;
  std::fprintf(stderr,
               "shared: %llu requests, %llu ok, %llu 429s in %.1f s; alone: %llu requests, %llu "
               "ok, %llu 429s in %.1f s\n",
               static_cast<unsigned long long>(s.requests), static_cast<unsigned long long>(s.ok),
               static_cast<unsigned long long>(s.rate_limited), shared.seconds,
               static_cast<unsigned long long>(a.requests), static_cast<unsigned long long>(a.ok),
               static_cast<unsigned long long>(a.rate_limited), alone.seconds);
  // Together within the limit: what the API admitted fits its burst plus its
  // rate over the run, and it refused at most 1% of the requests.
  EXPECT_LE(static_cast<double>(s.ok), kRpm / 60 * (kBurstSeconds + shared.seconds) + 1);
  EXPECT_LE(s.rate_limited * 100, s.requests);
  // Paced alone, the same processes overrun the same API.
  EXPECT_GT(a.rate_limited, s.rate_limited);
  EXPECT_GT(a.rate_limited * 100, a.requests);
}

TEST_F(SharedBudgetE2eTest, AGlobalInFlightCapHoldsAcrossProcesses) {
  SLUICE_REQUIRE_REDIS(redis);
  const std::string name = redistest::UniqueName("e2e-cap");
  // No rate limit; 40 ms per request, so requests overlap.
  const FleetResult capped = RunFleet(
      "capped", {"--budget-redis", redis, "--budget-name", name, "--budget-max-in-flight", "2"}, 0,
      std::chrono::milliseconds(40));
  EXPECT_LE(capped.stats.peak_in_service, 2u);
  EXPECT_EQ(capped.stats.rate_limited, 0u);
  const FleetResult uncapped = RunFleet("uncapped", {}, 0, std::chrono::milliseconds(40));
  EXPECT_GT(uncapped.stats.peak_in_service, 2u);
}

TEST_F(SharedBudgetE2eTest, AnUnreachableRedisOnlyMeansPacingAlone) {
  // Nothing listens on port 1: every process warns once and runs alone. The
  // URL comes from the environment (its password out of the process list).
  ::setenv("SLUICE_TEST_BUDGET_REDIS", "redis://:hunter2@127.0.0.1:1/0", 1);
  const FleetResult alone = RunFleet(
      "noredis", {"--budget-redis-env", "SLUICE_TEST_BUDGET_REDIS", "--budget-max-in-flight", "2"},
      0, Duration(0));
  ::unsetenv("SLUICE_TEST_BUDGET_REDIS");
  EXPECT_EQ(alone.stats.rate_limited, 0u);
  for (int p = 0; p < kProcesses; ++p) {
    const std::string log = testing::ReadFile(dir_ / ("noredis" + std::to_string(p) + ".log"));
    size_t warnings = 0;
    for (size_t at = log.find("pacing this process alone"); at != std::string::npos;
         at = log.find("pacing this process alone", at + 1)) {
      ++warnings;
    }
    // One for the pacer's connection, one for the limiter's.
    EXPECT_EQ(warnings, 2u) << log;
    EXPECT_EQ(log.find("hunter2"), std::string::npos) << log;
  }
}

// A process killed while it holds the only slot of a capped budget: the slot
// comes back when its lease lapses (--budget-lease-seconds after its last
// renewal), and another process then runs to the end. Without the lapse the
// second process would never get a slot and the test would time out.
TEST_F(SharedBudgetE2eTest, AKilledProcessesSlotComesBackWhenItsLeaseLapses) {
  SLUICE_REQUIRE_REDIS(redis);
  const std::string name = redistest::UniqueName("e2e-lease");
  const std::vector<std::string> budget = {
      "--budget-redis",         redis, "--budget-name",          name,
      "--budget-max-in-flight", "1",   "--budget-lease-seconds", "2"};
  MockApiOptions stuck_options;  // answers after the test is over
  stuck_options.dimensions = 16;
  stuck_options.base_latency = std::chrono::minutes(10);
  auto stuck = MockApiServer::Start(stuck_options);
  ASSERT_TRUE(stuck.ok()) << stuck.status().ToString();
  MockApiOptions fast_options;
  fast_options.dimensions = 16;
  auto fast = MockApiServer::Start(fast_options);
  ASSERT_TRUE(fast.ok()) << fast.status().ToString();

  auto redis_endpoint = ParseRedisUrl(redis);
  ASSERT_TRUE(redis_endpoint.ok());
  auto client = RedisClient::Connect(*redis_endpoint);
  ASSERT_TRUE(client.ok()) << client.status().ToString();
  const std::string leases = "sluice:budget:{" + name + "}:leases";

  // The victim: its first request hangs at the stuck service, holding the slot.
  const pid_t victim =
      Spawn(IngestArgs("victim", "corpus0", (*stuck)->BaseUrl(), budget), dir_ / "victim.log");
  ASSERT_GT(victim, 0);
  const bool holding = testing::WaitUntil(
      [&] {
        auto held = (*client)->Command({"ZCARD", leases});
        return (*stuck)->Stats().requests >= 1 && held.ok() && held->integer == 1;
      },
      std::chrono::seconds(120));
  ASSERT_TRUE(holding) << testing::ReadFile(dir_ / "victim.log");
  auto held = (*client)->Command({"ZRANGE", leases, "0", "-1"});
  ASSERT_TRUE(held.ok());
  ASSERT_EQ(held->elements.size(), 1u);
  const std::string victims_lease = held->elements[0].str;
  EXPECT_NE(victims_lease.find(":" + std::to_string(victim) + ":"), std::string::npos)
      << victims_lease;
  ASSERT_EQ(::kill(victim, SIGKILL), 0);
  EXPECT_EQ(Wait(victim), 128 + SIGKILL);

  // The survivor can only start a request once the dead process's lease lapsed.
  const pid_t survivor =
      Spawn(IngestArgs("survivor", "corpus1", (*fast)->BaseUrl(), budget), dir_ / "survivor.log");
  ASSERT_GT(survivor, 0);
  EXPECT_EQ(Wait(survivor), 0) << testing::ReadFile(dir_ / "survivor.log");
  const std::string report = testing::ReadFile(dir_ / "survivor-report.json");
  const uint64_t produced = ReportCount(report, "chunks_produced");
  EXPECT_GT(produced, 30u) << report;
  EXPECT_EQ(ReportCount(report, "chunks_stored"), produced) << report;
  EXPECT_LE((*fast)->Stats().peak_in_service, 1u);
  auto score = (*client)->Command({"ZSCORE", leases, victims_lease});
  ASSERT_TRUE(score.ok());
  EXPECT_TRUE(score->IsNil()) << "the dead process's lease is still held";
  (*client)->Command({"DEL", leases});
  (*stuck)->Stop();
}

}  // namespace
}  // namespace sluice
