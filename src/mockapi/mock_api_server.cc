// MockApiServer on libmicrohttpd: see include/sluice/mock_api.h and
// docs/MOCK_API.md for the behaviour.
//
// How latency costs no thread: the access handler decides the whole answer at
// once (validation, rate limit, fault, body), then, when the answer is due
// later, suspends the connection and leaves it in a min-heap of deadlines (or
// in the FIFO of requests waiting for a capacity slot). One timer thread pops
// due deadlines, frees their slots, starts queued requests and resumes the
// connections; MHD then calls the handler again, which queues the prepared
// response. All shared decision state sits behind `mu_`, and no MHD function
// is called while holding it. The handler suspends first and enqueues second,
// so a resume can never precede its suspend.
#include <arpa/inet.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <simdjson.h>

#include <algorithm>
#include <atomic>
#include <bit>
#include <charconv>
#include <cmath>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <mutex>
#include <optional>
#include <queue>
#include <thread>
#include <utility>

#include <fmt/format.h>

#include "common/base64.h"
#include "common/hashing.h"
#include "common/json_writer.h"
#include "mockapi/embeddings_wire.h"
#include "mockapi/rate_limits.h"
#include "sluice/mock_api.h"

namespace sluice {
namespace {

using mockapi::AddRateLimitHeaders;
using mockapi::EmbeddingsBody;
using mockapi::ErrorBody;
using mockapi::ErrorReply;
using mockapi::FormatNumber;
using mockapi::kMaxDimensions;
using mockapi::Outcome;
using mockapi::ParsedRequest;
using mockapi::ParseEmbeddingsRequest;
using mockapi::Reply;

// Bodies beyond this are drained and answered 413: 2048 inputs of 8191 tokens
// is ~64 MiB of text, more than any valid request can carry within the
// default 300k-token request limit.
constexpr size_t kMaxBodyBytes = size_t{64} << 20;

enum class Route { kEmbeddings, kStats, kHealth, kNotFound, kMethodNotAllowed };

enum class Fault { kNone, k500, kReset, kMalformed, kWrongDims, kWrongCount };

// Per-request state, owned by MHD's request (con_cls) and freed by the
// completion callback. While the connection is suspended only the timer
// thread (or Stop) may touch it, and only through the heap/queue under mu_.
struct RequestContext {
  Route route = Route::kNotFound;
  std::string body;
  bool body_too_large = false;
  bool suspended = false;
  bool holds_slot = false;  // counted in in_service_ since admission (reject or uncapped)
  Duration service_time{0};
  Reply reply;
};

class MockApiServerImpl final : public MockApiServer {
 public:
  explicit MockApiServerImpl(const MockApiOptions& options)
      : options_(options), rng_state_(options.seed) {}
  ~MockApiServerImpl() override { Stop(); }

  MockApiServerImpl(const MockApiServerImpl&) = delete;
  MockApiServerImpl& operator=(const MockApiServerImpl&) = delete;

  Status Init();

  uint16_t Port() const override { return port_; }
  std::string BaseUrl() const override {
    const bool v6 = options_.host.find(':') != std::string::npos;
    return v6 ? fmt::format("http://[{}]:{}/v1", options_.host, port_)
              : fmt::format("http://{}:{}/v1", options_.host, port_);
  }
  MockApiStats Stats() const override;
  std::string StatsJson() const override;
  void SetRateLimits(double rpm, double tpm) override {
    std::lock_guard<std::mutex> lock(mu_);
    limiter_.SetLimits(rpm, tpm, SteadyClock::now(), options_.burst_seconds);
  }
  void Stop() override;

 private:
  struct Deadline {
    TimePoint due;
    uint64_t seq;
    MHD_Connection* connection;
    RequestContext* request;
    bool operator>(const Deadline& other) const {
      return due != other.due ? due > other.due : seq > other.seq;
    }
  };
  struct Waiting {
    MHD_Connection* connection;
    RequestContext* request;
  };

  static MHD_Result HandleThunk(void* cls, MHD_Connection* connection, const char* url,
                                const char* method, const char* version, const char* upload_data,
                                size_t* upload_data_size, void** con_cls);
  static void CompletedThunk(void* cls, MHD_Connection* connection, void** con_cls,
                             MHD_RequestTerminationCode toe);

