// The Redis that scripts/test-services.sh starts on loopback
// (SLUICE_TEST_REDIS_URL). Absent: the test skips, or fails when
// SLUICE_TEST_SERVICES=1 says the services were supposed to be there.
#pragma once

#include <gtest/gtest.h>

#include <cstdlib>
#include <random>
#include <string>

namespace sluice::redistest {

inline std::string RedisUrlFromEnv() {
  const char* v = std::getenv("SLUICE_TEST_REDIS_URL");
  return v ? v : "";
}
inline bool ServicesRequired() {
  const char* v = std::getenv("SLUICE_TEST_SERVICES");
  return v && std::string(v) == "1";
}
// A key prefix no other test process shares (tests run in parallel on one Redis).
inline std::string UniqueName(const std::string& base) {
  std::random_device entropy;
  return base + "-" + std::to_string(entropy()) + "-" + std::to_string(entropy());
}

}  // namespace sluice::redistest

#define SLUICE_REQUIRE_REDIS(var)                                                              \
  const std::string var = ::sluice::redistest::RedisUrlFromEnv();                              \
  if (var.empty()) {                                                                           \
    if (::sluice::redistest::ServicesRequired()) FAIL() << "SLUICE_TEST_REDIS_URL is not set"; \
    GTEST_SKIP() << "SLUICE_TEST_REDIS_URL not set; run under scripts/test-services.sh";       \
  }
