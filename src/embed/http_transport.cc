// The libcurl multi transport: many embedding requests in flight from one
// thread, keep-alive connections reused through the multi handle's
// connection cache, HTTP/2 multiplexing when a TLS server offers it.
//
// Thread safety: driven by one thread (the embed stage), like every
// EmbeddingTransport. The API key lives only in the header list handed to
// libcurl; it never enters a Status message.
#include <curl/curl.h>

#include <chrono>
#include <deque>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>
#include <vector>

#include "embed/rate_limit_headers.h"
#include "embed/request_codec.h"
#include "sluice/embed.h"

namespace sluice {
namespace {

// A response body larger than this is treated as corrupt rather than buffered.
// 2048 inputs x 3072 dims as JSON floats is ~150 MB; nothing legitimate is larger.
constexpr size_t kMaxResponseBytes = size_t{256} << 20;
// How much of a non-JSON error body goes into a message.
constexpr size_t kMaxBodyExcerpt = 300;

void GlobalInitOnce() {
  static std::once_flag once;
  std::call_once(once, [] { curl_global_init(CURL_GLOBAL_DEFAULT); });
}

long ToMillisCeil(Duration d) {
  if (d <= Duration(0)) return 0;
  return static_cast<long>((d.count() + 999'999) / 1'000'000);
}

// The URL as it may appear in a message: without "user:password@" and
// without the query string (Azure-style "?api-key=..." would be a secret).
std::string UrlForMessages(std::string_view url) {
  std::string out(url.substr(0, url.find_first_of("?#")));
  const size_t scheme_end = out.find("://");
  const size_t host_start = scheme_end == std::string::npos ? 0 : scheme_end + 3;
  const size_t path_start = out.find('/', host_start);
  const size_t at = out.rfind('@', path_start == std::string::npos ? out.size() : path_start);
  if (at != std::string::npos && at >= host_start) out.erase(host_start, at + 1 - host_start);
  return out;
}

bool MentionsEncoding(std::string_view message) {
  return message.find("encoding_format") != std::string_view::npos ||
         message.find("base64") != std::string_view::npos;
}

struct Transfer {
  uint64_t request_id = 0;
  size_t input_count = 0;
  bool base64 = false;
  bool overflow = false;
  std::string body;      // request body; libcurl reads it in place (CURLOPT_POSTFIELDS)
  std::string response;  // response body, capped at kMaxResponseBytes
  RateLimitInfo rate;
  TimePoint start;
  char error[CURL_ERROR_SIZE] = {};
};

size_t OnWrite(char* data, size_t size, size_t count, void* user) {
  Transfer* t = static_cast<Transfer*>(user);
  const size_t n = size * count;
  if (t->response.size() + n > kMaxResponseBytes) {
    t->overflow = true;
    return 0;  // aborts the transfer with CURLE_WRITE_ERROR
  }
  t->response.append(data, n);
  return n;
}

size_t OnHeader(char* data, size_t size, size_t count, void* user) {
  Transfer* t = static_cast<Transfer*>(user);
  const size_t n = size * count;
  const std::string_view line(data, n);
  // A new status line (after 100 Continue or a redirect) starts a new header block.
  if (line.starts_with("HTTP/")) {
    t->rate = RateLimitInfo{};
  } else {
    ParseRateLimitHeader(line, t->rate);
  }
  return n;
}

class HttpTransport final : public EmbeddingTransport {
 public:
  explicit HttpTransport(const HttpEmbedderOptions& options)
      : options_(options), learned_dimensions_(options.expected_dimensions) {
    base64_ = options.request_base64;
    url_ = EmbeddingsUrl(options.endpoint);
    url_for_messages_ = UrlForMessages(url_);
    https_ = url_.starts_with("https://");
  }

  ~HttpTransport() override {
    for (auto& [easy, transfer] : transfers_) {
      curl_multi_remove_handle(multi_, easy);
      curl_easy_cleanup(easy);
    }
    for (CURL* easy : spare_) curl_easy_cleanup(easy);
    if (multi_ != nullptr) curl_multi_cleanup(multi_);
    curl_slist_free_all(headers_);
  }

  Status Init() {
    GlobalInitOnce();
    multi_ = curl_multi_init();
    if (multi_ == nullptr) return Status::Internal("curl_multi_init failed");
    curl_multi_setopt(multi_, CURLMOPT_PIPELINING, CURLPIPE_MULTIPLEX);
    headers_ = curl_slist_append(headers_, "Content-Type: application/json");
    headers_ = curl_slist_append(headers_, "Accept: application/json");
    // Large bodies would otherwise wait for "100 Continue" (a round trip, or 1 s).
    headers_ = curl_slist_append(headers_, "Expect:");
    if (!options_.api_key.empty()) {
      const std::string auth = "Authorization: Bearer " + options_.api_key;
      headers_ = curl_slist_append(headers_, auth.c_str());
    }
    std::string_view extra = options_.extra_headers;
    while (!extra.empty()) {
      const size_t nl = extra.find('\n');
      std::string line(extra.substr(0, nl));
      extra = nl == std::string_view::npos ? std::string_view() : extra.substr(nl + 1);
      while (!line.empty() && (line.back() == '\r' || line.back() == ' ')) line.pop_back();
      if (line.empty()) continue;
      if (line.find(':') == std::string::npos) {
        return Status::InvalidArgument("extra header is not \"Name: value\": " + line);
      }
      headers_ = curl_slist_append(headers_, line.c_str());
    }
    if (headers_ == nullptr) return Status::Internal("curl_slist_append failed");
    return Status::OK();
  }

  void Submit(EmbedRequest request) override {
    auto transfer = std::make_unique<Transfer>();
    transfer->request_id = request.request_id;
    transfer->input_count = request.inputs.size();
    transfer->base64 = base64_;
    transfer->start = SteadyClock::now();
    BuildEmbeddingRequestBody(options_.model, request.inputs, options_.dimensions,
                              base64_ ? EncodingFormat::kBase64 : EncodingFormat::kFloat,
                              transfer->body);
    CURL* easy = TakeEasy();
    if (easy == nullptr) {
      Fail(*transfer, Status::Internal("curl_easy_init failed"));
      return;
    }
    Transfer* t = transfer.get();
    curl_easy_setopt(easy, CURLOPT_URL, url_.c_str());
    curl_easy_setopt(easy, CURLOPT_POST, 1L);
    curl_easy_setopt(easy, CURLOPT_POSTFIELDS, t->body.data());
    curl_easy_setopt(easy, CURLOPT_POSTFIELDSIZE_LARGE, static_cast<curl_off_t>(t->body.size()));
    curl_easy_setopt(easy, CURLOPT_HTTPHEADER, headers_);
    curl_easy_setopt(easy, CURLOPT_WRITEFUNCTION, OnWrite);
    curl_easy_setopt(easy, CURLOPT_WRITEDATA, t);
    curl_easy_setopt(easy, CURLOPT_HEADERFUNCTION, OnHeader);
    curl_easy_setopt(easy, CURLOPT_HEADERDATA, t);
    curl_easy_setopt(easy, CURLOPT_PRIVATE, t);
    curl_easy_setopt(easy, CURLOPT_ERRORBUFFER, t->error);
    curl_easy_setopt(easy, CURLOPT_HTTP_VERSION, static_cast<long>(CURL_HTTP_VERSION_2TLS));
    if (https_) curl_easy_setopt(easy, CURLOPT_PIPEWAIT, 1L);
    curl_easy_setopt(easy, CURLOPT_CONNECTTIMEOUT_MS, ToMillisCeil(options_.connect_timeout));
    curl_easy_setopt(easy, CURLOPT_TIMEOUT_MS, ToMillisCeil(options_.request_timeout));
    curl_easy_setopt(easy, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(easy, CURLOPT_TCP_KEEPALIVE, 1L);
    curl_easy_setopt(easy, CURLOPT_TCP_NODELAY, 1L);
    curl_easy_setopt(easy, CURLOPT_ACCEPT_ENCODING, "");  // gzip/deflate when offered
    if (curl_multi_add_handle(multi_, easy) != CURLM_OK) {
      curl_easy_cleanup(easy);
      Fail(*transfer, Status::Internal("curl_multi_add_handle failed"));
      return;
    }
    transfers_.emplace(easy, std::move(transfer));
  }

  void Poll(Duration max_wait, std::vector<EmbedResponse>& out) override {
    const size_t before = out.size();
    while (!failed_.empty()) {
      out.push_back(std::move(failed_.front()));
      failed_.pop_front();
    }
    if (transfers_.empty()) {
      // Nothing in flight to compare the held response with: its length is
      // the only one seen, so it stands (a run that never has two requests
      // in flight, or a single query, is not charged a repeat to confirm it).
      if (!unconfirmed_.empty()) Confirm(candidate_dimensions_, out);
      return;
    }
    const TimePoint deadline = SteadyClock::now() + max_wait;
    while (true) {
      int running = 0;
      curl_multi_perform(multi_, &running);
      Drain(out);
      if (out.size() > before || transfers_.empty()) return;
      const Duration remaining = deadline - SteadyClock::now();
      if (remaining <= Duration(0)) return;
      curl_multi_poll(multi_, nullptr, 0, static_cast<int>(ToMillisCeil(remaining)), nullptr);
    }
  }

  size_t InFlight() const override {
    return transfers_.size() + failed_.size() + unconfirmed_.size();
  }
  std::string ModelName() const override { return options_.model; }
  int Dimensions() const override {
    return options_.dimensions > 0 ? options_.dimensions : learned_dimensions_;
  }

 private:
  CURL* TakeEasy() {
    if (!spare_.empty()) {
      CURL* easy = spare_.back();
      spare_.pop_back();
      curl_easy_reset(easy);
      return easy;
    }
    return curl_easy_init();
  }

  void Fail(const Transfer& t, Status status) {
    EmbedResponse response;
    response.request_id = t.request_id;
    response.status = std::move(status);
    failed_.push_back(std::move(response));
  }

  // Removes the service's echo of the key, should it ever quote it back.
  std::string Redact(std::string message) const {
    return RedactSecret(std::move(message), options_.api_key);
  }

  std::string ServiceMessage(const Transfer& t) const {
    if (auto message = ParseErrorMessage(t.response)) return Redact(*message);
    std::string excerpt = t.response.substr(0, kMaxBodyExcerpt);
    // An HTML error page has line breaks; the message is one line of a log.
    for (char& c : excerpt) {
      if (c == '\n' || c == '\r' || c == '\t') c = ' ';
    }
    return Redact(excerpt.empty() ? "(empty body)" : excerpt);
  }

  // Sets `response.connect_failed` when no connection to the service could
  // be made: such a failure says nothing about the inputs (embed.h).
  Status TransportError(CURLcode code, const Transfer& t, EmbedResponse& response) const {
    std::string detail = t.error[0] != '\0' ? t.error : curl_easy_strerror(code);
    detail = Redact(detail);
    const std::string cannot_reach = "cannot reach the embedding service at " + url_for_messages_;
    switch (code) {
      case CURLE_OPERATION_TIMEDOUT:
        return Status::Timeout("embedding request timed out: " + detail);
      case CURLE_COULDNT_CONNECT:
        response.connect_failed = true;
        return Status::Unavailable(cannot_reach + ": connection refused (" + detail +
                                   "); check --endpoint and that the service is running");
      case CURLE_COULDNT_RESOLVE_HOST:
      case CURLE_COULDNT_RESOLVE_PROXY:
        response.connect_failed = true;
        return Status::Unavailable(cannot_reach + ": host name not resolved (" + detail +
                                   "); check the host in --endpoint and DNS");
      case CURLE_SSL_CONNECT_ERROR:
        response.connect_failed = true;
        return Status::Unavailable(cannot_reach + ": TLS handshake failed (" + detail + ")");
      case CURLE_PEER_FAILED_VERIFICATION:
      case CURLE_SSL_CERTPROBLEM:
      case CURLE_SSL_CACERT_BADFILE:
      case CURLE_SSL_CIPHER:
      case CURLE_SSL_ENGINE_NOTFOUND:
      case CURLE_SSL_ENGINE_SETFAILED:
      case CURLE_UNSUPPORTED_PROTOCOL:
      case CURLE_URL_MALFORMAT:
        // Configuration, not weather: sending again cannot help.
        response.connect_failed = true;
        return Status::InvalidArgument(cannot_reach + ": " + detail +
                                       "; check --endpoint and the TLS certificates");
      case CURLE_GOT_NOTHING:
        return Status::Unavailable("empty reply from server: " + detail);
      case CURLE_RECV_ERROR:
      case CURLE_SEND_ERROR:
      case CURLE_PARTIAL_FILE:
        return Status::Unavailable("connection reset: " + detail);
      case CURLE_WRITE_ERROR:
        if (t.overflow) {
          return Status::Corrupt("response body exceeds " +
                                 std::to_string(kMaxResponseBytes >> 20) + " MiB");
        }
        [[fallthrough]];
      default:
        return Status::Unavailable(std::string("transport error (") + curl_easy_strerror(code) +
                                   "): " + detail);
    }
  }

  Status HttpOutcome(long http, Transfer& t, EmbedResponse& response) {
    if (http == 200) {
      ParsedEmbeddings parsed;
      const int expected = Dimensions();
      Status s = ParseEmbeddingResponse(t.response, t.input_count, expected, parsed);
      if (!s.ok()) return s;
      response.vectors = std::move(parsed.vectors);
      response.prompt_tokens = parsed.prompt_tokens;
      return Status::OK();
    }
    const std::string prefix = "HTTP " + std::to_string(http) + ": ";
    if (http == 429) {
      const std::string message = ServiceMessage(t);
      // OpenAI answers 429 "Request too large for <model> on tokens per min"
      // when one request exceeds the whole TPM budget: waiting cannot help,
      // but smaller requests can, so report it as a rejection (the stage bisects).
      if (message.starts_with("Request too large")) return Status::Rejected(prefix + message);
      // OpenAI's "insufficient_quota" 429 (billing, not pace): no wait helps,
      // so it stops the run like a wrong key.
      if (message.find("exceeded your current quota") != std::string::npos ||
          t.response.find("insufficient_quota") != std::string::npos) {
        return Status::PermissionDenied(prefix + message + " (the key's quota is exhausted)");
      }
      return Status::RateLimited(prefix + message);
    }
    if (http == 401 || http == 403) {
      return Status::PermissionDenied("HTTP " + std::to_string(http) + " from " +
                                      url_for_messages_ + ": " + ServiceMessage(t) +
                                      " (check the API key and its access to the model)");
    }
    if (http == 404 || http == 405) {
      // The endpoint (or the model) does not exist there: no request can succeed.
      return Status::NotFound("HTTP " + std::to_string(http) + " from " + url_for_messages_ + ": " +
                              ServiceMessage(t) +
                              " (check --endpoint: the API's base URL, e.g. "
                              "https://api.openai.com/v1, and --model)");
    }
    if ((http == 400 || http == 422) && t.base64) {
      const std::string message = ServiceMessage(t);
      if (MentionsEncoding(message)) {
        base64_ = false;
        return Status::Unavailable(prefix +
                                   "service rejected encoding_format=base64; switched to float "
                                   "for the rest of the run, resend (" +
                                   message + ")");
      }
    }
    if (http >= 500 && http != 501 && http != 505) {
      return Status::Unavailable(prefix + ServiceMessage(t));
    }
    if (http >= 400) return Status::Rejected(prefix + ServiceMessage(t));
    return Status::Rejected(prefix + "unexpected HTTP status");
  }

  void Drain(std::vector<EmbedResponse>& out) {
    int queued = 0;
    while (CURLMsg* msg = curl_multi_info_read(multi_, &queued)) {
      if (msg->msg != CURLMSG_DONE) continue;
      CURL* easy = msg->easy_handle;
      const CURLcode result = msg->data.result;
      auto it = transfers_.find(easy);
      curl_multi_remove_handle(multi_, easy);
      if (it == transfers_.end()) {
        curl_easy_cleanup(easy);
        continue;
      }
      std::unique_ptr<Transfer> t = std::move(it->second);
      transfers_.erase(it);
      long http = 0;
      curl_easy_getinfo(easy, CURLINFO_RESPONSE_CODE, &http);
      spare_.push_back(easy);

      EmbedResponse response;
      response.request_id = t->request_id;
      response.latency = SteadyClock::now() - t->start;
      response.rate = t->rate;
      if (result != CURLE_OK) {
        response.http_status = 0;
        response.status = TransportError(result, *t, response);
      } else {
        response.http_status = static_cast<int>(http);
        response.status = HttpOutcome(http, *t, response);
      }
      if (response.status.ok() && Dimensions() == 0 && !response.vectors.empty()) {
        HoldUntilConfirmed(std::move(response), out);
        continue;
      }
      out.push_back(std::move(response));
    }
  }

  // With no dimension asked for or known, the first successful response
  // would otherwise fix the length for the run, and a corrupt one would make
  // every correct vector after it "wrong". So responses are held until two
  // agree; held responses that disagree with a newer one are failed as
  // Corrupt (the stage retries them) and the newer one is held instead.
  void HoldUntilConfirmed(EmbedResponse response, std::vector<EmbedResponse>& out) {
    const int length = static_cast<int>(response.vectors.front().size());
    if (length == candidate_dimensions_) {
      unconfirmed_.push_back(std::move(response));
      Confirm(length, out);
      return;
    }
    for (EmbedResponse& held : unconfirmed_) {
      held.vectors.clear();
      held.status = Status::Corrupt("vector length " + std::to_string(candidate_dimensions_) +
                                    " disagrees with " + std::to_string(length) +
                                    " in another response (no --dimensions given)");
      out.push_back(std::move(held));
    }
    unconfirmed_.clear();
    candidate_dimensions_ = length;
    unconfirmed_.push_back(std::move(response));
  }

  void Confirm(int length, std::vector<EmbedResponse>& out) {
    learned_dimensions_ = length;
    for (EmbedResponse& held : unconfirmed_) out.push_back(std::move(held));
    unconfirmed_.clear();
  }

  const HttpEmbedderOptions options_;
  std::string url_;
  std::string url_for_messages_;  // url_ without credentials or query
  bool https_ = false;
  bool base64_ = true;
  int learned_dimensions_ = 0;  // 0 until two responses agree (or expected_dimensions)
  int candidate_dimensions_ = 0;
  std::deque<EmbedResponse> unconfirmed_;  // successful, awaiting a second of the same length
  CURLM* multi_ = nullptr;
  curl_slist* headers_ = nullptr;
  std::unordered_map<CURL*, std::unique_ptr<Transfer>> transfers_;
  std::vector<CURL*> spare_;          // finished easy handles, reused by the next Submit
  std::deque<EmbedResponse> failed_;  // requests that failed before reaching libcurl
};

}  // namespace

Result<std::unique_ptr<EmbeddingTransport>> MakeHttpTransport(const HttpEmbedderOptions& options) {
  if (!options.endpoint.starts_with("http://") && !options.endpoint.starts_with("https://")) {
    return Status::InvalidArgument("embedding endpoint must start with http:// or https://: \"" +
                                   RedactEndpoint(options.endpoint) + "\"");
  }
  if (options.model.empty()) return Status::InvalidArgument("embedding model name is empty");
  if (options.dimensions < 0) {
    return Status::InvalidArgument("embedding dimensions must be >= 0");
  }
  auto transport = std::make_unique<HttpTransport>(options);
  Status s = transport->Init();
  if (!s.ok()) return s;
  return std::unique_ptr<EmbeddingTransport>(std::move(transport));
}

}  // namespace sluice
