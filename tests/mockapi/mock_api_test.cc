// Tests of the mock embedding API over real loopback HTTP, with libcurl as
// the client.
#include "sluice/mock_api.h"

#include <curl/curl.h>
#include <gtest/gtest.h>
#include <simdjson.h>
#include <xxhash.h>

#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <map>
#include <string>
#include <thread>
#include <vector>

#include <CLI/CLI.hpp>

#include "mockapi/mock_api_flags.h"
#include "testing/wait.h"

namespace sluice {
namespace {

using std::chrono::milliseconds;

struct HttpResult {
  CURLcode code = CURLE_OK;
  long status = 0;
  std::string body;
  std::map<std::string, std::string> headers;  // lower-case names
  long new_connections = 0;

  bool has(const std::string& name) const { return headers.count(name) > 0; }
  std::string header(const std::string& name) const {
    auto it = headers.find(name);
    return it == headers.end() ? "" : it->second;
  }
};

size_t WriteBody(char* data, size_t size, size_t n, void* user) {
  static_cast<HttpResult*>(user)->body.append(data, size * n);
  return size * n;
}

size_t WriteHeader(char* data, size_t size, size_t n, void* user) {
  std::string line(data, size * n);
  const size_t colon = line.find(':');
  if (colon != std::string::npos) {
    std::string name = line.substr(0, colon);
    std::transform(name.begin(), name.end(), name.begin(),
                   [](unsigned char c) { return std::tolower(c); });
    std::string value = line.substr(colon + 1);
    while (!value.empty() && std::isspace(static_cast<unsigned char>(value.front()))) {
      value.erase(0, 1);
    }
    while (!value.empty() && std::isspace(static_cast<unsigned char>(value.back()))) {
      value.pop_back();
    }
    static_cast<HttpResult*>(user)->headers[name] = value;
  }
  return size * n;
}

// One prepared request on an easy handle; the caller owns `headers`.
void Prepare(CURL* easy, const std::string& url, const std::string* body, curl_slist* headers,
             HttpResult* result) {
  curl_easy_setopt(easy, CURLOPT_URL, url.c_str());
  curl_easy_setopt(easy, CURLOPT_WRITEFUNCTION, &WriteBody);
  curl_easy_setopt(easy, CURLOPT_WRITEDATA, result);
  curl_easy_setopt(easy, CURLOPT_HEADERFUNCTION, &WriteHeader);
  curl_easy_setopt(easy, CURLOPT_HEADERDATA, result);
  curl_easy_setopt(easy, CURLOPT_HTTPHEADER, headers);
  curl_easy_setopt(easy, CURLOPT_TIMEOUT_MS, 10000L);
  curl_easy_setopt(easy, CURLOPT_NOSIGNAL, 1L);
  if (body != nullptr) {
    curl_easy_setopt(easy, CURLOPT_POST, 1L);
    curl_easy_setopt(easy, CURLOPT_POSTFIELDS, body->data());
    curl_easy_setopt(easy, CURLOPT_POSTFIELDSIZE, static_cast<long>(body->size()));
  } else {
    curl_easy_setopt(easy, CURLOPT_HTTPGET, 1L);
  }
}

void Finish(CURL* easy, CURLcode code, HttpResult* result) {
  result->code = code;
  curl_easy_getinfo(easy, CURLINFO_RESPONSE_CODE, &result->status);
  curl_easy_getinfo(easy, CURLINFO_NUM_CONNECTS, &result->new_connections);
}

curl_slist* Headers(const std::string& api_key) {
  curl_slist* list = curl_slist_append(nullptr, "Content-Type: application/json");
  list = curl_slist_append(list, "Expect:");
  if (!api_key.empty())
    list = curl_slist_append(list, ("Authorization: Bearer " + api_key).c_str());
  return list;
}

class Client {
 public:
  Client() : easy_(curl_easy_init()) {}
  ~Client() { curl_easy_cleanup(easy_); }
  HttpResult Post(const std::string& url, const std::string& body,
                  const std::string& api_key = "") {
    HttpResult result;
    curl_slist* headers = Headers(api_key);
    Prepare(easy_, url, &body, headers, &result);
    Finish(easy_, curl_easy_perform(easy_), &result);
    curl_slist_free_all(headers);
    return result;
  }
  HttpResult Get(const std::string& url) {
    HttpResult result;
    Prepare(easy_, url, nullptr, nullptr, &result);
    Finish(easy_, curl_easy_perform(easy_), &result);
    return result;
  }

