// CPU stage ceilings (issue 15, BENCHMARKS.md "Stage ceilings"): how fast
// each CPU step runs alone on one core, with the pipeline's shapes (~2 KB
// chunks of ASCII text, 256-dimension vectors, 128 inputs per request):
// chunking, request encoding, response decoding (base64 and float lists),
// the offline hash embedder, the simulated API's response building and the
// simulated API over loopback HTTP.
//
//   build-rel/bench/stages/bench_stages --benchmark_filter='Chunk|Request|Response|Hash|Mock'
#include <benchmark/benchmark.h>
#include <curl/curl.h>

#include <random>
#include <string>
#include <vector>

#include "common/json_writer.h"
#include "embed/request_codec.h"
#include "mockapi/embeddings_wire.h"
#include "sluice/chunker.h"
#include "sluice/embed.h"
#include "sluice/mock_api.h"

namespace sluice {
namespace {

constexpr int kDims = 256;
constexpr size_t kInputs = 128;

std::string Words(size_t bytes, uint64_t seed) {
  static const char* kWords[] = {"pump",   "valve",   "pressure", "manual",  "install",
                                 "torque", "seal",    "the",      "of",      "replace",
                                 "check",  "flow",    "rated",    "bearing", "shaft",
                                 "motor",  "housing", "gasket",   "and",     "to"};
  std::mt19937_64 rng(seed);
  std::uniform_int_distribution<int> word(0, 19);
  std::string text;
  while (text.size() < bytes) {
    text += kWords[word(rng)];
    text += (text.size() % 97 < 8) ? ". " : " ";
  }
  return text;
}

std::vector<std::string> Inputs() {
  std::vector<std::string> inputs;
  for (size_t i = 0; i < kInputs; ++i) inputs.push_back(Words(2000, i));
  return inputs;
}

void BM_ChunkText(benchmark::State& state) {
  // 1 MB of paragraphs of ~600 bytes into 512-token chunks.
  std::vector<TextBlock> blocks;
  size_t bytes = 0;
  for (uint64_t i = 0; bytes < (1 << 20); ++i) {
    TextBlock b;
    b.text = Words(600, i);
    bytes += b.text.size();
    blocks.push_back(std::move(b));
  }
  size_t chunks = 0;
  for (auto _ : state) {
    Chunker chunker(ChunkerOptions{}, [&](Chunk&& c) {
      benchmark::DoNotOptimize(c.id.data());
      ++chunks;
      return Status::OK();
    });
    SourceInfo info;
    info.source_id = "manuals/pump.txt";
    (void)chunker.BeginDocument(info);
    for (const TextBlock& b : blocks) (void)chunker.AddBlock(b);
    (void)chunker.EndDocument();
  }
  state.SetBytesProcessed(static_cast<int64_t>(bytes * state.iterations()));
  state.counters["chunks/s"] =
      benchmark::Counter(static_cast<double>(chunks), benchmark::Counter::kIsRate);
  state.counters["chunks/MB"] = static_cast<double>(chunks) /
                                static_cast<double>(state.iterations()) /
                                (static_cast<double>(bytes) / 1e6);
}
BENCHMARK(BM_ChunkText)->Unit(benchmark::kMillisecond);

void BM_EncodeRequest(benchmark::State& state) {
  const std::vector<std::string> inputs = Inputs();
  size_t bytes = 0;
  std::string body;
  for (auto _ : state) {
    body.clear();
    BuildEmbeddingRequestBody("text-embedding-3-small", inputs, kDims, EncodingFormat::kBase64,
                              body);
    bytes += body.size();
  }
  state.SetBytesProcessed(static_cast<int64_t>(bytes));
  state.counters["inputs/s"] = benchmark::Counter(static_cast<double>(kInputs * state.iterations()),
                                                  benchmark::Counter::kIsRate);
}
BENCHMARK(BM_EncodeRequest)->Unit(benchmark::kMicrosecond);

std::string ResponseBody(bool base64) {
  static const std::vector<std::string> inputs = Inputs();
  mockapi::ParsedRequest p;
  p.model = "text-embedding-3-small";
  for (const std::string& s : inputs) p.inputs.push_back(s);
  p.dimensions = kDims;
  p.base64 = base64;
  p.total_tokens = 64000;
  return mockapi::EmbeddingsBody(p, kDims);
}

void BM_DecodeResponse(benchmark::State& state) {
  const std::string body = ResponseBody(state.range(0) != 0);
  ParsedEmbeddings parsed;
  for (auto _ : state) {
    std::string copy = body;  // the parser may pad the buffer in place
    Status s = ParseEmbeddingResponse(copy, kInputs, kDims, parsed);
    if (!s.ok()) {
      state.SkipWithError(s.ToString().c_str());
      return;
    }
  }
  state.SetBytesProcessed(static_cast<int64_t>(body.size() * state.iterations()));
  state.counters["inputs/s"] = benchmark::Counter(static_cast<double>(kInputs * state.iterations()),
                                                  benchmark::Counter::kIsRate);
}
BENCHMARK(BM_DecodeResponse)->Arg(1)->Arg(0)->ArgName("base64")->Unit(benchmark::kMicrosecond);

void BM_MockBuildResponse(benchmark::State& state) {
  for (auto _ : state) benchmark::DoNotOptimize(ResponseBody(true));
  state.counters["inputs/s"] = benchmark::Counter(static_cast<double>(kInputs * state.iterations()),
                                                  benchmark::Counter::kIsRate);
}
BENCHMARK(BM_MockBuildResponse)->Unit(benchmark::kMicrosecond);

// The simulated API over loopback HTTP (server and a keep-alive libcurl
// client in this process, one request at a time): requests/s with one input
// per request, inputs/s with 128 (base64 vectors), so it is known not to be
// the limit of a run against it.
void BM_MockApiHttp(benchmark::State& state) {
  const size_t inputs_per_request = static_cast<size_t>(state.range(0));
  Result<std::unique_ptr<MockApiServer>> server = MockApiServer::Start(MockApiOptions{});
  if (!server.ok()) {
    state.SkipWithError(server.status().ToString().c_str());
    return;
  }
  static const std::vector<std::string> inputs = Inputs();
  std::string body = R"({"model":"mock","encoding_format":"base64","input":[)";
  for (size_t i = 0; i < inputs_per_request; ++i) {
    if (i > 0) body += ',';
    AppendJsonString(inputs[i % inputs.size()], body);
  }
  body += "]}";
  const std::string url = (*server)->BaseUrl() + "/embeddings";
  CURL* curl = curl_easy_init();
  curl_slist* headers = curl_slist_append(nullptr, "Content-Type: application/json");
  std::string response;
  curl_easy_setopt(curl, CURLOPT_URL, url.c_str());
  curl_easy_setopt(curl, CURLOPT_HTTPHEADER, headers);
  curl_easy_setopt(curl, CURLOPT_POSTFIELDS, body.c_str());
  curl_easy_setopt(curl, CURLOPT_POSTFIELDSIZE, static_cast<long>(body.size()));
  curl_easy_setopt(curl, CURLOPT_WRITEDATA, &response);
  curl_easy_setopt(
      curl, CURLOPT_WRITEFUNCTION, +[](char* data, size_t size, size_t n, void* into) {
        static_cast<std::string*>(into)->append(data, size * n);
        return size * n;
      });
  for (auto _ : state) {
    response.clear();
    long code = 0;
    if (curl_easy_perform(curl) != CURLE_OK ||
        curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, &code) != CURLE_OK || code != 200) {
      state.SkipWithError("request failed");
      break;
    }
  }
  curl_slist_free_all(headers);
  curl_easy_cleanup(curl);
  state.counters["requests/s"] =
      benchmark::Counter(static_cast<double>(state.iterations()), benchmark::Counter::kIsRate);
  state.counters["inputs/s"] = benchmark::Counter(
      static_cast<double>(state.iterations() * inputs_per_request), benchmark::Counter::kIsRate);
}
BENCHMARK(BM_MockApiHttp)->Arg(1)->Arg(128)->ArgName("inputs")->UseRealTime();

void BM_HashEmbed(benchmark::State& state) {
  const std::vector<std::string> inputs = Inputs();
  for (auto _ : state) {
    for (const std::string& s : inputs) benchmark::DoNotOptimize(HashEmbed(s, 384));
  }
  state.counters["chunks/s"] = benchmark::Counter(static_cast<double>(kInputs * state.iterations()),
                                                  benchmark::Counter::kIsRate);
}
BENCHMARK(BM_HashEmbed)->Unit(benchmark::kMillisecond);

}  // namespace
}  // namespace sluice
