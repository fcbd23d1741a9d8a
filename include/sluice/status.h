// Status and Result<T>: errors as values at every stage boundary.
//
// A Status says whether an operation succeeded and, when it did not, whether
// trying again can help (IsRetryable) or not (a parse error, a 400, a bad
// config). Retryable failures go back through the retry policy; permanent ones
// are dead-lettered with their message. Nothing in sluice's public API throws.
//
// Thread safety: values; safe to copy between threads.
#pragma once

#include <string>
#include <utility>
#include <variant>

namespace sluice {

enum class StatusCode {
  kOk = 0,
  kInvalidArgument,   // bad input or configuration: never retried
  kNotFound,          // a file, table or key that does not exist
  kIOError,           // a local read/write failed
  kCorrupt,           // data that cannot be parsed (file, response body)
  kUnavailable,       // service down, connection refused/reset, 5xx: retryable
  kRateLimited,       // 429 or equivalent backpressure: retryable after a cooldown
  kTimeout,           // request or operation timed out: retryable
  kPermissionDenied,  // 401/403, wrong credentials: stops the run
  kRejected,          // the service refused this input for good (400, data error)
  kCancelled,         // shutdown requested
  kInternal,          // a bug: an invariant did not hold
  kBusy,              // held by another process (a store in use by another run): not retried
};

// Short stable name of a code, e.g. "rate_limited"; used in reports and dead letters.
const char* StatusCodeName(StatusCode code);

class Status {
 public:
  Status() = default;  // OK

  static Status OK() { return Status(); }
  static Status InvalidArgument(std::string msg) {
    return {StatusCode::kInvalidArgument, std::move(msg)};
  }
  static Status NotFound(std::string msg) { return {StatusCode::kNotFound, std::move(msg)}; }
  static Status IOError(std::string msg) { return {StatusCode::kIOError, std::move(msg)}; }
  static Status Corrupt(std::string msg) { return {StatusCode::kCorrupt, std::move(msg)}; }
  static Status Unavailable(std::string msg) { return {StatusCode::kUnavailable, std::move(msg)}; }
  static Status RateLimited(std::string msg) { return {StatusCode::kRateLimited, std::move(msg)}; }
  static Status Timeout(std::string msg) { return {StatusCode::kTimeout, std::move(msg)}; }
  static Status PermissionDenied(std::string msg) {
    return {StatusCode::kPermissionDenied, std::move(msg)};
  }
  static Status Rejected(std::string msg) { return {StatusCode::kRejected, std::move(msg)}; }
  static Status Cancelled(std::string msg) { return {StatusCode::kCancelled, std::move(msg)}; }
  static Status Internal(std::string msg) { return {StatusCode::kInternal, std::move(msg)}; }
  static Status Busy(std::string msg) { return {StatusCode::kBusy, std::move(msg)}; }

  bool ok() const { return code_ == StatusCode::kOk; }
  StatusCode code() const { return code_; }
  const std::string& message() const { return message_; }

  // True for failures that may succeed when tried again later
  // (kUnavailable, kRateLimited, kTimeout).
  bool IsRetryable() const;

  // "rate_limited: 429 Too Many Requests", or "ok".
  std::string ToString() const;

  // Returns a copy whose message is "context: message".
  Status WithContext(const std::string& context) const;

 private:
  Status(StatusCode code, std::string msg) : code_(code), message_(std::move(msg)) {}
  StatusCode code_ = StatusCode::kOk;
  std::string message_;
};

// Either a value or a non-OK Status.
template <class T>
class Result {
 public:
  Result(T value) : v_(std::move(value)) {}         // NOLINT: implicit by design
  Result(Status status) : v_(std::move(status)) {}  // NOLINT: REQUIRES: !status.ok()

  bool ok() const { return std::holds_alternative<T>(v_); }
  const Status& status() const {
    static const Status kOk;
    return ok() ? kOk : std::get<Status>(v_);
  }
  T& value() & { return std::get<T>(v_); }
  const T& value() const& { return std::get<T>(v_); }
  T&& value() && { return std::get<T>(std::move(v_)); }
  T& operator*() & { return value(); }
  const T& operator*() const& { return value(); }
  T* operator->() { return &value(); }
  const T* operator->() const { return &value(); }

 private:
  std::variant<T, Status> v_;
};

}  // namespace sluice
