// Clang thread-safety annotations and a mutex they can check.
//
// `SLUICE_GUARDED_BY(mu_)` on a field makes clang's -Wthread-safety reject
// any access without `mu_` held; the other macros state what a function
// requires or does with a lock. Under GCC (no such analysis) they expand to
// nothing. libstdc++'s std::mutex carries no annotations, so guarded fields
// sit behind sluice::Mutex, locked with a sluice::MutexLock.
//
// Public (not in src/common) because include/sluice/queue.h uses it; the
// macros are prefixed so they never clash with another library's.
//
// Thread safety: Mutex is a std::mutex; MutexLock belongs to one thread.
#pragma once

#include <chrono>
#include <condition_variable>
#include <mutex>
#include <utility>

#if defined(__clang__)
#define SLUICE_THREAD_ANNOTATION(x) __attribute__((x))
#else
#define SLUICE_THREAD_ANNOTATION(x)
#endif

#define SLUICE_CAPABILITY(x) SLUICE_THREAD_ANNOTATION(capability(x))
#define SLUICE_SCOPED_CAPABILITY SLUICE_THREAD_ANNOTATION(scoped_lockable)
#define SLUICE_GUARDED_BY(x) SLUICE_THREAD_ANNOTATION(guarded_by(x))
#define SLUICE_PT_GUARDED_BY(x) SLUICE_THREAD_ANNOTATION(pt_guarded_by(x))
#define SLUICE_REQUIRES(...) SLUICE_THREAD_ANNOTATION(requires_capability(__VA_ARGS__))
#define SLUICE_ACQUIRE(...) SLUICE_THREAD_ANNOTATION(acquire_capability(__VA_ARGS__))
#define SLUICE_RELEASE(...) SLUICE_THREAD_ANNOTATION(release_capability(__VA_ARGS__))
#define SLUICE_EXCLUDES(...) SLUICE_THREAD_ANNOTATION(locks_excluded(__VA_ARGS__))
#define SLUICE_ASSERT_CAPABILITY(x) SLUICE_THREAD_ANNOTATION(assert_capability(x))
#define SLUICE_NO_THREAD_SAFETY_ANALYSIS SLUICE_THREAD_ANNOTATION(no_thread_safety_analysis)

namespace sluice {

// A std::mutex the analysis knows as a lock.
class SLUICE_CAPABILITY("mutex") Mutex {
 public:
  Mutex() = default;
  Mutex(const Mutex&) = delete;
  Mutex& operator=(const Mutex&) = delete;

  void Lock() SLUICE_ACQUIRE() { mu_.lock(); }
  void Unlock() SLUICE_RELEASE() { mu_.unlock(); }
  // Tells the analysis the lock is held where it cannot see it (inside a
  // condition variable's predicate, which runs with the lock held).
  void AssertHeld() const SLUICE_ASSERT_CAPABILITY(this) {}

 private:
  friend class MutexLock;
  std::mutex mu_;
};

// Holds a Mutex for its scope (or until Unlock()); waits on a
// std::condition_variable with it, as std::unique_lock does.
class SLUICE_SCOPED_CAPABILITY MutexLock {
 public:
  explicit MutexLock(Mutex& mu) SLUICE_ACQUIRE(mu) : lock_(mu.mu_) {}
  ~MutexLock() SLUICE_RELEASE() = default;
  MutexLock(const MutexLock&) = delete;
  MutexLock& operator=(const MutexLock&) = delete;

  // Releases the lock before the end of the scope (e.g. to notify waiters
  // without holding it). REQUIRES: held.
  void Unlock() SLUICE_RELEASE() { lock_.unlock(); }
  // Takes it again after Unlock(). REQUIRES: not held.
  void Lock() SLUICE_ACQUIRE() { lock_.lock(); }

  // cv.wait / cv.wait_for with this lock: `pred` runs with it held (call
  // the Mutex's AssertHeld() in it). The lock is held again on return.
  template <class Predicate>
  void Wait(std::condition_variable& cv, Predicate pred) {
    cv.wait(lock_, std::move(pred));
  }
  template <class Rep, class Period, class Predicate>
  bool WaitFor(std::condition_variable& cv, std::chrono::duration<Rep, Period> timeout,
               Predicate pred) {
    return cv.wait_for(lock_, timeout, std::move(pred));
  }

 private:
  std::unique_lock<std::mutex> lock_;
};

}  // namespace sluice