 private:
  CURL* easy_;
};

// Sends `count` copies of `body` at once over separate connections (curl multi).
std::vector<HttpResult> PostConcurrently(const std::string& url, const std::string& body,
                                         int count) {
  std::vector<HttpResult> results(static_cast<size_t>(count));
  CURLM* multi = curl_multi_init();
  curl_slist* headers = Headers("");
  std::vector<CURL*> easies;
  for (int i = 0; i < count; ++i) {
    CURL* easy = curl_easy_init();
    Prepare(easy, url, &body, headers, &results[static_cast<size_t>(i)]);
    curl_easy_setopt(easy, CURLOPT_PRIVATE, &results[static_cast<size_t>(i)]);
    curl_multi_add_handle(multi, easy);
    easies.push_back(easy);
  }
  int running = 0;
  do {
    curl_multi_perform(multi, &running);
    int msgs = 0;
    while (CURLMsg* msg = curl_multi_info_read(multi, &msgs)) {
      if (msg->msg != CURLMSG_DONE) continue;
      HttpResult* result = nullptr;
      curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, reinterpret_cast<char**>(&result));
      Finish(msg->easy_handle, msg->data.result, result);
    }
    if (running > 0) curl_multi_poll(multi, nullptr, 0, 100, nullptr);
  } while (running > 0);
  for (CURL* easy : easies) {
    curl_multi_remove_handle(multi, easy);
    curl_easy_cleanup(easy);
  }
  curl_slist_free_all(headers);
  curl_multi_cleanup(multi);
  return results;
}

std::string Json(const std::vector<std::string>& inputs, const std::string& extra = "") {
  std::string out = R"({"model":"text-embedding-3-small","input":[)";
  for (size_t i = 0; i < inputs.size(); ++i) {
    if (i > 0) out += ",";
    out += "\"" + inputs[i] + "\"";
  }
  out += "]" + extra + "}";
  return out;
}

std::vector<float> DecodeBase64Floats(std::string_view text) {
  auto value = [](char c) -> int {
    if (c >= 'A' && c <= 'Z') return c - 'A';
    if (c >= 'a' && c <= 'z') return c - 'a' + 26;
    if (c >= '0' && c <= '9') return c - '0' + 52;
    if (c == '+') return 62;
    if (c == '/') return 63;
    return -1;
  };
  std::string bytes;
  uint32_t acc = 0;
  int bits = 0;
  for (char c : text) {
    const int v = value(c);
    if (v < 0) break;  // '='
    acc = (acc << 6) | static_cast<uint32_t>(v);
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      bytes.push_back(static_cast<char>((acc >> bits) & 0xFF));
    }
  }
  std::vector<float> out(bytes.size() / 4);
  for (size_t i = 0; i < out.size(); ++i) {
    uint32_t u = 0;
    for (int b = 3; b >= 0; --b) u = (u << 8) | static_cast<unsigned char>(bytes[4 * i + b]);
    std::memcpy(&out[i], &u, 4);
  }
  return out;
}

// Vectors from a 200 body, in index order; float or base64.
std::vector<std::vector<float>> Vectors(const std::string& body) {
  simdjson::dom::parser parser;
  simdjson::dom::element doc = parser.parse(body);
  std::vector<std::vector<float>> out;
  for (simdjson::dom::element item : doc["data"].get_array()) {
    EXPECT_EQ(std::string_view(item["object"]), "embedding");
    EXPECT_EQ(int64_t(item["index"]), static_cast<int64_t>(out.size()));
    simdjson::dom::element e = item["embedding"];
    if (e.is_string()) {
      out.push_back(DecodeBase64Floats(std::string_view(e)));
    } else {
      std::vector<float> v;
      for (simdjson::dom::element x : e.get_array()) v.push_back(static_cast<float>(double(x)));
      out.push_back(std::move(v));
    }
  }
  return out;
}

std::string ErrorMessage(const std::string& body) {
  simdjson::dom::parser parser;
  simdjson::dom::element doc;
  if (parser.parse(body).get(doc)) return "<not json>";
  std::string_view message;
  if (doc["error"]["message"].get(message)) return "<no error.message>";
  return std::string(message);
}

class MockApiTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() { curl_global_init(CURL_GLOBAL_DEFAULT); }

  void StartServer(MockApiOptions options = {}) {
    auto server = MockApiServer::Start(options);
    ASSERT_TRUE(server.ok()) << server.status().ToString();
    server_ = std::move(server.value());
    url_ = server_->BaseUrl() + "/embeddings";
  }

  std::unique_ptr<MockApiServer> server_;
  std::string url_;
  Client client_;
};

TEST(MockEmbeddingTest, MatchesTheDocumentedFormula) {
  for (std::string_view text : {"hello", "", "a longer text with ünïcode ✓"}) {
    for (int dims : {1, 3, 256}) {
      // Recomputed from the documentation, independently of the library.
      uint64_t state = XXH64(text.data(), text.size(), 0x5EED);
      std::vector<double> u;
      double sum = 0;
      for (int i = 0; i < dims; ++i) {
        state += 0x9E3779B97F4A7C15ull;
        uint64_t z = state;
        z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
        z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
        z ^= z >> 31;
        u.push_back(static_cast<double>(z >> 11) * std::ldexp(1.0, -53) * 2 - 1);
        sum += u.back() * u.back();
      }
      const std::vector<float> v = MockEmbedding(text, dims);
      ASSERT_EQ(v.size(), static_cast<size_t>(dims));
      double norm2 = 0;
      for (int i = 0; i < dims; ++i) {
        EXPECT_EQ(v[i], static_cast<float>(u[i] / std::sqrt(sum)));
        norm2 += double(v[i]) * v[i];
      }
      EXPECT_NEAR(norm2, 1.0, 1e-5);
    }
  }
  EXPECT_NE(MockEmbedding("a", 8), MockEmbedding("b", 8));
}

