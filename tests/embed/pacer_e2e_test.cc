// End to end: the real EmbedStage with the default AdaptiveLimiter and
// HeaderRatePacer (as the pipeline wires them) and the real HTTP transport,
// against an in-process mock API that announces its RPM/TPM limits in
// x-ratelimit-* headers. The mock's one-minute token bucket starts full, so
// the pacer must spend that budget at line speed (within a few seconds), then
// pace at the token rate with almost no 429s: <= 2% of requests after the
// burst is spent and >= 0.9 of the TPM ceiling (the benchmark checks 0.95; a
// shared machine is noisy). Every chunk comes out exactly once with the
// mock's vector. ~10 s.
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "sluice/control.h"
#include "sluice/embed.h"
#include "sluice/embed_stage.h"
#include "sluice/mock_api.h"

namespace sluice {
namespace {

using std::chrono::milliseconds;
using Steady = std::chrono::steady_clock;

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

struct StatsSample {
  double t = 0;  // seconds since the stage started
  MockApiStats stats;
};

// Exactly 80 bytes: 20 tokens as the mock counts them (ceil(bytes / 4)), and
// 20 as the pacer estimates them from its initial 4 bytes per token.
std::string ChunkText(size_t i) {
  std::string text = "Chunk " + std::to_string(i) + ": inspect the spillway gate seal and the ";
  text.resize(80, '.');
  return text;
}

TEST(PacerEndToEndTest, SpendsTheAnnouncedBurstThenKeeps429sRareAtTheTokenCeiling) {
  constexpr double kTpm = 60000;    // 1,000 tokens/s once the one-minute bucket is spent
  constexpr size_t kChunks = 3300;  // 66,000 tokens: the burst, then ~6-7 s at the rate
  constexpr int kDims = 32;
  MockApiOptions mock;
  mock.dimensions = kDims;
  mock.rpm = 6000;  // announced as well; not the binding limit here
  mock.tpm = kTpm;
  mock.base_latency = milliseconds(40);
  mock.per_input_latency = milliseconds(1);
  mock.seed = 11;
  auto server = MockApiServer::Start(mock);
  ASSERT_TRUE(server.ok()) << server.status().ToString();

  HttpEmbedderOptions http;
  http.endpoint = (*server)->BaseUrl();
  http.dimensions = kDims;
  auto transport = MakeHttpTransport(http);
  ASSERT_TRUE(transport.ok()) << transport.status().ToString();
  // As src/pipeline wires them: default options throughout.
  std::unique_ptr<ConcurrencyLimiter> limiter = MakeAdaptiveLimiter(AdaptiveLimiterOptions{});
  std::unique_ptr<RatePacer> pacer = MakeRatePacer(RatePacerOptions{});
  Metrics metrics;
  RecordingSink sink;
  EmbedStageOptions options;
  options.batch_size = 4;          // many small requests, so a 2% bound means something
  options.adaptive_batch = false;  // (the sizer would grow them to the mock's 2048)
  options.linger = milliseconds(2);
  options.seed = 5;
  EmbedStage stage(options, **transport, *limiter, *pacer, SystemClock::Instance(), metrics, sink);

  BoundedQueue<Chunk> in(256);
  BoundedQueue<EmbeddedChunk> out(256);
  std::thread producer([&] {
    for (size_t i = 0; i < kChunks; ++i) {
      Chunk c;
      c.source_id = "manual.txt";
      c.ordinal = static_cast<uint32_t>(i);
      c.id = "id-" + std::to_string(i);
      c.text = ChunkText(i);
      c.byte_end = c.text.size();
      if (!in.Push(std::move(c))) break;
    }
    in.Close();
  });
  std::vector<EmbeddedChunk> embedded;
  std::thread consumer([&] {
    while (auto e = out.Pop()) embedded.push_back(std::move(*e));
  });
  const Steady::time_point start = Steady::now();
  auto since_start = [&] { return std::chrono::duration<double>(Steady::now() - start).count(); };
  std::atomic<bool> done{false};
  std::vector<StatsSample> samples;
  std::thread sampler([&] {
    while (!done.load()) {
      samples.push_back({since_start(), (*server)->Stats()});
      std::this_thread::sleep_for(milliseconds(50));
    }
  });

  const Status status = stage.Run(in, out);
  const StatsSample end{since_start(), (*server)->Stats()};
  done = true;
  sampler.join();
  out.Close();
  consumer.join();
  producer.join();
  ASSERT_TRUE(status.ok()) << status.ToString();

  // Every chunk out exactly once, with the mock's vector; nothing dead-lettered.
  EXPECT_TRUE(sink.chunks.empty())
      << sink.chunks.size()
      << " dead-lettered, first: " << (sink.chunks.empty() ? "" : sink.chunks[0].second.ToString());
  ASSERT_EQ(embedded.size(), kChunks);
  std::set<std::string> ids;
  for (const EmbeddedChunk& e : embedded) {
    EXPECT_TRUE(ids.insert(e.chunk.id).second) << "duplicate " << e.chunk.id;
    EXPECT_EQ(e.embedding, MockEmbedding(e.chunk.text, kDims)) << e.chunk.id;
  }
  EXPECT_EQ(end.stats.inputs_embedded, kChunks);

  // The burst is gone once the mock has served more tokens than its bucket
  // ever held; it must have been spent at line speed, not at the rate
  // (which would take a minute).
  size_t burst_gone = samples.size();
  for (size_t i = 0; i < samples.size(); ++i) {
    if (static_cast<double>(samples[i].stats.tokens_embedded) >= kTpm) {
      burst_gone = i;
      break;
    }
  }
  ASSERT_LT(burst_gone, samples.size()) << "the burst was never spent";
  const StatsSample& from = samples[burst_gone];
  std::printf(
      "[pacer e2e] burst gone at %.2f s; end %.2f s; requests %llu, 429s %llu (%llu of %llu "
      "after the burst)\n",
      from.t, end.t, static_cast<unsigned long long>(end.stats.requests),
      static_cast<unsigned long long>(end.stats.rate_limited),
      static_cast<unsigned long long>(end.stats.rate_limited - from.stats.rate_limited),
      static_cast<unsigned long long>(end.stats.requests - from.stats.requests));
  EXPECT_LT(from.t, 6.0) << "the one-minute budget was not used at the start";

  const uint64_t requests_after = end.stats.requests - from.stats.requests;
  const uint64_t refused_after = end.stats.rate_limited - from.stats.rate_limited;
  ASSERT_GE(requests_after, 40u) << "too short a steady state to judge";
  EXPECT_LE(static_cast<double>(refused_after), 0.02 * static_cast<double>(requests_after));

  // Steady-state throughput against the token ceiling.
  const double tokens_per_s =
      static_cast<double>(end.stats.tokens_embedded - from.stats.tokens_embedded) /
      (end.t - from.t);
  std::printf("[pacer e2e] steady state %.0f tokens/s of %.0f (ratio %.3f)\n", tokens_per_s,
              kTpm / 60, tokens_per_s / (kTpm / 60));
  // (It may exceed the ceiling a little: the margin the pacer held back from
  // the burst is still in the mock's bucket when the window starts.)
  EXPECT_GE(tokens_per_s, 0.9 * kTpm / 60);
}

}  // namespace
}  // namespace sluice
