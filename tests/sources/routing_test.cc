#include "sluice/routing.h"

#include "sources/test_util.h"

namespace sluice {
namespace {

SourceFile At(const std::string& rel, const std::string& root = "corpus") {
  SourceFile f;
  f.relative_path = rel;
  f.root_name = root;
  return f;
}

TEST(RoutingTest, DefaultRouteFromFolders) {
  Router router;
  RouteDecision d = router.Route(At("manuals/pumps/p1.md"));
  EXPECT_EQ(d.domain, "manuals");
  EXPECT_EQ(d.category, "pumps");
  d = router.Route(At("manuals/p1.md"));
  EXPECT_EQ(d.domain, "manuals");
  EXPECT_EQ(d.category, "general");
  d = router.Route(At("readme.md"));
  EXPECT_EQ(d.domain, "corpus");
  EXPECT_EQ(d.category, "general");
}

TEST(RoutingTest, FirstMatchingRuleWins) {
  auto router = Router::Parse(R"(
[[route]]
glob = "manuals/pumps/**"
domain = "engineering"
category = "pumps"

[[route]]
glob = "manuals/**"
domain = "engineering"

[[route]]
glob = "*.log"
category = "logs"
)",
                              "routes.toml");
  ASSERT_TRUE(router.ok()) << router.status().ToString();
  ASSERT_EQ(router->rules().size(), 3u);
  RouteDecision d = router->Route(At("manuals/pumps/deep/p.md"));
  EXPECT_EQ(d.domain, "engineering");
  EXPECT_EQ(d.category, "pumps");
  d = router->Route(At("manuals/valves/v.md"));
  EXPECT_EQ(d.domain, "engineering");
  EXPECT_EQ(d.category, "valves");  // left out by the rule: default
  d = router->Route(At("ops/x/server.log"));
  EXPECT_EQ(d.domain, "ops");
  EXPECT_EQ(d.category, "logs");
  d = router->Route(At("hr/policy.md"));
  EXPECT_EQ(d.domain, "hr");
  EXPECT_EQ(d.category, "general");
}

TEST(RoutingTest, UnknownKeyNamesKeyAndLine) {
  auto router = Router::Parse("[[route]]\nglob = \"a/**\"\ndomian = \"x\"\n", "routes.toml");
  ASSERT_FALSE(router.ok());
  EXPECT_EQ(router.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(router.status().message().find("routes.toml:3"), std::string::npos)
      << router.status().message();
  EXPECT_NE(router.status().message().find("'domian'"), std::string::npos);
}

TEST(RoutingTest, RejectsBadShapes) {
  auto top = Router::Parse("routes = 1\n", "r.toml");
  ASSERT_FALSE(top.ok());
  EXPECT_NE(top.status().message().find("'routes'"), std::string::npos);
  auto no_glob = Router::Parse("[[route]]\ndomain = \"x\"\n", "r.toml");
  ASSERT_FALSE(no_glob.ok());
  EXPECT_NE(no_glob.status().message().find("glob"), std::string::npos);
  auto not_string = Router::Parse("[[route]]\nglob = 3\n", "r.toml");
  ASSERT_FALSE(not_string.ok());
  EXPECT_NE(not_string.status().message().find("must be a string"), std::string::npos);
  auto syntax = Router::Parse("[[route]\nglob = \"x\"\n", "r.toml");
  ASSERT_FALSE(syntax.ok());
  EXPECT_NE(syntax.status().message().find("r.toml:1"), std::string::npos);
  auto single = Router::Parse("[route]\nglob = \"x\"\n", "r.toml");
  ASSERT_FALSE(single.ok());
}

TEST(RoutingTest, LoadFile) {
  testing::TempDir dir;
  const std::string path = dir.Write("routes.toml", "[[route]]\nglob = \"**\"\ndomain = \"all\"\n");
  auto router = Router::LoadFile(path);
  ASSERT_TRUE(router.ok()) << router.status().ToString();
  EXPECT_EQ(router->Route(At("x/y/z.md")).domain, "all");
  auto missing = Router::LoadFile(dir.path() + "/nope.toml");
  ASSERT_FALSE(missing.ok());
  EXPECT_EQ(missing.status().code(), StatusCode::kNotFound);
}

}  // namespace
}  // namespace sluice