  MHD_Result Handle(MHD_Connection* connection, RequestContext* request);
  MHD_Result HandleEmbeddings(MHD_Connection* connection, RequestContext* request);
  // Queues `reply` (or closes the connection for the reset fault) and counts it.
  MHD_Result Send(MHD_Connection* connection, Reply& reply);
  void Count(const Reply& reply);
  double UniformLocked() { return static_cast<double>(SplitMix64(rng_state_) >> 11) * 0x1.0p-53; }
  // Starts queued requests while slots are free; those with no service time
  // go straight to `to_resume`.
  void StartQueuedLocked(TimePoint now, std::vector<MHD_Connection*>& to_resume);
  void StartServiceLocked(MHD_Connection* c, RequestContext* r, TimePoint now,
                          std::vector<MHD_Connection*>& to_resume);
  void TimerLoop();

  const MockApiOptions options_;
  MHD_Daemon* daemon_ = nullptr;
  uint16_t port_ = 0;
  std::thread timer_;

  mutable std::mutex mu_;
  std::condition_variable timer_cv_;
  bool stopping_ = false;                // GUARDED_BY(mu_)
  bool stopped_ = false;                 // GUARDED_BY(mu_)
  RateLimiter limiter_;                  // GUARDED_BY(mu_)
  uint64_t rng_state_;                   // GUARDED_BY(mu_)
  uint64_t in_service_ = 0;              // GUARDED_BY(mu_); see ChangeInServiceLocked
  TimePoint in_service_since_;           // GUARDED_BY(mu_); in_service_'s last change
  uint64_t slot_ns_ = 0;                 // GUARDED_BY(mu_); integral of in_service_ until then
  uint64_t forced_429_left_ = 0;         // GUARDED_BY(mu_); options_.fault_429_first at start
  uint64_t forced_wrong_dims_left_ = 0;  // GUARDED_BY(mu_); options_.fault_wrong_dims_first
  uint64_t deadline_seq_ = 0;            // GUARDED_BY(mu_)
  std::deque<Waiting> waiting_;          // GUARDED_BY(mu_)
  std::priority_queue<Deadline, std::vector<Deadline>, std::greater<>>
      deadlines_;  // GUARDED_BY(mu_)

  // Suspended connections not yet handled again after their resume; Stop
  // waits for it to reach 0 before MHD_stop_daemon (an API violation otherwise).
  std::atomic<int64_t> suspended_{0};
  std::atomic<int64_t> active_handlers_{0};  // inside HandleEmbeddings
  std::atomic<uint64_t> request_ids_{0};

  std::atomic<uint64_t> requests_{0}, ok_{0}, inputs_embedded_{0}, tokens_embedded_{0},
      rate_limited_{0}, over_capacity_{0}, bad_requests_{0}, unauthorized_{0}, faults_500_{0},
      faults_reset_{0}, faults_malformed_{0}, faults_wrong_dims_{0}, faults_wrong_count_{0},
      peak_in_service_{0}, peak_queued_{0};
  // The span the service was used, for "achieved / ceiling" from the first
  // request to the last answer: ns since started_, -1 before the first.
  const TimePoint started_ = SteadyClock::now();

