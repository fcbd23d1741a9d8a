#include "embed/rate_limit_headers.h"

#include <cctype>
#include <charconv>
#include <cmath>
#include <string>

namespace sluice {
namespace {

std::string_view Trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() &&
         (s.back() == ' ' || s.back() == '\t' || s.back() == '\r' || s.back() == '\n')) {
    s.remove_suffix(1);
  }
  return s;
}

bool EqualsIgnoreCase(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i) {
    if (std::tolower(static_cast<unsigned char>(a[i])) !=
        std::tolower(static_cast<unsigned char>(b[i]))) {
      return false;
    }
  }
  return true;
}

// Reads a non-negative decimal number ("12", "0.5", ".5") from the front of `s`.
std::optional<double> TakeNumber(std::string_view& s) {
  size_t i = 0;
  bool digits = false;
  while (i < s.size() && std::isdigit(static_cast<unsigned char>(s[i]))) ++i, digits = true;
  if (i < s.size() && s[i] == '.') {
    ++i;
    while (i < s.size() && std::isdigit(static_cast<unsigned char>(s[i]))) ++i, digits = true;
  }
  if (!digits) return std::nullopt;
  // std::from_chars for double is in libstdc++ 11+.
  double value = 0;
  auto [ptr, ec] = std::from_chars(s.data(), s.data() + i, value);
  if (ec != std::errc() || ptr != s.data() + i) return std::nullopt;
  s.remove_prefix(i);
  return value;
}

std::optional<int64_t> ParseInt(std::string_view s) {
  s = Trim(s);
  int64_t value = 0;
  auto [ptr, ec] = std::from_chars(s.data(), s.data() + s.size(), value);
  if (ec != std::errc() || ptr != s.data() + s.size()) return std::nullopt;
  return value;
}

std::optional<Duration> SecondsToDuration(double seconds) {
  if (!std::isfinite(seconds) || seconds < 0 || seconds > 1e9) return std::nullopt;
  return FromSeconds(seconds);
}

}  // namespace

std::optional<Duration> ParseRateLimitDuration(std::string_view text) {
  text = Trim(text);
  if (text.empty()) return std::nullopt;
  double total_seconds = 0;
  bool first = true;
  while (!text.empty()) {
    auto number = TakeNumber(text);
    if (!number) return std::nullopt;
    double scale;
    if (text.empty()) {
      if (!first) return std::nullopt;  // "1m30" is ambiguous
      scale = 1;
    } else if (text.starts_with("ms")) {
      scale = 1e-3, text.remove_prefix(2);
    } else if (text.starts_with("us")) {
      scale = 1e-6, text.remove_prefix(2);
    } else if (text.starts_with("\xC2\xB5s")) {  // "µs"
      scale = 1e-6, text.remove_prefix(3);
    } else if (text.starts_with("ns")) {
      scale = 1e-9, text.remove_prefix(2);
    } else if (text.front() == 'h') {
      scale = 3600, text.remove_prefix(1);
    } else if (text.front() == 'm') {
      scale = 60, text.remove_prefix(1);
    } else if (text.front() == 's') {
      scale = 1, text.remove_prefix(1);
    } else {
      return std::nullopt;
    }
    total_seconds += *number * scale;
    first = false;
  }
  return SecondsToDuration(total_seconds);
}

void ParseRateLimitHeader(std::string_view line, RateLimitInfo& info) {
  const size_t colon = line.find(':');
  if (colon == std::string_view::npos) return;
  const std::string_view name = Trim(line.substr(0, colon));
  const std::string_view value = Trim(line.substr(colon + 1));
  if (EqualsIgnoreCase(name, "x-ratelimit-limit-requests")) {
    if (auto v = ParseInt(value)) info.limit_requests = v;
  } else if (EqualsIgnoreCase(name, "x-ratelimit-limit-tokens")) {
    if (auto v = ParseInt(value)) info.limit_tokens = v;
  } else if (EqualsIgnoreCase(name, "x-ratelimit-remaining-requests")) {
    if (auto v = ParseInt(value)) info.remaining_requests = v;
  } else if (EqualsIgnoreCase(name, "x-ratelimit-remaining-tokens")) {
    if (auto v = ParseInt(value)) info.remaining_tokens = v;
  } else if (EqualsIgnoreCase(name, "x-ratelimit-reset-requests")) {
    if (auto v = ParseRateLimitDuration(value)) info.reset_requests = v;
  } else if (EqualsIgnoreCase(name, "x-ratelimit-reset-tokens")) {
    if (auto v = ParseRateLimitDuration(value)) info.reset_tokens = v;
  } else if (EqualsIgnoreCase(name, "retry-after-ms")) {
    std::string_view rest = value;
    if (auto ms = TakeNumber(rest); ms && rest.empty()) {
      if (auto d = SecondsToDuration(*ms / 1000.0)) info.retry_after = d;
    }
  } else if (EqualsIgnoreCase(name, "retry-after")) {
    std::string_view rest = value;
    if (auto seconds = TakeNumber(rest); seconds && rest.empty() && !info.retry_after) {
      info.retry_after = SecondsToDuration(*seconds);
    }
  }
}

}  // namespace sluice
