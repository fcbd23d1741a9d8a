// End to end over loopback: the real pipeline, real HTTP (libcurl multi) to
// the project's simulated API with injected faults (429s, 500s, resets,
// malformed bodies, wrong dimensions), a real SQLite store. Every chunk must
// be stored exactly once with exactly the vector the mock's formula gives,
// and the counts must reconcile.
#include <gtest/gtest.h>
#include <sqlite3.h>

#include <atomic>
#include <map>
#include <set>
#include <thread>

#include "sluice/embed.h"
#include "sluice/mock_api.h"
#include "sluice/pipeline.h"
#include "testing/test_util.h"

namespace sluice {
namespace {

using testing::ReadFile;
using testing::TempDir;
using testing::WriteFile;

struct Row {
  std::string text;
  std::vector<float> embedding;
};

std::map<std::string, Row> ReadAllChunks(const std::string& db_path) {
  std::map<std::string, Row> rows;
  sqlite3* db = nullptr;
  EXPECT_EQ(sqlite3_open_v2(db_path.c_str(), &db, SQLITE_OPEN_READONLY, nullptr), SQLITE_OK);
  sqlite3_stmt* stmt = nullptr;
  EXPECT_EQ(sqlite3_prepare_v2(db, "SELECT id, text, embedding FROM chunks", -1, &stmt, nullptr),
            SQLITE_OK);
  while (sqlite3_step(stmt) == SQLITE_ROW) {
    Row row;
    row.text = reinterpret_cast<const char*>(sqlite3_column_text(stmt, 1));
    const auto* blob = static_cast<const float*>(sqlite3_column_blob(stmt, 2));
    const int bytes = sqlite3_column_bytes(stmt, 2);
    row.embedding.assign(blob, blob + bytes / sizeof(float));
    const std::string id = reinterpret_cast<const char*>(sqlite3_column_text(stmt, 0));
    EXPECT_TRUE(rows.emplace(id, std::move(row)).second) << "duplicate id " << id;
  }
  sqlite3_finalize(stmt);
  sqlite3_close(db);
  return rows;
}

void MakeCorpus(const TempDir& dir, int files) {
  for (int f = 0; f < files; ++f) {
    std::string text = "# Document " + std::to_string(f) + "\n\n";
    for (int p = 0; p < 12; ++p) {
      text += "Section " + std::to_string(p) + " of document " + std::to_string(f) +
              " explains how the sluice gate number " + std::to_string(p * 7 + f) +
              " is inspected, lubricated and tested before the spring flood season begins. ";
      text += "Operators record the readings in the logbook.\n\n";
    }
    WriteFile(dir / ("corpus/domain" + std::to_string(f % 3) + "/doc" + std::to_string(f) + ".md"),
              text);
  }
}

IngestOptions HttpOptions(const TempDir& dir, const MockApiServer& server) {
  IngestOptions o;
  o.inputs = {dir / "corpus"};
  o.embedder = EmbedderKind::kHttp;
  o.http.endpoint = server.BaseUrl();
  o.http.model = "mock";
  o.http.api_key = "sk-test-secret-key";
  o.http.request_timeout = std::chrono::seconds(10);
  o.store_uri = "sqlite:" + (dir / "store.db");
  o.aggregate.out_dir = dir / "out";
  o.dead_letter_path = dir / "out/dead-letter.jsonl";
  o.progress = false;
  o.chunker.chunk_tokens = 48;
  o.chunker.overlap_tokens = 8;
  o.embed.batch_size = 8;
  o.embed.retry.initial_backoff = std::chrono::milliseconds(5);
  o.embed.retry.max_backoff = std::chrono::milliseconds(50);
  o.embed.retry.max_attempts = 30;
  o.concurrency = 0;
  return o;
}

TEST(IngestE2ETest, FaultyServiceStoresEveryChunkExactlyOnceWithTheMockVector) {
  TempDir dir;
  MakeCorpus(dir, 24);
  MockApiOptions mock;
  mock.dimensions = 64;
  mock.api_key = "sk-test-secret-key";
  mock.fault_500_rate = 0.05;
  mock.fault_reset_rate = 0.05;
  mock.fault_malformed_rate = 0.05;
  mock.fault_wrong_dims_rate = 0.03;
  mock.rpm = 6000;  // 100 requests/s with a burst of one minute's worth
  mock.seed = 7;
  auto server = MockApiServer::Start(mock);
  ASSERT_TRUE(server.ok()) << server.status().ToString();

  Pipeline pipeline(HttpOptions(dir, **server));
  IngestReport report = pipeline.Run();
  ASSERT_TRUE(report.status.ok()) << report.status.ToString();
  const Metrics& m = pipeline.metrics();
  EXPECT_TRUE(report.reconciled);
  EXPECT_EQ(Get(m.chunks_dead_lettered), 0u) << ReadFile(dir / "out/dead-letter.jsonl");
  EXPECT_GT(Get(m.chunks_produced), 100u);
  EXPECT_GT(Get(m.retries), 0u);  // the faults were really hit and retried

  const MockApiStats stats = (*server)->Stats();
  EXPECT_GT(
      stats.faults_500 + stats.faults_reset + stats.faults_malformed + stats.faults_wrong_dims, 0u);

  const auto rows = ReadAllChunks(dir / "store.db");
  EXPECT_EQ(rows.size(), Get(m.chunks_stored));
  EXPECT_EQ(rows.size(), Get(m.chunks_produced));
  for (const auto& [id, row] : rows) {
    const std::vector<float> expected = MockEmbedding(row.text, 64);
    ASSERT_EQ(row.embedding.size(), expected.size()) << id;
    for (size_t i = 0; i < expected.size(); ++i) ASSERT_EQ(row.embedding[i], expected[i]) << id;
  }
  // The mock embedded every distinct stored text at least once (retries may
  // embed some twice; copies of a text within the run wait for its first
  // answer, docs/RESUME.md).
  std::set<std::string> distinct;
  for (const auto& [id, row] : rows) distinct.insert(row.text);
  EXPECT_GE(stats.inputs_embedded, distinct.size());
  EXPECT_EQ(report.cache_hits, rows.size() - Get(m.chunks_embedded));

  // The API key never leaks into the report or dead letters.
  EXPECT_EQ(FormatReportJson(report, m).find("sk-test-secret-key"), std::string::npos);
  EXPECT_EQ(FormatReportText(report, m).find("sk-test-secret-key"), std::string::npos);
}

TEST(IngestE2ETest, SharedRateLimitGives429sThatAreHonouredAndNothingIsLost) {
  TempDir dir;
  MakeCorpus(dir, 6);
  MockApiOptions mock;
  mock.dimensions = 32;
  mock.rpm = 1200;  // 20 requests/s after a burst of 1200
  // Another client on the same key has spent the request budget: the first
  // requests meet 429s whatever the machine's speed (a competing thread racing
  // for the bucket did not drain it in time on a loaded machine).
  mock.fault_429_first = 6;
  auto server = MockApiServer::Start(mock);
  ASSERT_TRUE(server.ok());

  IngestOptions o = HttpOptions(dir, **server);
  o.http.api_key.clear();
  o.embed.batch_size = 4;
  o.embed.retry.max_attempts = 100;
  Pipeline pipeline(o);
  IngestReport report = pipeline.Run();
  ASSERT_TRUE(report.status.ok()) << report.status.ToString();
  const Metrics& m = pipeline.metrics();
  EXPECT_TRUE(report.reconciled);
  EXPECT_EQ(Get(m.chunks_dead_lettered), 0u);
  EXPECT_EQ(Get(m.rate_limited), 6u);  // every 429 the service sent was seen...
  EXPECT_GE(Get(m.retries), 6u);       // ...and retried
  EXPECT_EQ((*server)->Stats().rate_limited, 6u);
  EXPECT_EQ(ReadAllChunks(dir / "store.db").size(), Get(m.chunks_produced));
}

TEST(IngestE2ETest, WrongApiKeyStopsAtOnceWithoutLeakingTheKey) {
  TempDir dir;
  MakeCorpus(dir, 3);
  MockApiOptions mock;
  mock.api_key = "right-key";
  auto server = MockApiServer::Start(mock);
  ASSERT_TRUE(server.ok());
  IngestOptions o = HttpOptions(dir, **server);
  o.http.api_key = "wrong-key-12345";
  Pipeline pipeline(o);
  IngestReport report = pipeline.Run();
  EXPECT_EQ(report.status.code(), StatusCode::kPermissionDenied) << report.status.ToString();
  EXPECT_EQ(report.status.message().find("wrong-key-12345"), std::string::npos);
  EXPECT_TRUE(report.reconciled);
  EXPECT_EQ(Get(pipeline.metrics().chunks_stored), 0u);
}

TEST(IngestE2ETest, RefusedConnectionsEndInDeadLettersNotAHang) {
  TempDir dir;
  MakeCorpus(dir, 2);
  MockApiOptions mock;
  auto server = MockApiServer::Start(mock);
  ASSERT_TRUE(server.ok());
  IngestOptions o = HttpOptions(dir, **server);
  (*server)->Stop();  // nothing listens on that port any more
  o.http.api_key.clear();
  o.embed.retry.max_attempts = 2;
  Pipeline pipeline(o);
  IngestReport report = pipeline.Run();
  EXPECT_TRUE(report.reconciled);
  EXPECT_EQ(Get(pipeline.metrics().chunks_stored), 0u);
  EXPECT_EQ(Get(pipeline.metrics().chunks_dead_lettered), Get(pipeline.metrics().chunks_produced));
  EXPECT_NE(ReadFile(dir / "out/dead-letter.jsonl").find("unavailable"), std::string::npos);
}

}  // namespace
}  // namespace sluice