  // Every change of in_service_ goes through here: it keeps the peak and the
  // time integral Stats reports as service_slot_seconds. REQUIRES: mu_ held.
  void ChangeInServiceLocked(int64_t delta, TimePoint now) {
    slot_ns_ = SlotNsLocked(now);
    in_service_since_ = std::max(in_service_since_, now);
    in_service_ = static_cast<uint64_t>(static_cast<int64_t>(in_service_) + delta);
    if (in_service_ > peak_in_service_.load(std::memory_order_relaxed)) {
      peak_in_service_.store(in_service_, std::memory_order_relaxed);
    }
  }
  // The integral of in_service_ up to `now` (a `now` before the last change,
  // read by another thread before it took the lock, adds nothing).
  // REQUIRES: mu_ held.
  uint64_t SlotNsLocked(TimePoint now) const {
    if (now <= in_service_since_) return slot_ns_;
    return slot_ns_ + in_service_ * static_cast<uint64_t>((now - in_service_since_).count());
  }
  std::atomic<int64_t> first_request_ns_{-1}, last_answer_ns_{-1};
};

Status MockApiServerImpl::Init() {
  if (options_.dimensions < 1 || options_.dimensions > kMaxDimensions) {
    return Status::InvalidArgument(
        fmt::format("mock-api: dimensions must be in [1, {}]", kMaxDimensions));
  }
  if (options_.threads < 1) return Status::InvalidArgument("mock-api: threads must be >= 1");
  if (options_.capacity < 0) return Status::InvalidArgument("mock-api: capacity must be >= 0");
  if (options_.max_inputs < 1 || options_.max_tokens_per_request < 1 ||
      options_.max_tokens_per_input < 1) {
    return Status::InvalidArgument("mock-api: max_inputs and token limits must be >= 1");
  }
  if (options_.rpm < 0 || options_.tpm < 0) {
    return Status::InvalidArgument("mock-api: rpm and tpm must be >= 0");
  }
  if (!(options_.burst_seconds > 0)) {
    return Status::InvalidArgument("mock-api: burst_seconds must be > 0");
  }
  if (options_.base_latency.count() < 0 || options_.per_input_latency.count() < 0 ||
      options_.jitter.count() < 0) {
    return Status::InvalidArgument("mock-api: latencies must be >= 0");
  }
  for (double rate :
       {options_.fault_500_rate, options_.fault_reset_rate, options_.fault_malformed_rate,
        options_.fault_wrong_dims_rate, options_.fault_wrong_count_rate}) {
    if (!(rate >= 0 && rate <= 1)) {
      return Status::InvalidArgument("mock-api: fault rates must be in [0, 1]");
    }
  }
  limiter_.SetLimits(options_.rpm, options_.tpm, SteadyClock::now(), options_.burst_seconds);
  forced_429_left_ = options_.fault_429_first;
  forced_wrong_dims_left_ = options_.fault_wrong_dims_first;

  unsigned flags =
      MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_EPOLL | MHD_ALLOW_SUSPEND_RESUME | MHD_USE_TURBO;
  sockaddr_in addr4{};
  sockaddr_in6 addr6{};
  const sockaddr* addr = nullptr;
  if (options_.host.find(':') != std::string::npos) {
    addr6.sin6_family = AF_INET6;
    addr6.sin6_port = htons(options_.port);
    if (inet_pton(AF_INET6, options_.host.c_str(), &addr6.sin6_addr) != 1) {
      return Status::InvalidArgument("mock-api: host is not an IP address: " + options_.host);
    }
    addr = reinterpret_cast<const sockaddr*>(&addr6);
    flags |= MHD_USE_IPv6;
  } else {
    addr4.sin_family = AF_INET;
    addr4.sin_port = htons(options_.port);
    if (inet_pton(AF_INET, options_.host.c_str(), &addr4.sin_addr) != 1) {
      return Status::InvalidArgument("mock-api: host is not an IPv4/IPv6 address: " +
                                     options_.host);
    }
    addr = reinterpret_cast<const sockaddr*>(&addr4);
  }
  const unsigned pool = static_cast<unsigned>(options_.threads);
  daemon_ = MHD_start_daemon(
      flags, options_.port, nullptr, nullptr, &MockApiServerImpl::HandleThunk, this,
      MHD_OPTION_SOCK_ADDR, addr, MHD_OPTION_THREAD_POOL_SIZE, pool, MHD_OPTION_CONNECTION_LIMIT,
      static_cast<unsigned>(8192), MHD_OPTION_CONNECTION_TIMEOUT, static_cast<unsigned>(0),
      MHD_OPTION_NOTIFY_COMPLETED, &MockApiServerImpl::CompletedThunk, this, MHD_OPTION_END);
  if (daemon_ == nullptr) {
    return Status::Unavailable(fmt::format("mock-api: cannot listen on {}:{} (address in use?)",
                                           options_.host, options_.port));
  }
  const MHD_DaemonInfo* info = MHD_get_daemon_info(daemon_, MHD_DAEMON_INFO_BIND_PORT);
  port_ = info != nullptr ? info->port : options_.port;
  timer_ = std::thread([this] { TimerLoop(); });
  return Status::OK();
}

MHD_Result MockApiServerImpl::HandleThunk(void* cls, MHD_Connection* connection, const char* url,
                                          const char* method, const char* /*version*/,
                                          const char* upload_data, size_t* upload_data_size,
                                          void** con_cls) {
  auto* self = static_cast<MockApiServerImpl*>(cls);
  auto* request = static_cast<RequestContext*>(*con_cls);
  if (request == nullptr) {
    request = new RequestContext;
    *con_cls = request;
    const std::string_view path(url);
    const std::string_view verb(method);
    if (path == "/v1/embeddings" || path == "/embeddings") {
      request->route = verb == "POST" ? Route::kEmbeddings : Route::kMethodNotAllowed;
    } else if (path == "/stats" || path == "/v1/stats") {
      request->route = verb == "GET" ? Route::kStats : Route::kMethodNotAllowed;
    } else if (path == "/health" || path == "/v1/health") {
      request->route = verb == "GET" ? Route::kHealth : Route::kMethodNotAllowed;
    }
    if (request->route == Route::kEmbeddings) {
      if (const char* length =
              MHD_lookup_connection_value(connection, MHD_HEADER_KIND, "Content-Length")) {
        size_t n = 0;
        std::from_chars(length, length + std::strlen(length), n);
        if (n <= kMaxBodyBytes) request->body.reserve(n + simdjson::SIMDJSON_PADDING);
      }
    }
    return MHD_YES;
  }
  if (*upload_data_size != 0) {
    if (request->route == Route::kEmbeddings && !request->body_too_large) {
      if (request->body.size() + *upload_data_size > kMaxBodyBytes) {
        request->body_too_large = true;
        std::string().swap(request->body);
      } else {
        request->body.append(upload_data, *upload_data_size);
      }
    }
    *upload_data_size = 0;
    return MHD_YES;
  }
  return self->Handle(connection, request);
}

void MockApiServerImpl::CompletedThunk(void* /*cls*/, MHD_Connection* /*connection*/,
                                       void** con_cls, MHD_RequestTerminationCode /*toe*/) {
  delete static_cast<RequestContext*>(*con_cls);
  *con_cls = nullptr;
}

MHD_Result MockApiServerImpl::Handle(MHD_Connection* connection, RequestContext* request) {
  if (request->suspended) {  // resumed: the prepared reply is due now
    request->suspended = false;
    MHD_Result result = Send(connection, request->reply);
    suspended_.fetch_sub(1);
    return result;
  }
  switch (request->route) {
    case Route::kEmbeddings:
      return HandleEmbeddings(connection, request);
    case Route::kStats: {
      Reply r;
      r.body = StatsJson();
      return Send(connection, r);
    }
    case Route::kHealth: {
      Reply r;
      r.body = R"({"status":"ok"})";
      return Send(connection, r);
    }
    case Route::kMethodNotAllowed: {
      Reply r = ErrorReply(405, Outcome::kUncounted, "Method not allowed for this path.");
      return Send(connection, r);
    }
    case Route::kNotFound:
      break;
  }
  Reply r = ErrorReply(404, Outcome::kUncounted,
                       "Unknown path; the mock serves POST /v1/embeddings, "
                       "GET /stats and GET /health.");
  return Send(connection, r);
}

MHD_Result MockApiServerImpl::HandleEmbeddings(MHD_Connection* connection,
                                               RequestContext* request) {
  const uint64_t nth_request = requests_.fetch_add(1, std::memory_order_relaxed) + 1;
  if (nth_request == 1) first_request_ns_.store((SteadyClock::now() - started_).count());
  // Stop waits for handlers in flight: one may be about to suspend.
  active_handlers_.fetch_add(1);
  struct Leave {
    std::atomic<int64_t>& count;
    ~Leave() { count.fetch_sub(1); }
  } leave{active_handlers_};
  if (request->body_too_large) {
    Reply r = ErrorReply(413, Outcome::kBadRequest,
                         fmt::format("Request body larger than {} bytes.", kMaxBodyBytes));
    return Send(connection, r);
  }
  if (options_.revoke_key_after > 0 && nth_request > options_.revoke_key_after) {
    Reply r = ErrorReply(401, Outcome::kUnauthorized, "Incorrect API key provided.",
                         "invalid_request_error", "invalid_api_key");
    return Send(connection, r);
  }
  if (!options_.api_key.empty()) {
    const char* auth = MHD_lookup_connection_value(connection, MHD_HEADER_KIND, "Authorization");
    if (auth == nullptr) {
      Reply r = ErrorReply(401, Outcome::kUnauthorized,
                           "You didn't provide an API key. You need to provide your API key in an "
                           "Authorization header using Bearer auth (i.e. Authorization: Bearer "
                           "YOUR_KEY).");
      return Send(connection, r);
    }
    // Never echo the key (either one) back.
    if (std::string_view(auth) != "Bearer " + options_.api_key) {
      Reply r = ErrorReply(401, Outcome::kUnauthorized, "Incorrect API key provided.",
                           "invalid_request_error", "invalid_api_key");
      return Send(connection, r);
    }
  }

  thread_local simdjson::dom::parser parser;
  request->body.reserve(request->body.size() + simdjson::SIMDJSON_PADDING);
  ParsedRequest parsed;
  if (auto error = ParseEmbeddingsRequest(parser, request->body, options_, parsed)) {
    return Send(connection, *error);
  }

  // Admission: rate limits, capacity, fault and latency draws, all at once.
  Fault fault = Fault::kNone;
  bool needs_slot = false;  // kQueue: must wait for (or take at enqueue) a slot
  RateLimitDecision decision;
  Duration service_time{0};
  const TimePoint now = SteadyClock::now();
  const bool capped = options_.capacity > 0;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (stopping_) {
      Reply r =
          ErrorReply(503, Outcome::kUncounted, "The server is shutting down.", "server_error");
      return Send(connection, r);
    }
    decision = limiter_.Check(parsed.total_tokens, now);
    if (forced_429_left_ > 0 && decision.verdict == RateLimitVerdict::kAdmitted) {
      --forced_429_left_;  // another client on the key spent the request budget
      decision.verdict = RateLimitVerdict::kRequestsExhausted;
      decision.retry_after = options_.fault_429_retry_after;
      decision.snapshot.remaining_requests = 0;
    }
    if (decision.verdict == RateLimitVerdict::kAdmitted) {
      if (capped && options_.over_capacity == OverCapacityPolicy::kQueue) {
        needs_slot = true;  // taken (or queued for) after suspending
      } else {
        if (capped && in_service_ >= static_cast<uint64_t>(options_.capacity)) {
          Reply r = ErrorReply(503, Outcome::kOverCapacity,
                               "The server is overloaded or not ready yet.", "server_error");
          return Send(connection, r);
        }
        ChangeInServiceLocked(+1, now);
        request->holds_slot = true;
      }
      limiter_.Charge(parsed.total_tokens, now);
      decision.snapshot = limiter_.Snapshot(now);
      const double u = UniformLocked();
      double edge = options_.fault_500_rate;
      if (u < edge) {
        fault = Fault::k500;
      } else if (u < (edge += options_.fault_reset_rate)) {
        fault = Fault::kReset;
      } else if (u < (edge += options_.fault_malformed_rate)) {
        fault = Fault::kMalformed;
      } else if (u < (edge += options_.fault_wrong_dims_rate)) {
        fault = Fault::kWrongDims;
      } else if (u < (edge += options_.fault_wrong_count_rate)) {
        fault = Fault::kWrongCount;
      }
      if (forced_wrong_dims_left_ > 0) {
        --forced_wrong_dims_left_;
        fault = Fault::kWrongDims;
      }
      service_time = options_.base_latency +
                     options_.per_input_latency * static_cast<int64_t>(parsed.inputs.size());
      if (options_.jitter.count() > 0) {
        service_time += Duration(
            static_cast<int64_t>(UniformLocked() * static_cast<double>(options_.jitter.count())));
      }
    }
  }

