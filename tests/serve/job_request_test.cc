// A job's body: the config file's keys with their meaning, refused keys,
// redaction, the stored form read back, and the options a run gets.
#include "serve/job_request.h"

#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>

#include "testing/test_util.h"

namespace sluice::serve {
namespace {

using sluice::testing::TempDir;
using sluice::testing::WriteFile;

TEST(JobRequestTest, ParsesPathsSettingsRoutesAndTheKey) {
  auto parsed = ParseJobBody(
      R"({"paths":["a","b"],"chunk-tokens":64,"include":["*.md","*.txt"],"cache":false,)"
      R"("chars-per-token":3.5,"api-key":"sk-1","route":[{"glob":"*.md","domain":"d"}]})");
  ASSERT_TRUE(parsed.ok()) << parsed.status().ToString();
  const JobRequest& r = parsed->request;
  EXPECT_EQ(r.paths, (std::vector<std::string>{"a", "b"}));
  ASSERT_EQ(r.settings.size(), 4u);
  EXPECT_EQ(r.settings[0].key, "chunk-tokens");
  EXPECT_EQ(r.settings[0].values, std::vector<std::string>{"64"});
  EXPECT_TRUE(r.settings[1].is_list);
  EXPECT_EQ(r.settings[2].values, std::vector<std::string>{"false"});
  EXPECT_EQ(r.settings[3].values, std::vector<std::string>{"3.5"});
  EXPECT_EQ(r.api_key, "sk-1");
  ASSERT_EQ(r.routes.size(), 1u);
  EXPECT_EQ(r.routes[0].domain, "d");
}

TEST(JobRequestTest, RefusesUnknownAndServerReachingKeysByName) {
  for (const char* key :
       {"chunk-tokenz", "parser-cmd", "api-key-env", "store-env", "metrics-listen", "log-level",
        "config", "inputs", "quiet", "budget-redis", "budget-redis-env", "budget-name"}) {
    auto parsed = ParseJobBody(std::string(R"({"jsonl":"x",")") + key + R"(":"v"})");
    ASSERT_FALSE(parsed.ok()) << key;
    EXPECT_EQ(parsed.status().code(), StatusCode::kInvalidArgument);
    EXPECT_NE(parsed.status().message().find(key), std::string::npos) << parsed.status().message();
  }
  for (const char* body :
       {"[]", "{}", R"({"paths":"a"})", R"({"paths":[]})", R"({"paths":["a"],"jsonl":"x"})",
        R"({"jsonl":1})", R"({"jsonl":"x","chunk-tokens":{"a":1}})",
        R"({"jsonl":"x","out":null})"}) {
    EXPECT_EQ(ParseJobBody(body).status().code(), StatusCode::kInvalidArgument) << body;
  }
}

TEST(JobRequestTest, TheResponseFormRedactsTheKeyAndTheStorePassword) {
  auto parsed =
      ParseJobBody(R"({"jsonl":"x","api-key":"sk-secret","store":"postgres://u:pw123@h/db"})");
  ASSERT_TRUE(parsed.ok());
  const std::string shown = JobRequestJson(parsed->request, /*redact=*/true);
  EXPECT_EQ(shown.find("sk-secret"), std::string::npos) << shown;
  EXPECT_EQ(shown.find("pw123"), std::string::npos) << shown;
  EXPECT_NE(shown.find("[redacted]"), std::string::npos) << shown;
  // The stored form keeps them and reads back the same.
  const std::string stored = JobRequestJson(parsed->request, /*redact=*/false);
  auto back = ParseJobRequestJson(stored);
  ASSERT_TRUE(back.ok()) << back.status().ToString();
  EXPECT_EQ(back->api_key, "sk-secret");
  EXPECT_TRUE(back->inline_jsonl);
  EXPECT_EQ(JobRequestJson(*back, false), stored);
}

class BuildOptionsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::filesystem::create_directories(dir_ / "root");
    std::filesystem::create_directories(dir_ / "state/jobs/j1");
    WriteFile(dir_ / "root/doc.md", "# doc\n");
    policy_.emplace(*PathPolicy::Create({dir_ / "root"}, dir_ / "state"));
    defaults_.store_uri = "sqlite:" + (dir_ / "state/sluice.db");
    defaults_.api_key_env = "SLUICE_SERVE_TEST_KEY";
    ::setenv("SLUICE_SERVE_TEST_KEY", "server-key", 1);
    ::unsetenv("OPENAI_BASE_URL");
  }
  Result<IngestOptions> Build(const std::string& body) {
    auto parsed = ParseJobBody(body);
    if (!parsed.ok()) return parsed.status();
    return BuildIngestOptions(parsed->request, dir_ / "state/jobs/j1", defaults_, *policy_);
  }
  TempDir dir_;
  std::optional<PathPolicy> policy_;
  JobDefaults defaults_;
};

TEST_F(BuildOptionsTest, SettingsMeanWhatTheyMeanOnTheCommandLine) {
  auto o = Build(R"({"paths":[")" + (dir_ / "root/doc.md") +
                 R"("],"chunk-tokens":64,"cache":false,"cleanup":"none","embedder":"hash"})");
  ASSERT_TRUE(o.ok()) << o.status().ToString();
  EXPECT_EQ(o->chunker.chunk_tokens, 64u);
  EXPECT_EQ(o->embedding_cache, std::optional<bool>(false));
  EXPECT_EQ(o->cleanup, CleanupMode::kNone);
  EXPECT_EQ(o->embedder, EmbedderKind::kHash);
  EXPECT_EQ(o->store_uri, defaults_.store_uri);
  EXPECT_EQ(o->aggregate.out_dir, dir_ / "state/jobs/j1/out");
  EXPECT_FALSE(o->progress);
  EXPECT_EQ(o->inputs, std::vector<std::string>{dir_ / "root/doc.md"});
}

