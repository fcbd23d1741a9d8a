#include "common/sqlite_process.h"

#include <sqlite3.h>

#include <mutex>

namespace sluice {

void ConfigureSqliteForProcess() {
  static std::once_flag once;
  std::call_once(once, [] {
    // SQLITE_MISUSE when SQLite is already initialised: keep its settings.
    (void)sqlite3_config(SQLITE_CONFIG_MEMSTATUS, 0);
  });
}

}  // namespace sluice
