// Chooses a Store implementation from a URI. Adding a store is a folder under
// src/store/ (its Open function, its CMake target linked into sluice_store)
// and one line in kStoreSchemes below.
#include <string>

#include "sluice/store.h"

namespace sluice {

namespace {

Result<std::unique_ptr<Store>> OpenSqliteUri(std::string_view uri, const StoreOptions& options) {
  std::string path(uri.substr(uri.find(':') + 1));
  if (path.rfind("//", 0) == 0) path = path.substr(2);  // sqlite:///abs/path
  if (path.empty()) return Status::InvalidArgument("sqlite store URI has no path: 'sqlite:PATH'");
  return OpenSqliteStore(path, options);
}

Result<std::unique_ptr<Store>> OpenPostgresUri(std::string_view uri, const StoreOptions& options) {
  return OpenPostgresStore(std::string(uri), options);
}

struct StoreScheme {
  std::string_view prefix;
  Result<std::unique_ptr<Store>> (*open)(std::string_view uri, const StoreOptions& options);
};

// The registered stores, by URI prefix.
constexpr StoreScheme kStoreSchemes[] = {
    {"sqlite:", OpenSqliteUri},
    {"postgres://", OpenPostgresUri},
    {"postgresql://", OpenPostgresUri},
};

}  // namespace

Result<std::unique_ptr<Store>> OpenStore(std::string_view uri, const StoreOptions& options) {
  for (const StoreScheme& scheme : kStoreSchemes) {
    if (uri.substr(0, scheme.prefix.size()) == scheme.prefix) return scheme.open(uri, options);
  }
  return Status::InvalidArgument("unknown store URI '" + RedactUri(uri) +
                                 "': expected sqlite:PATH or postgres://...");
}

}  // namespace sluice