TEST(MockEmbeddingTest, TokenCountIsQuarterBytesRoundedUp) {
  EXPECT_EQ(MockTokenCount(""), 1);
  EXPECT_EQ(MockTokenCount("a"), 1);
  EXPECT_EQ(MockTokenCount("abcd"), 1);
  EXPECT_EQ(MockTokenCount("abcde"), 2);
  EXPECT_EQ(MockTokenCount(std::string(4000, 'x')), 1000);
}

TEST_F(MockApiTest, FloatVectorsEqualMockEmbedding) {
  StartServer();
  const std::vector<std::string> inputs = {"hello", "w\\u00f6rld", "a b c d e f g"};
  HttpResult r = client_.Post(url_, Json(inputs));
  ASSERT_EQ(r.code, CURLE_OK);
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(r.header("content-type"), "application/json");
  std::vector<std::vector<float>> vectors = Vectors(r.body);
  ASSERT_EQ(vectors.size(), 3u);
  EXPECT_EQ(vectors[0], MockEmbedding("hello", 256));
  EXPECT_EQ(vectors[1], MockEmbedding("w\xc3\xb6rld", 256));  // JSON escapes decoded
  EXPECT_EQ(vectors[2], MockEmbedding("a b c d e f g", 256));

  simdjson::dom::parser parser;
  simdjson::dom::element doc = parser.parse(r.body);
  EXPECT_EQ(std::string_view(doc["object"]), "list");
  EXPECT_EQ(std::string_view(doc["model"]), "text-embedding-3-small");
  // ceil(5/4) + ceil(6/4) + ceil(13/4) = 2 + 2 + 4
  EXPECT_EQ(int64_t(doc["usage"]["prompt_tokens"]), 8);
  EXPECT_EQ(int64_t(doc["usage"]["total_tokens"]), 8);

  MockApiStats stats = server_->Stats();
  EXPECT_EQ(stats.requests, 1u);
  EXPECT_EQ(stats.ok, 1u);
  EXPECT_EQ(stats.inputs_embedded, 3u);
  EXPECT_EQ(stats.tokens_embedded, 8u);
}

TEST_F(MockApiTest, Base64VectorsAndDimensionsOverride) {
  StartServer();
  HttpResult r =
      client_.Post(url_, Json({"one", "two"}, R"(,"encoding_format":"base64","dimensions":17)"));
  ASSERT_EQ(r.status, 200) << r.body;
  std::vector<std::vector<float>> vectors = Vectors(r.body);
  ASSERT_EQ(vectors.size(), 2u);
  EXPECT_EQ(vectors[0], MockEmbedding("one", 17));
  EXPECT_EQ(vectors[1], MockEmbedding("two", 17));
}

TEST_F(MockApiTest, SingleStringInputAndLegacyPath) {
  StartServer();
  HttpResult r = client_.Post("http://127.0.0.1:" + std::to_string(server_->Port()) + "/embeddings",
                              R"({"model":"m","input":"just one","encoding_format":"float"})");
  ASSERT_EQ(r.status, 200) << r.body;
  std::vector<std::vector<float>> vectors = Vectors(r.body);
  ASSERT_EQ(vectors.size(), 1u);
  EXPECT_EQ(vectors[0], MockEmbedding("just one", 256));
}

TEST_F(MockApiTest, KeepAliveReusesTheConnection) {
  StartServer();
  HttpResult first = client_.Post(url_, Json({"x"}));
  HttpResult second = client_.Post(url_, Json({"y"}));
  ASSERT_EQ(first.status, 200);
  ASSERT_EQ(second.status, 200);
  EXPECT_EQ(first.new_connections, 1);
  EXPECT_EQ(second.new_connections, 0);
}

TEST_F(MockApiTest, BadRequestsAre400WithOpenAiErrorShape) {
  MockApiOptions options;
  options.max_inputs = 3;
  options.max_tokens_per_input = 4;    // 16 bytes
  options.max_tokens_per_request = 6;  // 24 bytes
  StartServer(options);
  struct Case {
    std::string body;
    std::string message_part;
  };
  const std::vector<Case> cases = {
      {"{not json", "parse"},
      {"[1,2]", "JSON object"},
      {R"({"input":["a"]})", "model"},
      {R"({"model":"m"})", "'input'"},
      {R"({"model":"m","input":[]})", "empty"},
      {R"({"model":"m","input":""})", "empty"},
      {R"({"model":"m","input":["a",""]})", "input[1]"},
      {R"({"model":"m","input":[[1,2,3]]})", "Token-id"},
      {R"({"model":"m","input":[7]})", "Token-id"},
      {R"({"model":"m","input":[{"a":1}]})", "input[0]"},
      {R"({"model":"m","input":["a","b","c","d"]})", "maximum is 3"},
      {R"({"model":"m","input":["a","0123456789abcdefg"]})", "input[1] has 5 tokens"},
      {R"({"model":"m","input":["0123456789abcdef","0123456789ab"]})", "Requested 7 tokens"},
      {R"({"model":"m","input":["a"],"dimensions":0})", "dimensions"},
      {R"({"model":"m","input":["a"],"dimensions":"x"})", "dimensions"},
      {R"({"model":"m","input":["a"],"encoding_format":"int8"})", "encoding_format"},
  };
  for (const Case& c : cases) {
    HttpResult r = client_.Post(url_, c.body);
    EXPECT_EQ(r.status, 400) << c.body;
    simdjson::dom::parser parser;
    simdjson::dom::element doc;
    ASSERT_FALSE(parser.parse(r.body).get(doc)) << r.body;
    EXPECT_EQ(std::string_view(doc["error"]["type"]), "invalid_request_error");
    EXPECT_TRUE(doc["error"]["param"].is_null());
    EXPECT_TRUE(doc["error"]["code"].is_null());
    EXPECT_NE(ErrorMessage(r.body).find(c.message_part), std::string::npos)
        << c.body << " -> " << ErrorMessage(r.body);
  }
  MockApiStats stats = server_->Stats();
  EXPECT_EQ(stats.requests, cases.size());
  EXPECT_EQ(stats.bad_requests, cases.size());
  EXPECT_EQ(stats.ok, 0u);
}

