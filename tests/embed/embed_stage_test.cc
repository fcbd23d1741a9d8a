// The embed stage against a scripted in-test transport: every scenario
// asserts the exactly-once invariant (each chunk taken from `in` ends in `out`
// or the dead-letter sink, once) and the metric counts.
#include "sluice/embed_stage.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <deque>
#include <functional>
#include <map>
#include <mutex>
#include <set>
#include <thread>

#include "common/hashing.h"
#include "testing/wait.h"

namespace sluice {
namespace {

using std::chrono::milliseconds;
using testing::WaitUntil;

constexpr int kDims = 4;

// The vector the scripted service gives `text`: identifies the text, so a test
// can check each chunk got its own vector.
std::vector<float> VectorFor(std::string_view text) {
  const uint64_t h = Hash64(text);
  return {float(h & 0xFFF), float((h >> 12) & 0xFFF), float(text.size()), 1.0f};
}

EmbedResponse Ok(const EmbedRequest& request) {
  EmbedResponse r;
  r.http_status = 200;
  for (const std::string& input : request.inputs) r.vectors.push_back(VectorFor(input));
  r.prompt_tokens = static_cast<int64_t>(request.inputs.size());
  return r;
}

EmbedResponse Fail(Status status, int http) {
  EmbedResponse r;
  r.status = std::move(status);
  r.http_status = http;
  return r;
}

// Answers each request with what the script says; completes on Poll.
class ScriptedTransport final : public EmbeddingTransport {
 public:
  // `call` counts requests from 0 in submission order.
  using Script = std::function<EmbedResponse(const EmbedRequest&, int call)>;
  explicit ScriptedTransport(Script script) : script_(std::move(script)) {}

  void Submit(EmbedRequest request) override {
    std::lock_guard lock(mu_);
    sizes_.push_back(request.inputs.size());
    pending_.push_back(std::move(request));
  }
  void Poll(Duration max_wait, std::vector<EmbedResponse>& out) override {
    {
      std::lock_guard lock(mu_);
      if (held_) {
        lock_released_wait_ = true;
      } else {
        while (!pending_.empty()) {
          EmbedRequest request = std::move(pending_.front());
          pending_.pop_front();
          EmbedResponse r = script_(request, calls_++);
          r.request_id = request.request_id;
          out.push_back(std::move(r));
        }
        return;
      }
    }
    std::this_thread::sleep_for(std::min<Duration>(max_wait, milliseconds(1)));
  }
  size_t InFlight() const override {
    std::lock_guard lock(mu_);
    return pending_.size();
  }
  std::string ModelName() const override { return "scripted"; }
  int Dimensions() const override { return kDims; }

  // While held, Poll completes nothing (requests stay in flight).
  void Hold(bool held) {
    std::lock_guard lock(mu_);
    held_ = held;
  }
  std::vector<size_t> RequestSizes() const {
    std::lock_guard lock(mu_);
    return sizes_;
  }

 private:
  mutable std::mutex mu_;
  Script script_;
  std::deque<EmbedRequest> pending_;
  std::vector<size_t> sizes_;
  int calls_ = 0;
  bool held_ = false;
  bool lock_released_wait_ = false;
};

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

Chunk MakeChunk(const std::string& source, uint32_t ordinal, std::string text) {
  Chunk c;
  c.source_id = source;
  c.ordinal = ordinal;
  c.id = source + "#" + std::to_string(ordinal);
  c.byte_begin = 0;
  c.byte_end = text.size();
  c.text = std::move(text);
  return c;
}

struct Harness {
  explicit Harness(ScriptedTransport::Script script, size_t concurrency = 4)
      : transport(std::move(script)),
        limiter(MakeFixedLimiter(concurrency)),
        pacer(MakeCooldownOnlyPacer()) {
    options.batch_size = 4;
    options.linger = milliseconds(1);
    options.retry.initial_backoff = milliseconds(1);
    options.retry.max_backoff = milliseconds(4);
    options.retry.max_attempts = 3;
    options.seed = 99;
    options.adaptive_batch = false;  // fixed sizes, so tests can state them
  }

  // Pushes `chunks` to a closed input queue and runs the stage to the end.
  Status RunAll(std::vector<Chunk> chunks) {
    for (Chunk& c : chunks) {
      texts_in.insert(c.text);
      EXPECT_TRUE(in.Push(std::move(c)));
    }
    in.Close();
    EmbedStage stage(options, transport, *limiter, *pacer, *clock, metrics, sink);
    stage.SetObserver([this](const RequestEvent& e) { events.push_back(e); });
    stage.SetReplacementHook(
        [this](const std::string& original_id, const std::vector<std::string>& ids) {
          replacements.emplace_back(original_id, ids);
        });
    Status s = stage.Run(in, out);
    out.Close();
    while (auto e = out.TryPop()) embedded.push_back(std::move(*e));
    return s;
  }

  // Every chunk the stage took ended in `out` or the sink, exactly once.
  // `extra_pieces`: chunks the stage itself added by splitting oversize inputs.
  void ExpectExactlyOnce(size_t taken, size_t extra_pieces = 0) {
    EXPECT_EQ(Get(metrics.embedder.items_in), taken);
    EXPECT_EQ(Get(metrics.chunks_produced), extra_pieces);
    std::multiset<std::string> seen;
    for (const auto& e : embedded) seen.insert(e.chunk.id);
    for (const auto& [chunk, why] : sink.chunks) {
      seen.insert(chunk.id);
      EXPECT_FALSE(why.ok());
    }
    EXPECT_EQ(seen.size(), taken + extra_pieces);
    for (const std::string& id : seen) EXPECT_EQ(seen.count(id), 1u) << id;
    EXPECT_EQ(Get(metrics.chunks_embedded), embedded.size());
    EXPECT_EQ(Get(metrics.embedder.items_out), embedded.size());
    EXPECT_EQ(Get(metrics.embedder.dead_lettered), sink.chunks.size());
    for (const auto& e : embedded) {
      EXPECT_EQ(e.embedding, VectorFor(e.chunk.text)) << e.chunk.id;
      EXPECT_EQ(e.model, "scripted");
    }
  }

