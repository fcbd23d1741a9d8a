// The fault matrix (issue 14): one row per kind of failure the embedding
// service can show, each with its expected outcome, through the real pipeline
// over loopback HTTP to the simulated API and a real SQLite store:
//   stored     every chunk stored after retries, nothing dead-lettered;
//   stopped    the run fails, nothing dead-lettered (the failure says nothing
//              about the input), the unfinished chunks abandoned;
//   dead       the failure lies in the input: dead-lettered with its reason.
// After every row a plain rerun against a healthy service must leave a store
// identical (ids, texts, vectors) to a clean run's; for "dead" rows the rerun
// repairs nothing by design (`sluice dead-letter retry` does) and the row
// checks the reason instead.
//
// Store disconnects, SIGKILL at random points and crash-resume are covered by
// tests/store/postgres (lost connection, restart) and tests/e2e/kill_resume_test.
#include <gtest/gtest.h>
#include <sqlite3.h>

#include <filesystem>
#include <functional>
#include <map>
#include <string>
#include <vector>

#include "sluice/mock_api.h"
#include "sluice/pipeline.h"
#include "testing/sqlite_dump.h"
#include "testing/test_util.h"

namespace sluice {
namespace {

using testing::ReadFile;
using testing::TempDir;
using testing::WriteFile;

constexpr int kDims = 32;
constexpr int kFiles = 4;

using Row = testing::StoredChunk;

std::map<std::string, Row> ReadRows(const std::string& db_path) {
  return testing::ReadStoredChunks(db_path);
}

void MakeCorpus(const TempDir& dir) {
  for (int f = 0; f < kFiles; ++f) {
    std::string text = "# Manual " + std::to_string(f) + "\n\n";
    for (int p = 0; p < 10; ++p) {
      text += "Paragraph " + std::to_string(p) + " of manual " + std::to_string(f) +
              " says how valve " + std::to_string(p * 11 + f) +
              " is closed, drained and inspected before the pump is started again. ";
      text += "Every reading goes into the maintenance log.\n\n";
    }
    WriteFile(dir / ("corpus/plant/m" + std::to_string(f) + ".md"), text);
  }
}

IngestOptions Options(const TempDir& dir, const MockApiServer& server, const std::string& name) {
  IngestOptions o;
  o.inputs = {dir / "corpus"};
  o.embedder = EmbedderKind::kHttp;
  o.http.endpoint = server.BaseUrl();
  o.http.model = "mock";
  o.http.api_key = "sk-matrix-key";
  o.http.request_timeout = std::chrono::seconds(10);
  o.store_uri = "sqlite:" + (dir / (name + ".db"));
  o.aggregate.out_dir = dir / (name + "-out");
  o.dead_letter_path = dir / (name + "-out/dead-letter.jsonl");
  o.progress = false;
  o.chunker.chunk_tokens = 48;
  o.chunker.overlap_tokens = 8;
  o.embed.batch_size = 4;
  o.embed.retry.initial_backoff = std::chrono::milliseconds(2);
  o.embed.retry.max_backoff = std::chrono::milliseconds(20);
  o.embed.retry.max_attempts = 40;
  return o;
}

MockApiOptions HealthyMock() {
  MockApiOptions mock;
  mock.dimensions = kDims;
  mock.api_key = "sk-matrix-key";
  return mock;
}

enum class Outcome { kStored, kStopped, kDeadLettered };

struct FaultCase {
  std::string name;
  std::function<void(MockApiOptions&)> fault;
  std::function<void(IngestOptions&)> tune;  // may be empty
  Outcome expected;
  StatusCode stop_code = StatusCode::kOk;  // for kStopped
  std::string dead_reason;                 // for kDeadLettered: text in the dead-letter file
};

// Empty when equal; else the first few differences, readable.
std::string Differences(const std::map<std::string, Row>& got,
                        const std::map<std::string, Row>& want) {
  std::string out;
  int shown = 0;
  for (const auto& [id, row] : want) {
    auto it = got.find(id);
    if (it == got.end()) {
      out += "missing " + id + "; ";
    } else if (it->second.text != row.text) {
      out += "other text " + id + "; ";
    } else if (it->second.embedding != row.embedding) {
      out += "other vector " + id + " (" + std::to_string(it->second.embedding.size()) + " dims); ";
    } else {
      continue;
    }
    if (++shown == 5) break;
  }
  for (const auto& [id, row] : got) {
    if (!want.count(id) && shown++ < 10) out += "extra " + id + "; ";
  }
  if (out.empty() && got.size() != want.size()) out = "sizes differ";
  return out;
}

std::ostream& operator<<(std::ostream& out, const FaultCase& c) { return out << c.name; }

class FaultMatrixTest : public ::testing::TestWithParam<FaultCase> {};

TEST_P(FaultMatrixTest, ExpectedOutcomeThenAPlainRerunMatchesACleanRun) {
  const FaultCase& c = GetParam();
  TempDir dir;
  MakeCorpus(dir);

  // The clean run every row is compared with.
  auto healthy = MockApiServer::Start(HealthyMock());
  ASSERT_TRUE(healthy.ok());
  {
    IngestReport clean = Pipeline(Options(dir, **healthy, "clean")).Run();
    ASSERT_TRUE(clean.status.ok()) << clean.status.ToString();
  }
  const std::map<std::string, Row> reference = ReadRows(dir / "clean.db");
  ASSERT_FALSE(reference.empty());
  for (const auto& [id, row] : reference) {
    ASSERT_EQ(row.embedding, MockEmbedding(row.text, kDims)) << id;
  }

  MockApiOptions faulty = HealthyMock();
  faulty.seed = 11;
  c.fault(faulty);
  auto server = MockApiServer::Start(faulty);
  ASSERT_TRUE(server.ok()) << server.status().ToString();
  IngestOptions o = Options(dir, **server, "store");
  if (c.tune) c.tune(o);
  if (o.http.endpoint == "refused") {
    o.http.endpoint = (*server)->BaseUrl();
    (*server)->Stop();  // nothing listens there any more
  }
  Pipeline pipeline(o);
  const IngestReport report = pipeline.Run();
  const Metrics& m = pipeline.metrics();
  EXPECT_TRUE(report.reconciled);
  EXPECT_EQ(Get(m.chunks_produced),
            Get(m.chunks_stored) + Get(m.chunks_dead_lettered) + report.chunks_abandoned);
  EXPECT_EQ(report.status.message().find("sk-matrix-key"), std::string::npos);
  const std::string dead_path = dir / "store-out/dead-letter.jsonl";
  switch (c.expected) {
    case Outcome::kStored:
      ASSERT_TRUE(report.status.ok()) << report.status.ToString();
      EXPECT_EQ(Get(m.chunks_dead_lettered), 0u);
      EXPECT_EQ(Get(m.chunks_stored), Get(m.chunks_produced));
      EXPECT_EQ(Differences(ReadRows(dir / "store.db"), reference), "");
      break;
    case Outcome::kStopped:
      EXPECT_EQ(report.status.code(), c.stop_code) << report.status.ToString();
      EXPECT_EQ(Get(m.chunks_dead_lettered), 0u);
      EXPECT_GT(report.chunks_abandoned, 0u);
      EXPECT_FALSE(std::filesystem::exists(dead_path)) << ReadFile(dead_path);
      break;
    case Outcome::kDeadLettered:
      ASSERT_TRUE(report.status.ok()) << report.status.ToString();
      EXPECT_GT(Get(m.chunks_dead_lettered), 0u);
      EXPECT_NE(ReadFile(dead_path).find(c.dead_reason), std::string::npos) << ReadFile(dead_path);
      break;
  }

  // A plain rerun against a healthy service.
  Pipeline rerun(Options(dir, **healthy, "store"));
  const IngestReport again = rerun.Run();
  ASSERT_TRUE(again.status.ok()) << again.status.ToString();
  EXPECT_TRUE(again.reconciled);
  EXPECT_EQ(again.chunks_abandoned, 0u);
  if (c.expected == Outcome::kDeadLettered) {
    // The input's fault is recorded, not retried by a plain rerun.
    EXPECT_EQ(again.sources_unchanged, static_cast<uint64_t>(kFiles));
    EXPECT_EQ(Get(rerun.metrics().requests), 0u);
    return;
  }
  EXPECT_EQ(Get(rerun.metrics().chunks_dead_lettered), 0u);
  EXPECT_EQ(Differences(ReadRows(dir / "store.db"), reference), "");
  if (c.expected == Outcome::kStored) {
    EXPECT_EQ(Get(rerun.metrics().requests), 0u);  // nothing left to do
  }
}

// Without --dimensions, a rerun checks the vectors against the length the
// store recorded: a corrupt response (even the run's first and only one in
// flight) is retried, never stored and never taken as the run's dimension.
TEST(FaultMatrixDimensionsTest, RerunWithoutDimensionsUsesTheStoresLength) {
  TempDir dir;
  MakeCorpus(dir);
  auto healthy = MockApiServer::Start(HealthyMock());
  ASSERT_TRUE(healthy.ok());
  IngestReport first = Pipeline(Options(dir, **healthy, "store")).Run();
  ASSERT_TRUE(first.status.ok()) << first.status.ToString();
  WriteFile(dir / "corpus/plant/m0.md",
            ReadFile(dir / "corpus/plant/m0.md") + "\n\nA new closing paragraph on valves.\n");

  MockApiOptions faulty = HealthyMock();
  faulty.fault_wrong_dims_first = 1;
  auto server = MockApiServer::Start(faulty);
  ASSERT_TRUE(server.ok());
  IngestOptions o = Options(dir, **server, "store");
  o.concurrency = 1;  // the corrupt response is the only one in flight
  Pipeline rerun(o);
  const IngestReport report = rerun.Run();
  ASSERT_TRUE(report.status.ok()) << report.status.ToString();
  EXPECT_EQ((*server)->Stats().faults_wrong_dims, 1u);
  EXPECT_EQ(Get(rerun.metrics().chunks_dead_lettered), 0u);
  EXPECT_GT(Get(rerun.metrics().chunks_stored), 0u);
  for (const auto& [id, row] : ReadRows(dir / "store.db")) {
    EXPECT_EQ(row.embedding, MockEmbedding(row.text, kDims)) << id;
  }
}

INSTANTIATE_TEST_SUITE_P(
    Faults, FaultMatrixTest,
    ::testing::Values(
        FaultCase{"RateLimitStorm", [](MockApiOptions& m) { m.fault_429_first = 25; }, nullptr,
                  Outcome::kStored, StatusCode::kOk, ""},
        FaultCase{"Errors500", [](MockApiOptions& m) { m.fault_500_rate = 0.3; }, nullptr,
                  Outcome::kStored, StatusCode::kOk, ""},
        FaultCase{"OverCapacity503",
                  [](MockApiOptions& m) {
                    m.capacity = 1;
                    m.over_capacity = OverCapacityPolicy::kReject503;
                    m.base_latency = std::chrono::milliseconds(5);
                  },
                  [](IngestOptions& o) { o.concurrency = 4; }, Outcome::kStored, StatusCode::kOk,
                  ""},
        FaultCase{"ConnectionResets", [](MockApiOptions& m) { m.fault_reset_rate = 0.3; }, nullptr,
                  Outcome::kStored, StatusCode::kOk, ""},
        FaultCase{"TruncatedBodies", [](MockApiOptions& m) { m.fault_malformed_rate = 0.3; },
                  nullptr, Outcome::kStored, StatusCode::kOk, ""},
        // With --dimensions given. Learned from the first response instead, a
        // wrong first response sets the dimension (found by this row: 2 of 30).
        FaultCase{"WrongDimensions", [](MockApiOptions& m) { m.fault_wrong_dims_rate = 0.3; },
                  [](IngestOptions& o) { o.http.dimensions = kDims; }, Outcome::kStored,
                  StatusCode::kOk, ""},
        FaultCase{"WrongVectorCount", [](MockApiOptions& m) { m.fault_wrong_count_rate = 0.3; },
                  nullptr, Outcome::kStored, StatusCode::kOk, ""},
        FaultCase{"SomeResponsesSlowerThanTheTimeout",
                  [](MockApiOptions& m) { m.jitter = std::chrono::milliseconds(800); },
                  [](IngestOptions& o) { o.http.request_timeout = std::chrono::milliseconds(400); },
                  Outcome::kStored, StatusCode::kOk, ""},
        FaultCase{"EveryResponseSlowerThanTheTimeout",
                  [](MockApiOptions& m) { m.base_latency = std::chrono::seconds(5); },
                  [](IngestOptions& o) {
                    o.http.request_timeout = std::chrono::milliseconds(200);
                    o.embed.retry.max_attempts = 3;
                  },
                  Outcome::kStopped, StatusCode::kTimeout, ""},
        FaultCase{"KeyRevokedMidRun", [](MockApiOptions& m) { m.revoke_key_after = 2; },
                  [](IngestOptions& o) { o.concurrency = 1; }, Outcome::kStopped,
                  StatusCode::kPermissionDenied, ""},
        FaultCase{"WrongKey", [](MockApiOptions& m) { m.api_key = "another-key"; }, nullptr,
                  Outcome::kStopped, StatusCode::kPermissionDenied, ""},
        FaultCase{
            "EndpointNotFound", [](MockApiOptions&) {},
            [](IngestOptions& o) { o.http.endpoint.replace(o.http.endpoint.size() - 3, 3, "/v2"); },
            Outcome::kStopped, StatusCode::kNotFound, ""},
        FaultCase{"ConnectionRefused", [](MockApiOptions&) {},
                  [](IngestOptions& o) {
                    o.http.endpoint = "refused";
                    o.embed.retry.max_attempts = 2;
                  },
                  Outcome::kStopped, StatusCode::kUnavailable, ""},
        FaultCase{"InputTooLongFor400", [](MockApiOptions& m) { m.max_tokens_per_input = 1; },
                  nullptr, Outcome::kDeadLettered, StatusCode::kOk, "maximum context length"}),
    [](const ::testing::TestParamInfo<FaultCase>& info) { return info.param.name; });

}  // namespace
}  // namespace sluice
