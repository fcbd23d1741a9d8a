// The shared rate budget's scripts against the real test Redis, with the
// time passed explicitly (ms) so every expectation is exact.
#include "distributed/shared_budget.h"

#include <gtest/gtest.h>

#include "distributed/redis_test_util.h"
#include "distributed/shared_controllers.h"
#include "sluice/control.h"
#include "testing/wait.h"

namespace sluice {
namespace {

class SharedBudgetTest : public ::testing::Test {
 protected:
  void SetUp() override {
    url_ = redistest::RedisUrlFromEnv();
    if (url_.empty()) {
      if (redistest::ServicesRequired()) FAIL() << "SLUICE_TEST_REDIS_URL is not set";
      GTEST_SKIP() << "SLUICE_TEST_REDIS_URL not set; run under scripts/test-services.sh";
    }
    options_.redis_url = url_;
    options_.name = redistest::UniqueName("budget");
    options_.safety = 1.0;
    options_.burst_seconds = 1.0;
  }
  void TearDown() override {
    if (url_.empty()) return;
    auto client = Client();
    for (const char* part :
         {"limits", "requests", "tokens", "cooldown", "leases", "unpaced", "probe", "open"}) {
      (void)client->Command({"DEL", Key(part)});
    }
  }
  std::unique_ptr<SharedBudget> Open() {
    auto budget = SharedBudget::Open(options_);
    EXPECT_TRUE(budget.ok()) << budget.status().ToString();
    EXPECT_TRUE((*budget)->up());
    return std::move(*budget);
  }
  std::unique_ptr<RedisClient> Client() {
    auto endpoint = ParseRedisUrl(url_);
    auto client = RedisClient::Connect(*endpoint);
    EXPECT_TRUE(client.ok());
    return std::move(*client);
  }
  std::string Key(const std::string& part) {
    return "sluice:budget:{" + options_.name + "}:" + part;
  }
  int64_t Ttl(const std::string& part) { return Client()->Command({"PTTL", Key(part)})->integer; }

