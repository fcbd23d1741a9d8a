// A webhook receiver on loopback for the hand-off tests: a real HTTP server
// (cpp-httplib) that records every POST body and answers with the statuses
// it was given, in order (then 200). WaitForPosts blocks on a condition
// variable, bounded, instead of sleeping.
#pragma once

#include <httplib.h>

#include <chrono>
#include <condition_variable>
#include <deque>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

namespace sluice::testing {

class WebhookReceiver {
 public:
  explicit WebhookReceiver(std::deque<int> statuses = {}) : statuses_(std::move(statuses)) {
    server_.Post("/hook", [this](const httplib::Request& req, httplib::Response& res) {
      std::lock_guard lock(mu_);
      bodies_.push_back(req.body);
      content_types_.push_back(req.get_header_value("Content-Type"));
      int status = 200;
      if (!statuses_.empty()) {
        status = statuses_.front();
        statuses_.pop_front();
      }
      res.status = status;
      res.set_content("{}", "application/json");
      cv_.notify_all();
    });
    port_ = server_.bind_to_any_port("127.0.0.1");
    thread_ = std::thread([this] { server_.listen_after_bind(); });
    // The socket already listens (connections wait in its backlog); stop()
    // only works once the accept loop runs, so wait for that, bounded.
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
    while (!server_.is_running() && std::chrono::steady_clock::now() < deadline) {
      std::this_thread::yield();
    }
  }
  ~WebhookReceiver() {
    server_.stop();
    thread_.join();
  }
  WebhookReceiver(const WebhookReceiver&) = delete;
  WebhookReceiver& operator=(const WebhookReceiver&) = delete;

  std::string url() const { return "http://127.0.0.1:" + std::to_string(port_) + "/hook"; }
  // Waits (bounded) until `n` POSTs arrived; returns every body so far.
  std::vector<std::string> WaitForPosts(size_t n,
                                        std::chrono::seconds bound = std::chrono::seconds(30)) {
    std::unique_lock lock(mu_);
    cv_.wait_for(lock, bound, [&] { return bodies_.size() >= n; });
    return bodies_;
  }
  std::vector<std::string> bodies() {
    std::lock_guard lock(mu_);
    return bodies_;
  }
  std::vector<std::string> content_types() {
    std::lock_guard lock(mu_);
    return content_types_;
  }

 private:
  httplib::Server server_;
  int port_ = 0;
  std::thread thread_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<int> statuses_;
  std::vector<std::string> bodies_;
  std::vector<std::string> content_types_;
};

}  // namespace sluice::testing