TEST_F(MockApiTest, ApiKeyIsRequiredAndNeverEchoed) {
  MockApiOptions options;
  options.api_key = "sk-test-secret";
  StartServer(options);
  HttpResult missing = client_.Post(url_, Json({"a"}));
  EXPECT_EQ(missing.status, 401);
  HttpResult wrong = client_.Post(url_, Json({"a"}), "sk-wrong-key");
  EXPECT_EQ(wrong.status, 401);
  EXPECT_EQ(wrong.body.find("sk-"), std::string::npos) << wrong.body;
  EXPECT_NE(ErrorMessage(wrong.body).find("Incorrect API key"), std::string::npos);
  HttpResult right = client_.Post(url_, Json({"a"}), "sk-test-secret");
  EXPECT_EQ(right.status, 200);
  EXPECT_EQ(server_->Stats().unauthorized, 2u);
  EXPECT_EQ(server_->Stats().ok, 1u);
}

TEST_F(MockApiTest, RpmLimitAnswers429WithRetryAfterAndHeaders) {
  MockApiOptions options;
  options.rpm = 3;  // one request per 20 s: no refill during the test
  StartServer(options);
  for (int i = 0; i < 3; ++i) {
    HttpResult r = client_.Post(url_, Json({"a"}));
    ASSERT_EQ(r.status, 200) << r.body;
    EXPECT_EQ(r.header("x-ratelimit-limit-requests"), "3");
    EXPECT_EQ(r.header("x-ratelimit-remaining-requests"), std::to_string(2 - i));
    EXPECT_TRUE(r.has("x-ratelimit-reset-requests"));
    EXPECT_FALSE(r.has("x-ratelimit-limit-tokens"));  // no TPM limit set
  }
  HttpResult limited = client_.Post(url_, Json({"a"}));
  ASSERT_EQ(limited.status, 429) << limited.body;
  EXPECT_EQ(limited.header("x-ratelimit-remaining-requests"), "0");
  EXPECT_EQ(limited.header("x-ratelimit-limit-requests"), "3");
  // About 20 s until one request is back.
  const int retry_after = std::atoi(limited.header("retry-after").c_str());
  const int retry_after_ms = std::atoi(limited.header("retry-after-ms").c_str());
  EXPECT_GE(retry_after, 19);
  EXPECT_LE(retry_after, 20);
  EXPECT_GT(retry_after_ms, 19000);
  EXPECT_LE(retry_after_ms, 20000);
  EXPECT_EQ(retry_after, (retry_after_ms + 999) / 1000);
  EXPECT_NE(ErrorMessage(limited.body).find("requests per min (RPM)"), std::string::npos);
  EXPECT_EQ(server_->Stats().rate_limited, 1u);
  EXPECT_EQ(server_->Stats().ok, 3u);
}

TEST_F(MockApiTest, TpmLimitAnswers429AndTooLargeRequests) {
  MockApiOptions options;
  options.tpm = 100;  // refills 1.67 tokens/s
  StartServer(options);
  const std::string sixty_tokens(240, 'x');
  HttpResult first = client_.Post(url_, Json({sixty_tokens}));
  ASSERT_EQ(first.status, 200);
  EXPECT_EQ(first.header("x-ratelimit-limit-tokens"), "100");
  EXPECT_EQ(first.header("x-ratelimit-remaining-tokens"), "40");
  EXPECT_FALSE(first.has("x-ratelimit-limit-requests"));
  HttpResult second = client_.Post(url_, Json({sixty_tokens}));
  ASSERT_EQ(second.status, 429);
  EXPECT_NE(ErrorMessage(second.body).find("tokens per min (TPM)"), std::string::npos);
  // 20 missing tokens at 100/min: 12 s.
  EXPECT_EQ(second.header("retry-after"), "12");
  const int retry_after_ms = std::atoi(second.header("retry-after-ms").c_str());
  EXPECT_GT(retry_after_ms, 11500);
  EXPECT_LE(retry_after_ms, 12000);
  // More than a minute holds: 429 that waiting cannot cure, no Retry-After.
  HttpResult huge = client_.Post(url_, Json({std::string(404, 'y')}));
  ASSERT_EQ(huge.status, 429);
  EXPECT_FALSE(huge.has("retry-after"));
  EXPECT_NE(ErrorMessage(huge.body).find("Request too large"), std::string::npos);
  EXPECT_EQ(server_->Stats().rate_limited, 2u);
  EXPECT_EQ(server_->Stats().tokens_embedded, 60u);
}

