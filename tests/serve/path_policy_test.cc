// PathPolicy: what a job may read and write, with "..", symlinks and missing
// files, resolved as the kernel would.
#include "serve/path_policy.h"

#include <gtest/gtest.h>

#include <filesystem>

#include "testing/test_util.h"

namespace sluice::serve {
namespace {

using sluice::testing::TempDir;
using sluice::testing::WriteFile;

TEST(PathPolicyTest, InputsMustResolveInsideARoot) {
  TempDir dir;
  WriteFile(dir / "root/a.txt", "a");
  WriteFile(dir / "outside/b.txt", "b");
  std::filesystem::create_symlink(dir / "outside", dir / "root/escape");
  std::filesystem::create_directories(dir / "state");
  auto policy = PathPolicy::Create({dir / "root"}, dir / "state");
  ASSERT_TRUE(policy.ok()) << policy.status().ToString();
  EXPECT_TRUE(policy->CheckInput(dir / "root/a.txt").ok());
  EXPECT_TRUE(policy->CheckInput(dir / "root").ok());
  EXPECT_TRUE(policy->CheckInput(dir / "root/missing/../a.txt").ok());
  for (const std::string& bad :
       {dir / "outside/b.txt", dir / "root/../outside/b.txt", dir / "root/escape/b.txt",
        dir / "root/escape", dir / "rootsibling", std::string("/")}) {
    Status s = policy->CheckInput(bad);
    EXPECT_EQ(s.code(), StatusCode::kPermissionDenied) << bad;
    EXPECT_NE(s.message().find(bad), std::string::npos) << s.message();
  }
  // The state folder is for outputs, not inputs.
  EXPECT_EQ(policy->CheckInput(dir / "state").code(), StatusCode::kPermissionDenied);
}

TEST(PathPolicyTest, OutputsMayAlsoGoToTheStateFolder) {
  TempDir dir;
  std::filesystem::create_directories(dir / "root");
  std::filesystem::create_directories(dir / "state");
  auto policy = PathPolicy::Create({dir / "root"}, dir / "state");
  ASSERT_TRUE(policy.ok());
  EXPECT_TRUE(policy->CheckOutput(dir / "state/jobs/j1/out").ok());
  EXPECT_TRUE(policy->CheckOutput(dir / "root/new/store.db").ok());
  EXPECT_FALSE(policy->CheckOutput(dir / "state/../elsewhere").ok());
}

TEST(PathPolicyTest, WithoutRootsNoInputIsAllowed) {
  TempDir dir;
  std::filesystem::create_directories(dir / "state");
  auto policy = PathPolicy::Create({}, dir / "state");
  ASSERT_TRUE(policy.ok());
  Status s = policy->CheckInput(dir / "state");
  EXPECT_EQ(s.code(), StatusCode::kPermissionDenied);
  EXPECT_NE(s.message().find("--allow-root"), std::string::npos);
}

TEST(PathPolicyTest, AMissingRootIsRefusedAtStart) {
  TempDir dir;
  auto policy = PathPolicy::Create({dir / "nope"}, dir.path());
  EXPECT_EQ(policy.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(policy.status().message().find("nope"), std::string::npos);
}

TEST(PathPolicyTest, IsWithinComparesWholeComponents) {
  EXPECT_TRUE(IsWithin("/a/b", "/a"));
  EXPECT_TRUE(IsWithin("/a", "/a"));
  EXPECT_FALSE(IsWithin("/ab", "/a"));
  EXPECT_TRUE(IsWithin("/anything", "/"));
}

}  // namespace
}  // namespace sluice::serve
