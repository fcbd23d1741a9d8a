#include "sluice/status.h"

#include <gtest/gtest.h>

namespace sluice {
namespace {

TEST(StatusTest, OkByDefault) {
  Status s;
  EXPECT_TRUE(s.ok());
  EXPECT_EQ(s.ToString(), "ok");
}

TEST(StatusTest, RetryableCodes) {
  EXPECT_TRUE(Status::RateLimited("429").IsRetryable());
  EXPECT_TRUE(Status::Unavailable("503").IsRetryable());
  EXPECT_TRUE(Status::Timeout("t").IsRetryable());
  EXPECT_FALSE(Status::Rejected("400").IsRetryable());
  EXPECT_FALSE(Status::PermissionDenied("401").IsRetryable());
  EXPECT_FALSE(Status::Corrupt("bad json").IsRetryable());
}

TEST(StatusTest, ContextAndName) {
  Status s = Status::IOError("disk full").WithContext("writing out/a.json");
  EXPECT_EQ(s.code(), StatusCode::kIOError);
  EXPECT_EQ(s.ToString(), "io_error: writing out/a.json: disk full");
}

TEST(ResultTest, ValueAndError) {
  Result<int> good(42);
  ASSERT_TRUE(good.ok());
  EXPECT_EQ(*good, 42);
  Result<int> bad(Status::NotFound("x"));
  EXPECT_FALSE(bad.ok());
  EXPECT_EQ(bad.status().code(), StatusCode::kNotFound);
}

}  // namespace
}  // namespace sluice