TEST_F(BuildOptionsTest, CacheUnsetKeepsItsDefaultAndTrueOrFalseIsTaken) {
  const std::string doc = R"({"paths":[")" + (dir_ / "root/doc.md") + R"("],"embedder":"hash")";
  auto unset = Build(doc + "}");
  ASSERT_TRUE(unset.ok()) << unset.status().ToString();
  EXPECT_EQ(unset->embedding_cache, std::nullopt);  // resolved per embedder
  EXPECT_FALSE(EmbeddingCacheOn(*unset));
  auto on = Build(doc + R"(,"cache":true})");
  ASSERT_TRUE(on.ok()) << on.status().ToString();
  EXPECT_EQ(on->embedding_cache, std::optional<bool>(true));
  EXPECT_TRUE(EmbeddingCacheOn(*on));
}

TEST_F(BuildOptionsTest, TheServerKeyGoesOnlyToTheServerEndpoint) {
  auto o = Build(R"({"jsonl":"x"})");
  ASSERT_TRUE(o.ok());
  EXPECT_EQ(o->http.api_key, "server-key");
  EXPECT_EQ(o->inputs, std::vector<std::string>{InlineJsonlPath(dir_ / "state/jobs/j1")});
  o = Build(R"({"jsonl":"x","endpoint":"http://attacker.example/v1"})");
  ASSERT_TRUE(o.ok());
  EXPECT_EQ(o->http.api_key, "");
  o = Build(R"({"jsonl":"x","endpoint":"http://other.example/v1","api-key":"own"})");
  ASSERT_TRUE(o.ok());
  EXPECT_EQ(o->http.api_key, "own");
}

TEST_F(BuildOptionsTest, BadValuesAre400AndOutsidePathsAre403) {
  auto o = Build(R"({"jsonl":"x","chunk-tokens":2})");
  EXPECT_EQ(o.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(o.status().message().find("--chunk-tokens"), std::string::npos);
  o = Build(R"({"jsonl":"x","store":"sqlite:/tmp/../etc/x.db"})");
  EXPECT_EQ(o.status().code(), StatusCode::kPermissionDenied);
  o = Build(R"({"jsonl":"x","routes":"/etc/hostname"})");
  EXPECT_EQ(o.status().code(), StatusCode::kPermissionDenied);
  o = Build(R"({"jsonl":"x","dead-letter":"/var/tmp/dl.jsonl"})");
  EXPECT_EQ(o.status().code(), StatusCode::kPermissionDenied);
  o = Build(R"({"jsonl":"x","store":"sqlite:)" + (dir_ / "root/s.db") + R"("})");
  EXPECT_TRUE(o.ok()) << o.status().ToString();
}

}  // namespace
}  // namespace sluice::serve
