// The --parser-cmd parser: runs the user's command with the input path as
// "$1" and reads JSON Lines records from its stdout as they come.
//
// The command runs as `/bin/sh -c <command> sluice-parser <path>` via
// posix_spawn in its own process group, stdin from /dev/null. The path is an
// argument, never part of the command text, so a file named "$(rm -rf x)"
// is data. stdout and stderr are read with poll() until both close and the
// child exits; only the last 4 KiB of stderr are kept for the error message.
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <string>

#include "sluice/sources.h"
#include "sources/jsonl_records.h"
#include "sources/text_input.h"

extern char** environ;

namespace sluice {
namespace {

using sources_internal::JsonlRecordReader;
using sources_internal::LineSplitter;

constexpr size_t kStderrTailBytes = 4096;
// How often a silent child is checked for a stop of the run.
constexpr int64_t kStopCheckMs = 100;
// How long a child has to exit after SIGTERM before it is killed.
constexpr Duration kTermGrace = std::chrono::seconds(1);

class Fd {
 public:
  explicit Fd(int fd = -1) : fd_(fd) {}
  ~Fd() { Close(); }
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  int get() const { return fd_; }
  void Close() {
    if (fd_ >= 0) close(fd_);
    fd_ = -1;
  }

 private:
  int fd_;
};

std::string ErrnoText(int err) { return std::strerror(err); }

class CommandParser final : public Parser {
 public:
  CommandParser(std::string command, Duration timeout)
      : command_(std::move(command)), timeout_(timeout) {}

  std::string_view Name() const override { return "command"; }
  std::vector<std::string> Extensions() const override { return {}; }
  bool Sniff(std::string_view) const override { return false; }

  Status Parse(const SourceFile& file, const ParseLimits&, DocumentSink& sink,
               RecordErrorSink& errors, ParseStats& stats) const override {
    int out_pipe[2];
    int err_pipe[2];
    if (pipe2(out_pipe, O_CLOEXEC) != 0) return Status::IOError("pipe: " + ErrnoText(errno));
    Fd out_r(out_pipe[0]), out_w(out_pipe[1]);
    if (pipe2(err_pipe, O_CLOEXEC) != 0) return Status::IOError("pipe: " + ErrnoText(errno));
    Fd err_r(err_pipe[0]), err_w(err_pipe[1]);

    posix_spawn_file_actions_t actions;
    posix_spawn_file_actions_init(&actions);
    posix_spawn_file_actions_addopen(&actions, STDIN_FILENO, "/dev/null", O_RDONLY, 0);
    posix_spawn_file_actions_adddup2(&actions, out_w.get(), STDOUT_FILENO);
    posix_spawn_file_actions_adddup2(&actions, err_w.get(), STDERR_FILENO);
    // Other threads may hold descriptors without O_CLOEXEC (sockets, stores):
    // the user's command gets none of them.
    posix_spawn_file_actions_addclosefrom_np(&actions, 3);
    posix_spawnattr_t attr;
    posix_spawnattr_init(&attr);
    posix_spawnattr_setpgroup(&attr, 0);
    posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETPGROUP);

    std::string sh = "/bin/sh", dash_c = "-c", argv0 = "sluice-parser";
    std::string command = command_;
    std::string path = file.path;
    char* argv[] = {sh.data(), dash_c.data(), command.data(), argv0.data(), path.data(), nullptr};
    pid_t pid = -1;
    const int rc = posix_spawn(&pid, "/bin/sh", &actions, &attr, argv, environ);
    posix_spawn_file_actions_destroy(&actions);
    posix_spawnattr_destroy(&attr);
    if (rc != 0) return Status::IOError("cannot start parser command: " + ErrnoText(rc));
    out_w.Close();
    err_w.Close();

