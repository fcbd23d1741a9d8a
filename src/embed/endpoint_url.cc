// Building the request URL from the endpoint a user gives, and the forms of
// the endpoint and the key that are safe to print.
#include <array>
#include <string>
#include <string_view>

#include "sluice/embed.h"

namespace sluice {

namespace {

// Query parameters whose values are not secrets and help reading a report.
constexpr std::array<std::string_view, 1> kPublicQueryKeys = {"api-version"};

constexpr std::string_view kMask = "***";

struct UrlParts {
  std::string_view before_query;  // scheme://authority/path
  std::string_view query;         // without '?'; empty when none
  std::string_view fragment;      // without '#'; empty when none
  bool has_query = false;
  bool has_fragment = false;
};

UrlParts Split(std::string_view url) {
  UrlParts parts;
  const size_t hash = url.find('#');
  if (hash != std::string_view::npos) {
    parts.fragment = url.substr(hash + 1);
    parts.has_fragment = true;
    url = url.substr(0, hash);
  }
  const size_t question = url.find('?');
  if (question != std::string_view::npos) {
    parts.query = url.substr(question + 1);
    parts.has_query = true;
    url = url.substr(0, question);
  }
  parts.before_query = url;
  return parts;
}

bool IsTokenChar(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' ||
         c == '_';
}

}  // namespace

std::string EmbeddingsUrl(std::string_view endpoint) {
  const UrlParts parts = Split(endpoint);
  std::string_view path = parts.before_query;
  while (!path.empty() && path.back() == '/') path.remove_suffix(1);
  std::string url(path);
  url += "/embeddings";
  if (parts.has_query) {
    url += '?';
    url += parts.query;
  }
  return url;
}

std::string RedactEndpoint(std::string_view endpoint) {
  const UrlParts parts = Split(endpoint);
  std::string out(parts.before_query);
  const size_t scheme = out.find("://");
  if (scheme != std::string::npos) {
    const size_t authority = scheme + 3;
    const size_t slash = out.find('/', authority);
    const size_t at = out.rfind('@', slash == std::string::npos ? out.size() - 1 : slash);
    if (at != std::string::npos && at >= authority) {
      const size_t colon = out.find(':', authority);
      if (colon != std::string::npos && colon < at) {
        out.replace(colon + 1, at - colon - 1, kMask);  // user:***@host
      } else {
        out.replace(authority, at - authority, kMask);  // ***@host
      }
    }
  }
  if (parts.has_query) {
    out += '?';
    std::string_view rest = parts.query;
    bool first = true;
    while (true) {
      const size_t amp = rest.find('&');
      const std::string_view param = rest.substr(0, amp);
      if (!first) out += '&';
      first = false;
      const size_t eq = param.find('=');
      const std::string_view key = param.substr(0, eq);
      bool is_public = false;
      for (std::string_view k : kPublicQueryKeys) is_public = is_public || k == key;
      if (eq == std::string_view::npos) {
        out += param.empty() ? "" : kMask;  // a bare value may be a token
      } else {
        out += key;
        out += '=';
        out += is_public ? param.substr(eq + 1) : kMask;
      }
      if (amp == std::string_view::npos) break;
      rest = rest.substr(amp + 1);
    }
  }
  if (parts.has_fragment) {
    out += '#';
    out += kMask;
  }
  return out;
}

std::string RedactSecret(std::string text, std::string_view secret) {
  if (secret.empty()) return text;
  constexpr std::string_view kRedacted = "[redacted]";
  size_t from = 0;
  for (size_t pos; (pos = text.find(secret, from)) != std::string::npos;) {
    const size_t end = pos + secret.size();
    const bool whole = (pos == 0 || !IsTokenChar(text[pos - 1])) &&
                       (end == text.size() || !IsTokenChar(text[end]));
    if (whole) {
      text.replace(pos, secret.size(), kRedacted);
      from = pos + kRedacted.size();
    } else {
      from = pos + 1;
    }
  }
  return text;
}

}  // namespace sluice
