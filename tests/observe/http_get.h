// One blocking HTTP request over loopback for the tests (libcurl easy).
#pragma once

#include <curl/curl.h>

#include <string>

namespace sluice::testing {

struct HttpAnswer {
  long status = 0;  // 0: no answer (connection failed)
  std::string content_type;
  std::string body;
  std::string error;
};

inline HttpAnswer HttpRequest(const std::string& url, const std::string& method = "GET") {
  HttpAnswer answer;
  CURL* curl = curl_easy_init();
  if (curl == nullptr) {
    answer.error = "curl_easy_init failed";
    return answer;
  }
  curl_easy_setopt(curl, CURLOPT_URL, url.c_str());
  if (method == "HEAD") {
    curl_easy_setopt(curl, CURLOPT_NOBODY, 1L);  // a custom "HEAD" would wait for a body
  } else {
    curl_easy_setopt(curl, CURLOPT_CUSTOMREQUEST, method.c_str());
  }
  curl_easy_setopt(curl, CURLOPT_TIMEOUT, 30L);
  curl_easy_setopt(curl, CURLOPT_NOPROXY, "*");
  curl_easy_setopt(
      curl, CURLOPT_WRITEFUNCTION, +[](char* data, size_t size, size_t n, void* out) {
        static_cast<std::string*>(out)->append(data, size * n);
        return size * n;
      });
  curl_easy_setopt(curl, CURLOPT_WRITEDATA, &answer.body);
  const CURLcode code = curl_easy_perform(curl);
  if (code == CURLE_OK) {
    curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, &answer.status);
    const char* type = nullptr;
    curl_easy_getinfo(curl, CURLINFO_CONTENT_TYPE, &type);
    if (type != nullptr) answer.content_type = type;
  } else {
    answer.error = curl_easy_strerror(code);
  }
  curl_easy_cleanup(curl);
  return answer;
}

}  // namespace sluice::testing
