// Chooses a Store implementation from a URI.
#include <string>

#include "sluice/store.h"

namespace sluice {

namespace {
bool StartsWith(std::string_view s, std::string_view prefix) {
  return s.substr(0, prefix.size()) == prefix;
}
}  // namespace

std::string RedactUri(std::string_view uri) {
  std::string out(uri);
  // URI form: scheme://user:password@host -> scheme://user:***@host
  const size_t scheme = out.find("://");
  if (scheme != std::string::npos) {
    const size_t auth_start = scheme + 3;
    const size_t at = out.find('@', auth_start);
    const size_t slash = out.find('/', auth_start);
    if (at != std::string::npos && (slash == std::string::npos || at < slash)) {
      const size_t colon = out.find(':', auth_start);
      if (colon != std::string::npos && colon < at) out.replace(colon + 1, at - colon - 1, "***");
    }
  }
  // Query or conninfo form: password=secret -> password=***
  for (size_t pos = 0; (pos = out.find("password=", pos)) != std::string::npos;) {
    const size_t value = pos + 9;
    size_t end = out.find_first_of("& ", value);
    if (end == std::string::npos) end = out.size();
    out.replace(value, end - value, "***");
    pos = value + 3;
  }
  return out;
}

Result<std::unique_ptr<Store>> OpenStore(std::string_view uri, const StoreOptions& options) {
  if (StartsWith(uri, "sqlite:")) {
    std::string path(uri.substr(7));
    if (StartsWith(path, "//")) path = path.substr(2);  // sqlite:///abs/path
    if (path.empty()) return Status::InvalidArgument("sqlite store URI has no path: 'sqlite:PATH'");
    return OpenSqliteStore(path, options);
  }
  if (StartsWith(uri, "postgres://") || StartsWith(uri, "postgresql://")) {
    return OpenPostgresStore(std::string(uri), options);
  }
  return Status::InvalidArgument("unknown store URI '" + RedactUri(uri) +
                                 "': expected sqlite:PATH or postgres://...");
}

}  // namespace sluice
