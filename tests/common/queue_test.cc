// Queue tests; also built under TSan by `make check-sanitize`.
#include "sluice/queue.h"

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
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

// A producer's wait on a full queue is reported to it: nothing when there
// was room, at least the time the consumer kept it waiting otherwise.
TEST(BoundedQueueTest, PushReportsTheTimeItWaitedOnAFullQueue) {
  BoundedQueue<int> q(2);
  std::chrono::nanoseconds waited{0};
  ASSERT_TRUE(q.Push(1, &waited));
  ASSERT_TRUE(q.Push(2, &waited));
  EXPECT_EQ(waited.count(), 0);
  std::thread producer([&] { q.Push(3, &waited); });
  WaitForBlockedProducers(q, 1);
  EXPECT_EQ(waited.count(), 0);  // counted once the wait is over
  EXPECT_EQ(q.Pop(), 1);
  producer.join();
  EXPECT_GT(waited.count(), 0);
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

// Hysteresis: a producer blocked on a full queue of 8 resumes once a quarter
// (2 items) has drained.
TEST(BoundedQueueTest, ABlockedProducerResumesOnceAQuarterHasDrained) {
  BoundedQueue<int> q(8);
  for (int i = 0; i < 8; ++i) ASSERT_TRUE(q.Push(int{i}));
  std::thread producer([&] { EXPECT_TRUE(q.Push(8)); });
  WaitForBlockedProducers(q, 1);
  EXPECT_EQ(q.Pop(), 0);
  EXPECT_EQ(q.Pop(), 1);  // 6 left: the producer is woken
  producer.join();
  EXPECT_GE(q.ProducerWakeups(), 1u);
  for (int i = 2; i <= 8; ++i) EXPECT_EQ(q.Pop(), i);
}

// One wake-up per quarter of the queue drained, not one per item: from one
// wake-up to the next a producer must have filled the queue again (>= 25
// pushes) and the consumer drained it to 75 (>= 25 pops); an emptied queue
// may add one more. Order and count are kept.
TEST(BoundedQueueTest, ProducersAreWokenPerQuarterDrainedNotPerItem) {
  BoundedQueue<int> q(100);
  constexpr int kItems = 20000;
  std::thread producer([&] {
    for (int i = 0; i < kItems; ++i) ASSERT_TRUE(q.Push(int{i}));
    q.Close();
  });
  int expected = 0;
  while (auto v = q.Pop()) ASSERT_EQ(*v, expected++);
  producer.join();
  EXPECT_EQ(expected, kItems);
  EXPECT_LE(q.ProducerWakeups(), 2u * (kItems / 25) + 2);
}

// A byte-bound queue: the producer also waits for a quarter of the bytes, and
// an item that only fits an empty queue is still admitted once it is empty.
TEST(BoundedQueueTest, ByteBoundHysteresisNeverStrandsAProducer) {
  BoundedQueue<std::string> q(100, 1000, [](const std::string& s) { return s.size(); });
  std::thread producer([&] {
    for (int i = 0; i < 200; ++i) {
      ASSERT_TRUE(q.Push(std::string(i % 7 == 0 ? 900 : 100, 'x')));
    }
    q.Close();
  });
  int got = 0;
  while (auto v = q.Pop()) ++got;
  producer.join();
  EXPECT_EQ(got, 200);
}

// PushAll: everything in order, blocking while full; with a byte bound each
// run stops at the first item that does not fit.
TEST(BoundedQueueTest, PushAllDeliversInOrderThroughAFullQueue) {
  BoundedQueue<std::string> q(4, 250, [](const std::string& s) { return s.size(); });
  std::vector<std::string> items;
  for (int i = 0; i < 40; ++i) items.push_back(std::string(i % 5 == 0 ? 200 : 50, 'a' + i % 26));
  const std::vector<std::string> sent = items;
  std::thread producer([&] {
    EXPECT_EQ(q.PushAll(items), items.size());
    q.Close();
  });
  std::vector<std::string> got;
  while (auto v = q.Pop()) {
    EXPECT_LE(q.Bytes(), 250u);
    got.push_back(std::move(*v));
  }
  producer.join();
  EXPECT_EQ(got, sent);
  EXPECT_LE(q.HighWaterItems(), 4u);
}

// Closed while a PushAll waits for room: it returns how many it pushed and
// leaves the rest as they were (the embedder hands those chunks back).
TEST(BoundedQueueTest, PushAllIntoAClosedQueueLeavesTheRestUntouched) {
  BoundedQueue<std::string> q(3);
  std::vector<std::string> items = {"a", "b", "c", "d", "e"};
  size_t pushed = 0;
  std::thread producer([&] { pushed = q.PushAll(items); });
  WaitForBlockedProducers(q, 1);  // 3 pushed, waiting for room for "d"
  q.Close();
  producer.join();
  EXPECT_EQ(pushed, 3u);
  EXPECT_EQ(items[3], "d");
  EXPECT_EQ(items[4], "e");
  EXPECT_EQ(q.Pop(), "a");
  EXPECT_EQ(q.Pop(), "b");
  EXPECT_EQ(q.Pop(), "c");
  EXPECT_EQ(q.Pop(), std::nullopt);
  std::vector<std::string> more = {"x"};
  EXPECT_EQ(q.PushAll(more), 0u);
  EXPECT_EQ(more[0], "x");
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
