// Clock seam: every controller, pacer and retry policy takes time from a
// Clock so tests drive them with a ManualClock and exact expectations.
//
// Thread safety: SystemClock is stateless and thread-safe. ManualClock is
// thread-safe (atomic), but tests usually drive it from one thread.
#pragma once

#include <atomic>
#include <chrono>
#include <thread>

namespace sluice {

using SteadyClock = std::chrono::steady_clock;
using TimePoint = SteadyClock::time_point;
using Duration = std::chrono::nanoseconds;

class Clock {
 public:
  virtual ~Clock() = default;
  virtual TimePoint Now() const = 0;
  // Waits `d`: the one way a retry loop waits, so a test's ManualClock turns
  // every backoff into an instant step instead of a real sleep.
  virtual void SleepFor(Duration d) const = 0;
};

class SystemClock final : public Clock {
 public:
  TimePoint Now() const override { return SteadyClock::now(); }
  void SleepFor(Duration d) const override { std::this_thread::sleep_for(d); }
  // A process-wide instance.
  static const SystemClock& Instance() {
    static SystemClock clock;
    return clock;
  }
};

// A clock that only moves when told to.
class ManualClock final : public Clock {
 public:
  explicit ManualClock(TimePoint start = TimePoint{}) : now_ns_(start.time_since_epoch().count()) {}
  TimePoint Now() const override { return TimePoint(Duration(now_ns_.load())); }
  // Moves the clock on by `d` at once and counts the wait.
  void SleepFor(Duration d) const override {
    now_ns_ += d.count();
    ++sleeps_;
  }
  // How many times code under test waited on this clock.
  int64_t sleeps() const { return sleeps_.load(); }
  void Advance(Duration d) { now_ns_ += d.count(); }
  void Set(TimePoint t) { now_ns_ = t.time_since_epoch().count(); }

 private:
  mutable std::atomic<int64_t> now_ns_;
  mutable std::atomic<int64_t> sleeps_{0};
};

inline double ToSeconds(Duration d) { return std::chrono::duration<double>(d).count(); }
inline Duration FromSeconds(double s) {
  return std::chrono::duration_cast<Duration>(std::chrono::duration<double>(s));
}

}  // namespace sluice
