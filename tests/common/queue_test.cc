// Queue tests; also built under TSan by `make check-sanitize`.
#include "sluice/queue.h"

#include <gtest/gtest.h>

#include <atomic>
#include <numeric>
#include <string>
#include <thread>
#include <vector>

namespace sluice {
namespace {

// Waits (without a timed guess) until `count` producers are blocked in Push.
template <class T>
void WaitForBlockedProducers(const BoundedQueue<T>& q, size_t count) {
  while (q.BlockedProducers() < count) std::this_thread::yield();
}

TEST(BoundedQueueTest, FifoAndClose) {
  BoundedQueue<int> q(4);
  EXPECT_TRUE(q.Push(1));
  EXPECT_TRUE(q.Push(2));
  q.Close();
  EXPECT_FALSE(q.Push(3));
  EXPECT_EQ(q.Pop(), 1);
  EXPECT_EQ(q.Pop(), 2);
  EXPECT_EQ(q.Pop(), std::nullopt);
  EXPECT_TRUE(q.Ended());
}

TEST(BoundedQueueTest, FullQueueBlocksProducerUntilConsumed) {
  BoundedQueue<int> q(2);
  ASSERT_TRUE(q.Push(1));
  ASSERT_TRUE(q.Push(2));
  std::atomic<bool> pushed{false};
  std::thread producer([&] {
    q.Push(3);
    pushed = true;
  });
  WaitForBlockedProducers(q, 1);
  EXPECT_FALSE(pushed.load());  // backpressure: blocked inside Push
  EXPECT_EQ(q.Pop(), 1);
  producer.join();
  EXPECT_TRUE(pushed.load());
  EXPECT_EQ(q.Size(), 2u);
}

TEST(BoundedQueueTest, ByteBoundBlocksButAdmitsOversizedItemWhenEmpty) {
  BoundedQueue<std::string> q(100, 10, [](const std::string& s) { return s.size(); });
  ASSERT_TRUE(q.Push(std::string(25, 'x')));  // larger than the bound, queue empty: accepted
  std::atomic<bool> pushed{false};
  std::thread producer([&] {
    q.Push(std::string(5, 'y'));
    pushed = true;
  });
  WaitForBlockedProducers(q, 1);
  EXPECT_FALSE(pushed.load());
  EXPECT_EQ(q.Pop()->size(), 25u);
  producer.join();
  EXPECT_EQ(q.Bytes(), 5u);
}

TEST(BoundedQueueTest, CancelWakesBlockedProducersAndConsumers) {
  BoundedQueue<int> q(1);
  ASSERT_TRUE(q.Push(1));
  std::thread producer([&] { EXPECT_FALSE(q.Push(2)); });
  WaitForBlockedProducers(q, 1);  // Cancel must wake a producer that is really waiting
  EXPECT_EQ(q.Cancel(), 1u);
  producer.join();
  EXPECT_EQ(q.Pop(), std::nullopt);
  EXPECT_EQ(q.State(), QueueState::kCancelled);
}

TEST(BoundedQueueTest, ManyProducersManyConsumersDeliverEverythingOnce) {
  BoundedQueue<int> q(8);
  constexpr int kProducers = 4, kPerProducer = 5000, kConsumers = 3;
  std::vector<std::thread> producers, consumers;
  std::vector<std::vector<int>> got(kConsumers);
  for (int p = 0; p < kProducers; ++p) {
    producers.emplace_back([&, p] {
      for (int i = 0; i < kPerProducer; ++i) ASSERT_TRUE(q.Push(p * kPerProducer + i));
    });
  }
  for (int c = 0; c < kConsumers; ++c) {
    consumers.emplace_back([&, c] {
      while (auto v = q.Pop()) got[c].push_back(*v);
    });
  }
  for (auto& t : producers) t.join();
  q.Close();
  for (auto& t : consumers) t.join();
  std::vector<int> all;
  for (auto& g : got) all.insert(all.end(), g.begin(), g.end());
  ASSERT_EQ(all.size(), static_cast<size_t>(kProducers * kPerProducer));
  std::sort(all.begin(), all.end());
  for (int i = 0; i < kProducers * kPerProducer; ++i) ASSERT_EQ(all[i], i);
  EXPECT_LE(q.HighWaterItems(), 8u);
}

TEST(BoundedQueueTest, PopForTimesOut) {
  BoundedQueue<int> q(1);
  auto start = std::chrono::steady_clock::now();
  EXPECT_EQ(q.PopFor(std::chrono::milliseconds(20)), std::nullopt);
  EXPECT_GE(std::chrono::steady_clock::now() - start, std::chrono::milliseconds(15));
  EXPECT_FALSE(q.Ended());
}

}  // namespace
}  // namespace sluice
