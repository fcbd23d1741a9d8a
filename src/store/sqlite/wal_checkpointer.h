// Checkpoints a SQLite database's write-ahead log on a thread of its own, so
// the writer does not wait for the copy and the two fsyncs of each
// checkpoint (docs/PERFORMANCE.md, "Checkpoints off the writer's thread").
//
// SQLite's default is an automatic checkpoint inside the commit that takes
// the log past 1,000 pages: on 132k chunks that was 59 checkpoints and 3.3 s
// of fdatasync on the store thread, a third of the run. With this the
// writer's commit hook only asks (Request); the checkpointer's own connection
// copies the log into the database while the writer goes on appending.
//
// A checkpoint that runs beside a writer may never catch up with the end of
// the log, and SQLite starts the log over only when one has; so the writer
// still checkpoints itself (waiting for this thread first) once the log
// passes a hard limit, so that its next write starts the log over.
//
// Thread safety: Request and WaitIdle from any one thread (the writer's);
// the checkpointer's connection is used only by its own thread.
#pragma once

#include <condition_variable>
#include <memory>
#include <mutex>
#include <string>
#include <thread>

#include "sluice/status.h"

struct sqlite3;

namespace sluice {

class WalCheckpointer {
 public:
  // Opens a second connection to `path` (a WAL-mode database that exists)
  // and starts the thread. Errors: the open's, as an IOError.
  static Result<std::unique_ptr<WalCheckpointer>> Start(const std::string& path,
                                                        int busy_timeout_ms);
  ~WalCheckpointer();  // Stop()
  WalCheckpointer(const WalCheckpointer&) = delete;
  WalCheckpointer& operator=(const WalCheckpointer&) = delete;

  // Asks for a passive checkpoint soon; returns at once. Requests made while
  // one runs are merged into one more run after it.
  void Request();
  // Returns once no checkpoint runs and none is asked for.
  void WaitIdle();
  // Finishes a running checkpoint, drops pending requests, joins the thread
  // and closes the connection. Idempotent.
  void Stop();

  // Checkpoints run to completion (SQLITE_OK) and those that failed (e.g.
  // SQLITE_BUSY beside another process's checkpoint: nothing is lost, the
  // next request tries again). For tests and the report.
  uint64_t completed() const;
  uint64_t failed() const;

 private:
  explicit WalCheckpointer(sqlite3* db);
  void Loop();

  sqlite3* db_;
  mutable std::mutex mu_;
  std::condition_variable wake_;
  std::condition_variable idle_;
  bool requested_ = false;
  bool running_ = false;
  bool stopping_ = false;
  uint64_t completed_ = 0;
  uint64_t failed_ = 0;
  std::thread thread_;
};

}  // namespace sluice
