#include "distributed/redis_client.h"

#include <gtest/gtest.h>

#include "distributed/redis_test_util.h"

namespace sluice {
namespace {

TEST(RedisUrlTest, ParsesHostPortDbAndCredentialsAndRedactsThePassword) {
  auto e = ParseRedisUrl("redis://worker:s3cret@10.0.0.5:6380/2");
  ASSERT_TRUE(e.ok()) << e.status().ToString();
  EXPECT_EQ(e->host, "10.0.0.5");
  EXPECT_EQ(e->port, 6380);
  EXPECT_EQ(e->db, 2);
  EXPECT_EQ(e->username, "worker");
  EXPECT_EQ(e->password, "s3cret");
  EXPECT_EQ(e->Redacted(), "redis://worker:***@10.0.0.5:6380/2");

  auto d = ParseRedisUrl("redis://localhost");
  ASSERT_TRUE(d.ok());
  EXPECT_EQ(d->port, 6379);
  EXPECT_EQ(d->db, 0);
  EXPECT_EQ(d->Redacted(), "redis://localhost:6379/0");

  for (const char* bad :
       {"http://x", "redis://h:0", "redis://h:99999", "redis://h:1/x", "redis://h:port"}) {
    EXPECT_FALSE(ParseRedisUrl(bad).ok()) << bad;
  }
}

TEST(RedisClientTest, RunsCommandsAndScriptsAgainstARealRedis) {
  SLUICE_REQUIRE_REDIS(url);
  auto endpoint = ParseRedisUrl(url);
  ASSERT_TRUE(endpoint.ok());
  auto client = RedisClient::Connect(*endpoint);
  ASSERT_TRUE(client.ok()) << client.status().ToString();
  const std::string key = redistest::UniqueName("client-test");
  // Binary-safe arguments: a NUL and a space reach Redis unchanged.
  const std::string value("a b\0c", 5);
  ASSERT_TRUE((*client)->Command({"SET", key, value}).ok());
  auto got = (*client)->Command({"GET", key});
  ASSERT_TRUE(got.ok());
  EXPECT_EQ(got->str, value);
  EXPECT_TRUE((*client)->Command({"GET", key + "-absent"})->IsNil());

  // An error reply is a Status naming Redis's error.
  auto wrong = (*client)->Command({"LPUSH", key, "x"});
  ASSERT_FALSE(wrong.ok());
  EXPECT_NE(wrong.status().message().find("WRONGTYPE"), std::string::npos);

  // Scripts run by SHA, and again after the script cache was flushed.
  RedisScript incr;
  incr.source = "return redis.call('INCRBY', KEYS[1], ARGV[1])";
  const std::string counter = key + "-n";
  EXPECT_EQ((*client)->Eval(incr, {counter}, {"5"})->AsInteger(), 5);
  ASSERT_TRUE((*client)->Command({"SCRIPT", "FLUSH"}).ok());
  EXPECT_EQ((*client)->Eval(incr, {counter}, {"2"})->AsInteger(), 7);
  (*client)->Command({"DEL", key, counter});
}

TEST(RedisClientTest, NobodyListeningIsUnavailableAndNamesTheServerWithoutThePassword) {
  // Port 1 on loopback: nothing listens there.
  auto endpoint = ParseRedisUrl("redis://:hunter2@127.0.0.1:1/0");
  ASSERT_TRUE(endpoint.ok());
  auto client = RedisClient::Connect(*endpoint);
  ASSERT_FALSE(client.ok());
  EXPECT_EQ(client.status().code(), StatusCode::kUnavailable);
  EXPECT_NE(client.status().message().find("127.0.0.1:1"), std::string::npos);
  EXPECT_EQ(client.status().message().find("hunter2"), std::string::npos);
}

// A user whose credentials stop working (deleted, password changed) gets
// errors, never a connection that is not logged in as it: with the default
// user enabled, that connection would run every command as `default`.
TEST(RedisClientTest, RefusedCredentialsLeaveNoConnectionLoggedInAsAnotherUser) {
  SLUICE_REQUIRE_REDIS(url);
  auto admin_endpoint = ParseRedisUrl(url);
  ASSERT_TRUE(admin_endpoint.ok());
  auto admin = RedisClient::Connect(*admin_endpoint);
  ASSERT_TRUE(admin.ok()) << admin.status().ToString();
  const std::string user = redistest::UniqueName("client-user");
  ASSERT_TRUE((*admin)->Command({"ACL", "SETUSER", user, "on", ">secret-pw", "+@all", "~*"}).ok());
  RedisEndpoint endpoint = *admin_endpoint;
  endpoint.username = user;
  endpoint.password = "secret-pw";
  auto client = RedisClient::Connect(endpoint);
  ASSERT_TRUE(client.ok()) << client.status().ToString();
  auto whoami = (*client)->Command({"ACL", "WHOAMI"});
  ASSERT_TRUE(whoami.ok()) << whoami.status().ToString();
  EXPECT_EQ(whoami->str, user);

  // Deleting the user closes its connections; every later command reconnects
  // and is refused, however often it is tried.
  ASSERT_TRUE((*admin)->Command({"ACL", "DELUSER", user}).ok());
  for (int attempt = 0; attempt < 3; ++attempt) {
    auto r = (*client)->Command({"ACL", "WHOAMI"});
    ASSERT_FALSE(r.ok()) << "attempt " << attempt << " ran as " << r->str;
    EXPECT_EQ(r.status().message().find("secret-pw"), std::string::npos);
  }
}

}  // namespace
}  // namespace sluice
