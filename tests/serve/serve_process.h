// What the `sluice serve` end-to-end tests share: the server and other
// `sluice` processes as children whose stdout lines a test waits on, the
// job JSON read back, and a job's server-sent events followed. Every wait is
// bounded and ends as soon as its condition holds.
#pragma once

#include <httplib.h>
#include <poll.h>
#include <simdjson.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <chrono>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "testing/child_process.h"

namespace sluice {
namespace servetest {

using std::chrono::seconds;

inline const std::string kSluice = SLUICE_BINARY;
// How long a step may take on a loaded 2-core machine running an ASan build;
// every wait ends as soon as its condition holds.
constexpr auto kStepBound = seconds(120);

// A child process whose stdout is a pipe the test reads lines from and whose
// stderr goes to a file.
class Child {
 public:
  Child(std::vector<std::string> args, const std::string& stderr_path)
      : process_(std::move(args), {.in = testing::ChildProcess::Null(),
                                   .out = testing::ChildProcess::Pipe(),
                                   .err = testing::ChildProcess::File(stderr_path,
                                                                      /*append=*/true)}) {
    EXPECT_TRUE(process_.started());
  }

  // The first stdout line containing `marker`, within kStepBound; empty if
  // the process exits or the bound passes first.
  std::string WaitForLine(const std::string& marker) {
    const auto deadline = std::chrono::steady_clock::now() + kStepBound;
    while (std::chrono::steady_clock::now() < deadline) {
      for (size_t nl; (nl = buffered_.find('\n')) != std::string::npos;) {
        std::string line = buffered_.substr(0, nl);
        buffered_.erase(0, nl + 1);
        if (line.find(marker) != std::string::npos) return line;
      }
      pollfd p{process_.stdout_fd(), POLLIN, 0};
      if (::poll(&p, 1, 1000) <= 0) continue;
      char buf[4096];
      const ssize_t n = ::read(process_.stdout_fd(), buf, sizeof buf);
      if (n <= 0) return {};
      buffered_.append(buf, static_cast<size_t>(n));
    }
    return {};
  }
  void Signal(int sig) { process_.Signal(sig); }
  std::optional<int> WaitExit() { return process_.WaitExit(kStepBound); }

 private:
  testing::ChildProcess process_;
  std::string buffered_;
};

// "http://127.0.0.1:PORT" (or ".../v1") from a "listening on URL" line.
inline std::string UrlIn(const std::string& line) {
  const size_t at = line.find("http://");
  if (at == std::string::npos) return {};
  const size_t end = line.find_first_of(" \t", at);
  return line.substr(at, end == std::string::npos ? std::string::npos : end - at);
}

inline int PortOf(const std::string& url) {
  const size_t colon = url.rfind(':');
  return std::atoi(url.c_str() + colon + 1);
}

class ServeProcess {
 public:
  ServeProcess(const std::string& state_dir, const std::vector<std::string>& extra,
               const std::string& stderr_path)
      : child_(Args(state_dir, extra), stderr_path) {
    url_ = UrlIn(child_.WaitForLine("sluice serve listening on"));
  }
  static std::vector<std::string> Args(const std::string& state_dir,
                                       const std::vector<std::string>& extra) {
    std::vector<std::string> args = {kSluice,       "serve",       "--listen",
                                     "127.0.0.1:0", "--state-dir", state_dir};
    args.insert(args.end(), extra.begin(), extra.end());
    return args;
  }
  const std::string& url() const { return url_; }
  httplib::Client Client() const {
    httplib::Client c("127.0.0.1", PortOf(url_));
    c.set_read_timeout(120, 0);
    return c;
  }
  Child& child() { return child_; }

 private:
  Child child_;
  std::string url_;
};

// A parsed JSON document kept alive with its parser.
struct Json {
  simdjson::dom::parser parser;
  simdjson::dom::element root;
  bool ok = false;
  explicit Json(const std::string& text) { ok = parser.parse(text).get(root) == simdjson::SUCCESS; }
  std::string Str(const char* pointer) {
    std::string_view s;
    return root.at_pointer(pointer).get_string().get(s) == simdjson::SUCCESS ? std::string(s)
                                                                             : std::string();
  }
  int64_t Int(const char* pointer) {
    int64_t v = -1;
    if (root.at_pointer(pointer).get_int64().get(v) != simdjson::SUCCESS) return -1;
    return v;
  }
};

// Reads a job's server-sent events, calling `on_event(name, data)` for each
// until it returns false or the stream ends. Returns the last event's name.
inline std::string WatchEvents(
    httplib::Client& client, const std::string& id,
    const std::function<bool(const std::string&, const std::string&)>& on_event) {
  std::string buffer, last;
  client.Get("/v1/jobs/" + id + "/events", [&](const char* data, size_t len) {
    buffer.append(data, len);
    for (size_t end; (end = buffer.find("\n\n")) != std::string::npos;) {
      const std::string block = buffer.substr(0, end);
      buffer.erase(0, end + 2);
      std::string name, payload;
      size_t pos = 0;
      while (pos < block.size()) {
        size_t nl = block.find('\n', pos);
        if (nl == std::string::npos) nl = block.size();
        const std::string line = block.substr(pos, nl - pos);
        if (line.rfind("event: ", 0) == 0) name = line.substr(7);
        if (line.rfind("data: ", 0) == 0) payload += line.substr(6);
        pos = nl + 1;
      }
      if (name.empty()) continue;  // a keep-alive comment
      last = name;
      if (!on_event(name, payload)) return false;
    }
    return true;
  });
  return last;
}

inline std::string JsonString(const std::string& s) {
  std::string out = "\"";
  for (char c : s) {
    if (c == '"' || c == '\\') out += '\\';
    if (c == '\n') {
      out += "\\n";
      continue;
    }
    out += c;
  }
  return out + "\"";
}

}  // namespace servetest
}  // namespace sluice
