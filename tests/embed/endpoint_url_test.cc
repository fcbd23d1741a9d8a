// The endpoint as users write it (issue 14): a base URL with a query string
// (Azure OpenAI's "?api-version=...") keeps its query after the request path;
// credentials in the URL are redacted for display; the API key is redacted
// from server messages only where it appears whole.
#include <gtest/gtest.h>

#include <string>

#include "sluice/embed.h"
#include "sluice/mock_api.h"

namespace sluice {
namespace {

using std::chrono::milliseconds;

TEST(EmbeddingsUrlTest, InsertsThePathBeforeTheQuery) {
  EXPECT_EQ(EmbeddingsUrl("https://api.openai.com/v1"), "https://api.openai.com/v1/embeddings");
  EXPECT_EQ(EmbeddingsUrl("https://api.openai.com/v1/"), "https://api.openai.com/v1/embeddings");
  EXPECT_EQ(
      EmbeddingsUrl("https://x.openai.azure.com/openai/deployments/e3?api-version=2024-02-01"),
      "https://x.openai.azure.com/openai/deployments/e3/embeddings?api-version=2024-02-01");
  EXPECT_EQ(EmbeddingsUrl("http://h/v1/?a=1&b=2#frag"), "http://h/v1/embeddings?a=1&b=2");
  EXPECT_EQ(EmbeddingsUrl("http://h:8080"), "http://h:8080/embeddings");
}

TEST(RedactEndpointTest, HidesCredentialsAndQueryValuesButApiVersion) {
  EXPECT_EQ(RedactEndpoint("https://api.openai.com/v1"), "https://api.openai.com/v1");
  EXPECT_EQ(
      RedactEndpoint("http://user:pw-secret@host:8080/v1?key=q-secret&api-version=2024-02-01"),
      "http://user:***@host:8080/v1?key=***&api-version=2024-02-01");
  EXPECT_EQ(RedactEndpoint("https://tok3n@host/v1"), "https://***@host/v1");
  EXPECT_EQ(RedactEndpoint("http://u:p@ss@host/v1"), "http://u:***@host/v1");
  EXPECT_EQ(RedactEndpoint("http://host/v1?sk-bare&x="), "http://host/v1?***&x=***");
  EXPECT_EQ(RedactEndpoint("http://host/v1#token"), "http://host/v1#***");
  EXPECT_EQ(RedactEndpoint("http://host/a@b"), "http://host/a@b");  // '@' in the path
}

TEST(RedactSecretTest, ReplacesOnlyWholeOccurrences) {
  // With a one-letter key the old redaction turned "unknown" into
  // "un[redacted]nown".
  EXPECT_EQ(RedactSecret("unknown model n", "n"), "unknown model [redacted]");
  EXPECT_EQ(RedactSecret("Incorrect API key provided: sk-abc.", "sk-abc"),
            "Incorrect API key provided: [redacted].");
  EXPECT_EQ(RedactSecret("sk-abc sk-abcd xsk-abc sk-abc", "sk-abc"),
            "[redacted] sk-abcd xsk-abc [redacted]");
  EXPECT_EQ(RedactSecret("key=\"k\"", "k"), "key=\"[redacted]\"");
  EXPECT_EQ(RedactSecret("nothing", ""), "nothing");
}

TEST(EmbeddingsUrlTest, BaseUrlWithAQueryStringEmbedsAgainstTheMock) {
  // The mock ignores the query on POST /v1/embeddings, as Azure's path
  // routing does not: the old URL ".../v1?api-version=x/embeddings" was a
  // 404 for every request.
  MockApiOptions mock;
  mock.dimensions = 8;
  auto server = MockApiServer::Start(mock);
  ASSERT_TRUE(server.ok()) << server.status().ToString();
  HttpEmbedderOptions o;
  o.endpoint = (*server)->BaseUrl() + "?api-version=2024-02-01";
  auto transport = MakeHttpTransport(o);
  ASSERT_TRUE(transport.ok()) << transport.status().ToString();
  EmbedRequest request;
  request.request_id = 7;
  request.inputs = {"alpha", "beta"};
  (*transport)->Submit(std::move(request));
  std::vector<EmbedResponse> out;
  while (out.empty() && (*transport)->InFlight() > 0) (*transport)->Poll(milliseconds(100), out);
  ASSERT_EQ(out.size(), 1u);
  ASSERT_TRUE(out[0].status.ok()) << out[0].status.ToString();
  ASSERT_EQ(out[0].vectors.size(), 2u);
  EXPECT_EQ(out[0].vectors[0], MockEmbedding("alpha", 8));
}

TEST(RedactEndpointTest, InvalidEndpointErrorHidesThePassword) {
  HttpEmbedderOptions o;
  o.endpoint = "ftp://user:pw-secret@host/v1";
  auto transport = MakeHttpTransport(o);
  ASSERT_FALSE(transport.ok());
  EXPECT_EQ(transport.status().message().find("pw-secret"), std::string::npos)
      << transport.status().message();
}

}  // namespace
}  // namespace sluice
