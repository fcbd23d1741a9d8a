// RedactUri (sluice/store.h): in a library of its own, below every store,
// so that a store implementation can name its URI without linking the
// factory that links it (no cycle of static libraries).
#include <string>

#include "sluice/store.h"

namespace sluice {

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

}  // namespace sluice
