// Waiting in tests for a condition, never for a guessed delay.
//
// A test that sleeps "long enough" passes by accident on a fast machine and
// fails by accident on a loaded one. WaitUntil polls an observable state
// instead; its bound only turns a hang into a failure, so it is generous
// (a loaded 2-core machine running an ASan or TSan build is slow).
//
// Thread safety: `condition` is called from the calling thread only.
#pragma once

#include <chrono>
#include <functional>
#include <thread>

namespace sluice::testing {

// The default bound of a wait: only a hang takes this long.
inline constexpr std::chrono::seconds kHangBound{60};

// Polls `condition` every millisecond or so until it holds (true) or `bound`
// has passed (false). The poll interval only costs latency, never a result.
inline bool WaitUntil(const std::function<bool()>& condition,
                      std::chrono::steady_clock::duration bound = kHangBound) {
  const auto deadline = std::chrono::steady_clock::now() + bound;
  while (!condition()) {
    if (std::chrono::steady_clock::now() >= deadline) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  return true;
}

}  // namespace sluice::testing