TEST_F(MockApiTest, SetRateLimitsChangesLimitsLive) {
  StartServer();
  HttpResult unlimited = client_.Post(url_, Json({"a"}));
  EXPECT_EQ(unlimited.status, 200);
  EXPECT_FALSE(unlimited.has("x-ratelimit-limit-requests"));
  server_->SetRateLimits(/*rpm=*/2, /*tpm=*/1000);
  EXPECT_EQ(client_.Post(url_, Json({"a"})).status, 200);
  HttpResult second = client_.Post(url_, Json({"a"}));
  EXPECT_EQ(second.status, 200);
  EXPECT_EQ(second.header("x-ratelimit-remaining-requests"), "0");
  EXPECT_EQ(second.header("x-ratelimit-remaining-tokens"), "998");
  EXPECT_EQ(client_.Post(url_, Json({"a"})).status, 429);
  // Raising the limit keeps the empty fraction: still nothing left.
  server_->SetRateLimits(/*rpm=*/600, /*tpm=*/1000);
  HttpResult raised = client_.Post(url_, Json({"a"}));
  EXPECT_EQ(raised.header("x-ratelimit-limit-requests"), "600");
  server_->SetRateLimits(0, 0);
  for (int i = 0; i < 5; ++i) EXPECT_EQ(client_.Post(url_, Json({"a"})).status, 200);
}

TEST_F(MockApiTest, CapacityQueuesFifoAndNeverExceedsCapacity) {
  MockApiOptions options;
  options.capacity = 3;
  options.base_latency = milliseconds(30);
  StartServer(options);
  const auto start = SteadyClock::now();
  std::vector<HttpResult> results = PostConcurrently(url_, Json({"q"}), 20);
  const double elapsed = ToSeconds(SteadyClock::now() - start);
  for (const HttpResult& r : results) EXPECT_EQ(r.status, 200) << r.code;
  MockApiStats stats = server_->Stats();
  EXPECT_EQ(stats.ok, 20u);
  EXPECT_EQ(stats.peak_in_service, 3u);
  EXPECT_GE(stats.peak_queued, 1u);
  EXPECT_EQ(stats.over_capacity, 0u);
  // 20 requests, 3 at a time, 30 ms each: at least 7 rounds.
  EXPECT_GE(elapsed, 0.21);
  // Each request held a slot for at least its 30 ms (a timer never fires
  // early), and never more than 3 slots were busy over the whole call.
  EXPECT_GE(stats.service_slot_seconds, 20 * 0.030);
  EXPECT_LE(stats.service_slot_seconds, 3 * elapsed);
  // Idle, the integral stops growing.
  EXPECT_EQ(server_->Stats().service_slot_seconds, stats.service_slot_seconds);
}

TEST_F(MockApiTest, CapacityRejectsWith503) {
  MockApiOptions options;
  options.capacity = 2;
  options.over_capacity = OverCapacityPolicy::kReject503;
  options.base_latency = milliseconds(300);
  StartServer(options);
  std::vector<HttpResult> results = PostConcurrently(url_, Json({"r"}), 8);
  int ok = 0, unavailable = 0;
  for (const HttpResult& r : results) {
    if (r.status == 200) ++ok;
    if (r.status == 503) ++unavailable;
  }
  EXPECT_EQ(ok, 2);
  EXPECT_EQ(unavailable, 6);
  MockApiStats stats = server_->Stats();
  EXPECT_EQ(stats.over_capacity, 6u);
  EXPECT_EQ(stats.peak_in_service, 2u);
}

TEST_F(MockApiTest, LatencyHoldsNoThreadPerRequest) {
  MockApiOptions options;
  options.threads = 1;
  // Long enough that 100 clients connect well within it on a loaded machine.
  options.base_latency = milliseconds(2000);
  StartServer(options);
  const auto start = SteadyClock::now();
  std::vector<HttpResult> results = PostConcurrently(url_, Json({"slow"}), 100);
  const double elapsed = ToSeconds(SteadyClock::now() - start);
  for (const HttpResult& r : results) ASSERT_EQ(r.status, 200) << r.code;
  EXPECT_GE(elapsed, 2.0);
  // One server thread, 100 requests in flight at once: one after another
  // they would take 200 s.
  EXPECT_LT(elapsed, 20.0);
  EXPECT_EQ(server_->Stats().peak_in_service, 100u);
}

TEST_F(MockApiTest, Fault500) {
  MockApiOptions options;
  options.fault_500_rate = 1.0;
  StartServer(options);
  HttpResult r = client_.Post(url_, Json({"a"}));
  EXPECT_EQ(r.status, 500);
  simdjson::dom::parser parser;
  simdjson::dom::element doc;
  ASSERT_FALSE(parser.parse(r.body).get(doc));
  EXPECT_EQ(std::string_view(doc["error"]["type"]), "server_error");
  EXPECT_EQ(server_->Stats().faults_500, 1u);
  EXPECT_EQ(server_->Stats().ok, 0u);
}