  EmbedStageOptions options;
  const Clock* clock = &SystemClock::Instance();
  ScriptedTransport transport;
  std::unique_ptr<ConcurrencyLimiter> limiter;
  std::unique_ptr<RatePacer> pacer;
  Metrics metrics;
  RecordingSink sink;
  BoundedQueue<Chunk> in{1000};
  BoundedQueue<EmbeddedChunk> out{1000};
  std::vector<EmbeddedChunk> embedded;
  std::vector<RequestEvent> events;
  // SetReplacementHook's calls: an oversize chunk's id and what replaced it.
  std::vector<std::pair<std::string, std::vector<std::string>>> replacements;
  std::set<std::string> texts_in;
};

std::vector<Chunk> Chunks(size_t n, const std::string& source = "doc") {
  std::vector<Chunk> chunks;
  for (size_t i = 0; i < n; ++i) {
    chunks.push_back(MakeChunk(source, uint32_t(i), "chunk text number " + std::to_string(i)));
  }
  return chunks;
}

TEST(EmbedStageTest, EmbedsEverythingInBatches) {
  Harness h([](const EmbedRequest& r, int) { return Ok(r); });
  ASSERT_TRUE(h.RunAll(Chunks(10)).ok());
  ASSERT_EQ(h.embedded.size(), 10u);
  h.ExpectExactlyOnce(10);
  EXPECT_EQ(h.transport.RequestSizes(), (std::vector<size_t>{4, 4, 2}));
  EXPECT_EQ(Get(h.metrics.requests), 3u);
  EXPECT_EQ(Get(h.metrics.requests_ok), 3u);
  EXPECT_EQ(Get(h.metrics.retries), 0u);
  EXPECT_EQ(Get(h.metrics.prompt_tokens), 10u);
  EXPECT_EQ(h.metrics.in_flight.load(), 0);
  EXPECT_EQ(h.metrics.concurrency_limit.load(), 4);
  EXPECT_EQ(h.metrics.embed_latency.Summary().count, 3u);
  EXPECT_EQ(h.events.size(), 3u);
  // Within a batch the order of the input is kept.
  for (size_t i = 0; i < 10; ++i) EXPECT_EQ(h.embedded[i].chunk.ordinal, i);
}

TEST(EmbedStageTest, AdaptiveBatchingGrowsBatchesWithinTheServiceLimit) {
  Harness h([](const EmbedRequest& r, int) { return Ok(r); }, /*concurrency=*/1);
  h.options.adaptive_batch = true;
  h.options.batch_size = 2;
  h.options.max_inputs_per_request = 16;
  // A stopped clock: every request takes 0 s, so there is no per-input cost
  // to fit and (control.h's contract) the sizer grows batches.
  ManualClock stopped;
  h.clock = &stopped;
  ASSERT_TRUE(h.RunAll(Chunks(400)).ok());
  h.ExpectExactlyOnce(400);
  const std::vector<size_t> sizes = h.transport.RequestSizes();
  EXPECT_EQ(sizes.front(), 2u);
  const size_t largest = *std::max_element(sizes.begin(), sizes.end());
  EXPECT_GT(largest, 2u);
  EXPECT_LE(largest, 16u);  // never above the service's limit
}

TEST(EmbedStageTest, BatchesByTokens) {
  Harness h([](const EmbedRequest& r, int) { return Ok(r); });
  h.options.batch_size = 100;
  h.options.max_tokens_per_request = 20;  // 80 bytes at the default 4 bytes/token
  std::vector<Chunk> chunks;
  for (uint32_t i = 0; i < 6; ++i) chunks.push_back(MakeChunk("d", i, std::string(36, 'a' + i)));
  ASSERT_TRUE(h.RunAll(std::move(chunks)).ok());
  h.ExpectExactlyOnce(6);
  // 9 estimated tokens each: two per request.
  EXPECT_EQ(h.transport.RequestSizes(), (std::vector<size_t>{2, 2, 2}));
}

// A 503 is a refusal at the door (kOverCapacity, which the limiter counts
// as "this many fit"), a 429 is backpressure; both are retried, neither is a
// dead letter.
TEST(EmbedStageTest, A503IsOverCapacityAndRetried) {
  Harness h([](const EmbedRequest& r, int call) {
    if (call == 0) return Fail(Status::Unavailable("HTTP 503: over capacity"), 503);
    return Ok(r);
  });
  ASSERT_TRUE(h.RunAll(Chunks(3)).ok());
  h.ExpectExactlyOnce(3);
  EXPECT_EQ(Get(h.metrics.retries), 1u);
  ASSERT_EQ(h.events.size(), 2u);
  EXPECT_EQ(h.events[0].outcome, RequestOutcome::kOverCapacity);
  EXPECT_EQ(h.events[1].outcome, RequestOutcome::kSuccess);
}

TEST(EmbedStageTest, RetriesAfterRateLimit) {
  Harness h([](const EmbedRequest& r, int call) {
    if (call == 0) {
      EmbedResponse e = Fail(Status::RateLimited("HTTP 429: slow down"), 429);
      e.rate.retry_after = milliseconds(2);
      return e;
    }
    return Ok(r);
  });
  ASSERT_TRUE(h.RunAll(Chunks(3)).ok());
  h.ExpectExactlyOnce(3);
  EXPECT_EQ(h.embedded.size(), 3u);
  EXPECT_EQ(Get(h.metrics.requests), 2u);
  EXPECT_EQ(Get(h.metrics.requests_ok), 1u);
  EXPECT_EQ(Get(h.metrics.retries), 1u);
  EXPECT_EQ(Get(h.metrics.rate_limited), 1u);
  ASSERT_EQ(h.events.size(), 2u);
  EXPECT_EQ(h.events[0].outcome, RequestOutcome::kBackpressure);
  EXPECT_FALSE(h.events[0].retry);
  EXPECT_TRUE(h.events[1].retry);
  EXPECT_EQ(h.events[1].outcome, RequestOutcome::kSuccess);
}

// The stage waits out a Retry-After on its clock, not on the wall: a
// ManualClock steps over the minute at once (and the wait is still a minute
// of the stage's time).
TEST(EmbedStageTest, WaitsOutARetryAfterOnItsClock) {
  Harness h([](const EmbedRequest& r, int call) {
    if (call == 0) {
      EmbedResponse e = Fail(Status::RateLimited("HTTP 429: slow down"), 429);
      e.rate.retry_after = std::chrono::seconds(60);
      return e;
    }
    return Ok(r);
  });
  h.options.retry.max_backoff = std::chrono::minutes(5);
  const TimePoint start = TimePoint{} + std::chrono::hours(1);
  ManualClock clock(start);
  h.clock = &clock;
  const auto wall_start = std::chrono::steady_clock::now();
  ASSERT_TRUE(h.RunAll(Chunks(3)).ok());
  h.ExpectExactlyOnce(3);
  EXPECT_EQ(h.embedded.size(), 3u);
  EXPECT_EQ(Get(h.metrics.requests), 2u);
  EXPECT_EQ(Get(h.metrics.rate_limited), 1u);
  EXPECT_GE(clock.Now() - start, std::chrono::seconds(60));  // the whole Retry-After
  EXPECT_GT(clock.sleeps(), 0);
  // Not slept on the wall clock (that would take the minute).
  EXPECT_LT(std::chrono::steady_clock::now() - wall_start, std::chrono::seconds(30));
}

// A 429 says nothing about the input: more 429s than retry.max_attempts (3
// here) are waited out, not dead-lettered, while other batches succeed.
TEST(EmbedStageTest, RateLimitsDoNotCountAsAttemptsAndAreNeverDeadLettered) {
  Harness h([](const EmbedRequest& r, int call) {
    if (call < 10) {
      EmbedResponse e = Fail(Status::RateLimited("HTTP 429: slow down"), 429);
      e.rate.retry_after = milliseconds(1);
      return e;
    }
    return Ok(r);
  });
  ASSERT_TRUE(h.RunAll(Chunks(3)).ok());
  h.ExpectExactlyOnce(3);
  EXPECT_EQ(h.embedded.size(), 3u);
  EXPECT_TRUE(h.sink.chunks.empty());
  EXPECT_EQ(Get(h.metrics.rate_limited), 10u);
}

// ...but not for ever: past max_rate_limited_wait for one batch the run
// stops, the batch abandoned (for the rerun), still not dead-lettered.
TEST(EmbedStageTest, EndlessRateLimitsStopTheRunWithoutDeadLetters) {
  Harness h([](const EmbedRequest&, int) {
    EmbedResponse e = Fail(Status::RateLimited("HTTP 429: slow down"), 429);
    e.rate.retry_after = milliseconds(2);
    return e;
  });
  h.options.max_rate_limited_wait = milliseconds(20);
  const Status s = h.RunAll(Chunks(3));
  EXPECT_EQ(s.code(), StatusCode::kUnavailable) << s.ToString();
  EXPECT_NE(s.message().find("still rate-limited after waiting"), std::string::npos) << s.message();
  EXPECT_TRUE(h.embedded.empty());
  // Handed back as abandoned (kCancelled), which the pipeline never writes
  // to the dead-letter file.
  ASSERT_EQ(h.sink.chunks.size(), 3u);
  for (const auto& [chunk, why] : h.sink.chunks) EXPECT_EQ(why.code(), StatusCode::kCancelled);
  EXPECT_GE(Get(h.metrics.rate_limited), 10u);  // 20 ms of 2 ms waits
}

TEST(EmbedStageTest, DeadLettersWhenRetriesRunOutOnABatchWhileOthersSucceed) {
  // The service answers every batch but the one holding chunk 1: that failure
  // follows the input, so its batch is dead-lettered and the run goes on.
  Harness h([](const EmbedRequest& r, int) {
    for (const std::string& input : r.inputs) {
      if (input == "chunk text number 1") {
        return Fail(Status::Unavailable("HTTP 500: internal error"), 500);
      }
    }
    return Ok(r);
  });
  ASSERT_TRUE(h.RunAll(Chunks(12)).ok());
  h.ExpectExactlyOnce(12);
  EXPECT_EQ(h.embedded.size(), 8u);
  ASSERT_EQ(h.sink.chunks.size(), 4u);
  for (const auto& [chunk, why] : h.sink.chunks) {
    EXPECT_EQ(why.code(), StatusCode::kUnavailable);
    EXPECT_NE(why.message().find("gave up after 3 attempts"), std::string::npos) << why.message();
    EXPECT_NE(why.message().find("HTTP 500"), std::string::npos);
  }
  EXPECT_EQ(Get(h.metrics.requests), 5u);  // 2 ok, 3 for the failing batch
  EXPECT_EQ(Get(h.metrics.retries), 2u);
  EXPECT_EQ(Get(h.metrics.server_errors), 3u);
  EXPECT_EQ(Get(h.metrics.requests_ok), 2u);
}

// Issue 14: "every request failing" says nothing about the input. The run
// stops once retries are exhausted and the chunks are abandoned (kCancelled:
// the pipeline counts them abandoned and fingerprints none of their files).
TEST(EmbedStageTest, EveryRequestFailingStopsTheRunInsteadOfDeadLettering) {
  Harness h([](const EmbedRequest&,
               int) { return Fail(Status::Unavailable("HTTP 500: internal error"), 500); },
            /*concurrency=*/1);
  Status s = h.RunAll(Chunks(3));
  EXPECT_EQ(s.code(), StatusCode::kUnavailable) << s.ToString();
  EXPECT_NE(s.message().find("gave up after 3 attempts"), std::string::npos) << s.message();
  h.ExpectExactlyOnce(3);
  EXPECT_TRUE(h.embedded.empty());
  ASSERT_EQ(h.sink.chunks.size(), 3u);
  for (const auto& [chunk, why] : h.sink.chunks) {
    EXPECT_EQ(why.code(), StatusCode::kCancelled) << why.ToString();
    EXPECT_NE(why.message().find("HTTP 500"), std::string::npos) << why.message();
  }
  EXPECT_EQ(Get(h.metrics.requests), 3u);
  EXPECT_EQ(Get(h.metrics.requests_ok), 0u);
}

// Issue 14: a service that cannot be reached is retried with backoff, then
// stops the run, even when other requests got through before: connection
// refused, DNS and TLS failures never dead-letter.
TEST(EmbedStageTest, UnreachableServiceIsRetriedThenStopsTheRunWithoutDeadLetters) {
  Harness h([](const EmbedRequest& r, int call) {
    if (call == 0) return Ok(r);  // the service went away after one answer
    EmbedResponse e = Fail(Status::Unavailable("cannot reach the embedding service: refused"), 0);
    e.connect_failed = true;
    return e;
  });
  Status s = h.RunAll(Chunks(12));
  EXPECT_EQ(s.code(), StatusCode::kUnavailable) << s.ToString();
  EXPECT_NE(s.message().find("gave up after 3 attempts"), std::string::npos) << s.message();
  h.ExpectExactlyOnce(12);
  EXPECT_EQ(h.embedded.size(), 4u);
  for (const auto& [chunk, why] : h.sink.chunks) {
    EXPECT_EQ(why.code(), StatusCode::kCancelled) << why.ToString();
  }
  EXPECT_EQ(h.sink.chunks.size(), 8u);
  EXPECT_LE(Get(h.metrics.requests), 1u + 2u * 3u);  // bounded by the retries
}

TEST(EmbedStageTest, UnusableTlsConfigurationStopsTheRunAtOnce) {
  Harness h(
      [](const EmbedRequest&, int) {
        EmbedResponse e = Fail(Status::InvalidArgument("certificate verify failed"), 0);
        e.connect_failed = true;
        return e;
      },
      /*concurrency=*/1);
  Status s = h.RunAll(Chunks(8));
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument) << s.ToString();
  h.ExpectExactlyOnce(Get(h.metrics.embedder.items_in));
  for (const auto& [chunk, why] : h.sink.chunks) EXPECT_EQ(why.code(), StatusCode::kCancelled);
  EXPECT_EQ(Get(h.metrics.requests), 1u);  // not retried: it cannot succeed
}

TEST(EmbedStageTest, RetriesMalformedResponsesAndCountsTransportErrors) {
  Harness h([](const EmbedRequest& r, int call) {
    if (call == 0) return Fail(Status::Corrupt("response body is not JSON"), 200);
    if (call == 1) return Fail(Status::Unavailable("connection reset: recv failure"), 0);
    if (call == 2) return Fail(Status::Timeout("timed out"), 0);
    EmbedResponse bad = Ok(r);  // transport hands back too few vectors: corrupt
    if (call == 3) bad.vectors.pop_back();
    return bad;
  });
  h.options.retry.max_attempts = 8;
  ASSERT_TRUE(h.RunAll(Chunks(2)).ok());
  h.ExpectExactlyOnce(2);
  EXPECT_EQ(h.embedded.size(), 2u);
  EXPECT_EQ(Get(h.metrics.malformed_responses), 2u);
  EXPECT_EQ(Get(h.metrics.transport_errors), 2u);
  EXPECT_EQ(Get(h.metrics.retries), 4u);
}

TEST(EmbedStageTest, BisectsRejectedBatchToIsolatePoisonInput) {
  Harness h([](const EmbedRequest& r, int) {
    for (const std::string& input : r.inputs) {
      if (input.find("POISON") != std::string::npos) {
        return Fail(Status::Rejected("HTTP 400: input 3 is invalid"), 400);
      }
    }
    return Ok(r);
  });
  h.options.batch_size = 8;
  std::vector<Chunk> chunks = Chunks(8);
  chunks[5].text = "a POISON input";
  ASSERT_TRUE(h.RunAll(std::move(chunks)).ok());
  h.ExpectExactlyOnce(8);
  EXPECT_EQ(h.embedded.size(), 7u);
  ASSERT_EQ(h.sink.chunks.size(), 1u);
  EXPECT_EQ(h.sink.chunks[0].first.ordinal, 5u);
  EXPECT_EQ(h.sink.chunks[0].second.code(), StatusCode::kRejected);
  EXPECT_EQ(h.sink.chunks[0].second.message(), "HTTP 400: input 3 is invalid");
  // 8 -> (4 ok, 4) -> (2, 2 ok) -> (1 ok, 1 poison): 7 requests, no retries.
  EXPECT_EQ(h.transport.RequestSizes(), (std::vector<size_t>{8, 4, 4, 2, 2, 1, 1}));
  EXPECT_EQ(Get(h.metrics.requests), 7u);
  EXPECT_EQ(Get(h.metrics.retries), 0u);
  EXPECT_EQ(Get(h.metrics.requests_ok), 3u);  // (0-3), (6,7), (4)
}

// Issue 14 changed this test: the batch that met the 401 used to be
// dead-lettered (its file then fingerprinted, the rerun skipping it); a 401
// says nothing about its inputs, so it is abandoned like the rest.
TEST(EmbedStageTest, PermissionDeniedIsFatal) {
  Harness h(
      [](const EmbedRequest& r, int call) {
        if (call == 1) return Fail(Status::PermissionDenied("HTTP 401: bad key"), 401);
        return Ok(r);
      },
      /*concurrency=*/1);
  Status s = h.RunAll(Chunks(12));
  EXPECT_EQ(s.code(), StatusCode::kPermissionDenied);
  const size_t taken = Get(h.metrics.embedder.items_in);
  h.ExpectExactlyOnce(taken);
  EXPECT_EQ(h.embedded.size(), 4u);  // the first batch only
  size_t denied_batch = 0;
  for (const auto& [chunk, why] : h.sink.chunks) {
    EXPECT_EQ(why.code(), StatusCode::kCancelled) << why.ToString();
    if (why.message().find("HTTP 401") != std::string::npos) ++denied_batch;
  }
  EXPECT_EQ(denied_batch, taken - 4);      // every abandoned chunk says why
  EXPECT_EQ(Get(h.metrics.requests), 2u);  // nothing is sent after the 401
  // What the stage never took is still in the queue.
  EXPECT_EQ(taken + h.in.Size(), 12u);
}

TEST(EmbedStageTest, EndpointNotFoundIsFatalAtOnce) {
  Harness h(
      [](const EmbedRequest& r, int call) {
        if (call == 0) return Ok(r);
        return Fail(Status::NotFound("HTTP 404 from http://h/v2/embeddings: Unknown path"), 404);
      },
      /*concurrency=*/1);
  Status s = h.RunAll(Chunks(12));
  EXPECT_EQ(s.code(), StatusCode::kNotFound) << s.ToString();
  h.ExpectExactlyOnce(Get(h.metrics.embedder.items_in));
  EXPECT_EQ(h.embedded.size(), 4u);
  for (const auto& [chunk, why] : h.sink.chunks) EXPECT_EQ(why.code(), StatusCode::kCancelled);
  EXPECT_EQ(Get(h.metrics.requests), 2u);  // no bisection, no retry of a 404
}

TEST(EmbedStageTest, CancelledOutputIsFatal) {
  Harness h([](const EmbedRequest& r, int) { return Ok(r); });
  h.out.Cancel();
  Status s = h.RunAll(Chunks(5));
  EXPECT_EQ(s.code(), StatusCode::kCancelled);
  EXPECT_TRUE(h.embedded.empty());
  h.ExpectExactlyOnce(Get(h.metrics.embedder.items_in));
}

TEST(EmbedStageTest, SplitsOversizeInputsAtWordBoundaries) {
  Harness h([](const EmbedRequest& r, int) { return Ok(r); });
  h.options.max_tokens_per_input = 10;  // 40 bytes at 4 bytes/token
  std::string text;
  for (int i = 0; i < 12; ++i) text += "wörd" + std::to_string(i) + " ";  // 7-8 bytes each
  Chunk big = MakeChunk("doc", 3, text);
  big.metadata_json = R"({"title":"T"})";
  big.file_id = "docs/doc.md";
  std::vector<Chunk> chunks = {big, MakeChunk("doc", 4, "small")};
  ASSERT_TRUE(h.RunAll(std::move(chunks)).ok());
  EXPECT_EQ(Get(h.metrics.oversize_inputs), 1u);
  ASSERT_GT(h.embedded.size(), 3u);
  const size_t pieces = h.embedded.size() - 1;
  h.ExpectExactlyOnce(2, pieces - 1);  // chunks_produced counts the extra pieces
  std::string joined;
  std::set<std::string> ids;
  int part = 0;
  for (const auto& e : h.embedded) {
    if (e.chunk.ordinal != 3) continue;
    ++part;
    EXPECT_LE(e.chunk.text.size(), 40u);
    EXPECT_NE(e.chunk.text.back(), ' ');
    EXPECT_NE(e.chunk.text.front(), ' ');
    EXPECT_EQ(e.chunk.source_id, "doc");
    EXPECT_EQ(e.chunk.file_id, "docs/doc.md");  // the store records it under its file
    EXPECT_NE(e.chunk.metadata_json.find("\"split_part\":" + std::to_string(part)),
              std::string::npos)
        << e.chunk.metadata_json;
    // The original's fields kept, the new ones added, keys in canonical order.
    const std::string& meta = e.chunk.metadata_json;
    EXPECT_EQ(meta.rfind(R"({"split_part":)" + std::to_string(part) + R"(,"split_parts":)", 0), 0u)
        << meta;
    EXPECT_TRUE(meta.ends_with(R"(,"title":"T"})")) << meta;
    ids.insert(e.chunk.id);
    joined += e.chunk.text + " ";
  }
  EXPECT_EQ(ids.size(), pieces);
  EXPECT_EQ(joined, text);  // no word was cut
  // The hook named the original and its pieces, in order.
  std::vector<std::string> piece_ids;
  for (const auto& e : h.embedded) {
    if (e.chunk.ordinal == 3) piece_ids.push_back(e.chunk.id);
  }
  ASSERT_EQ(h.replacements.size(), 1u);
  EXPECT_EQ(h.replacements[0].first, big.id);
  EXPECT_EQ(h.replacements[0].second, piece_ids);
}

TEST(EmbedStageTest, TruncatesOversizeInputsWhenAsked) {
  Harness h([](const EmbedRequest& r, int) { return Ok(r); });
  h.options.max_tokens_per_input = 10;
  h.options.oversize = OversizeInputPolicy::kTruncate;
  ASSERT_TRUE(
      h.RunAll({MakeChunk("doc", 0, std::string(30, 'x') + " " + std::string(30, 'y'))}).ok());
  ASSERT_EQ(h.embedded.size(), 1u);
  EXPECT_EQ(h.embedded[0].chunk.text, std::string(30, 'x'));
  EXPECT_NE(h.embedded[0].chunk.metadata_json.find("\"truncated\":true"), std::string::npos);
  EXPECT_EQ(Get(h.metrics.oversize_inputs), 1u);
  EXPECT_EQ(Get(h.metrics.chunks_produced), 0u);
  ASSERT_EQ(h.replacements.size(), 1u);
  EXPECT_EQ(h.replacements[0].first, MakeChunk("doc", 0, "").id);
  EXPECT_EQ(h.replacements[0].second, std::vector<std::string>{h.embedded[0].chunk.id});
}

TEST(EmbedStageTest, EmptyTextIsDeadLetteredNotSent) {
  Harness h([](const EmbedRequest& r, int) { return Ok(r); });
  std::vector<Chunk> chunks = Chunks(2);
  chunks.push_back(MakeChunk("doc", 9, ""));
  ASSERT_TRUE(h.RunAll(std::move(chunks)).ok());
  h.ExpectExactlyOnce(3);
  ASSERT_EQ(h.sink.chunks.size(), 1u);
  EXPECT_EQ(h.sink.chunks[0].second.code(), StatusCode::kRejected);
}

TEST(EmbedStageTest, RequestStopFinishesInFlightAndCancelsUnsent) {
  Harness h([](const EmbedRequest& r, int) { return Ok(r); }, /*concurrency=*/2);
  h.options.linger = std::chrono::seconds(10);
  h.transport.Hold(true);
  for (Chunk& c : Chunks(20)) ASSERT_TRUE(h.in.Push(std::move(c)));  // input stays open
  EmbedStage stage(h.options, h.transport, *h.limiter, *h.pacer, SystemClock::Instance(), h.metrics,
                   h.sink);
  std::atomic<bool> noticed{false};
  stage.SetStopNotice([&](const std::string&) { noticed = true; });
  Status result = Status::Internal("not run");
  std::thread runner([&] { result = stage.Run(h.in, h.out); });
  // Wait until two requests are in flight (the limit).
  ASSERT_TRUE(WaitUntil([&] { return h.transport.InFlight() >= 2; }));
  ASSERT_EQ(h.transport.InFlight(), 2u);
  stage.RequestStop();
  // Answer the two only once the stage has seen the stop: answered before,
  // they would free slots for more requests.
  ASSERT_TRUE(WaitUntil([&] { return noticed.load(); }));
  h.transport.Hold(false);
  runner.join();
  EXPECT_TRUE(result.ok()) << result.ToString();
  h.out.Close();
  while (auto e = h.out.TryPop()) h.embedded.push_back(std::move(*e));
  const size_t taken = Get(h.metrics.embedder.items_in);
  h.ExpectExactlyOnce(taken);
  EXPECT_EQ(h.embedded.size(), 8u);  // the two in-flight batches completed
  for (const auto& [chunk, why] : h.sink.chunks) EXPECT_EQ(why.code(), StatusCode::kCancelled);
  EXPECT_EQ(h.sink.chunks.size(), taken - 8);
  EXPECT_EQ(taken + h.in.Size(), 20u);
  EXPECT_EQ(Get(h.metrics.requests), 2u);
}

TEST(EmbedStageTest, RequestStopWakesAnIdleStage) {
  Harness h([](const EmbedRequest& r, int) { return Ok(r); });
  EmbedStage stage(h.options, h.transport, *h.limiter, *h.pacer, SystemClock::Instance(), h.metrics,
                   h.sink);
  Status result = Status::Internal("not run");
  std::thread runner([&] { result = stage.Run(h.in, h.out); });
  // The stage is running (it publishes its gauges as it starts) and has no
  // input: the stop reaches it idle, not before it began.
  ASSERT_TRUE(WaitUntil([&] { return h.metrics.concurrency_limit.load() == 4; }));
  stage.RequestStop();
  runner.join();
  EXPECT_TRUE(result.ok());
  EXPECT_EQ(Get(h.metrics.embedder.items_in), 0u);
}

TEST(EmbedStageTest, RequestStopAbandonsABatchWaitingOnALongRetryAfter) {
  // The first request is answered 429 with a minute's Retry-After; the stop
  // must not wait it out (issue 14: measured 57 s before).
  Harness h([](const EmbedRequest& r, int call) {
    if (call == 0) {
      EmbedResponse e = Fail(Status::RateLimited("HTTP 429: slow down"), 429);
      e.rate.retry_after = std::chrono::seconds(60);
      return e;
    }
    return Ok(r);
  });
  h.options.retry.max_backoff = std::chrono::minutes(5);
  for (Chunk& c : Chunks(4)) ASSERT_TRUE(h.in.Push(std::move(c)));  // input stays open
  EmbedStage stage(h.options, h.transport, *h.limiter, *h.pacer, SystemClock::Instance(), h.metrics,
                   h.sink);
  std::string notice;
  stage.SetStopNotice([&](const std::string& line) { notice += line; });
  Status result = Status::Internal("not run");
  std::thread runner([&] { result = stage.Run(h.in, h.out); });
  ASSERT_TRUE(WaitUntil([&] { return Get(h.metrics.rate_limited) > 0; }));
  ASSERT_EQ(Get(h.metrics.rate_limited), 1u);
  const auto stop = std::chrono::steady_clock::now();
  stage.RequestStop();
  runner.join();
  EXPECT_LT(std::chrono::steady_clock::now() - stop, std::chrono::seconds(5));
  EXPECT_TRUE(result.ok()) << result.ToString();
  h.out.Close();
  h.ExpectExactlyOnce(4);
  EXPECT_TRUE(h.embedded.empty());
  ASSERT_EQ(h.sink.chunks.size(), 4u);
  for (const auto& [chunk, why] : h.sink.chunks) EXPECT_EQ(why.code(), StatusCode::kCancelled);
  EXPECT_EQ(Get(h.metrics.requests), 1u);  // the retry was never sent
  EXPECT_NE(notice.find("no request in flight, 4 queued chunks abandoned"), std::string::npos)
      << notice;
  EXPECT_NE(notice.find("(Retry-After 5"), std::string::npos) << notice;  // 59 or 60 s left
}

// A fixed limit that counts how often the stage asks for it: the stage asks
// several times on every turn of its loop, so the count says how many turns
// have passed without timing anything.
class CountingLimiter final : public ConcurrencyLimiter {
 public:
  explicit CountingLimiter(size_t limit) : limit_(limit) {}
  size_t Limit() const override {
    calls.fetch_add(1);
    return limit_;
  }
  void OnStart(TimePoint) override {}
  void OnFinish(TimePoint, Duration, RequestOutcome) override {}
  mutable std::atomic<uint64_t> calls{0};