    JsonlRecordReader records(file, sink, errors, stats);
    LineSplitter lines(
        sources_internal::kMaxJsonlLineBytes, LineSplitter::Overflow::kDiscard,
        [&records](std::string_view line, uint64_t n, bool too_long) {
          return records.HandleLine(line, n, too_long);
        },
        sources_internal::kJsonlLinePadding);
    std::string stderr_tail;
    Status failure;  // a sink failure, a stop or a timeout: stop reading and kill
    const TimePoint deadline = SteadyClock::now() + timeout_;
    bool out_open = true, err_open = true;
    std::string buf(64 << 10, '\0');
    while ((out_open || err_open) && failure.ok()) {
      if (sink.StopRequested()) {
        failure = Stopped();
        break;
      }
      const auto left =
          std::chrono::duration_cast<std::chrono::milliseconds>(deadline - SteadyClock::now());
      if (left.count() <= 0) {
        failure = TimedOut();
        break;
      }
      struct pollfd fds[2];
      nfds_t n = 0;
      int out_idx = -1, err_idx = -1;
      if (out_open) {
        out_idx = static_cast<int>(n);
        fds[n++] = {out_r.get(), POLLIN, 0};
      }
      if (err_open) {
        err_idx = static_cast<int>(n);
        fds[n++] = {err_r.get(), POLLIN, 0};
      }
      const int ready =
          poll(fds, n, static_cast<int>(std::min<int64_t>(left.count() + 1, kStopCheckMs)));
      if (ready < 0) {
        if (errno == EINTR) continue;
        failure = Status::IOError("poll: " + ErrnoText(errno));
        break;
      }
      if (out_idx >= 0 && fds[out_idx].revents != 0) {
        const ssize_t got = read(out_r.get(), buf.data(), buf.size());
        if (got > 0) {
          failure = lines.Feed(std::string_view(buf.data(), static_cast<size_t>(got)));
        } else if (got == 0 || errno != EINTR) {
          out_open = false;
        }
      }
      if (err_idx >= 0 && fds[err_idx].revents != 0) {
        const ssize_t got = read(err_r.get(), buf.data(), buf.size());
        if (got > 0) {
          stderr_tail.append(buf.data(), static_cast<size_t>(got));
          if (stderr_tail.size() > kStderrTailBytes) {
            stderr_tail.erase(0, stderr_tail.size() - kStderrTailBytes);
          }
        } else if (got == 0 || errno != EINTR) {
          err_open = false;
        }
      }
    }
    // A stop asks the child's process group to end (SIGTERM) and kills it
    // after kTermGrace; any other failure kills it at once.
    bool killed = false;
    TimePoint kill_at{};
    auto end_child = [&] {
      if (failure.code() == StatusCode::kCancelled) {
        kill(-pid, SIGTERM);
        kill_at = SteadyClock::now() + kTermGrace;
      } else {
        kill(-pid, SIGKILL);
        killed = true;
      }
    };
    if (!failure.ok()) end_child();
    int wstatus = 0;
    // After both pipes closed the child is exiting; wait within the deadline.
    for (;;) {
      const pid_t w = waitpid(pid, &wstatus, killed ? 0 : WNOHANG);
      if (w == pid) break;
      if (w < 0 && errno != EINTR) return Status::Internal("waitpid: " + ErrnoText(errno));
      if (w != 0) continue;  // EINTR
      if (!failure.ok()) {
        if (SteadyClock::now() >= kill_at) {
          kill(-pid, SIGKILL);
          killed = true;
        }
      } else if (sink.StopRequested()) {
        failure = Stopped();
        end_child();
      } else if (SteadyClock::now() >= deadline) {
        failure = TimedOut();
        end_child();
      }
      if (!killed) usleep(2000);
    }
    if (failure.code() == StatusCode::kCancelled) {
      // Abandoned, not failed: the pipeline neither dead-letters nor
      // fingerprints the source, and the rerun parses it again.
      return failure.WithContext(file.path);
    }
    if (!failure.ok()) return failure.WithContext(Describe(file, stderr_tail));
    if (WIFEXITED(wstatus) && WEXITSTATUS(wstatus) == 0) {
      return lines.Finish();
    }
    std::string why =
        WIFEXITED(wstatus)
            ? "parser command exited with code " + std::to_string(WEXITSTATUS(wstatus))
            : "parser command killed by signal " + std::to_string(WTERMSIG(wstatus));
    if (!stderr_tail.empty()) why += ": " + std::string(sources_internal::Trim(stderr_tail));
    return Status::Corrupt(why);
  }

 private:
  static Status Stopped() {
    return Status::Cancelled("stopping: parser command terminated before it finished");
  }
  Status TimedOut() const {
    const auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(timeout_).count();
    return Status::Timeout("parser command timed out after " + std::to_string(ms) + " ms");
  }

  static std::string Describe(const SourceFile& file, const std::string& stderr_tail) {
    std::string d = file.path;
    if (!stderr_tail.empty())
      d += " (stderr: " + std::string(sources_internal::Trim(stderr_tail)) + ")";
    return d;
  }

  std::string command_;
  Duration timeout_;
};

}  // namespace

std::unique_ptr<Parser> MakeCommandParser(std::string command, Duration timeout) {
  return std::make_unique<CommandParser>(std::move(command), timeout);
}

}  // namespace sluice