  Reply& reply = request->reply;
  reply.headers.emplace_back("x-request-id", fmt::format("req_{}", request_ids_.fetch_add(1) + 1));
  switch (decision.verdict) {
    case RateLimitVerdict::kAdmitted:
      break;
    case RateLimitVerdict::kTooLarge: {
      // As OpenAI: 429, but waiting cannot help; no Retry-After.
      Reply r = ErrorReply(
          429, Outcome::kRateLimited,
          fmt::format("Request too large for {} on tokens per min (TPM): Limit {}, Requested {}. "
                      "The input or output tokens must be reduced in order to run successfully.",
                      parsed.model, FormatNumber(decision.snapshot.limit_tokens),
                      parsed.total_tokens),
          "tokens", "rate_limit_exceeded");
      r.headers = std::move(reply.headers);
      AddRateLimitHeaders(decision.snapshot, r);
      return Send(connection, r);
    }
    case RateLimitVerdict::kRequestsExhausted:
    case RateLimitVerdict::kTokensExhausted: {
      const bool requests = decision.verdict == RateLimitVerdict::kRequestsExhausted;
      const int64_t wait_ms = (decision.retry_after.count() + 999999) / 1000000;
      std::string message =
          requests ? fmt::format(
                         "Rate limit reached for {} on requests per min (RPM): Limit {}, "
                         "Used {}, Requested 1. Please try again in {}.",
                         parsed.model, FormatNumber(decision.snapshot.limit_requests),
                         FormatNumber(decision.snapshot.limit_requests -
                                      decision.snapshot.remaining_requests),
                         FormatRateLimitDuration(decision.retry_after))
                   : fmt::format(
                         "Rate limit reached for {} on tokens per min (TPM): Limit {}, "
                         "Used {}, Requested {}. Please try again in {}.",
                         parsed.model, FormatNumber(decision.snapshot.limit_tokens),
                         FormatNumber(decision.snapshot.limit_tokens -
                                      decision.snapshot.remaining_tokens),
                         parsed.total_tokens, FormatRateLimitDuration(decision.retry_after));
      Reply r = ErrorReply(429, Outcome::kRateLimited, message, requests ? "requests" : "tokens",
                           "rate_limit_exceeded");
      r.headers = std::move(reply.headers);
      r.headers.emplace_back("Retry-After", fmt::format("{}", (wait_ms + 999) / 1000));
      r.headers.emplace_back("retry-after-ms", fmt::format("{}", wait_ms));
      AddRateLimitHeaders(decision.snapshot, r);
      return Send(connection, r);
    }
  }