 private:
  size_t limit_;
};

// Found by the soak benchmark (318 MB): while every batch waited out a
// Retry-After and nothing was in flight, the stage took input without its
// backlog bound, pulling the whole corpus into memory during a cooldown.
TEST(EmbedStageTest, NoInputBeyondTheBacklogBoundWhileNothingIsInFlight) {
  Harness h([](const EmbedRequest& r, int call) {
    if (call == 0) {
      EmbedResponse e = Fail(Status::RateLimited("HTTP 429: slow down"), 429);
      e.rate.retry_after = std::chrono::seconds(60);
      return e;
    }
    return Ok(r);
  });
  auto counting = std::make_unique<CountingLimiter>(1);
  CountingLimiter& limiter = *counting;
  h.limiter = std::move(counting);
  h.options.retry.max_backoff = std::chrono::minutes(5);
  for (Chunk& c : Chunks(200)) ASSERT_TRUE(h.in.Push(std::move(c)));  // input stays open
  EmbedStage stage(h.options, h.transport, *h.limiter, *h.pacer, SystemClock::Instance(), h.metrics,
                   h.sink);
  Status result = Status::Internal("not run");
  std::thread runner([&] { result = stage.Run(h.in, h.out); });
  ASSERT_TRUE(WaitUntil([&] { return Get(h.metrics.rate_limited) > 0; }));
  ASSERT_EQ(Get(h.metrics.rate_limited), 1u);
  // Some hundred turns of the loop during the cooldown (a turn took one
  // chunk before the fix).
  const uint64_t from = limiter.calls.load();
  ASSERT_TRUE(WaitUntil([&] { return limiter.calls.load() >= from + 600; }));
  ASSERT_GE(limiter.calls.load(), from + 600);
  // The batch waiting for its retry (4) plus the backlog bound: batch size
  // 4 x (1 free slot + 1 batch ahead).
  EXPECT_LE(Get(h.metrics.embedder.items_in), 4u + 8u);
  EXPECT_GE(h.in.Size(), 200u - 12u);
  stage.RequestStop();
  runner.join();
  EXPECT_TRUE(result.ok()) << result.ToString();
}

TEST(EmbedStageTest, RequestStopCancelsRequestsStillInFlightAfterTheGrace) {
  Harness h([](const EmbedRequest& r, int) { return Ok(r); }, /*concurrency=*/1);
  h.transport.Hold(true);  // the service never answers
  ManualClock clock;
  h.options.stop_grace = std::chrono::seconds(2);
  for (Chunk& c : Chunks(8)) ASSERT_TRUE(h.in.Push(std::move(c)));
  h.in.Close();
  EmbedStage stage(h.options, h.transport, *h.limiter, *h.pacer, clock, h.metrics, h.sink);
  std::atomic<bool> noticed{false};
  std::string notice;
  stage.SetStopNotice([&](const std::string& line) {
    notice = line;
    noticed = true;
  });
  Status result = Status::Internal("not run");
  std::thread runner([&] { result = stage.Run(h.in, h.out); });
  ASSERT_TRUE(WaitUntil([&] { return h.transport.InFlight() >= 1; }));
  ASSERT_EQ(h.transport.InFlight(), 1u);
  stage.RequestStop();
  // The grace is measured on the stage's clock from when it saw the stop.
  ASSERT_TRUE(WaitUntil([&] { return noticed.load(); }));
  clock.Advance(std::chrono::seconds(2));
  runner.join();
  EXPECT_TRUE(result.ok()) << result.ToString();
  h.out.Close();
  h.ExpectExactlyOnce(8);
  EXPECT_TRUE(h.embedded.empty());
  for (const auto& [chunk, why] : h.sink.chunks) EXPECT_EQ(why.code(), StatusCode::kCancelled);
  EXPECT_NE(notice.find("waiting up to 2000 ms for 1 request in flight, 4 queued chunks abandoned"),
            std::string::npos)
      << notice;
}

// Records what the stage tells the controllers (a fixed limit, no pacing).
class RecordingLimiter final : public ConcurrencyLimiter {
 public:
  size_t Limit() const override { return 1; }
  void OnStart(TimePoint) override {}
  void OnFinish(TimePoint, Duration, RequestOutcome) override {}
  void OnBatchSizeChanged(TimePoint, double latency_ratio) override {
    ratios.push_back(latency_ratio);
  }
  std::vector<double> ratios;
};

class RecordingPacer final : public RatePacer {
 public:
  Duration DelayFor(TimePoint, uint32_t) const override { return Duration(0); }
  void OnStart(TimePoint now, uint32_t) override {
    starts.push_back(now);
    if (starts.size() == cap_change_after) cap = cap_after;
  }
  void OnResponse(TimePoint, const RateLimitInfo&, int, uint64_t, int64_t) override {
    ++without_start;
  }
  void OnResponseTo(TimePoint started, TimePoint, const RateLimitInfo&, int, uint64_t,
                    int64_t) override {
    answered_starts.push_back(started);
  }
  double BytesPerToken() const override { return 4.0; }
  double TokensPerRequestCap() const override { return cap; }
  double cap = 0;
  size_t cap_change_after = 0;  // 0: never
  double cap_after = 0;
  std::vector<TimePoint> starts, answered_starts;
  int without_start = 0;
};

TEST(EmbedStageTest, TellsTheLimiterWhenTheBatchSizeChangesAndThePacerWhenAnswersStarted) {
  // Latency 100 ms + 1 ms per input on a manual clock, one request at a time:
  // the sizer fits it exactly and grows batches towards 400 inputs (capped at 64).
  ManualClock clock(TimePoint{} + std::chrono::hours(1));
  Harness h(
      [&clock](const EmbedRequest& r, int) {
        clock.Advance(milliseconds(100) + milliseconds(1) * static_cast<int64_t>(r.inputs.size()));
        return Ok(r);
      },
      /*concurrency=*/1);
  auto limiter = std::make_unique<RecordingLimiter>();
  auto pacer = std::make_unique<RecordingPacer>();
  RecordingLimiter* recorded_limiter = limiter.get();
  RecordingPacer* recorded_pacer = pacer.get();
  h.limiter = std::move(limiter);
  h.pacer = std::move(pacer);
  h.clock = &clock;
  h.options.adaptive_batch = true;
  h.options.batch_size = 2;
  h.options.max_inputs_per_request = 64;
  ASSERT_TRUE(h.RunAll(Chunks(900)).ok());
  h.ExpectExactlyOnce(900);

  // The sizes the batches took, in order, and the latency ratios between them.
  std::vector<size_t> sizes;
  for (size_t size : h.transport.RequestSizes()) {
    if (sizes.empty() || size != sizes.back()) sizes.push_back(size);
  }
  ASSERT_GE(sizes.size(), 3u) << "the sizer never changed the batch size";
  // One call per change of the suggestion; the last may not have been used
  // by a batch yet, and the final partial batch is no change.
  EXPECT_GE(recorded_limiter->ratios.size(), sizes.size() - 2);
  EXPECT_LE(recorded_limiter->ratios.size(), sizes.size());
  auto latency = [](double inputs) { return 0.1 + 0.001 * inputs; };
  int fitted = 0;
  for (double ratio : recorded_limiter->ratios) {
    if (ratio <= 0) continue;  // before any fit: unknown, as BatchSizer::LatencyRatio says
    ++fitted;
    bool matches = false;
    for (size_t i = 0; i + 1 < sizes.size(); ++i) {
      const double expected =
          latency(static_cast<double>(sizes[i + 1])) / latency(static_cast<double>(sizes[i]));
      if (std::abs(ratio - expected) < 1e-6) matches = true;
    }
    EXPECT_TRUE(matches) << "ratio " << ratio;
  }
  EXPECT_GE(fitted, 1);

  // Every answer reached the pacer with the time its request started.
  EXPECT_EQ(recorded_pacer->without_start, 0);
  EXPECT_EQ(recorded_pacer->answered_starts, recorded_pacer->starts);
}

TEST(EmbedStageTest, KeepsBatchesWithinThePacersTokenCap) {
  Harness h([](const EmbedRequest& r, int) { return Ok(r); });
  auto pacer = std::make_unique<RecordingPacer>();
  // "chunk text number N" is 19-20 bytes: 5 tokens at 4 bytes per token.
  pacer->cap = 12;  // two inputs per request, not the four of batch_size
  h.pacer = std::move(pacer);
  ASSERT_TRUE(h.RunAll(Chunks(10)).ok());
  h.ExpectExactlyOnce(10);
  EXPECT_EQ(h.transport.RequestSizes(), (std::vector<size_t>{2, 2, 2, 2, 2}));
}

TEST(EmbedStageTest, CutsEachBatchWithTheCapInForceWhenItStarts) {
  // The token limit halves after three requests (e.g. the service's TPM):
  // batches are cut just in time, so the fourth request already has the new
  // size although every chunk was waiting from the start.
  Harness h([](const EmbedRequest& r, int) { return Ok(r); });
  auto pacer = std::make_unique<RecordingPacer>();
  pacer->cap = 1000;
  pacer->cap_change_after = 3;
  pacer->cap_after = 12;  // two 5-token inputs
  h.pacer = std::move(pacer);
  ASSERT_TRUE(h.RunAll(Chunks(20)).ok());
  h.ExpectExactlyOnce(20);
  EXPECT_EQ(h.transport.RequestSizes(), (std::vector<size_t>{4, 4, 4, 2, 2, 2, 2}));
}

// Regime (b) of BENCHMARKS.md: no per-input cost (a stopped clock), so the
// sizer alone grows batches; with an in-flight budget the stage caps them at
// budget / limit once it knows the limit, and fills the limit with them.
TEST(EmbedStageTest, AdaptiveBatchesStayWithinTheInFlightBudgetOverTheLimit) {
  auto run = [](size_t budget) {
    Harness h([](const EmbedRequest& r, int) { return Ok(r); }, /*concurrency=*/8);
    h.options.adaptive_batch = true;
    h.options.batch_size = 8;
    h.options.max_inputs_per_request = 2048;
    h.options.in_flight_chunk_budget = budget;
    ManualClock stopped;
    h.clock = &stopped;
    EXPECT_TRUE(h.RunAll(Chunks(1000)).ok());  // the harness's input queue holds 1000
    h.ExpectExactlyOnce(1000);
    return h.transport.RequestSizes();
  };
  const std::vector<size_t> capped = run(/*budget=*/32);
  ASSERT_GT(capped.size(), 8u);
  EXPECT_EQ(capped.front(), 8u);  // before any answer the limit is not known
  // Once the first answer came back: 32 chunks / 8 slots.
  const size_t first_capped =
      static_cast<size_t>(std::find(capped.begin(), capped.end(), size_t{4}) - capped.begin());
  ASSERT_LE(first_capped, 8u) << "the cap was not applied after the first answer";
  for (size_t i = first_capped; i < capped.size(); ++i) EXPECT_LE(capped[i], 4u) << i;

  // Without a budget the same run grows past the initial 8 (the cap above
  // is what kept it down).
  const std::vector<size_t> uncapped = run(/*budget=*/0);
  EXPECT_GT(*std::max_element(uncapped.begin(), uncapped.end()), 8u);
}

}  // namespace
}  // namespace sluice