TEST_F(MockApiTest, Fault429FirstAnswersExactlyTheFirstRequests429) {
  MockApiOptions options;
  options.fault_429_first = 2;
  StartServer(options);
  for (int i = 0; i < 2; ++i) {
    HttpResult r = client_.Post(url_, Json({"a"}));
    EXPECT_EQ(r.status, 429);
    EXPECT_NE(r.body.find("rate_limit_exceeded"), std::string::npos) << r.body;
  }
  EXPECT_EQ(client_.Post(url_, Json({"a"})).status, 200);
  EXPECT_EQ(server_->Stats().rate_limited, 2u);
  EXPECT_EQ(server_->Stats().ok, 1u);
}

TEST_F(MockApiTest, FaultResetClosesWithoutResponse) {
  MockApiOptions options;
  options.fault_reset_rate = 1.0;
  options.base_latency = milliseconds(5);  // also through the suspended path
  StartServer(options);
  HttpResult r = client_.Post(url_, Json({"a"}));
  EXPECT_TRUE(r.code == CURLE_GOT_NOTHING || r.code == CURLE_RECV_ERROR) << r.code;
  EXPECT_EQ(r.status, 0);
  EXPECT_EQ(server_->Stats().faults_reset, 1u);
}

TEST_F(MockApiTest, FaultResetOnTheImmediatePath) {
  MockApiOptions options;
  options.fault_reset_rate = 1.0;
  StartServer(options);
  HttpResult r = client_.Post(url_, Json({"a"}));
  EXPECT_TRUE(r.code == CURLE_GOT_NOTHING || r.code == CURLE_RECV_ERROR) << r.code;
  EXPECT_EQ(server_->Stats().faults_reset, 1u);
}

TEST_F(MockApiTest, FaultMalformedIsTruncatedJson) {
  MockApiOptions options;
  options.fault_malformed_rate = 1.0;
  StartServer(options);
  HttpResult r = client_.Post(url_, Json({"a", "b"}));
  EXPECT_EQ(r.status, 200);
  simdjson::dom::parser parser;
  simdjson::dom::element doc;
  EXPECT_TRUE(parser.parse(r.body).get(doc)) << "body parsed: " << r.body.substr(0, 80);
  EXPECT_EQ(server_->Stats().faults_malformed, 1u);
  EXPECT_EQ(server_->Stats().ok, 0u);
}

TEST_F(MockApiTest, FaultWrongVectorCount) {
  MockApiOptions options;
  options.fault_wrong_count_rate = 1.0;
  options.dimensions = 8;
  StartServer(options);
  HttpResult r = client_.Post(url_, Json({"a", "b", "c"}));
  ASSERT_EQ(r.status, 200);
  EXPECT_EQ(Vectors(r.body).size(), 2u);  // one fewer than inputs
  EXPECT_EQ(server_->Stats().faults_wrong_count, 1u);
  EXPECT_EQ(server_->Stats().ok, 0u);
}

TEST_F(MockApiTest, FaultWrongDimensions) {
  MockApiOptions options;
  options.fault_wrong_dims_rate = 1.0;
  options.dimensions = 64;
  StartServer(options);
  HttpResult r = client_.Post(url_, Json({"a", "b"}));
  ASSERT_EQ(r.status, 200);
  for (const auto& v : Vectors(r.body)) EXPECT_EQ(v.size(), 65u);
  EXPECT_EQ(server_->Stats().faults_wrong_dims, 1u);
  EXPECT_EQ(server_->Stats().ok, 0u);
}

TEST_F(MockApiTest, FaultDrawsAreSeeded) {
  auto statuses = [this](uint64_t seed) {
    MockApiOptions options;
    options.fault_500_rate = 0.5;
    options.seed = seed;
    StartServer(options);
    std::string out;
    for (int i = 0; i < 24; ++i) out += client_.Post(url_, Json({"a"})).status == 200 ? '.' : 'X';
    server_->Stop();
    return out;
  };
  const std::string first = statuses(42);
  EXPECT_EQ(first, statuses(42));
  EXPECT_NE(first.find('X'), std::string::npos);
  EXPECT_NE(first.find('.'), std::string::npos);
}

