// Chooses a Store implementation from a URI.
#include <string>

#include "sluice/store.h"

namespace sluice {

namespace {
bool StartsWith(std::string_view s, std::string_view prefix) {
  return s.substr(0, prefix.size()) == prefix;
}
}  // namespace

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
