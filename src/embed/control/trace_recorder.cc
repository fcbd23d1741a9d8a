// TraceRecorder: 1-second buckets of the controller's behaviour.
#include <algorithm>
#include <cctype>
#include <cstdio>
#include <fstream>

#include "common/json_writer.h"
#include "common/private_file.h"
#include "sluice/control.h"

namespace sluice {
namespace {

double Median(std::vector<double>& values) {
  if (values.empty()) return 0;
  const size_t mid = values.size() / 2;
  std::nth_element(values.begin(), values.begin() + static_cast<std::ptrdiff_t>(mid), values.end());
  double m = values[mid];
  if (values.size() % 2 == 0) {
    m = (m + *std::max_element(values.begin(), values.begin() + static_cast<std::ptrdiff_t>(mid))) /
        2;
  }
  return m;
}

// The nearest-rank 95th percentile (0 for no values).
double Percentile95(std::vector<double>& values) {
  if (values.empty()) return 0;
  const size_t rank = (values.size() * 95 + 99) / 100;  // ceil(0.95 n), at least 1
  const size_t at = std::min(values.size(), std::max<size_t>(1, rank)) - 1;
  std::nth_element(values.begin(), values.begin() + static_cast<std::ptrdiff_t>(at), values.end());
  return values[at];
}

Status WriteFile(const std::string& path, const std::string& text) {
  Status written = WriteFileAtomically(path, text);
  if (!written.ok()) return written.WithContext("trace file");
  return Status::OK();
}

std::string Fixed(double v, int digits) {
  char buf[64];
  std::snprintf(buf, sizeof(buf), "%.*f", digits, v);
  return buf;
}

}  // namespace

std::optional<TraceFormat> TraceFormatForPath(std::string_view path) {
  const size_t dot = path.rfind('.');
  const size_t slash = path.rfind('/');
  if (dot == std::string_view::npos || (slash != std::string_view::npos && dot < slash)) {
    return std::nullopt;
  }
  std::string ext(path.substr(dot + 1));
  for (char& c : ext) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  if (ext == "csv") return TraceFormat::kCsv;
  if (ext == "json") return TraceFormat::kJson;
  if (ext == "html" || ext == "htm") return TraceFormat::kHtml;
  return std::nullopt;
}

TraceRecorder::TraceRecorder(TimePoint start, TraceRecorderOptions options)
    : start_(start), options_(options) {
  options_.max_rows = std::max<size_t>(1, options_.max_rows);
}

TraceRecorder::Accum* TraceRecorder::RowFor(TimePoint t) {
  if (t < start_) t = start_;
  const int64_t second = std::chrono::duration_cast<std::chrono::seconds>(t - start_).count();
  if (second >= static_cast<int64_t>(options_.max_rows)) {
    totals_.truncated = true;
    return nullptr;
  }
  while (static_cast<int64_t>(rows_.size()) <= second) {
    Accum a;
    a.row.second = static_cast<int64_t>(rows_.size());
    a.row.limit = last_limit_;
    a.row.in_flight = last_in_flight_;
    a.row.queue_depth = last_queue_depth_;
    rows_.push_back(a);
  }
  return &rows_[static_cast<size_t>(second)];
}

void TraceRecorder::FinishLatencies() {
  if (latency_row_ >= 0 && latency_row_ < static_cast<int64_t>(rows_.size())) {
    TraceRow& row = rows_[static_cast<size_t>(latency_row_)].row;
    row.p50_latency_ms = Median(latencies_ms_);
    row.p95_latency_ms = Percentile95(latencies_ms_);
  }
  latencies_ms_.clear();
}

void TraceRecorder::OnRequest(const RequestEvent& event) {
  const bool ok = event.outcome == RequestOutcome::kSuccess;
  const bool is_429 = event.http_status == 429;
  ++totals_.requests;
  if (ok) {
    totals_.chunks += event.inputs;
    totals_.tokens += event.tokens;
  } else if (!is_429) {
    ++totals_.failures;
  }
  if (is_429) ++totals_.http_429;
  if (event.retry) ++totals_.retries;

  Accum* a = RowFor(event.end);
  if (a == nullptr) return;
  TraceRow& row = a->row;
  ++row.requests;
  if (ok) {
    row.chunks += event.inputs;
    row.tokens += event.tokens;
  } else if (!is_429) {
    ++row.failures;
  }
  if (is_429) ++row.http_429;
  if (event.retry) ++row.retries;
  // Latencies are kept for the newest second only; a late event for an
  // older second counts but does not move that second's median.
  if (row.second > latency_row_) {
    FinishLatencies();
    latency_row_ = row.second;
  }
  if (row.second == latency_row_ &&
      latencies_ms_.size() < options_.max_latency_samples_per_second) {
    latencies_ms_.push_back(ToSeconds(event.end - event.start) * 1000.0);
  }
}

void TraceRecorder::Sample(TimePoint now, size_t limit, size_t in_flight) {
  last_limit_ = static_cast<double>(limit);
  last_in_flight_ = static_cast<double>(in_flight);
  Accum* a = RowFor(now);
  if (a == nullptr) return;
  a->limit_sum += last_limit_;
  a->in_flight_sum += last_in_flight_;
  ++a->samples;
  a->row.limit = a->limit_sum / a->samples;
  a->row.in_flight = a->in_flight_sum / a->samples;
}

void TraceRecorder::SampleQueues(TimePoint now, const QueueDepths& depths) {
  Accum* a = RowFor(now);  // seconds it opens without a sample carry the previous depths
  last_queue_depth_ = depths;
  if (a == nullptr) return;
  ++a->queue_samples;
  for (size_t i = 0; i < kTraceQueues; ++i) {
    a->queue_sum[i] += depths[i];
    a->row.queue_depth[i] = a->queue_sum[i] / a->queue_samples;
  }
}

std::vector<TraceRow> TraceRecorder::Rows() const {
  std::vector<TraceRow> rows;
  rows.reserve(rows_.size());
  for (const Accum& a : rows_) rows.push_back(a.row);
  if (latency_row_ >= 0 && latency_row_ < static_cast<int64_t>(rows.size())) {
    std::vector<double> copy = latencies_ms_;
    rows[static_cast<size_t>(latency_row_)].p50_latency_ms = Median(copy);
    rows[static_cast<size_t>(latency_row_)].p95_latency_ms = Percentile95(copy);
  }
  return rows;
}

TraceSummary TraceRecorder::Summary() const {
  TraceSummary s = totals_;
  const std::vector<TraceRow> rows = Rows();
  s.seconds = static_cast<int64_t>(rows.size());
  if (rows.empty()) return s;
  s.min_limit = rows.front().limit;
  s.max_limit = rows.front().limit;
  double limit_sum = 0;
  std::vector<double> p50s;
  for (const TraceRow& r : rows) {
    limit_sum += r.limit;
    s.min_limit = std::min(s.min_limit, r.limit);
    s.max_limit = std::max(s.max_limit, r.limit);
    s.peak_requests_per_s = std::max(s.peak_requests_per_s, static_cast<double>(r.requests));
    if (r.p50_latency_ms > 0) p50s.push_back(r.p50_latency_ms);
  }
  s.mean_limit = limit_sum / static_cast<double>(rows.size());
  s.p50_latency_ms = Median(p50s);
  // Steady state: after the warmup when the run is long enough, and without
  // the last (partial) second when there is more than one.
  size_t begin = 0, end = rows.size();
  if (end > 1) --end;
  if (static_cast<int64_t>(end) > options_.warmup_seconds * 2) {
    begin = static_cast<size_t>(options_.warmup_seconds);
  }
  uint64_t chunks = 0;
  for (size_t i = begin; i < end; ++i) chunks += rows[i].chunks;
  s.steady_chunks_per_s = static_cast<double>(chunks) / static_cast<double>(end - begin);
  return s;
}

Status TraceRecorder::WriteCsv(const std::string& path) const {
  std::string out =
      "t_s,limit,in_flight,requests_per_s,chunks_per_s,tokens_per_s,p50_latency_ms,http_429,"
      "retries,failures,p95_latency_ms,queue_reader,queue_cache,queue_embedder,queue_store,"
      "queue_aggregator\n";
  for (const TraceRow& r : Rows()) {
    out += std::to_string(r.second) + "," + Fixed(r.limit, 2) + "," + Fixed(r.in_flight, 2) + "," +
           std::to_string(r.requests) + "," + std::to_string(r.chunks) + "," +
           std::to_string(r.tokens) + "," + Fixed(r.p50_latency_ms, 3) + "," +
           std::to_string(r.http_429) + "," + std::to_string(r.retries) + "," +
           std::to_string(r.failures) + "," + Fixed(r.p95_latency_ms, 3);
    for (double depth : r.queue_depth) {
      out += ',';  // not "," + Fixed(...): GCC 12's -Wrestrict false positive at -O3
      out += Fixed(depth, 2);
    }
    out += "\n";
  }
  return WriteFile(path, out);
}

std::string TraceSummaryJson(const TraceSummary& s) {
  std::string out;
  JsonWriter w(out);
  w.BeginObject();
  w.Key("seconds").Int(s.seconds);
  w.Key("mean_limit").Double(s.mean_limit);
  w.Key("min_limit").Double(s.min_limit);
  w.Key("max_limit").Double(s.max_limit);
  w.Key("peak_requests_per_s").Double(s.peak_requests_per_s);
  w.Key("steady_chunks_per_s").Double(s.steady_chunks_per_s);
  w.Key("p50_latency_ms").Double(s.p50_latency_ms);
  w.Key("requests").Uint(s.requests);
  w.Key("chunks").Uint(s.chunks);
  w.Key("tokens").Uint(s.tokens);
  w.Key("http_429").Uint(s.http_429);
  w.Key("retries").Uint(s.retries);
  w.Key("failures").Uint(s.failures);
  w.Key("truncated").Bool(s.truncated);
  w.EndObject();
  return out;
}

Status TraceRecorder::WriteJson(const std::string& path) const {
  const TraceSummary s = Summary();
  std::string out;
  JsonWriter w(out);
  w.BeginObject();
  w.Key("resolution_s").Int(1);
  w.Key("summary").Raw(TraceSummaryJson(s));
  w.Key("rows").BeginArray();
  for (const TraceRow& r : Rows()) {
    w.BeginObject();
    w.Key("t_s").Int(r.second);
    w.Key("limit").Double(r.limit);
    w.Key("in_flight").Double(r.in_flight);
    w.Key("requests_per_s").Uint(r.requests);
    w.Key("chunks_per_s").Uint(r.chunks);
    w.Key("tokens_per_s").Uint(r.tokens);
    w.Key("p50_latency_ms").Double(r.p50_latency_ms);
    w.Key("http_429").Uint(r.http_429);
    w.Key("retries").Uint(r.retries);
    w.Key("failures").Uint(r.failures);
    w.Key("p95_latency_ms").Double(r.p95_latency_ms);
    w.Key("queue_depth").BeginObject();
    for (size_t i = 0; i < kTraceQueues; ++i) w.Key(kTraceQueueNames[i]).Double(r.queue_depth[i]);
    w.EndObject();
    w.EndObject();
  }
  w.EndArray();
  w.EndObject();
  out += "\n";
  return WriteFile(path, out);
}

}  // namespace sluice