// Every request is counted exactly once, under concurrency, a queue, jitter
// and every kind of fault at once.
TEST_F(MockApiTest, CountersAreExactUnderConcurrentMixedFaults) {
  MockApiOptions options;
  options.capacity = 4;
  options.base_latency = milliseconds(5);
  options.jitter = milliseconds(5);
  options.fault_500_rate = 0.1;
  options.fault_reset_rate = 0.1;
  options.fault_malformed_rate = 0.1;
  options.fault_wrong_dims_rate = 0.1;
  options.threads = 2;
  options.seed = 7;
  StartServer(options);
  std::vector<HttpResult> results = PostConcurrently(url_, Json({"a", "b", "c"}), 60);
  uint64_t ok = 0, s500 = 0, reset = 0, other200 = 0;
  for (const HttpResult& r : results) {
    if (r.status == 500) {
      ++s500;
    } else if (r.status == 0) {
      ++reset;
    } else if (r.status == 200) {
      simdjson::dom::parser parser;
      simdjson::dom::element doc;
      bool exact = !parser.parse(r.body).get(doc);
      if (exact) {
        std::vector<std::vector<float>> vectors = Vectors(r.body);
        exact = vectors.size() == 3 && vectors[2] == MockEmbedding("c", 256);
      }
      exact ? ++ok : ++other200;
    }
  }
  MockApiStats stats = server_->Stats();
  EXPECT_EQ(stats.requests, 60u);
  EXPECT_EQ(stats.ok, ok);
  EXPECT_EQ(stats.inputs_embedded, 3 * ok);
  EXPECT_EQ(stats.faults_500, s500);
  EXPECT_EQ(stats.faults_reset, reset);
  EXPECT_EQ(stats.faults_malformed + stats.faults_wrong_dims, other200);
  EXPECT_EQ(ok + s500 + reset + other200, 60u);
  EXPECT_GT(ok, 0u);
  EXPECT_GT(s500 + reset + other200, 0u);
  EXPECT_LE(stats.peak_in_service, 4u);
}

TEST_F(MockApiTest, StatsAndHealthEndpoints) {
  StartServer();
  client_.Post(url_, Json({"a", "b"}));
  client_.Post(url_, "{}");
  const std::string root = "http://127.0.0.1:" + std::to_string(server_->Port());
  HttpResult health = client_.Get(root + "/health");
  EXPECT_EQ(health.status, 200);
  HttpResult stats = client_.Get(root + "/stats");
  ASSERT_EQ(stats.status, 200);
  EXPECT_EQ(stats.body, server_->StatsJson());
  simdjson::dom::parser parser;
  simdjson::dom::element doc = parser.parse(stats.body);
  EXPECT_EQ(uint64_t(doc["requests"]), 2u);
  EXPECT_EQ(uint64_t(doc["ok"]), 1u);
  EXPECT_EQ(uint64_t(doc["inputs_embedded"]), 2u);
  EXPECT_EQ(uint64_t(doc["bad_requests"]), 1u);
  EXPECT_EQ(client_.Get(root + "/nope").status, 404);
  EXPECT_EQ(client_.Get(url_).status, 405);
  EXPECT_EQ(server_->Stats().requests, 2u);  // GETs are not embedding requests
}

// busy_span_s runs from the first request received to the last answer sent:
// at least the latency the one request was held for, at most what the client
// saw from before its request to after the answer.
TEST_F(MockApiTest, BusySpanRunsFromTheFirstRequestToTheLastAnswer) {
  MockApiOptions options;
  options.base_latency = std::chrono::milliseconds(200);
  StartServer(options);
  EXPECT_EQ(server_->Stats().busy_span_s, 0.0);  // nothing yet
  const auto before = SteadyClock::now();
  EXPECT_EQ(client_.Post(url_, Json({"a", "b"})).status, 200);
  const double client_s = ToSeconds(SteadyClock::now() - before);
  const double span = server_->Stats().busy_span_s;
  EXPECT_GE(span, 0.2);
  EXPECT_LE(span, client_s);
}

TEST_F(MockApiTest, StopAnswersSuspendedRequests) {
  MockApiOptions options;
  options.base_latency = std::chrono::seconds(30);
  StartServer(options);
  std::vector<HttpResult> results;
  std::thread clients([&] { results = PostConcurrently(url_, Json({"a"}), 5); });
  // All five are waiting.
  EXPECT_TRUE(testing::WaitUntil([&] { return server_->Stats().requests >= 5; }));
  const auto start = SteadyClock::now();
  server_->Stop();
  clients.join();
  EXPECT_LT(ToSeconds(SteadyClock::now() - start), 10.0);  // not the 30 s latency
  for (const HttpResult& r : results) EXPECT_EQ(r.status, 503);
}

TEST_F(MockApiTest, ResponseSizeIsCappedByInputsTimesDimensions) {
  // Issue 14: 2048 inputs x 65536 dimensions made one 625 MB response (3.2 GB
  // peak). A request over inputs x dimensions is a 400 before any vector is
  // computed; the default allows OpenAI's largest (2048 x 3072).
  StartServer();
  EXPECT_EQ(MockApiOptions{}.max_response_values, int64_t{2048} * 3072);
  std::vector<std::string> inputs(1024, "x");
  HttpResult over = client_.Post(url_, Json(inputs, R"(,"dimensions":8192)"));
  EXPECT_EQ(over.status, 400) << over.body.substr(0, 200);
  EXPECT_NE(ErrorMessage(over.body).find("1024 inputs x 8192 dimensions = 8388608 values"),
            std::string::npos)
      << ErrorMessage(over.body);
  server_.reset();

  MockApiOptions small;
  small.max_response_values = 10;
  StartServer(small);
  HttpResult at_cap = client_.Post(url_, Json({"a", "b"}, R"(,"dimensions":5)"));
  EXPECT_EQ(at_cap.status, 200) << at_cap.body;
  HttpResult over_default_dims = client_.Post(url_, Json({"a"}));  // 256 default dimensions
  EXPECT_EQ(over_default_dims.status, 400);
  EXPECT_NE(ErrorMessage(over_default_dims.body).find("at most 10 values per request"),
            std::string::npos)
      << ErrorMessage(over_default_dims.body);
}

