// What `sluice serve --redis` refuses at submission (400), before any Redis
// is reached: RedisJobRunner::Check needs no services.
#include "serve/redis_job_runner.h"

#include <gtest/gtest.h>

namespace sluice::serve {
namespace {

RedisJobRunner Runner(const std::string& redis_host, const std::string& prefix = "serve-") {
  RedisJobRunnerOptions options;
  options.endpoint.host = redis_host;
  options.endpoint.password = "pw-never-shown";
  options.job_prefix = prefix;
  return RedisJobRunner(std::move(options));
}

IngestOptions Options(const std::string& store) {
  IngestOptions o;
  o.inputs = {"/srv/corpus"};
  o.store_uri = store;
  return o;
}

TEST(RedisJobRunnerTest, ASqliteStoreNeedsALoopbackRedis) {
  const Status far = Runner("10.1.2.3").Check(JobRequest{}, Options("sqlite:/srv/x.db"));
  EXPECT_EQ(far.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(far.message().find("PostgreSQL"), std::string::npos) << far.message();
  EXPECT_EQ(far.message().find("pw-never-shown"), std::string::npos) << far.message();
  EXPECT_TRUE(Runner("127.0.0.1").Check(JobRequest{}, Options("sqlite:/srv/x.db")).ok());
  EXPECT_TRUE(Runner("10.1.2.3").Check(JobRequest{}, Options("postgres://db/x")).ok());
}

TEST(RedisJobRunnerTest, WhatOnlyOneProcessCanDoIsRefused) {
  JobRequest report;
  report.settings.push_back(JobSetting{"report", {"/srv/r.json"}, false});
  const Status s = Runner("127.0.0.1").Check(report, Options("postgres://db/x"));
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("'report'"), std::string::npos) << s.message();
  IngestOptions reembed = Options("postgres://db/x");
  reembed.store.reembed = true;
  EXPECT_EQ(Runner("127.0.0.1").Check(JobRequest{}, reembed).code(), StatusCode::kInvalidArgument);
}

TEST(RedisJobRunnerTest, TheJobNameIsThePrefixAndTheId) {
  EXPECT_EQ(Runner("127.0.0.1").ExternalName("j000007"), "serve-j000007");
  EXPECT_EQ(Runner("127.0.0.1", "a b").Check(JobRequest{}, Options("postgres://db/x")).code(),
            StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace sluice::serve