  // Build the answer now, while the parsed inputs are valid.
  reply.inputs = static_cast<int64_t>(parsed.inputs.size());
  reply.tokens = parsed.total_tokens;
  AddRateLimitHeaders(decision.snapshot, reply);
  switch (fault) {
    case Fault::kNone:
      reply.outcome = Outcome::kOk;
      reply.body = EmbeddingsBody(parsed, parsed.dimensions);
      break;
    case Fault::k500:
      reply.status = 500;
      reply.outcome = Outcome::kFault500;
      reply.body =
          ErrorBody("The server had an error while processing your request. Sorry about that!",
                    "server_error");
      break;
    case Fault::kReset:
      reply.outcome = Outcome::kFaultReset;
      break;
    case Fault::kMalformed:
      reply.outcome = Outcome::kFaultMalformed;
      reply.body = EmbeddingsBody(parsed, parsed.dimensions);
      reply.body.resize(reply.body.size() / 2);  // truncated mid-document
      break;
    case Fault::kWrongDims:
      reply.outcome = Outcome::kFaultWrongDims;
      reply.body = EmbeddingsBody(parsed, parsed.dimensions + 1);
      break;
    case Fault::kWrongCount: {
      reply.outcome = Outcome::kFaultWrongCount;
      ParsedRequest fewer = parsed;
      fewer.inputs.pop_back();  // the last input's vector is missing
      reply.body = EmbeddingsBody(fewer, parsed.dimensions);
      break;
    }
  }
  request->service_time = service_time;

