#include "pipeline/progress.h"

#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdio>

#include "pipeline/source_enumerator.h"

#include <fmt/format.h>
#include <spdlog/spdlog.h>

namespace sluice {

std::optional<double> BuiltInPricePerMillionTokens(std::string_view model) {
  // OpenAI's published prices for its embedding models (USD per 1M input
  // tokens, standard tier). Override with --price-per-mtok.
  struct Price {
    std::string_view model;
    double usd;
  };
  static constexpr Price kPrices[] = {
      {"text-embedding-3-small", 0.02},
      {"text-embedding-3-large", 0.13},
      {"text-embedding-ada-002", 0.10},
  };
  for (const Price& p : kPrices) {
    if (p.model == model) return p.usd;
  }
  return std::nullopt;
}

void UpdateRates(const ProgressSnapshot& previous, ProgressSnapshot& now) {
  now.chunks_per_s = previous.chunks_per_s;
  now.tokens_per_s = previous.tokens_per_s;
  const double dt = now.elapsed_s - previous.elapsed_s;
  if (dt <= 0) return;
  const uint64_t done_before = previous.chunks_stored + previous.chunks_dead_lettered;
  const uint64_t done = now.chunks_stored + now.chunks_dead_lettered;
  const double w = done_before == 0 ? 1.0 : 0.3;
  auto smooth = [&](double old, uint64_t was, uint64_t is) {
    return (1 - w) * old + w * static_cast<double>(is - was) / dt;
  };
  now.chunks_per_s = smooth(previous.chunks_per_s, done_before, done);
  now.tokens_per_s = smooth(previous.tokens_per_s, previous.tokens, now.tokens);
}

std::string FormatDuration(double seconds) {
  if (!(seconds >= 0) || !std::isfinite(seconds)) return "?";
  const auto total = static_cast<uint64_t>(std::llround(seconds));
  const uint64_t h = total / 3600, m = total / 60 % 60, s = total % 60;
  if (h > 0) return fmt::format("{}h{:02}m", h, m);
  if (m > 0) return fmt::format("{}m{:02}s", m, s);
  return fmt::format("{}s", s);
}

std::optional<double> EstimatedTotalChunks(const ProgressSnapshot& s) {
  if (!s.totals_known || s.bytes_done == 0) return std::nullopt;
  const double produced = static_cast<double>(s.chunks_produced);
  if (s.bytes_done >= s.bytes_total) return produced;
  return produced * static_cast<double>(s.bytes_total) / static_cast<double>(s.bytes_done);
}

std::optional<double> EtaSeconds(const ProgressSnapshot& s) {
  const auto total = EstimatedTotalChunks(s);
  if (!total || s.chunks_per_s <= 0) return std::nullopt;
  const double done = static_cast<double>(s.chunks_stored + s.chunks_dead_lettered);
  return std::max(0.0, *total - done) / s.chunks_per_s;
}

std::string FormatProgressLine(const ProgressSnapshot& s) {
  std::string line = fmt::format("{} | sources {}", FormatDuration(s.elapsed_s), s.sources_done);
  const auto total_chunks = EstimatedTotalChunks(s);
  const double done = static_cast<double>(s.chunks_stored + s.chunks_dead_lettered);
  if (s.totals_known) {
    line += fmt::format("/{}", s.sources_total);
    if (total_chunks && *total_chunks > 0) {
      line += fmt::format(" ({:.0f}%)", std::min(100.0, 100.0 * done / *total_chunks));
    }
  }
  line += fmt::format(" | chunks {} stored", s.chunks_stored);
  if (s.chunks_dead_lettered > 0) line += fmt::format(", {} dead", s.chunks_dead_lettered);
  line += fmt::format(" | {:.0f} chunks/s", s.chunks_per_s);
  if (s.tokens > 0) line += fmt::format(", {:.0f} tokens/s", s.tokens_per_s);
  if (const auto eta = EtaSeconds(s)) {
    line += " | ETA " + FormatDuration(*eta);
  } else {
    line += " | ETA estimating";  // totals or a rate still unknown
  }
  if (s.price_per_mtok) {
    const double so_far = static_cast<double>(s.tokens) / 1e6 * *s.price_per_mtok;
    // Cents and up to four decimals; a run still under a cent shows more.
    const char* money = so_far < 0.01 ? " | ${:.6f}" : " | ${:.4f}";
    line += fmt::format(fmt::runtime(money), so_far);
    if (total_chunks && done > 0) {
      // The tokens still to come scale with the chunks still to embed
      // (cache hits cost nothing, so this errs high when the cache answers).
      const double projected = so_far * std::max(1.0, *total_chunks / done);
      line += fmt::format(
          fmt::runtime(projected < 0.01 ? " (~${:.6f} projected)" : " (~${:.4f} projected)"),
          projected);
    }
  }
  if (s.concurrency_limit > 0) {
    line += fmt::format(" | in flight {}/{} | 429s {}", s.in_flight, s.concurrency_limit,
                        s.rate_limited);
  }
  return line;
}

ProgressReporter::ProgressReporter(Sampler sample, Printer print, bool terminal, Duration interval)
    : sample_(std::move(sample)),
      print_(std::move(print)),
      terminal_(terminal),
      interval_(interval) {}

ProgressReporter::ProgressReporter(Sampler sample, Observer observe, Duration interval)
    : sample_(std::move(sample)), observe_(std::move(observe)), interval_(interval) {}

void ProgressReporter::Run() {
  // A terminal line is cheap to redraw; a log gets one line per interval.
  const Duration every = terminal_ ? std::chrono::milliseconds(500) : interval_;
  ProgressSnapshot previous;  // the start: nothing done at 0 s
  auto emit = [&](bool final) {
    ProgressSnapshot now = sample_();
    UpdateRates(previous, now);
    if (print_) print_(FormatProgressLine(now), terminal_);
    if (observe_) observe_(now, final);
    previous = now;
  };
  MutexLock lock(mu_);
  while (!lock.WaitFor(cv_, every, [&] {
    mu_.AssertHeld();
    return stop_;
  })) {
    lock.Unlock();
    emit(false);
    lock.Lock();
  }
  lock.Unlock();
  // An observer always learns the final counts, and so does a log: a short
  // run may end before the first interval, and whoever reads the log (or
  // alerts on it) should not have to find the report to see where it ended.
  // A terminal line is erased at the end: the report follows it.
  if (observe_ || (print_ && !terminal_)) emit(true);
}

void ProgressReporter::Stop() {
  {
    MutexLock lock(mu_);
    stop_ = true;
  }
  cv_.notify_all();
}

RunProgress::RunProgress(const SourceEnumerator& enumerator, const std::atomic<bool>& stopping,
                         ProgressReporter::Sampler sample, RunProgressOptions options)
    : sample_(std::move(sample)) {
  scan_ = std::thread([this, &enumerator, &stopping] {
    uint64_t files = 0, bytes = 0;
    if (enumerator.Scan(stopping, files, bytes)) {
      total_files_ = files;
      total_bytes_ = bytes;
      totals_known_ = true;
    }
  });
  if (options.print_lines) {
    const bool terminal = ::isatty(STDERR_FILENO) != 0;
    printer_ = std::make_unique<ProgressReporter>(
        [this] { return SampleWithTotals(); },
        [through_logger = options.through_logger](const std::string& line, bool on_terminal) {
          if (on_terminal) {
            std::fprintf(stderr, "\r\033[K[sluice] %s", line.c_str());
          } else if (through_logger) {
            spdlog::info("progress: {}", line);
          } else {
            std::fprintf(stderr, "[sluice] progress: %s\n", line.c_str());
          }
          std::fflush(stderr);
        },
        terminal, options.interval);
    print_ = std::thread([this, terminal] {
      printer_->Run();
      if (terminal) {
        std::fprintf(stderr, "\r\033[K");
        std::fflush(stderr);
      }
    });
  }
  if (options.observer) {
    observer_ =
        std::make_unique<ProgressReporter>([this] { return SampleWithTotals(); },
                                           std::move(options.observer), options.observer_interval);
    observe_ = std::thread([this] { observer_->Run(); });
  }
}

ProgressSnapshot RunProgress::SampleWithTotals() const {
  ProgressSnapshot s = sample_();
  s.totals_known = totals_known_;
  s.sources_total = total_files_;
  s.bytes_total = total_bytes_;
  return s;
}

RunProgress::~RunProgress() { Stop(); }

void RunProgress::Stop() {
  if (printer_) printer_->Stop();
  if (observer_) observer_->Stop();
  if (print_.joinable()) print_.join();
  if (observe_.joinable()) observe_.join();
  if (scan_.joinable()) scan_.join();
}

}  // namespace sluice
