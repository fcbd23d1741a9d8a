// The embed stage driving the real libcurl transport against the mock API on
// loopback, with faults and a rate limit: every chunk ends in `out` (with the
// mock's exact vector) or the dead-letter sink, exactly once.
#include <gtest/gtest.h>

#include <mutex>
#include <set>

#include "sluice/embed.h"
#include "sluice/embed_stage.h"
#include "sluice/mock_api.h"

namespace sluice {
namespace {

using std::chrono::milliseconds;

class RecordingSink final : public DeadLetterSink {
 public:
  void ChunkFailed(const Chunk& chunk, const Status& why) override {
    std::lock_guard lock(mu_);
    chunks.emplace_back(chunk, why);
  }
  void SourceFailed(const std::string&, const std::string&, const Status&) override {}
  std::vector<std::pair<Chunk, Status>> chunks;

 private:
  std::mutex mu_;
};

TEST(EmbedStageHttpTest, SurvivesFaultsAndRateLimitsExactlyOnce) {
  MockApiOptions mock;
  mock.dimensions = 32;
  mock.fault_500_rate = 0.15;
  mock.fault_reset_rate = 0.05;
  mock.fault_malformed_rate = 0.05;
  mock.rpm = 6000;  // 100 requests/s: some 429s with a short Retry-After
  mock.seed = 7;
  auto server = MockApiServer::Start(mock);
  ASSERT_TRUE(server.ok()) << server.status().ToString();

  HttpEmbedderOptions http;
  http.endpoint = (*server)->BaseUrl();
  http.dimensions = 32;
  auto transport = MakeHttpTransport(http);
  ASSERT_TRUE(transport.ok()) << transport.status().ToString();
  auto limiter = MakeFixedLimiter(4);
  auto pacer = MakeCooldownOnlyPacer();
  Metrics metrics;
  RecordingSink sink;
  EmbedStageOptions options;
  options.batch_size = 8;
  options.linger = milliseconds(2);
  options.retry.initial_backoff = milliseconds(5);
  options.retry.max_backoff = milliseconds(50);
  options.retry.max_attempts = 10;
  options.seed = 3;
  options.adaptive_batch = false;  // so the request count below is exact
  EmbedStage stage(options, **transport, *limiter, *pacer, SystemClock::Instance(), metrics, sink);

  constexpr size_t kChunks = 200;
  BoundedQueue<Chunk> in(kChunks);
  BoundedQueue<EmbeddedChunk> out(kChunks);
  for (size_t i = 0; i < kChunks; ++i) {
    Chunk c;
    c.source_id = "manual.md";
    c.ordinal = static_cast<uint32_t>(i);
    c.id = "id-" + std::to_string(i);
    c.text = "Section " + std::to_string(i) + ": check the pump seal and the valve.";
    ASSERT_TRUE(in.Push(std::move(c)));
  }
  in.Close();
  Status s = stage.Run(in, out);
  ASSERT_TRUE(s.ok()) << s.ToString();
  out.Close();

  std::set<std::string> ids;
  size_t embedded = 0;
  while (auto e = out.TryPop()) {
    ++embedded;
    EXPECT_TRUE(ids.insert(e->chunk.id).second);
    EXPECT_EQ(e->embedding, MockEmbedding(e->chunk.text, 32)) << e->chunk.id;
    EXPECT_EQ(e->model, "text-embedding-3-small");
  }
  for (const auto& [chunk, why] : sink.chunks) EXPECT_TRUE(ids.insert(chunk.id).second);
  EXPECT_EQ(ids.size(), kChunks);
  // With 10 attempts and ~25% faults, nothing should run out of retries.
  EXPECT_EQ(embedded, kChunks);
  EXPECT_TRUE(sink.chunks.empty());
  EXPECT_EQ(Get(metrics.chunks_embedded), kChunks);
  // Every failed request was retried: sent = first sends (one per batch, all OK
  // in the end) + retries.
  EXPECT_EQ(Get(metrics.requests_ok), kChunks / 8);
  EXPECT_EQ(Get(metrics.requests), Get(metrics.requests_ok) + Get(metrics.retries));
  EXPECT_GT(Get(metrics.server_errors), 0u);
  EXPECT_GT(Get(metrics.malformed_responses), 0u);
  EXPECT_EQ(Get(metrics.requests), (*server)->Stats().requests);
  EXPECT_EQ(Get(metrics.rate_limited), (*server)->Stats().rate_limited);
  EXPECT_EQ(metrics.in_flight.load(), 0);
}

}  // namespace
}  // namespace sluice