  std::string url_;
  SharedBudgetOptions options_;
};

TEST_F(SharedBudgetTest, WithoutAKnownLimitEveryTakeIsGranted) {
  options_.probe_duration = Duration(0);  // no first-request gate (tested below)
  auto budget = Open();
  for (int i = 0; i < 100; ++i) {
    auto take = budget->Take(1, 1000, false, 1000);
    ASSERT_TRUE(take.ok()) << take.status().ToString();
    EXPECT_TRUE(take->granted);
    EXPECT_EQ(take->wait_ms, 0);
  }
}

TEST_F(SharedBudgetTest, TheFirstTakeGoesAloneAndItsAnswerSeedsTheBuckets) {
  auto budget = Open();
  auto other = Open();  // another process on the same budget
  EXPECT_TRUE(budget->Take(1, 1900, false, 0)->granted);
  // Nobody knows the limit yet: the others wait for the first answer.
  auto refused = other->Take(1, 1900, false, 0);
  EXPECT_FALSE(refused->granted);
  EXPECT_EQ(refused->wait_ms, 50);
  EXPECT_FALSE(budget->Take(1, 1900, false, 0)->granted);
  // A forced start (one that began without asking) still counts.
  EXPECT_TRUE(other->Take(1, 10, true, 0)->granted);
  // The answer: 120k TPM, 100 tokens left. The bucket starts there (less
  // the forced start), so the next request waits for a refill, not a 429.
  ASSERT_TRUE(budget->Learn(0, 120000, 0, -1, 100, /*own_tokens=*/1900).ok());
  auto paced = other->Take(1, 1900, false, 0);
  EXPECT_FALSE(paced->granted);
  EXPECT_GT(paced->wait_ms, 800);  // ~1800 tokens at 1960/s
  EXPECT_TRUE(other->Take(1, 1900, false, 1000)->granted);
}

TEST_F(SharedBudgetTest, AnAnswerWithoutLimitsOpensTheBudgetForEveryone) {
  auto budget = Open();
  auto other = Open();
  EXPECT_TRUE(budget->Take(1, 100, false, 0)->granted);
  EXPECT_FALSE(other->Take(1, 100, false, 0)->granted);
  // A success without rate-limit headers (a self-hosted server): no limit
  // to wait for, every take is granted from now on.
  ASSERT_TRUE(budget->ProbeAnswered(/*no_limits=*/true).ok());
  for (int i = 0; i < 50; ++i) EXPECT_TRUE(other->Take(1, 100, false, 0)->granted) << i;
  EXPECT_GT(Ttl("open"), 0);
  EXPECT_LE(Ttl("open"), 60000);
}

TEST_F(SharedBudgetTest, AFailedProbeReleasesTheGateAndALostOneLapses) {
  // Long enough that no stall of a loaded machine outlasts it between two calls.
  options_.probe_duration = std::chrono::seconds(2);
  auto budget = Open();
  auto other = Open();
  EXPECT_TRUE(budget->Take(1, 100, false, 0)->granted);
  // Its answer was an error without headers: the gate is released and
  // the next take probes again (the budget is not opened).
  ASSERT_TRUE(budget->ProbeAnswered(/*no_limits=*/false).ok());
  const auto probed = std::chrono::steady_clock::now();
  EXPECT_TRUE(other->Take(1, 100, false, 0)->granted);
  EXPECT_FALSE(budget->Take(1, 100, false, 0)->granted);
  // That probe's process dies: its gate lapses probe_duration after it was set.
  EXPECT_TRUE(testing::WaitUntil([&] { return budget->Take(1, 100, false, 0)->granted; }));
  EXPECT_GE(std::chrono::steady_clock::now() - probed, std::chrono::milliseconds(1990));
}

TEST_F(SharedBudgetTest, RequestBucketStartsFullRefillsAndSaysHowLongToWait) {
  auto budget = Open();
  ASSERT_TRUE(budget->Learn(600, 0, 0).ok());  // 10 requests/s, a bucket of 10
  for (int i = 0; i < 10; ++i) {
    auto take = budget->Take(1, 0, false, 0);
    ASSERT_TRUE(take.ok());
    EXPECT_TRUE(take->granted) << i;
  }
  auto refused = budget->Take(1, 0, false, 0);
  ASSERT_TRUE(refused.ok());
  EXPECT_FALSE(refused->granted);
  EXPECT_EQ(refused->wait_ms, 100);  // one request refills in 100 ms
  EXPECT_FALSE(budget->Take(1, 0, false, 99)->granted);
  EXPECT_TRUE(budget->Take(1, 0, false, 100)->granted);
  // After a long pause the bucket holds its capacity, not more.
  for (int i = 0; i < 10; ++i) EXPECT_TRUE(budget->Take(1, 0, false, 60000)->granted) << i;
  EXPECT_FALSE(budget->Take(1, 0, false, 60000)->granted);
}

TEST_F(SharedBudgetTest, ANewBucketStartsWithWhatTheServiceSaidIsLeft) {
  auto budget = Open();
  ASSERT_TRUE(budget->Learn(600, 0, 0, 3, 5000).ok());  // no token limit: 5000 ignored
  for (int i = 0; i < 3; ++i) EXPECT_TRUE(budget->Take(1, 10, false, 0)->granted) << i;
  EXPECT_EQ(budget->Take(1, 10, false, 0)->wait_ms, 100);
  // Once the bucket exists, later reports do not refill it.
  ASSERT_TRUE(budget->Learn(600, 0, 0, 10, -1).ok());
  EXPECT_FALSE(budget->Take(1, 10, false, 0)->granted);
}

TEST_F(SharedBudgetTest, TakesBeforeAnyLimitWasKnownCountAgainstTheFirstBucket) {
  options_.probe_duration = Duration(0);  // five takes before the first answer
  auto budget = Open();
  // Five requests went out before any limit was known; the answer to one of
  // them says 15 requests and 900 tokens are left.
  for (int i = 0; i < 5; ++i) EXPECT_TRUE(budget->Take(1, 100, false, 0)->granted);
  ASSERT_TRUE(budget->Learn(6000, 60000, 0, 15, 900).ok());
  // 15 less the four other requests; 900 less all 500 tokens.
  auto take = budget->Take(0, 0, false, 0);
  EXPECT_DOUBLE_EQ(take->requests_level, 11);
  EXPECT_DOUBLE_EQ(take->tokens_level, 400);
}

TEST_F(SharedBudgetTest, TokensAndRequestsBothLimit) {
  auto budget = Open();
  ASSERT_TRUE(budget->Learn(6000, 60000, 0).ok());  // 100 requests/s, 1000 tokens/s
  // Tokens bind first: 1000 tokens hold two requests of 400.
  EXPECT_TRUE(budget->Take(1, 400, false, 0)->granted);
  EXPECT_TRUE(budget->Take(1, 400, false, 0)->granted);
  auto refused = budget->Take(1, 400, false, 0);
  EXPECT_FALSE(refused->granted);
  EXPECT_EQ(refused->wait_ms, 200);  // 200 tokens missing at 1 token/ms
  EXPECT_DOUBLE_EQ(refused->tokens_level, 200);
  EXPECT_DOUBLE_EQ(refused->requests_level, 98);
  // Requests bind when requests cost no tokens: 98 left.
  for (int i = 0; i < 98; ++i) EXPECT_TRUE(budget->Take(1, 0, false, 0)->granted) << i;
  auto out_of_requests = budget->Take(1, 0, false, 0);
  EXPECT_FALSE(out_of_requests->granted);
  EXPECT_EQ(out_of_requests->wait_ms, 10);  // a request refills in 10 ms
  // A forced take is granted into a debt, which later takes wait out.
  auto forced = budget->Take(5, 0, true, 0);
  EXPECT_TRUE(forced->granted);
  EXPECT_DOUBLE_EQ(forced->requests_level, -5);
  EXPECT_EQ(budget->Take(1, 0, false, 0)->wait_ms, 60);
  // A cost above the capacity goes when the bucket is full.
  auto big = budget->Take(0, 5000, false, 0);
  EXPECT_FALSE(big->granted);
  EXPECT_EQ(big->wait_ms, 800);
  EXPECT_TRUE(budget->Take(0, 5000, false, 800)->granted);
}

TEST_F(SharedBudgetTest, CooldownIsSharedBetweenClients) {
  auto a = Open();
  auto b = Open();
  ASSERT_TRUE(a->Learn(600, 0, 0).ok());
  EXPECT_TRUE(b->Take(1, 0, false, 1000)->granted);
  auto until = a->Cooldown(2000, 1000);  // a's 429 said Retry-After: 2 s
  ASSERT_TRUE(until.ok());
  EXPECT_EQ(*until, 3000);
  auto refused = b->Take(1, 0, false, 1500);
  EXPECT_FALSE(refused->granted);
  EXPECT_EQ(refused->cooldown_ms, 1500);
  EXPECT_EQ(refused->wait_ms, 1500);
  // A shorter cooldown does not cut a longer one short.
  EXPECT_EQ(*b->Cooldown(100, 1500), 3000);
  EXPECT_FALSE(a->Take(1, 0, false, 2999)->granted);
  EXPECT_TRUE(b->Take(1, 0, false, 3000)->granted);
  // Even without any rate limit known, a cooldown stops everyone.
  options_.name = redistest::UniqueName("budget-nolimit");
  auto c = Open();
  ASSERT_TRUE(c->Cooldown(500, 0).ok());
  EXPECT_FALSE(c->Take(1, 1, false, 10)->granted);
  EXPECT_TRUE(c->Take(1, 1, false, 500)->granted);
}

TEST_F(SharedBudgetTest, TheTightestLearnedLimitWinsUntilItIsNotConfirmed) {
  options_.limit_window = std::chrono::seconds(60);
  auto a = Open();
  auto b = Open();
  EXPECT_EQ(a->Learn(3000, 100000, 0)->first, 3000);
  auto tighter = b->Learn(600, 0, 0);  // b's key (or tier) allows fewer requests
  EXPECT_EQ(tighter->first, 600);
  EXPECT_EQ(tighter->second, 100000);
  EXPECT_EQ(a->Learn(3000, 150000, 1000)->first, 600);  // a higher report does not win
  EXPECT_EQ(a->Take(1, 0, false, 1000)->rpm, 600);
  EXPECT_EQ(a->Take(1, 0, false, 1000)->tpm, 100000);
  // Nobody confirmed 600 for longer than the window: the next report replaces it.
  auto later = a->Learn(3000, 150000, 61001);
  EXPECT_EQ(later->first, 3000);
  EXPECT_EQ(later->second, 150000);
}

TEST_F(SharedBudgetTest, ACappedInFlightCountAndAnExpiredLeaseFreesItsSlot) {
  options_.lease_duration = std::chrono::seconds(10);
  auto a = Open();
  auto b = Open();
  EXPECT_EQ(*a->AcquireLeases({"a1", "a2", "a3"}, 4, 0), 3u);
  EXPECT_EQ(*b->AcquireLeases({"b1", "b2"}, 4, 0), 1u);  // only one slot left
  EXPECT_EQ(*b->AcquireLeases({"b2"}, 4, 5000), 0u);
  // a renews a1 and a2 but not a3 (say its process died holding it).
  auto lost = a->RenewLeases({"a1", "a2"}, 5000);
  ASSERT_TRUE(lost.ok());
  EXPECT_TRUE(lost->empty());
  EXPECT_EQ(*a->LeaseCount(9999), 4);
  // At 10 s a3 and b1 lapse: their slots come back.
  EXPECT_EQ(*a->LeaseCount(10000), 2);
  EXPECT_EQ(*b->AcquireLeases({"b2", "b3", "b4"}, 4, 10000), 2u);
  // A renewal after the lease lapsed says it is gone.
  auto gone = b->RenewLeases({"b1", "b2"}, 10001);
  ASSERT_TRUE(gone.ok());
  EXPECT_EQ(*gone, std::vector<std::string>{"b1"});
  ASSERT_TRUE(a->ReleaseLeases({"a1"}).ok());
  EXPECT_EQ(*a->LeaseCount(10001), 3);
}

TEST_F(SharedBudgetTest, EveryKeyGetsATtl) {
  options_.key_ttl = std::chrono::seconds(120);
  auto budget = Open();
  ASSERT_TRUE(budget->Learn(600, 60000, 0).ok());
  ASSERT_TRUE(budget->Take(1, 10, false, 0).ok());
  ASSERT_TRUE(budget->Cooldown(50, 0).ok());
  ASSERT_TRUE(budget->AcquireLeases({"x"}, 2, 0).ok());
  for (const char* part : {"limits", "requests", "tokens", "cooldown", "leases"}) {
    const int64_t ttl = Ttl(part);
    EXPECT_GT(ttl, 100000) << part;
    EXPECT_LE(ttl, 120000) << part;
  }
}

TEST_F(SharedBudgetTest, UnreachableRedisFailsFastAndNamesNoPassword) {
  options_.redis_url = "redis://:hunter2@127.0.0.1:1/0";
  options_.reconnect_after = std::chrono::hours(1);
  auto budget = SharedBudget::Open(options_);
  ASSERT_TRUE(budget.ok());
  EXPECT_FALSE((*budget)->up());
  auto take = (*budget)->Take(1, 1, false);
  ASSERT_FALSE(take.ok());
  EXPECT_EQ(take.status().code(), StatusCode::kUnavailable);
  EXPECT_EQ(take.status().message().find("hunter2"), std::string::npos);

  // The decorators fall back to the local controllers.
  options_.redis_url = "redis://127.0.0.1:1/0";
  auto for_pacer = SharedBudget::Open(options_);
  auto for_limiter = SharedBudget::Open(options_);
  ASSERT_TRUE(for_pacer.ok() && for_limiter.ok());
  SharedRatePacer pacer(MakeCooldownOnlyPacer(), std::move(*for_pacer));
  EXPECT_EQ(pacer.DelayFor(TimePoint{}, 10), Duration(0));
  pacer.OnStart(TimePoint{}, 10);
  SharedConcurrencyLimiter limiter(MakeFixedLimiter(3), std::move(*for_limiter), 1);
  EXPECT_EQ(limiter.Limit(), 3u);
}

TEST_F(SharedBudgetTest, ALostConnectionFallsBackOnceAndTheBudgetResumesWhereItWas) {
  options_.reconnect_after = Duration(0);  // retry at the next operation
  auto budget = Open();
  ASSERT_TRUE(budget->Learn(600, 0, 0).ok());
  for (int i = 0; i < 10; ++i) ASSERT_TRUE(budget->Take(1, 0, false, 0)->granted);
  auto id = budget->ClientId();
  ASSERT_TRUE(id.ok());
  ASSERT_TRUE(Client()->Command({"CLIENT", "KILL", "ID", std::to_string(*id)}).ok());
  // The next operation finds the connection gone: unavailable, down.
  auto lost = budget->Take(1, 0, false, 0);
  ASSERT_FALSE(lost.ok());
  EXPECT_EQ(lost.status().code(), StatusCode::kUnavailable);
  EXPECT_FALSE(budget->up());
  // The one after reconnects; the bucket is as the other takes left it.
  auto back = budget->Take(1, 0, false, 0);
  ASSERT_TRUE(back.ok()) << back.status().ToString();
  EXPECT_TRUE(budget->up());
  EXPECT_FALSE(back->granted);
  EXPECT_EQ(back->wait_ms, 100);
}

TEST_F(SharedBudgetTest, PacerReservesAStartAndWaitsForTheSharedBucket) {
  auto seed = Open();
  ASSERT_TRUE(seed->Learn(120, 0).ok());  // 2 requests/s, bucket of 2, Redis time
  SharedRatePacer a(MakeCooldownOnlyPacer(), Open());
  SharedRatePacer b(MakeCooldownOnlyPacer(), Open());
  const TimePoint t0{};
  EXPECT_EQ(a.DelayFor(t0, 1), Duration(0));
  EXPECT_EQ(a.DelayFor(t0, 1), Duration(0));  // the same reservation, not another take
  a.OnStart(t0, 1);
  EXPECT_EQ(b.DelayFor(t0, 1), Duration(0));
  b.OnStart(t0, 1);
  // The bucket is empty: both wait about half a second (Redis's clock moves).
  const Duration wait = a.DelayFor(t0, 1);
  EXPECT_GT(wait, std::chrono::milliseconds(300));
  EXPECT_LE(wait, std::chrono::milliseconds(500));
  EXPECT_GT(b.DelayFor(t0, 1), std::chrono::milliseconds(300));
  EXPECT_EQ(a.shared_takes() + b.shared_takes(), 2u);
  // A 429 with Retry-After in one process stops the other.
  RateLimitInfo rate;
  rate.retry_after = std::chrono::seconds(30);
  a.OnResponseTo(t0, t0, rate, 429, 10, 0);
  SharedRatePacer c(MakeCooldownOnlyPacer(), Open());
  EXPECT_GT(c.DelayFor(t0, 1), std::chrono::seconds(29));
}

// The decorators: one process's first request goes alone, and its answer
// (less its own tokens, which the service already counted) seeds the bucket
// the other process is paced by.
TEST_F(SharedBudgetTest, PacersOnOneBudgetSendTheFirstRequestAloneAndPaceByItsAnswer) {
  SharedRatePacer a(MakeCooldownOnlyPacer(), Open());
  SharedRatePacer b(MakeCooldownOnlyPacer(), Open());
  const TimePoint t0{};
  EXPECT_EQ(a.DelayFor(t0, 1900), Duration(0));
  a.OnStart(t0, 1900);
  EXPECT_EQ(b.DelayFor(t0, 1900), std::chrono::milliseconds(50));  // waits for a's answer
  RateLimitInfo rate;
  rate.limit_tokens = 120000;
  rate.remaining_tokens = 100;
  a.OnResponseTo(t0, t0 + std::chrono::milliseconds(20), rate, 200, 7600, 1900);
  // b asks again after its poll: about (1900 - 100) / 1960 s. Had a's own
  // 1900 tokens been subtracted again, nearly twice that.
  const Duration wait = b.DelayFor(t0 + std::chrono::milliseconds(50), 1900);
  EXPECT_LT(wait, std::chrono::milliseconds(1000));
  EXPECT_EQ(b.Budget(t0).tokens_per_minute, 120000);
}

TEST_F(SharedBudgetTest, LimiterHoldsNoMoreLeasesThanTheCapAcrossProcesses) {
  ManualClock clock;
  SharedConcurrencyLimiter a(MakeFixedLimiter(4), Open(), 5, clock);
  SharedConcurrencyLimiter b(MakeFixedLimiter(4), Open(), 5, clock);
  // Leases follow the requests in flight (one spare).
  EXPECT_EQ(a.Limit(), 1u);
  for (int i = 0; i < 4; ++i) {
    a.OnStart(clock.Now());
    a.Limit();
  }
  EXPECT_EQ(a.Limit(), 4u);
  EXPECT_EQ(b.Limit(), 1u);  // one slot of five left
  b.OnStart(clock.Now());
  EXPECT_EQ(b.Limit(), 1u);
  // a finishes its requests: it gives back all but its spares, b may grow.
  for (int i = 0; i < 4; ++i) a.OnFinish(clock.Now(), Duration(0), RequestOutcome::kSuccess);
  EXPECT_EQ(a.Limit(), 1u);
  clock.Advance(std::chrono::milliseconds(20));
  EXPECT_EQ(b.Limit(), 2u);
}

}  // namespace
}  // namespace sluice
