// RunCompletionCommand: posix_spawn (no shell unless asked) in a process group
// of its own, stdout+stderr into one pipe of which the last bytes are kept,
// the exit watched through a pidfd so that neither a silent command nor a
// background child holding the pipe open keeps us past its exit, and the
// whole group killed at the timeout.
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <string>

#include <fmt/format.h>

#include "common/utf8.h"
#include "sluice/handoff.h"

extern char** environ;

namespace sluice {

namespace {

std::string EnvName(std::string_view entry) {
  return std::string(entry.substr(0, entry.find('=')));
}

// The caller's environment without secrets and without earlier SLUICE_
// hand-off variables, then the run's.
std::vector<std::string> ChildEnvironment(const HandoffOptions& options, const HandoffRun& run) {
  const std::vector<std::string> ours = HandoffEnvironment(run);
  std::vector<std::string> env;
  for (char** e = environ; e != nullptr && *e != nullptr; ++e) {
    const std::string_view entry(*e);
    const std::string name = EnvName(entry);
    const std::string_view value =
        entry.size() > name.size() ? entry.substr(name.size() + 1) : std::string_view();
    const bool secret_name =
        std::find(options.secret_env_names.begin(), options.secret_env_names.end(), name) !=
        options.secret_env_names.end();
    const bool secret_value = std::any_of(
        options.secret_env_values.begin(), options.secret_env_values.end(),
        [&](const std::string& s) { return !s.empty() && value.find(s) != std::string::npos; });
    const bool replaced = std::any_of(ours.begin(), ours.end(),
                                      [&](const std::string& o) { return EnvName(o) == name; });
    if (!secret_name && !secret_value && !replaced) env.emplace_back(entry);
  }
  env.insert(env.end(), ours.begin(), ours.end());
  return env;
}

void KeepTail(std::string& tail, const char* data, size_t n, size_t limit) {
  tail.append(data, n);
  // Trim in steps, not on every read, so a chatty command costs O(n).
  if (tail.size() > 2 * limit + 4096) tail.erase(0, tail.size() - limit);
}

std::string FinishTail(std::string tail, size_t limit) {
  if (tail.size() > limit) {
    size_t cut = tail.size() - limit;
    // Start at a character boundary: move forward past continuation bytes.
    while (cut < tail.size() && (static_cast<unsigned char>(tail[cut]) & 0xC0) == 0x80) ++cut;
    tail.erase(0, cut);
  }
  std::string repaired;
  AppendRepairedUtf8(tail, repaired);
  return repaired;
}

}  // namespace

std::vector<std::string> HandoffEnvironment(const HandoffRun& run) {
  auto n = [](uint64_t v) { return std::to_string(v); };
  std::vector<std::string> env = {
      "SLUICE_REPORT=" + run.report_path,
      "SLUICE_AGGREGATE_DIR=" + run.aggregate_dir,
      "SLUICE_DEAD_LETTER=" + run.dead_letter_path,
      "SLUICE_EXIT_STATUS=" + std::to_string(run.exit_status),
      "SLUICE_STATUS=" + run.status,
      "SLUICE_SOURCES_OK=" + n(run.sources_ok),
      "SLUICE_SOURCES_FAILED=" + n(run.sources_failed),
      "SLUICE_SOURCES_SKIPPED=" + n(run.sources_skipped),
      "SLUICE_CHUNKS_PRODUCED=" + n(run.chunks_produced),
      "SLUICE_CHUNKS_STORED=" + n(run.chunks_stored),
      "SLUICE_CHUNKS_DEAD_LETTERED=" + n(run.chunks_dead_lettered),
      "SLUICE_CHUNKS_ABANDONED=" + n(run.chunks_abandoned),
  };
  if (!run.job_id.empty()) env.push_back("SLUICE_JOB=" + run.job_id);
  return env;
}

CommandOutcome RunCompletionCommand(const HandoffOptions& options, const HandoffRun& run) {
  CommandOutcome out;
  if (options.command.empty()) return out;
  out.ran = true;
  std::vector<std::string> args;
  if (options.use_shell) {
    std::string line;
    for (const std::string& part : options.command) line += (line.empty() ? "" : " ") + part;
    args = {"/bin/sh", "-c", line};
  } else {
    args = options.command;
  }
  std::vector<std::string> env = ChildEnvironment(options, run);
  std::vector<char*> argv, envp;
  for (std::string& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  for (std::string& e : env) envp.push_back(e.data());
  envp.push_back(nullptr);

  int pipe_fds[2];
  if (::pipe2(pipe_fds, O_CLOEXEC) != 0) {
    out.error = std::string("cannot create a pipe: ") + std::strerror(errno);
    return out;
  }
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_addopen(&actions, STDIN_FILENO, "/dev/null", O_RDONLY, 0);
  posix_spawn_file_actions_adddup2(&actions, pipe_fds[1], STDOUT_FILENO);
  posix_spawn_file_actions_adddup2(&actions, pipe_fds[1], STDERR_FILENO);
  posix_spawnattr_t attr;
  posix_spawnattr_init(&attr);
  // Its own process group (so the timeout kills its children too), default
  // signal dispositions and no blocked signals (the CLI blocks SIGINT/SIGTERM
  // in its threads to wait for them).
  sigset_t none, defaults;
  sigemptyset(&none);
  sigemptyset(&defaults);
  for (int sig : {SIGINT, SIGTERM, SIGPIPE, SIGHUP, SIGQUIT}) sigaddset(&defaults, sig);
  posix_spawnattr_setsigmask(&attr, &none);
  posix_spawnattr_setsigdefault(&attr, &defaults);
  posix_spawnattr_setpgroup(&attr, 0);
  posix_spawnattr_setflags(&attr,
                           POSIX_SPAWN_SETPGROUP | POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF);
  const TimePoint start = SteadyClock::now();
  pid_t pid = -1;
  const int spawned = ::posix_spawnp(&pid, argv[0], &actions, &attr, argv.data(), envp.data());
  posix_spawn_file_actions_destroy(&actions);
  posix_spawnattr_destroy(&attr);
  ::close(pipe_fds[1]);
  if (spawned != 0) {
    ::close(pipe_fds[0]);
    out.error = "cannot start '" + args[0] + "': " + std::strerror(spawned);
    return out;
  }
  out.started = true;

  // The raw syscall: glibc 2.36's <sys/pidfd.h> lacks extern "C" for C++.
  const int pidfd = static_cast<int>(::syscall(SYS_pidfd_open, pid, 0));
  ::fcntl(pipe_fds[0], F_SETFL, ::fcntl(pipe_fds[0], F_GETFL) | O_NONBLOCK);
  const TimePoint deadline = start + options.command_timeout;
  std::string tail;
  const size_t limit = std::max<size_t>(options.output_tail_bytes, 1);
  bool pipe_open = true, exited = false;
  char buf[8192];
  auto drain = [&] {
    for (;;) {
      const ssize_t n = ::read(pipe_fds[0], buf, sizeof buf);
      if (n > 0) {
        KeepTail(tail, buf, static_cast<size_t>(n), limit);
        continue;
      }
      if (n == 0) pipe_open = false;
      if (n < 0 && errno == EINTR) continue;
      return;  // EOF or nothing more for now
    }
  };
  while (!exited) {
    const auto left =
        std::chrono::duration_cast<std::chrono::milliseconds>(deadline - SteadyClock::now());
    if (left.count() <= 0) break;
    pollfd fds[2] = {{pidfd, POLLIN, 0}, {pipe_fds[0], POLLIN, 0}};
    const int nfds = pipe_open ? 2 : 1;
    const int ready = ::poll(fds, static_cast<nfds_t>(nfds),
                             static_cast<int>(std::min<int64_t>(left.count(), 1000)));
    if (ready < 0 && errno != EINTR) break;
    if (pipe_open && (fds[1].revents & (POLLIN | POLLHUP)) != 0) drain();
    if (pidfd < 0) {
      // No pidfd (an old kernel): the pipe's EOF says the command is done.
      exited = !pipe_open;
    } else if ((fds[0].revents & POLLIN) != 0) {
      exited = true;
    }
  }
  int wait_status = 0;
  if (!exited) {
    out.timed_out = true;
    ::kill(-pid, SIGKILL);
    out.error = fmt::format("timed out after {:.1f} s; killed", ToSeconds(options.command_timeout));
  }
  while (::waitpid(pid, &wait_status, 0) < 0 && errno == EINTR) {
  }
  drain();  // what it wrote just before it exited
  if (pidfd >= 0) ::close(pidfd);
  ::close(pipe_fds[0]);
  out.elapsed_s = ToSeconds(SteadyClock::now() - start);
  if (WIFEXITED(wait_status)) {
    out.exit_status = WEXITSTATUS(wait_status);
    if (out.exit_status != 0 && out.error.empty()) {
      out.error = "exited with status " + std::to_string(out.exit_status);
    }
  } else if (WIFSIGNALED(wait_status)) {
    out.signal = WTERMSIG(wait_status);
    if (out.error.empty()) out.error = "killed by signal " + std::to_string(out.signal);
  }
  out.output_tail = FinishTail(std::move(tail), limit);
  return out;
}

}  // namespace sluice