TEST_F(MockApiTest, StartRejectsBadOptionsAndBusyPorts) {
  MockApiOptions bad;
  bad.fault_500_rate = 1.5;
  EXPECT_EQ(MockApiServer::Start(bad).status().code(), StatusCode::kInvalidArgument);
  bad = MockApiOptions{};
  bad.host = "not-an-ip";
  EXPECT_EQ(MockApiServer::Start(bad).status().code(), StatusCode::kInvalidArgument);
  StartServer();
  MockApiOptions same_port;
  same_port.port = server_->Port();
  auto second = MockApiServer::Start(same_port);
  EXPECT_FALSE(second.ok());
}

TEST(MockApiFlagsTest, EveryFlagParses) {
  MockApiOptions options;
  CLI::App app;
  AddMockApiFlags(app, options);
  setenv("SLUICE_MOCK_TEST_KEY", "sk-from-env", 1);
  std::vector<std::string> args = {"--threads",
                                   "3",
                                   "--seed",
                                   "9",
                                   "--api-key-env",
                                   "SLUICE_MOCK_TEST_KEY",
                                   "--max-tokens-per-input",
                                   "100",
                                   "--max-tokens-per-request",
                                   "1000",
                                   "--max-inputs",
                                   "10",
                                   "--max-response-values",
                                   "12345",
                                   "--fail-wrong-dims",
                                   "0.4",
                                   "--fail-wrong-count",
                                   "0.05",
                                   "--fail-malformed",
                                   "0.3",
                                   "--fail-reset",
                                   "0.2",
                                   "--fail-500",
                                   "0.1",
                                   "--over-capacity",
                                   "reject",
                                   "--capacity",
                                   "4",
                                   "--tpm",
                                   "5000",
                                   "--rpm",
                                   "60",
                                   "--jitter-ms",
                                   "3",
                                   "--per-input-latency-ms",
                                   "0.5",
                                   "--latency-ms",
                                   "200",
                                   "--dimensions",
                                   "768",
                                   "--port",
                                   "8080",
                                   "--host",
                                   "127.0.0.2"};
  std::reverse(args.begin(), args.end());  // CLI11 takes the vector reversed
  ASSERT_NO_THROW(app.parse(args));
  EXPECT_EQ(options.host, "127.0.0.2");
  EXPECT_EQ(options.port, 8080);
  EXPECT_EQ(options.dimensions, 768);
  EXPECT_EQ(options.base_latency, milliseconds(200));
  EXPECT_EQ(options.per_input_latency, std::chrono::microseconds(500));
  EXPECT_EQ(options.jitter, milliseconds(3));
  EXPECT_EQ(options.rpm, 60);
  EXPECT_EQ(options.tpm, 5000);
  EXPECT_EQ(options.capacity, 4);
  EXPECT_EQ(options.over_capacity, OverCapacityPolicy::kReject503);
  EXPECT_DOUBLE_EQ(options.fault_500_rate, 0.1);
  EXPECT_DOUBLE_EQ(options.fault_reset_rate, 0.2);
  EXPECT_DOUBLE_EQ(options.fault_malformed_rate, 0.3);
  EXPECT_DOUBLE_EQ(options.fault_wrong_dims_rate, 0.4);
  EXPECT_DOUBLE_EQ(options.fault_wrong_count_rate, 0.05);
  EXPECT_EQ(options.max_inputs, 10);
  EXPECT_EQ(options.max_response_values, 12345);
  EXPECT_EQ(options.max_tokens_per_request, 1000);
  EXPECT_EQ(options.max_tokens_per_input, 100);
  EXPECT_EQ(options.api_key, "sk-from-env");
  EXPECT_EQ(options.seed, 9u);
  EXPECT_EQ(options.threads, 3);
}

TEST(MockApiFlagsTest, RejectsUnsetKeyVariableAndBadValues) {
  {
    MockApiOptions options;
    CLI::App app;
    AddMockApiFlags(app, options);
    unsetenv("SLUICE_MOCK_UNSET_KEY");
    std::vector<std::string> args = {"SLUICE_MOCK_UNSET_KEY", "--api-key-env"};
    EXPECT_THROW(app.parse(args), CLI::ParseError);
    EXPECT_TRUE(options.api_key.empty());
  }
  {
    MockApiOptions options;
    CLI::App app;
    AddMockApiFlags(app, options);
    std::vector<std::string> args = {"1.5", "--fail-500"};
    EXPECT_THROW(app.parse(args), CLI::ParseError);
  }
  {
    MockApiOptions options;
    CLI::App app;
    AddMockApiFlags(app, options);
    std::vector<std::string> args = {"sometimes", "--over-capacity"};
    EXPECT_THROW(app.parse(args), CLI::ParseError);
  }
}

}  // namespace
}  // namespace sluice
