// PostReport: one libcurl easy handle, the report as the body, retried with
// the RetryPolicy on what may pass (no connection, a timeout, 429, 5xx); a
// 4xx is the receiver refusing the body, which a retry cannot change. No
// redirects are followed and only http/https are allowed, so a report never
// goes anywhere but the configured receiver.
#include <curl/curl.h>

#include <mutex>
#include <random>
#include <string>

#include "sluice/handoff.h"

namespace sluice {

namespace {

size_t DiscardBody(char*, size_t size, size_t n, void*) { return size * n; }

// One attempt: Status::OK on a 2xx; `http_status` is 0 without a response.
Status PostOnce(const HandoffOptions& options, const std::string& body, int& http_status) {
  http_status = 0;
  CURL* curl = curl_easy_init();
  if (curl == nullptr) return Status::Internal("cannot create a libcurl handle");
  curl_slist* headers = curl_slist_append(nullptr, "Content-Type: application/json");
  curl_easy_setopt(curl, CURLOPT_URL, options.url.c_str());
  curl_easy_setopt(curl, CURLOPT_PROTOCOLS_STR, "http,https");
  curl_easy_setopt(curl, CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt(curl, CURLOPT_HTTPHEADER, headers);
  curl_easy_setopt(curl, CURLOPT_USERAGENT, "sluice-handoff");
  curl_easy_setopt(curl, CURLOPT_POSTFIELDS, body.data());
  curl_easy_setopt(curl, CURLOPT_POSTFIELDSIZE_LARGE, static_cast<curl_off_t>(body.size()));
  curl_easy_setopt(
      curl, CURLOPT_TIMEOUT_MS,
      static_cast<long>(
          std::chrono::duration_cast<std::chrono::milliseconds>(options.url_timeout).count()));
  curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, DiscardBody);
  const CURLcode code = curl_easy_perform(curl);
  long response = 0;
  curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, &response);
  curl_slist_free_all(headers);
  curl_easy_cleanup(curl);
  http_status = static_cast<int>(response);
  if (code != CURLE_OK) {
    // libcurl's message names the host and port, never the path or query
    // (where a receiver's token would be).
    const std::string why = curl_easy_strerror(code);
    return code == CURLE_OPERATION_TIMEDOUT ? Status::Timeout(why) : Status::Unavailable(why);
  }
  if (response >= 200 && response < 300) return Status::OK();
  const std::string what = "the receiver answered HTTP " + std::to_string(response);
  if (response == 429) return Status::RateLimited(what);
  if (response >= 500) return Status::Unavailable(what);
  return Status::Rejected(what);
}

}  // namespace

WebhookOutcome PostReport(const HandoffOptions& options, const HandoffRun& run,
                          const Clock& clock) {
  WebhookOutcome out;
  if (options.url.empty()) return out;
  out.ran = true;
  static std::once_flag curl_initialised;
  std::call_once(curl_initialised, [] { curl_global_init(CURL_GLOBAL_DEFAULT); });
  const RetryPolicy policy(options.url_retry);
  std::mt19937_64 rng(std::random_device{}());
  for (int attempt = 1;; ++attempt) {
    out.attempts = attempt;
    const Status s = PostOnce(options, run.report_json, out.http_status);
    if (s.ok()) {
      out.error.clear();
      return out;
    }
    out.error = s.message();
    if (!policy.ShouldRetry(s, attempt)) return out;
    clock.SleepFor(policy.Backoff(attempt, std::nullopt, rng));
  }
}

}  // namespace sluice
