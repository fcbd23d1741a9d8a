// BoundedQueue: the only way stages talk to each other.
//
// A queue has a capacity in items and, optionally, in bytes (measured by a
// size function given at construction). Push blocks while the queue is full,
// so a slow stage holds the earlier ones back (backpressure) and memory stays
// flat; a blocked Push resumes once a quarter of the queue has drained
// (ShouldWakeProducers), not at the first free slot. Close() ends the
// stream: producers' pushes fail, consumers drain what is left and then see
// end-of-stream. Cancel() also drops what is queued so a fatal error stops
// every stage promptly.
//
// Thread safety: fully thread-safe; any number of producers and consumers.
#pragma once

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <functional>
#include <mutex>
#include <optional>
#include <span>
#include <utility>

#include "sluice/thread_annotations.h"

namespace sluice {

enum class QueueState { kOpen, kClosed, kCancelled };

template <class T>
class BoundedQueue {
 public:
  using SizeFn = std::function<size_t(const T&)>;

  // REQUIRES: capacity_items > 0. capacity_bytes == 0 means no byte bound.
  // A single item larger than capacity_bytes is still accepted when the queue
  // is empty, so an oversized item cannot deadlock the pipeline.
  explicit BoundedQueue(size_t capacity_items, size_t capacity_bytes = 0, SizeFn size_of = {})
      : capacity_items_(capacity_items),
        capacity_bytes_(capacity_bytes),
        size_of_(std::move(size_of)) {}
  BoundedQueue(const BoundedQueue&) = delete;
  BoundedQueue& operator=(const BoundedQueue&) = delete;

  // Blocks while full. Returns false (and drops nothing already queued) when
  // the queue was closed or cancelled; `item` is then left untouched.
  // `waited`, when given, is increased by the time spent blocked on a full
  // queue (the clock is read only when the call blocks).
  bool Push(T&& item, std::chrono::nanoseconds* waited = nullptr) {
    return PushAll(std::span<T>(&item, 1), waited) == 1;
  }

  // Pushes `items` in order, moving each in; blocks while full. Returns how
  // many were pushed: fewer than items.size() only when the queue was closed
  // or cancelled, the rest then left untouched. Takes the lock and wakes
  // consumers once per run of items that fit, not once per item: the
  // embedder handing on a response's chunks one Push at a time woke the
  // waiting store thread for nearly every chunk, which took the core from
  // it at once (12k such switches in a 132k-chunk offline run).
  // `waited` as for Push.
  size_t PushAll(std::span<T> items, std::chrono::nanoseconds* waited = nullptr) {
    size_t pushed = 0;
    while (pushed < items.size()) {
      MutexLock lock(mu_);
      size_t bytes = ItemBytes(items[pushed]);
      if (state_ == QueueState::kOpen && !HasRoom(bytes)) {
        ++blocked_producers_;
        const auto blocked_at = waited != nullptr ? std::chrono::steady_clock::now()
                                                  : std::chrono::steady_clock::time_point{};
        lock.Wait(not_full_, [&] {
          mu_.AssertHeld();
          if (state_ != QueueState::kOpen || HasRoom(bytes)) return true;
          producers_woken_ = false;  // waiting (again): the next drain must wake us
          return false;
        });
        if (waited != nullptr) *waited += std::chrono::steady_clock::now() - blocked_at;
        --blocked_producers_;
      }
      if (state_ != QueueState::kOpen) return pushed;
      const size_t first = pushed;
      do {
        bytes_ += bytes;
        items_.emplace_back(std::move(items[pushed]), bytes);
        ++pushed;
      } while (pushed < items.size() && HasRoom(bytes = ItemBytes(items[pushed])));
      if (items_.size() > high_water_items_) high_water_items_ = items_.size();
      lock.Unlock();
      if (pushed - first == 1) {
        not_empty_.notify_one();
      } else {
        not_empty_.notify_all();  // several items: every waiting consumer may take one
      }
    }
    return pushed;
  }

  // Blocks until an item is available or the stream ends (nullopt).
  std::optional<T> Pop() {
    MutexLock lock(mu_);
    lock.Wait(not_empty_, [&] {
      mu_.AssertHeld();
      return !items_.empty() || state_ != QueueState::kOpen;
    });
    std::optional<T> item = TakeLocked();
    const bool wake = item && ShouldWakeProducers();
    lock.Unlock();
    if (wake) not_full_.notify_all();
    return item;
  }

  // Waits at most `timeout`; nullopt on timeout or end of stream (see Ended()).
  template <class Rep, class Period>
  std::optional<T> PopFor(std::chrono::duration<Rep, Period> timeout) {
    MutexLock lock(mu_);
    lock.WaitFor(not_empty_, timeout, [&] {
      mu_.AssertHeld();
      return !items_.empty() || state_ != QueueState::kOpen;
    });
    std::optional<T> item = TakeLocked();
    const bool wake = item && ShouldWakeProducers();
    lock.Unlock();
    if (wake) not_full_.notify_all();
    return item;
  }

