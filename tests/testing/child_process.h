// A program run by a test in a child process: started with posix_spawn, its
// stdin, stdout and stderr each /dev/null, a file or a pipe the test holds;
// signalled; its exit awaited with a bound that only turns a hang into a
// failure. A child still running when the object goes is killed and reaped,
// so a failed assertion leaves no process behind.
//
// Thread safety: one thread uses an object.
#pragma once

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <optional>
#include <string>
#include <vector>

#include "testing/wait.h"

extern char** environ;

namespace sluice::testing {

class ChildProcess {
 public:
  // Where a standard stream goes: kNull (/dev/null), kFile (`path`,
  // truncated, or appended to with `append`), kPipe (the test's end is
  // stdin_fd()/stdout_fd()) or kInherit (the test's own).
  struct Stream {
    enum class Kind { kNull, kFile, kPipe, kInherit };
    Kind kind = Kind::kNull;
    std::string path;
    bool append = false;
  };
  static Stream Null() { return {}; }
  static Stream File(std::string path, bool append = false) {
    return {Stream::Kind::kFile, std::move(path), append};
  }
  static Stream Pipe() { return {Stream::Kind::kPipe, "", false}; }
  static Stream Inherit() { return {Stream::Kind::kInherit, "", false}; }

  struct Streams {
    Stream in;
    Stream out;
    Stream err;
  };

  // Starts `args` (args[0] the program's path). started() says whether it did.
  ChildProcess(std::vector<std::string> args, const Streams& streams) {
    int in_pipe[2] = {-1, -1}, out_pipe[2] = {-1, -1};
    if (streams.in.kind == Stream::Kind::kPipe && ::pipe2(in_pipe, O_CLOEXEC) != 0) return;
    if (streams.out.kind == Stream::Kind::kPipe && ::pipe2(out_pipe, O_CLOEXEC) != 0) return;
    std::vector<char*> argv;
    for (auto& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    posix_spawn_file_actions_t actions;
    posix_spawn_file_actions_init(&actions);
    Redirect(actions, 0, streams.in, in_pipe[0], O_RDONLY);
    Redirect(actions, 1, streams.out, out_pipe[1], O_WRONLY);
    Redirect(actions, 2, streams.err, -1, O_WRONLY);
    pid_t pid = -1;
    if (posix_spawn(&pid, argv[0], &actions, nullptr, argv.data(), environ) == 0) pid_ = pid;
    posix_spawn_file_actions_destroy(&actions);
    if (in_pipe[0] >= 0) ::close(in_pipe[0]);
    if (out_pipe[1] >= 0) ::close(out_pipe[1]);
    stdin_ = in_pipe[1];
    stdout_ = out_pipe[0];
  }
  ~ChildProcess() {
    CloseStdin();
    if (pid_ > 0 && !exit_code_) {
      ::kill(pid_, SIGKILL);
      ::waitpid(pid_, nullptr, 0);
    }
    if (stdout_ >= 0) ::close(stdout_);
  }
  ChildProcess(const ChildProcess&) = delete;
  ChildProcess& operator=(const ChildProcess&) = delete;

  bool started() const { return pid_ > 0; }
  pid_t pid() const { return pid_; }
  // The test's ends of the pipes (-1 unless asked for).
  int stdin_fd() const { return stdin_; }
  int stdout_fd() const { return stdout_; }
  void CloseStdin() {
    if (stdin_ >= 0) ::close(stdin_);
    stdin_ = -1;
  }

  void Signal(int sig) {
    if (pid_ > 0 && !exit_code_) ::kill(pid_, sig);
  }
  // True once the child has exited (never waits).
  bool Exited() {
    if (exit_code_) return true;
    if (pid_ <= 0) return false;
    int status = 0;
    if (::waitpid(pid_, &status, WNOHANG) != pid_) return false;
    exit_code_ = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
    return true;
  }
  // The exit status (128 + the signal for a killed child) once it exited
  // within `bound`; nullopt if it is still running then.
  std::optional<int> WaitExit(std::chrono::steady_clock::duration bound = kHangBound) {
    if (!WaitUntil([this] { return Exited(); }, bound)) return std::nullopt;
    return exit_code_;
  }

 private:
  static void Redirect(posix_spawn_file_actions_t& actions, int fd, const Stream& s, int pipe_end,
                       int mode) {
    switch (s.kind) {
      case Stream::Kind::kNull:
        posix_spawn_file_actions_addopen(&actions, fd, "/dev/null", mode, 0);
        break;
      case Stream::Kind::kFile:
        posix_spawn_file_actions_addopen(
            &actions, fd, s.path.c_str(),
            mode == O_RDONLY ? O_RDONLY : (mode | O_CREAT | (s.append ? O_APPEND : O_TRUNC)), 0644);
        break;
      case Stream::Kind::kPipe:
        posix_spawn_file_actions_adddup2(&actions, pipe_end, fd);
        break;
      case Stream::Kind::kInherit:
        break;
    }
  }

  pid_t pid_ = -1;
  int stdin_ = -1;
  int stdout_ = -1;
  std::optional<int> exit_code_;
};

}  // namespace sluice::testing
