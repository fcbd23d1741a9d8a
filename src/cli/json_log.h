// --log-format json: every log event as one JSON object on one line,
// {"time":"2026-01-02T03:04:05.678Z","level":"warn","logger":"sluice","message":"..."},
// for log shippers (journald, Loki, CloudWatch) that parse a line at a time.
// The message is JSON-escaped (quotes, backslashes, control characters,
// newlines), so one event never spans two lines; invalid UTF-8 becomes U+FFFD.
//
// Thread safety: spdlog formats under its sink's mutex; the formatter keeps
// no state.
#pragma once

#include <memory>
#include <string>

#include <spdlog/formatter.h>

namespace sluice::cli {

class JsonLogFormatter final : public spdlog::formatter {
 public:
  void format(const spdlog::details::log_msg& msg, spdlog::memory_buf_t& dest) override;
  std::unique_ptr<spdlog::formatter> clone() const override;
};

// The level names of --log-level (spdlog says "warning" and "critical").
const char* LogLevelName(spdlog::level::level_enum level);

}  // namespace sluice::cli
