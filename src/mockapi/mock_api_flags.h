// CLI11 flags for `sluice mock-api`: declares every MockApiOptions field as a
// flag with help text, so the CLI, --help and the docs share one table.
//
// Thread safety: call from the thread that builds the CLI, before parsing.
#pragma once

#include "sluice/mock_api.h"

namespace CLI {
class App;
}  // namespace CLI

namespace sluice {

// Adds the mock API's flags to `app`; parsing writes into `options`, which
// must outlive `app`'s parse. The API key is never a flag value: --api-key-env
// names an environment variable to read it from (parsing fails if unset).
void AddMockApiFlags(CLI::App& app, MockApiOptions& options);

}  // namespace sluice