  // Never waits.
  std::optional<T> TryPop() {
    MutexLock lock(mu_);
    std::optional<T> item = TakeLocked();
    const bool wake = item && ShouldWakeProducers();
    lock.Unlock();
    if (wake) not_full_.notify_all();
    return item;
  }

  // No more pushes; consumers drain the rest.
  void Close() {
    {
      MutexLock lock(mu_);
      if (state_ == QueueState::kOpen) state_ = QueueState::kClosed;
    }
    not_full_.notify_all();
    not_empty_.notify_all();
  }

  // No more pushes and queued items are dropped; consumers see end-of-stream.
  // Returns how many items were dropped.
  size_t Cancel() {
    size_t dropped;
    {
      MutexLock lock(mu_);
      state_ = QueueState::kCancelled;
      dropped = items_.size();
      items_.clear();
      bytes_ = 0;
    }
    not_full_.notify_all();
    not_empty_.notify_all();
    return dropped;
  }

  // True when closed/cancelled and nothing is left to pop.
  bool Ended() const {
    MutexLock lock(mu_);
    return state_ != QueueState::kOpen && items_.empty();
  }
  QueueState State() const {
    MutexLock lock(mu_);
    return state_;
  }
  size_t Size() const {
    MutexLock lock(mu_);
    return items_.size();
  }
  size_t Bytes() const {
    MutexLock lock(mu_);
    return bytes_;
  }
  size_t HighWaterItems() const {
    MutexLock lock(mu_);
    return high_water_items_;
  }
  size_t CapacityItems() const { return capacity_items_; }
  // Producers waiting inside Push() for room right now: lets a test (or a
  // stage's metrics) see backpressure as a state instead of guessing it from
  // elapsed time.
  size_t BlockedProducers() const {
    MutexLock lock(mu_);
    return blocked_producers_;
  }
  // Times a pop woke the blocked producers (ShouldWakeProducers).
  uint64_t ProducerWakeups() const {
    MutexLock lock(mu_);
    return producer_wakeups_;
  }

 private:
  size_t ItemBytes(const T& item) const { return size_of_ ? size_of_(item) : 0; }
  bool HasRoom(size_t bytes) const SLUICE_REQUIRES(mu_) {
    if (items_.size() >= capacity_items_) return false;
    if (capacity_bytes_ == 0 || items_.empty()) return true;
    return bytes_ + bytes <= capacity_bytes_;
  }
  // Whether a pop that left the queue as it is now wakes the blocked
  // producers. Not at every pop: a producer waiting on a full queue is woken
  // once a quarter of it has drained (or it is empty), then refills it in one
  // go. Waking it per item made the two threads take turns for each item, two
  // context switches per item (15-24k switches/s in an offline run, the
  // consumer preempted right after each signal). All of them: each refills
  // what it can. A byte-bound queue also waits for a quarter of its bytes;
  // an empty queue admits any item, so nobody waits forever.
  // Once woken, producers are not woken again until one of them waits
  // again (each then re-checks for room itself).
  bool ShouldWakeProducers() SLUICE_REQUIRES(mu_) {
    if (blocked_producers_ == 0) return false;
    bool wake = items_.empty();
    if (!wake && !producers_woken_) {
      wake = items_.size() <= capacity_items_ - std::max<size_t>(1, capacity_items_ / 4) &&
             (capacity_bytes_ == 0 || bytes_ <= capacity_bytes_ - capacity_bytes_ / 4);
    }
    if (wake) {
      producers_woken_ = true;
      ++producer_wakeups_;
    }
    return wake;
  }
  // The front item, if any (the caller wakes producers once unlocked).
  std::optional<T> TakeLocked() SLUICE_REQUIRES(mu_) {
    if (items_.empty()) return std::nullopt;
    auto [item, bytes] = std::move(items_.front());
    items_.pop_front();
    bytes_ -= bytes;
    return std::move(item);
  }

  const size_t capacity_items_;
  const size_t capacity_bytes_;
  const SizeFn size_of_;
  mutable Mutex mu_;
  std::condition_variable not_full_;
  std::condition_variable not_empty_;
  std::deque<std::pair<T, size_t>> items_ SLUICE_GUARDED_BY(mu_);
  size_t bytes_ SLUICE_GUARDED_BY(mu_) = 0;
  size_t high_water_items_ SLUICE_GUARDED_BY(mu_) = 0;
  size_t blocked_producers_ SLUICE_GUARDED_BY(mu_) = 0;
  bool producers_woken_ SLUICE_GUARDED_BY(mu_) = false;
  uint64_t producer_wakeups_ SLUICE_GUARDED_BY(mu_) = 0;
  QueueState state_ SLUICE_GUARDED_BY(mu_) = QueueState::kOpen;
};

}  // namespace sluice