  // Fast path: a free slot (or none needed) and nothing to wait for.
  if (!needs_slot && service_time <= Duration(0)) {
    if (request->holds_slot) {
      std::vector<MHD_Connection*> to_resume;
      {
        std::lock_guard<std::mutex> lock(mu_);
        const TimePoint done = SteadyClock::now();
        ChangeInServiceLocked(-1, done);
        request->holds_slot = false;
        StartQueuedLocked(done, to_resume);
      }
      for (MHD_Connection* c : to_resume) MHD_resume_connection(c);
    }
    return Send(connection, reply);
  }

  // Suspend first, then enqueue: the timer can only resume what is suspended.
  request->suspended = true;
  suspended_.fetch_add(1);
  MHD_suspend_connection(connection);
  std::vector<MHD_Connection*> to_resume;
  {
    std::lock_guard<std::mutex> lock(mu_);
    const TimePoint start = SteadyClock::now();
    if (stopping_) {
      reply = ErrorReply(503, Outcome::kUncounted, "The server is shutting down.", "server_error");
      to_resume.push_back(connection);
    } else if (request->holds_slot) {
      // Took its slot at admission (kReject503 or unlimited capacity).
      request->holds_slot = false;
      deadlines_.push(Deadline{start + service_time, deadline_seq_++, connection, request});
      timer_cv_.notify_one();
    } else {
      waiting_.push_back(Waiting{connection, request});
      if (waiting_.size() > peak_queued_.load(std::memory_order_relaxed)) {
        peak_queued_.store(waiting_.size(), std::memory_order_relaxed);
      }
      StartQueuedLocked(start, to_resume);
    }
  }
  for (MHD_Connection* c : to_resume) MHD_resume_connection(c);
  return MHD_YES;
}

void MockApiServerImpl::StartServiceLocked(MHD_Connection* c, RequestContext* r, TimePoint now,
                                           std::vector<MHD_Connection*>& to_resume) {
  ChangeInServiceLocked(+1, now);
  if (r->service_time <= Duration(0)) {
    ChangeInServiceLocked(-1, now);
    to_resume.push_back(c);
    return;
  }
  deadlines_.push(Deadline{now + r->service_time, deadline_seq_++, c, r});
  timer_cv_.notify_one();
}

void MockApiServerImpl::StartQueuedLocked(TimePoint now, std::vector<MHD_Connection*>& to_resume) {
  while (!waiting_.empty() &&
         (options_.capacity <= 0 || in_service_ < static_cast<uint64_t>(options_.capacity))) {
    Waiting w = waiting_.front();
    waiting_.pop_front();
    StartServiceLocked(w.connection, w.request, now, to_resume);
  }
}

void MockApiServerImpl::TimerLoop() {
  std::unique_lock<std::mutex> lock(mu_);
  std::vector<MHD_Connection*> to_resume;
  while (!stopping_) {
    if (deadlines_.empty()) {
      timer_cv_.wait(lock);
      continue;
    }
    const TimePoint now = SteadyClock::now();
    if (const TimePoint due = deadlines_.top().due; due > now) {
      // A copy: pushes while waiting may reallocate the heap under a reference.
      timer_cv_.wait_until(lock, due);
      continue;
    }
    while (!deadlines_.empty() && deadlines_.top().due <= now) {
      to_resume.push_back(deadlines_.top().connection);
      deadlines_.pop();
      ChangeInServiceLocked(-1, now);
    }
    StartQueuedLocked(now, to_resume);
    lock.unlock();
    for (MHD_Connection* c : to_resume) MHD_resume_connection(c);
    to_resume.clear();
    lock.lock();
  }
}

MHD_Result MockApiServerImpl::Send(MHD_Connection* connection, Reply& reply) {
  Count(reply);
  if (reply.outcome == Outcome::kFaultReset) return MHD_NO;  // MHD closes without a response
  auto* body = new std::string(std::move(reply.body));
  MHD_Response* response = MHD_create_response_from_buffer_with_free_callback_cls(
      body->size(), body->data(), [](void* cls) { delete static_cast<std::string*>(cls); }, body);
  if (response == nullptr) {
    delete body;
    return MHD_NO;
  }
  MHD_add_response_header(response, "Content-Type", "application/json");
  for (const auto& [name, value] : reply.headers) {
    MHD_add_response_header(response, name.c_str(), value.c_str());
  }
  MHD_Result result = MHD_queue_response(connection, reply.status, response);
  MHD_destroy_response(response);
  return result;
}

void MockApiServerImpl::Count(const Reply& reply) {
  constexpr auto relaxed = std::memory_order_relaxed;
  if (reply.outcome != Outcome::kUncounted) {
    const int64_t now_ns = (SteadyClock::now() - started_).count();
    int64_t last = last_answer_ns_.load(relaxed);
    while (now_ns > last && !last_answer_ns_.compare_exchange_weak(last, now_ns, relaxed)) {
    }
  }
  switch (reply.outcome) {
    case Outcome::kOk:
      inputs_embedded_.fetch_add(static_cast<uint64_t>(reply.inputs), relaxed);
      tokens_embedded_.fetch_add(static_cast<uint64_t>(reply.tokens), relaxed);
      ok_.fetch_add(1, relaxed);
      break;
    case Outcome::kBadRequest:
      bad_requests_.fetch_add(1, relaxed);
      break;
    case Outcome::kUnauthorized:
      unauthorized_.fetch_add(1, relaxed);
      break;
    case Outcome::kRateLimited:
      rate_limited_.fetch_add(1, relaxed);
      break;
    case Outcome::kOverCapacity:
      over_capacity_.fetch_add(1, relaxed);
      break;
    case Outcome::kFault500:
      faults_500_.fetch_add(1, relaxed);
      break;
    case Outcome::kFaultReset:
      faults_reset_.fetch_add(1, relaxed);
      break;
    case Outcome::kFaultMalformed:
      faults_malformed_.fetch_add(1, relaxed);
      break;
    case Outcome::kFaultWrongDims:
      faults_wrong_dims_.fetch_add(1, relaxed);
      break;
    case Outcome::kFaultWrongCount:
      faults_wrong_count_.fetch_add(1, relaxed);
      break;
    case Outcome::kUncounted:
      break;
  }
}

MockApiStats MockApiServerImpl::Stats() const {
  MockApiStats s;
  s.requests = requests_.load();
  s.ok = ok_.load();
  s.inputs_embedded = inputs_embedded_.load();
  s.tokens_embedded = tokens_embedded_.load();
  s.rate_limited = rate_limited_.load();
  s.over_capacity = over_capacity_.load();
  s.bad_requests = bad_requests_.load();
  s.unauthorized = unauthorized_.load();
  s.faults_500 = faults_500_.load();
  s.faults_reset = faults_reset_.load();
  s.faults_malformed = faults_malformed_.load();
  s.faults_wrong_dims = faults_wrong_dims_.load();
  s.faults_wrong_count = faults_wrong_count_.load();
  s.peak_in_service = peak_in_service_.load();
  s.peak_queued = peak_queued_.load();
  {
    std::lock_guard<std::mutex> lock(mu_);
    s.service_slot_seconds = static_cast<double>(SlotNsLocked(SteadyClock::now())) / 1e9;
  }
  const int64_t first = first_request_ns_.load(), last = last_answer_ns_.load();
  if (first >= 0 && last >= first) s.busy_span_s = static_cast<double>(last - first) / 1e9;
  return s;
}

std::string MockApiServerImpl::StatsJson() const {
  const MockApiStats s = Stats();
  std::string out;
  JsonWriter w(out);
  w.BeginObject();
  w.Key("requests").Uint(s.requests);
  w.Key("ok").Uint(s.ok);
  w.Key("inputs_embedded").Uint(s.inputs_embedded);
  w.Key("tokens_embedded").Uint(s.tokens_embedded);
  w.Key("rate_limited").Uint(s.rate_limited);
  w.Key("over_capacity").Uint(s.over_capacity);
  w.Key("bad_requests").Uint(s.bad_requests);
  w.Key("unauthorized").Uint(s.unauthorized);
  w.Key("faults_500").Uint(s.faults_500);
  w.Key("faults_reset").Uint(s.faults_reset);
  w.Key("faults_malformed").Uint(s.faults_malformed);
  w.Key("faults_wrong_dims").Uint(s.faults_wrong_dims);
  w.Key("faults_wrong_count").Uint(s.faults_wrong_count);
  w.Key("peak_in_service").Uint(s.peak_in_service);
  w.Key("peak_queued").Uint(s.peak_queued);
  w.Key("busy_span_s").Double(s.busy_span_s);
  w.Key("service_slot_seconds").Double(s.service_slot_seconds);
  w.EndObject();
  return out;
}

void MockApiServerImpl::Stop() {
  std::vector<MHD_Connection*> to_resume;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (stopped_ || daemon_ == nullptr) return;
    stopped_ = true;
    stopping_ = true;
    // Answer everything still waiting at once: MHD must not be stopped with
    // suspended connections.
    // Suspended connections are untouched by MHD, so their replies can be replaced here.
    auto shut_down = [&](MHD_Connection* c, RequestContext* r) {
      r->reply =
          ErrorReply(503, Outcome::kUncounted, "The server is shutting down.", "server_error");
      to_resume.push_back(c);
    };
    while (!deadlines_.empty()) {
      shut_down(deadlines_.top().connection, deadlines_.top().request);
      deadlines_.pop();
    }
    for (const Waiting& w : waiting_) shut_down(w.connection, w.request);
    waiting_.clear();
    ChangeInServiceLocked(-static_cast<int64_t>(in_service_), SteadyClock::now());
  }
  timer_cv_.notify_all();
  if (timer_.joinable()) timer_.join();
  for (MHD_Connection* c : to_resume) MHD_resume_connection(c);
  // Handlers that suspended just before `stopping_` resume themselves; wait
  // (bounded) for every resumed connection to be handled.
  const TimePoint give_up = SteadyClock::now() + std::chrono::seconds(5);
  while ((suspended_.load() > 0 || active_handlers_.load() > 0) && SteadyClock::now() < give_up) {
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  MHD_stop_daemon(daemon_);
  daemon_ = nullptr;
}

}  // namespace

Result<std::unique_ptr<MockApiServer>> MockApiServer::Start(const MockApiOptions& options) {
  auto server = std::make_unique<MockApiServerImpl>(options);
  if (Status s = server->Init(); !s.ok()) return s;
  return std::unique_ptr<MockApiServer>(std::move(server));
}

}  // namespace sluice
