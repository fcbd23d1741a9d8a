// Pure pieces of the embed client: retry policy, fixed limiter, cooldown
// pacer, rate-limit header parsing, and the offline hash embedder.
#include <gtest/gtest.h>

#include <algorithm>
#include <cctype>
#include <cmath>
#include <random>

#include "common/hashing.h"
#include "embed/rate_limit_headers.h"
#include "sluice/embed.h"
#include "sluice/embed_stage.h"

namespace sluice {
namespace {

using std::chrono::milliseconds;
using std::chrono::seconds;

// ---- RetryPolicy ----

TEST(RetryPolicyTest, FullJitterStaysWithinCappedExponentialBounds) {
  RetryPolicyOptions o;
  o.initial_backoff = milliseconds(100);
  o.max_backoff = milliseconds(1000);
  o.multiplier = 2.0;
  RetryPolicy policy(o);
  std::mt19937_64 rng(42);
  const Duration ceilings[] = {milliseconds(100), milliseconds(200),  milliseconds(400),
                               milliseconds(800), milliseconds(1000), milliseconds(1000)};
  for (int attempt = 1; attempt <= 6; ++attempt) {
    Duration max_seen{0};
    for (int i = 0; i < 500; ++i) {
      const Duration d = policy.Backoff(attempt, std::nullopt, rng);
      ASSERT_GE(d, Duration(0));
      ASSERT_LT(d, ceilings[attempt - 1]) << "attempt " << attempt;
      max_seen = std::max(max_seen, d);
    }
    // Full jitter covers the range: 500 draws reach the top half.
    EXPECT_GT(max_seen, ceilings[attempt - 1] / 2) << "attempt " << attempt;
  }
}

TEST(RetryPolicyTest, SameSeedSameBackoffs) {
  RetryPolicy policy(RetryPolicyOptions{});
  std::mt19937_64 a(7), b(7);
  for (int attempt = 1; attempt < 8; ++attempt) {
    EXPECT_EQ(policy.Backoff(attempt, std::nullopt, a), policy.Backoff(attempt, std::nullopt, b));
  }
}

TEST(RetryPolicyTest, RetryAfterWinsAndIsCapped) {
  RetryPolicy policy(RetryPolicyOptions{});
  std::mt19937_64 rng(1);
  EXPECT_EQ(policy.Backoff(1, Duration(seconds(7)), rng), seconds(7));
  EXPECT_EQ(policy.Backoff(5, Duration(milliseconds(1)), rng), milliseconds(1));
  EXPECT_EQ(policy.Backoff(1, Duration(std::chrono::hours(1)), rng), std::chrono::minutes(5));
}

TEST(RetryPolicyTest, RetriesOnlyRetryableAndCorruptWithinAttempts) {
  RetryPolicyOptions o;
  o.max_attempts = 3;
  RetryPolicy policy(o);
  EXPECT_TRUE(policy.ShouldRetry(Status::RateLimited("429"), 1));
  EXPECT_TRUE(policy.ShouldRetry(Status::Unavailable("503"), 2));
  EXPECT_TRUE(policy.ShouldRetry(Status::Timeout("t"), 1));
  EXPECT_TRUE(policy.ShouldRetry(Status::Corrupt("bad body"), 1));
  EXPECT_FALSE(policy.ShouldRetry(Status::Unavailable("503"), 3));  // attempts used up
  EXPECT_FALSE(policy.ShouldRetry(Status::Rejected("400"), 1));
  EXPECT_FALSE(policy.ShouldRetry(Status::PermissionDenied("401"), 1));
  EXPECT_FALSE(policy.ShouldRetry(Status::InvalidArgument("x"), 1));
}

// ---- Limiter and pacer ----

TEST(LimitersTest, FixedLimiterAnswersItsLimit) {
  auto limiter = MakeFixedLimiter(5);
  EXPECT_EQ(limiter->Limit(), 5u);
  limiter->OnFinish(TimePoint{}, milliseconds(10), RequestOutcome::kBackpressure);
  EXPECT_EQ(limiter->Limit(), 5u);
  EXPECT_EQ(MakeFixedLimiter(0)->Limit(), 1u);  // never zero: the stage would stall
}

TEST(LimitersTest, CooldownPacerSharesOneCooldown) {
  ManualClock clock;
  auto pacer = MakeCooldownOnlyPacer();
  EXPECT_EQ(pacer->DelayFor(clock.Now(), 100), Duration(0));
  RateLimitInfo rate;
  rate.retry_after = seconds(2);
  pacer->OnResponse(clock.Now(), rate, 429, 100, 0);
  EXPECT_EQ(pacer->DelayFor(clock.Now(), 1), seconds(2));
  clock.Advance(milliseconds(500));
  EXPECT_EQ(pacer->DelayFor(clock.Now(), 1), milliseconds(1500));
  // A shorter Retry-After does not shorten the cooldown.
  RateLimitInfo shorter;
  shorter.retry_after = milliseconds(100);
  pacer->OnResponse(clock.Now(), shorter, 429, 100, 0);
  EXPECT_EQ(pacer->DelayFor(clock.Now(), 1), milliseconds(1500));
  clock.Advance(milliseconds(1500));
  EXPECT_EQ(pacer->DelayFor(clock.Now(), 1), Duration(0));
}

TEST(LimitersTest, CooldownPacerLearnsBytesPerToken) {
  auto pacer = MakeCooldownOnlyPacer();
  EXPECT_DOUBLE_EQ(pacer->BytesPerToken(), 4.0);
  pacer->OnResponse(TimePoint{}, {}, 200, 3000, 1000);  // 3 bytes per token
  EXPECT_DOUBLE_EQ(pacer->BytesPerToken(), 0.2 * 3.0 + 0.8 * 4.0);
  for (int i = 0; i < 100; ++i) pacer->OnResponse(TimePoint{}, {}, 200, 3000, 1000);
  EXPECT_NEAR(pacer->BytesPerToken(), 3.0, 1e-6);
  // Failures and missing usage teach nothing.
  pacer->OnResponse(TimePoint{}, {}, 500, 3000, 0);
  pacer->OnResponse(TimePoint{}, {}, 200, 3000, 0);
  EXPECT_NEAR(pacer->BytesPerToken(), 3.0, 1e-6);
}

// ---- Rate-limit headers ----

TEST(RateLimitHeadersTest, ParsesAllDurationForms) {
  EXPECT_EQ(ParseRateLimitDuration("1s"), seconds(1));
  EXPECT_EQ(ParseRateLimitDuration("6m0s"), std::chrono::minutes(6));
  EXPECT_EQ(ParseRateLimitDuration("12ms"), milliseconds(12));
  EXPECT_EQ(ParseRateLimitDuration("0.5s"), milliseconds(500));
  EXPECT_EQ(ParseRateLimitDuration("1h2m3.5s"), milliseconds(3723500));
  EXPECT_EQ(ParseRateLimitDuration("250us"), std::chrono::microseconds(250));
  EXPECT_EQ(ParseRateLimitDuration("7ns"), std::chrono::nanoseconds(7));
  EXPECT_EQ(ParseRateLimitDuration("3"), seconds(3));
  EXPECT_EQ(ParseRateLimitDuration(" 20ms \r\n"), milliseconds(20));
  EXPECT_EQ(ParseRateLimitDuration(""), std::nullopt);
  EXPECT_EQ(ParseRateLimitDuration("abc"), std::nullopt);
  EXPECT_EQ(ParseRateLimitDuration("-1s"), std::nullopt);
  EXPECT_EQ(ParseRateLimitDuration("1x"), std::nullopt);
  EXPECT_EQ(ParseRateLimitDuration("1m30"), std::nullopt);
}

TEST(RateLimitHeadersTest, ParsesOpenAiHeaders) {
  RateLimitInfo info;
  ParseRateLimitHeader("x-ratelimit-limit-requests: 3000\r\n", info);
  ParseRateLimitHeader("X-RateLimit-Limit-Tokens: 1000000\r\n", info);
  ParseRateLimitHeader("x-ratelimit-remaining-requests: 2999\r\n", info);
  ParseRateLimitHeader("x-ratelimit-remaining-tokens: 999500\r\n", info);
  ParseRateLimitHeader("x-ratelimit-reset-requests: 20ms\r\n", info);
  ParseRateLimitHeader("x-ratelimit-reset-tokens: 6m0s\r\n", info);
  ParseRateLimitHeader("content-type: application/json\r\n", info);
  ParseRateLimitHeader("x-ratelimit-remaining-tokens: lots\r\n", info);  // ignored
  EXPECT_EQ(info.limit_requests, 3000);
  EXPECT_EQ(info.limit_tokens, 1000000);
  EXPECT_EQ(info.remaining_requests, 2999);
  EXPECT_EQ(info.remaining_tokens, 999500);
  EXPECT_EQ(info.reset_requests, milliseconds(20));
  EXPECT_EQ(info.reset_tokens, std::chrono::minutes(6));
  EXPECT_FALSE(info.retry_after.has_value());
}

TEST(RateLimitHeadersTest, RetryAfterForms) {
  RateLimitInfo a;
  ParseRateLimitHeader("Retry-After: 2\r\n", a);
  EXPECT_EQ(a.retry_after, seconds(2));
  RateLimitInfo b;
  ParseRateLimitHeader("Retry-After: Wed, 21 Oct 2015 07:28:00 GMT\r\n", b);
  EXPECT_FALSE(b.retry_after.has_value());  // HTTP-date is ignored
  // retry-after-ms is more precise and wins in either order.
  RateLimitInfo c;
  ParseRateLimitHeader("retry-after-ms: 1500\r\n", c);
  ParseRateLimitHeader("retry-after: 2\r\n", c);
  EXPECT_EQ(c.retry_after, milliseconds(1500));
  RateLimitInfo d;
  ParseRateLimitHeader("retry-after: 2\r\n", d);
  ParseRateLimitHeader("retry-after-ms: 12.5\r\n", d);
  EXPECT_EQ(d.retry_after, std::chrono::microseconds(12500));
}

// ---- Hash embedder ----

double Cosine(const std::vector<float>& a, const std::vector<float>& b) {
  double dot = 0;
  for (size_t i = 0; i < a.size(); ++i) dot += double(a[i]) * b[i];
  return dot;  // both unit length
}

TEST(HashEmbedderTest, DeterministicAndNormalised) {
  const auto a = HashEmbed("The pump seal must be replaced every 2000 hours.", 384);
  const auto b = HashEmbed("The pump seal must be replaced every 2000 hours.", 384);
  ASSERT_EQ(a.size(), 384u);
  EXPECT_EQ(a, b);
  double norm = 0;
  for (float x : a) norm += double(x) * x;
  EXPECT_NEAR(norm, 1.0, 1e-5);
  // Case and punctuation do not matter; words do.
  EXPECT_EQ(HashEmbed("Pump, SEAL!", 64), HashEmbed("pump seal", 64));
  EXPECT_NE(HashEmbed("pump seal", 64), HashEmbed("seal pump", 64));  // bigrams
  const auto empty = HashEmbed("  ...  ", 16);
  EXPECT_EQ(empty, std::vector<float>(16, 0.0f));
}

// The vectors must never change: stores and embedding caches hold them under
// the model name "hash". Pinned by a checksum of every byte 1..255 in words,
// computed before the embedder's ASCII fast path replaced isalnum/tolower.
TEST(HashEmbedderTest, OutputIsPinnedAcrossVersions) {
  std::string text =
      "The Pump SEAL, model X-200 (rev 3b): replace every 2000 hours; \xc3\x84\xc3\x96\xc3\xbc "
      "na\xc3\xafve caf\xc3\xa9 \xe2\x80\x94 ok?";
  for (int c = 1; c < 256; ++c) {
    text.push_back(static_cast<char>(c));
    if (c % 7 == 0) text += " Word";
  }
  const std::vector<float> v = HashEmbed(text, 384);
  const std::string_view bytes(reinterpret_cast<const char*>(v.data()), v.size() * sizeof(float));
  EXPECT_EQ(Hash64(bytes, 0), 0x9d2480a282313231ull);
}

// The formula of hash_embedder.cc written the plain way (words and bigrams
// as strings, all hashes sorted, terms added in ascending hash order): the
// embedder's faster path must give the same bits. Few dimensions and a small
// vocabulary put several features, repeated ones among them, in each bucket,
// where the order of the floating-point sums shows.
std::vector<float> HashEmbedByTheFormula(std::string_view text, int dimensions) {
  std::vector<std::string> words(1);
  for (char ch : text) {
    const auto c = static_cast<unsigned char>(ch);
    if (c >= 0x80 || std::isalnum(c)) {
      words.back().push_back(static_cast<char>(std::tolower(c)));
    } else if (!words.back().empty()) {
      words.emplace_back();
    }
  }
  if (words.back().empty()) words.pop_back();
  std::vector<uint64_t> unigrams, bigrams;
  for (size_t i = 0; i < words.size(); ++i) {
    unigrams.push_back(Hash64(words[i], 0x51C30001));
    if (i > 0) bigrams.push_back(Hash64(words[i - 1] + " " + words[i], 0x51C30002));
  }
  std::vector<double> acc(dimensions, 0.0);
  auto add = [&](std::vector<uint64_t>& features, double weight) {
    std::sort(features.begin(), features.end());
    for (size_t i = 0; i < features.size();) {
      size_t j = i;
      while (j < features.size() && features[j] == features[i]) ++j;
      const double sign = (features[i] >> 63) ? -1.0 : 1.0;
      acc[features[i] % dimensions] += sign * weight * (1.0 + std::log(double(j - i)));
      i = j;
    }
  };
  add(unigrams, 1.0);
  add(bigrams, 0.5);
  double norm = 0;
  for (double x : acc) norm += x * x;
  norm = std::sqrt(norm);
  std::vector<float> v(dimensions, 0.0f);
  for (int i = 0; norm > 0 && i < dimensions; ++i) v[i] = static_cast<float>(acc[i] / norm);
  return v;
}

TEST(HashEmbedderTest, GivesTheFormulasBitsWhenBucketsHoldManyFeatures) {
  const char* vocabulary[] = {"pump", "Seal", "the", "A",  "of", "x",           "2000",     "THE",
                              "seal", "b",    ".",   "--", "\n", "caf\xc3\xa9", "pump-seal"};
  std::mt19937_64 random(7);
  for (int text_index = 0; text_index < 2000; ++text_index) {
    std::string text;
    const int words = static_cast<int>(random() % 400);
    for (int i = 0; i < words; ++i) {
      text += vocabulary[random() % std::size(vocabulary)];
      if (random() % 3 != 0) text += ' ';
    }
    if (text_index == 0) {  // counts past any small-count shortcut
      for (int i = 0; i < 300; ++i) text += " pump seal";
    }
    for (int dimensions : {1, 7, 16, 384, 3072, 65521}) {
      if (dimensions > 4096 && text_index >= 50) continue;  // large vectors: a few texts do
      ASSERT_EQ(HashEmbed(text, dimensions), HashEmbedByTheFormula(text, dimensions))
          << "text " << text_index << ", " << dimensions << " dimensions";
    }
  }
}

TEST(HashEmbedderTest, SimilarTextsAreCloserThanUnrelated) {
  const auto query = HashEmbed("replace the pump seal when it leaks", 384);
  const auto similar = HashEmbed("when the pump seal leaks, replace the seal", 384);
  const auto unrelated = HashEmbed("quarterly revenue grew in the european market", 384);
  EXPECT_GT(Cosine(query, similar), Cosine(query, unrelated) + 0.3);
}

TEST(HashEmbedderTest, TransportComputesOnPoll) {
  auto transport = MakeHashTransport({.dimensions = 32});
  EXPECT_EQ(transport->ModelName(), "sluice-hash-v1");
  EXPECT_EQ(transport->Dimensions(), 32);
  EmbedRequest request;
  request.request_id = 9;
  request.inputs = {"alpha beta", "gamma"};
  transport->Submit(std::move(request));
  EXPECT_EQ(transport->InFlight(), 1u);
  std::vector<EmbedResponse> out;
  transport->Poll(Duration(0), out);
  EXPECT_EQ(transport->InFlight(), 0u);
  ASSERT_EQ(out.size(), 1u);
  EXPECT_TRUE(out[0].status.ok());
  EXPECT_EQ(out[0].request_id, 9u);
  EXPECT_EQ(out[0].http_status, 200);
  ASSERT_EQ(out[0].vectors.size(), 2u);
  EXPECT_EQ(out[0].vectors[0], HashEmbed("alpha beta", 32));
  EXPECT_EQ(out[0].vectors[1], HashEmbed("gamma", 32));
  EXPECT_EQ(out[0].prompt_tokens, 3 + 2);  // ceil(10/4) + ceil(5/4)
}

}  // namespace
}  // namespace sluice
