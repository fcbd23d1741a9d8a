// One-run throughput probe of the mock API: an in-process server (0 latency)
// and a curl-multi client keeping `in_flight` keep-alive requests of 64 inputs
// busy for a few seconds, first with float then with base64 vectors.
//
// Usage: mock_api_throughput [seconds=3] [dimensions=256] [server_threads=1] [in_flight=16]
#include <curl/curl.h>

#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include <fmt/format.h>

#include "sluice/mock_api.h"

namespace {

size_t Discard(char*, size_t size, size_t n, void* user) {
  *static_cast<size_t*>(user) += size * n;
  return size * n;
}

struct Slot {
  CURL* easy = nullptr;
  size_t bytes = 0;
};

void Run(const std::string& url, const std::string& body, double seconds, int in_flight,
         const char* label) {
  CURLM* multi = curl_multi_init();
  curl_slist* headers = curl_slist_append(nullptr, "Content-Type: application/json");
  headers = curl_slist_append(headers, "Expect:");
  std::vector<Slot> slots(static_cast<size_t>(in_flight));
  auto start_one = [&](Slot& slot) {
    curl_multi_remove_handle(multi, slot.easy);
    curl_multi_add_handle(multi, slot.easy);
  };
  for (Slot& slot : slots) {
    slot.easy = curl_easy_init();
    curl_easy_setopt(slot.easy, CURLOPT_URL, url.c_str());
    curl_easy_setopt(slot.easy, CURLOPT_HTTPHEADER, headers);
    curl_easy_setopt(slot.easy, CURLOPT_POSTFIELDS, body.data());
    curl_easy_setopt(slot.easy, CURLOPT_POSTFIELDSIZE, static_cast<long>(body.size()));
    curl_easy_setopt(slot.easy, CURLOPT_WRITEFUNCTION, &Discard);
    curl_easy_setopt(slot.easy, CURLOPT_WRITEDATA, &slot.bytes);
    curl_easy_setopt(slot.easy, CURLOPT_PRIVATE, &slot);
    curl_multi_add_handle(multi, slot.easy);
  }
  const auto t0 = sluice::SteadyClock::now();
  const auto end = t0 + sluice::FromSeconds(seconds);
  uint64_t done = 0, failed = 0;
  size_t bytes = 0;
  int running = 0;
  while (true) {
    curl_multi_perform(multi, &running);
    int msgs = 0;
    std::vector<Slot*> finished;
    while (CURLMsg* msg = curl_multi_info_read(multi, &msgs)) {
      if (msg->msg != CURLMSG_DONE) continue;
      long status = 0;
      curl_easy_getinfo(msg->easy_handle, CURLINFO_RESPONSE_CODE, &status);
      Slot* slot = nullptr;
      curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, reinterpret_cast<char**>(&slot));
      if (msg->data.result == CURLE_OK && status == 200) {
        ++done;
      } else {
        ++failed;
      }
      bytes += slot->bytes;
      slot->bytes = 0;
      finished.push_back(slot);
    }
    const bool more = sluice::SteadyClock::now() < end;
    if (more) {
      for (Slot* slot : finished) start_one(*slot);
    }
    if (!more && running == 0) break;
    curl_multi_poll(multi, nullptr, 0, 10, nullptr);
  }
  const double elapsed = sluice::ToSeconds(sluice::SteadyClock::now() - t0);
  fmt::print(
      "{:7}: {:8.0f} requests/s  {:9.0f} inputs/s  {:6.1f} MB/s of responses  ({} ok, {} "
      "failed, {:.2f} s)\n",
      label, done / elapsed, done * 64 / elapsed, bytes / elapsed / 1e6, done, failed, elapsed);
  for (Slot& slot : slots) {
    curl_multi_remove_handle(multi, slot.easy);
    curl_easy_cleanup(slot.easy);
  }
  curl_slist_free_all(headers);
  curl_multi_cleanup(multi);
}

}  // namespace

int main(int argc, char** argv) {
  const double seconds = argc > 1 ? std::atof(argv[1]) : 3.0;
  sluice::MockApiOptions options;
  options.dimensions = argc > 2 ? std::atoi(argv[2]) : 256;
  options.threads = argc > 3 ? std::atoi(argv[3]) : 1;
  const int in_flight = argc > 4 ? std::atoi(argv[4]) : 16;
  curl_global_init(CURL_GLOBAL_DEFAULT);
  auto server = sluice::MockApiServer::Start(options);
  if (!server.ok()) {
    std::fprintf(stderr, "%s\n", server.status().ToString().c_str());
    return 1;
  }
  // 64 inputs of ~500 bytes (~125 tokens), like a batch of prose chunks.
  std::string inputs;
  for (int i = 0; i < 64; ++i) {
    if (i > 0) inputs += ",";
    std::string text = fmt::format("chunk {} ", i);
    while (text.size() < 500) text += "the quick brown fox jumps over the lazy dog ";
    inputs += "\"" + text + "\"";
  }
  const std::string url = (*server)->BaseUrl() + "/embeddings";
  fmt::print("mock-api throughput: 64 inputs/request, {} dims, {} server thread(s), {} in flight\n",
             options.dimensions, options.threads, in_flight);
  Run(url, R"({"model":"m","input":[)" + inputs + "]}", seconds, in_flight, "float");
  Run(url, R"({"model":"m","encoding_format":"base64","input":[)" + inputs + "]}", seconds,
      in_flight, "base64");
  (*server)->Stop();
  curl_global_cleanup();
  return 0;
}
