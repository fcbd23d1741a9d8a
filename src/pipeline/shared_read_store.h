// The run's second connection to the store, for reads while the store stage
// writes on the first: embedding-cache lookups (cache stage) and the replay
// of unchanged files into the aggregator (read stage threads). One thread at
// a time uses it.
//
// Thread safety: thread-safe (one mutex around each use).
#pragma once

#include <memory>
#include <mutex>
#include <utility>

#include "sluice/store.h"
#include "sluice/thread_annotations.h"

namespace sluice {

class SharedReadStore {
 public:
  // `store` may be null: the store keeps no fingerprints or cache.
  explicit SharedReadStore(std::unique_ptr<Store> store) : store_(std::move(store)) {}

  bool available() const {
    MutexLock lock(mu_);
    return store_ != nullptr;
  }
  // Runs `use(Store&)` under the lock; `unavailable` when there is no store (any more).
  template <typename Fn, typename R = std::invoke_result_t<Fn, Store&>>
  R With(Fn&& use, R unavailable) {
    MutexLock lock(mu_);
    if (store_ == nullptr) return unavailable;
    return std::forward<Fn>(use)(*store_);
  }
  // Closes the connection; later uses get `unavailable`.
  void Close() {
    MutexLock lock(mu_);
    if (store_ != nullptr) store_->Close();
    store_.reset();
  }

 private:
  mutable Mutex mu_;
  std::unique_ptr<Store> store_ SLUICE_GUARDED_BY(mu_);
};

}  // namespace sluice
