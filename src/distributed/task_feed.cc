#include "distributed/task_feed.h"

#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <functional>
#include <vector>

#include <fmt/format.h>
#include <spdlog/spdlog.h>

namespace sluice {

Result<std::unique_ptr<TaskFeed>> TaskFeed::Open(TaskFeedOptions options) {
  auto claim = TaskStream::Open(options.endpoint, options.stream);
  if (!claim.ok()) return claim.status();
  auto ack = TaskStream::Open(options.endpoint, options.stream);
  if (!ack.ok()) return ack.status();
  auto beat = TaskStream::Open(options.endpoint, options.stream);
  if (!beat.ok()) return beat.status();
  return std::unique_ptr<TaskFeed>(
      new TaskFeed(std::move(options), std::move(*claim), std::move(*ack), std::move(*beat)));
}

TaskFeed::TaskFeed(TaskFeedOptions options, std::unique_ptr<TaskStream> claim,
                   std::unique_ptr<TaskStream> ack, std::unique_ptr<TaskStream> beat)
    : options_(std::move(options)),
      claim_(std::move(claim)),
      beat_(std::move(beat)),
      claim_outage_(options_.outage, *options_.clock, std::hash<std::string>{}(options_.consumer)),
      ack_(std::move(ack)) {}

TaskFeed::~TaskFeed() { Stop(); }

Status TaskFeed::error() const {
  std::lock_guard lock(mu_);
  return error_;
}

void TaskFeed::Pause(Duration d, const std::atomic<bool>& stopping) {
  const Clock& clock = *options_.clock;
  const TimePoint until = clock.Now() + d;
  // In slices, so a stop is seen within a tenth of a second.
  for (TimePoint now = clock.Now(); !stopping && now < until; now = clock.Now()) {
    clock.SleepFor(std::min<Duration>(until - now, std::chrono::milliseconds(100)));
  }
}

bool TaskFeed::Next(SourceFile& file, const std::atomic<bool>& stopping) {
  // True when the outage has lasted too long: the feed ends with `s`.
  const auto failed = [&](const Status& s) {
    // One warning when an outage starts, then one every 60 tries, not one per try.
    const bool first = !claim_outage_.ongoing();
    const std::optional<Duration> wait = claim_outage_.Failed();
    if (!wait) {
      std::lock_guard lock(mu_);
      error_ = s.WithContext(fmt::format(
          "task stream: Redis unreachable for more than {} s",
          std::chrono::duration_cast<std::chrono::seconds>(options_.outage.give_up_after).count()));
      return true;
    }
    if (first || claim_outage_.failures() % 60 == 0) {
      spdlog::warn(
          "task stream: {} (retrying for up to {} s)", s.ToString(),
          std::chrono::duration_cast<std::chrono::seconds>(options_.outage.give_up_after).count());
    }
    Pause(*wait, stopping);
    return false;
  };
  const auto succeeded = [&] {
    if (auto lasted = claim_outage_.Succeeded()) {
      spdlog::info("task stream: Redis answers again after {:.1f} s",
                   std::chrono::duration<double>(*lasted).count());
    }
  };
  while (!stopping) {
    {
      // Room for one more task: a full pipeline holds its tasks, not the stream's.
      std::unique_lock lock(mu_);
      if (in_flight_count_ >= options_.max_in_flight) {
        room_.wait_for(lock, std::chrono::milliseconds(100));
        continue;
      }
    }
    // A dead worker's tasks first (and the poison ones buried), then new ones.
    auto claimed = claim_->ReclaimStale(options_.consumer, 1);
    if (claimed.ok() && claimed->empty()) {
      claimed = claim_->Claim(options_.consumer, 1, options_.claim_block);
    }
    if (!claimed.ok()) {
      if (failed(claimed.status())) return false;
      continue;
    }
    succeeded();
    if (claimed->empty()) {
      if (!options_.exit_when_idle) continue;
      auto idle = claim_->Idle();
      if (!idle.ok()) {
        if (failed(idle.status())) return false;
        continue;
      }
      if (*idle) return false;
      continue;
    }
    ClaimedTask& task = claimed->front();
    file = SourceFile();
    file.path = task.task.path;
    file.relative_path = task.task.relative_path;
    file.root_name = task.task.root_name;
    file.size_bytes = task.task.size_bytes;
    file.mtime_ns = task.task.mtime_ns;
    // The file as it is now, as the walk of `sluice ingest` would see it: one
    // changed since the enqueue is then compared with the store's fingerprint
    // by its new size and mtime (and re-read), and what is read is recorded
    // with the facts it was read with. One that is gone keeps the enqueued
    // facts; reading it fails and OnSourceDone buries the task.
    struct stat st;
    if (::stat(file.path.c_str(), &st) == 0 && S_ISREG(st.st_mode)) {
      file.size_bytes = static_cast<uint64_t>(st.st_size);
      file.mtime_ns = static_cast<int64_t>(st.st_mtim.tv_sec) * 1000000000 + st.st_mtim.tv_nsec;
      if (task.task.IsRange() &&
          (file.size_bytes != task.task.size_bytes || file.mtime_ns != task.task.mtime_ns)) {
        // Its cut points and line numbers are the enqueued file's: reading
        // them in another version would mix two versions of the file.
        const std::string why = "changed since the enqueue: " + file.path + " has size " +
                                std::to_string(file.size_bytes) + " and mtime " +
                                std::to_string(file.mtime_ns) + " ns, the range of bytes " +
                                std::to_string(task.task.range_begin) + "-" +
                                std::to_string(task.task.range_end) + " was cut in size " +
                                std::to_string(task.task.size_bytes) + ", mtime " +
                                std::to_string(task.task.mtime_ns) + " ns; enqueue the file again";
        auto buried = claim_->Bury(task.id, why);
        if (!buried.ok()) spdlog::warn("task {}: {}", task.id, buried.status().ToString());
        continue;
      }
    }
    if (task.task.IsRange()) {
      file.range_begin = task.task.range_begin;
      file.range_end = task.task.range_end;
      file.first_line = task.task.first_line;
    }
    std::lock_guard lock(mu_);
    in_flight_[SourceDoneId(file)].push_back(
        Handed{task.id, task.task.path, task.task.split, task.task.whole_file_pass});
    ++in_flight_count_;
    return true;
  }
  return false;
}

void TaskFeed::OnSourceDone(const std::string& source_id, SourceOutcome outcome, const Status& why,
                            uint64_t chunks_stored) {
  Handed handed;
  {
    std::lock_guard lock(mu_);
    auto it = in_flight_.find(source_id);
    if (it == in_flight_.end() || it->second.empty()) return;  // not one of the feed's
    handed = std::move(it->second.front());
    it->second.pop_front();
    if (it->second.empty()) in_flight_.erase(it);
    --in_flight_count_;
  }
  room_.notify_all();
  std::lock_guard lock(ack_mu_);
  // A failed ack leaves the task pending: once the heartbeat stops extending
  // it, another worker redoes it (its fingerprint makes that cheap).
  const std::string& entry = handed.entry;
  std::string error;
  if (outcome == SourceOutcome::kDeadLettered) {
    error = why.ToString();
  } else if (outcome == SourceOutcome::kSkipped && ::access(handed.path.c_str(), F_OK) != 0 &&
             errno == ENOENT) {
    error = "not found: " + handed.path + " does not exist on " + options_.host +
            " (deleted since the enqueue, or not mounted there)";
  }
  // Both scripts are safe to run twice (the second finds nothing to ack and
  // counts nothing), so a failure is tried again: at once (a connection that
  // Redis closed while it was idle, e.g. across a restart, fails its first
  // command and reconnects on the next), then once more after a short pause.
  // A whole-file pass rewrites the chunks its ranges stored and counted.
  Status last;
  for (int attempt = 0; attempt < 3; ++attempt) {
    if (attempt == 2) options_.clock->SleepFor(std::chrono::milliseconds(200));
    last =
        !error.empty()
            ? ack_->Bury(entry, error).status()
            : ack_->Ack(entry, handed.whole_file_pass ? 0 : chunks_stored, handed.split).status();
    if (last.ok()) break;
  }
  if (!last.ok()) spdlog::warn("task {}: {} (left pending for redelivery)", entry, last.ToString());
  tasks_done_.fetch_add(1, std::memory_order_relaxed);
}

void TaskFeed::Start() {
  if (heartbeat_.joinable()) return;
  heartbeat_ = std::thread([this] { HeartbeatLoop(); });
}

void TaskFeed::Stop() {
  {
    std::lock_guard lock(mu_);
    stop_heartbeat_ = true;
  }
  heartbeat_wake_.notify_all();
  if (heartbeat_.joinable()) heartbeat_.join();
}

void TaskFeed::HeartbeatLoop() {
  using std::chrono::milliseconds;
  // A few beats per visibility timeout, so a live worker's tasks never look idle.
  const milliseconds interval = std::clamp<milliseconds>(options_.stream.visibility_timeout / 4,
                                                         milliseconds(10), milliseconds(5000));
  const milliseconds ttl = std::max(interval * 3, options_.stream.visibility_timeout);
  bool failing = false;  // one warning per outage, not one per beat
  while (true) {
    std::vector<std::string> ids;
    {
      std::lock_guard lock(mu_);
      if (stop_heartbeat_) break;
      for (const auto& [source, handed] : in_flight_) {
        for (const Handed& h : handed) ids.push_back(h.entry);
      }
    }
    Status s = beat_->Extend(options_.consumer, ids);
    if (s.ok()) {
      s = beat_->Heartbeat(
          WorkerStatus{options_.consumer, options_.host, options_.pid, tasks_done(), 0}, ttl);
    }
    if (!s.ok() && !failing) spdlog::warn("heartbeat: {} (retrying)", s.ToString());
    failing = !s.ok();
    std::unique_lock lock(mu_);
    heartbeat_wake_.wait_for(lock, interval, [this] { return stop_heartbeat_; });
    if (stop_heartbeat_) break;
  }
  // A last beat, so `sluice status` shows the final count until the record expires.
  Status s = beat_->Heartbeat(
      WorkerStatus{options_.consumer, options_.host, options_.pid, tasks_done(), 0}, ttl);
  if (!s.ok()) spdlog::warn("heartbeat: {}", s.ToString());
}

}  // namespace sluice
