// Metrics -> Prometheus metric families, written by prometheus-cpp's
// TextSerializer (Debian's maintained client library: it owns the format's
// escaping and number formatting). Only the data model and the serializer
// are used: the values live in sluice's own atomics, read once per scrape.
#include <prometheus/metric_family.h>
#include <prometheus/text_serializer.h>

#include <functional>
#include <limits>
#include <map>
#include <string>
#include <vector>

#include "sluice/metrics_server.h"

namespace sluice {
namespace {

using prometheus::ClientMetric;
using prometheus::MetricFamily;
using prometheus::MetricType;

// Every stage's metric contract, exported with a `stage` label (the stages
// and their names come from StagesOf in metrics.h; a new StageMetrics field
// is one line in kStageSeries).
struct StageSeries {
  const char* name;
  const char* help;
  MetricType type;
  std::function<double(const StageMetrics&)> value;
};

const std::vector<StageSeries>& StageSeriesTable() {
  static const std::vector<StageSeries> kStageSeries = {
      {"sluice_stage_items_in_total", "Items the stage took from its input.", MetricType::Counter,
       [](const StageMetrics& s) { return static_cast<double>(Get(s.items_in)); }},
      {"sluice_stage_items_out_total", "Items the stage passed on.", MetricType::Counter,
       [](const StageMetrics& s) { return static_cast<double>(Get(s.items_out)); }},
      {"sluice_stage_bytes_total", "Bytes the stage processed.", MetricType::Counter,
       [](const StageMetrics& s) { return static_cast<double>(Get(s.bytes)); }},
      {"sluice_stage_errors_total", "Errors the stage met (retried or not).", MetricType::Counter,
       [](const StageMetrics& s) { return static_cast<double>(Get(s.errors)); }},
      {"sluice_stage_dead_lettered_total", "Items the stage wrote to the dead-letter file.",
       MetricType::Counter,
       [](const StageMetrics& s) { return static_cast<double>(Get(s.dead_lettered)); }},
      {"sluice_stage_busy_seconds_total",
       "Time the stage's threads spent working (not blocked on a full output queue).",
       MetricType::Counter,
       [](const StageMetrics& s) { return static_cast<double>(Get(s.busy_ns)) / 1e9; }},
      {"sluice_stage_blocked_seconds_total",
       "Time the stage's threads spent blocked handing items on to a full queue.",
       MetricType::Counter,
       [](const StageMetrics& s) { return static_cast<double>(Get(s.blocked_ns)) / 1e9; }},
      {"sluice_stage_queue_depth", "Items waiting in the stage's input queue.", MetricType::Gauge,
       [](const StageMetrics& s) {
         return static_cast<double>(s.queue_depth.load(std::memory_order_relaxed));
       }},
  };
  return kStageSeries;
}

ClientMetric Value(MetricType type, double value, std::vector<ClientMetric::Label> labels = {}) {
  ClientMetric metric;
  metric.label = std::move(labels);
  if (type == MetricType::Counter) {
    metric.counter.value = value;
  } else {
    metric.gauge.value = value;
  }
  return metric;
}

class Families {
 public:
  void Counter(const char* name, const char* help, const sluice::Counter& counter) {
    One(name, help, MetricType::Counter, static_cast<double>(Get(counter)));
  }
  void Gauge(const char* name, const char* help, double value) {
    One(name, help, MetricType::Gauge, value);
  }
  void One(const char* name, const char* help, MetricType type, double value) {
    families_.push_back({name, help, type, {Value(type, value)}});
  }
  // One family whose series differ by one label.
  void Labelled(const char* name, const char* help, MetricType type, const char* label,
                const std::vector<std::pair<const char*, double>>& values) {
    MetricFamily family{name, help, type, {}};
    for (const auto& [label_value, value] : values) {
      family.metric.push_back(Value(type, value, {{label, label_value}}));
    }
    families_.push_back(std::move(family));
  }
  void Histogram(const char* name, const char* help, const sluice::Histogram& histogram) {
    const Histogram::Snapshot s = histogram.Read();
    ClientMetric metric;
    metric.histogram.sample_count = s.count;
    metric.histogram.sample_sum = s.sum;
    for (size_t i = 0; i < s.cumulative_counts.size(); ++i) {
      ClientMetric::Bucket bucket;
      bucket.cumulative_count = s.cumulative_counts[i];
      bucket.upper_bound =
          i < s.upper_bounds.size() ? s.upper_bounds[i] : std::numeric_limits<double>::infinity();
      metric.histogram.bucket.push_back(bucket);
    }
    families_.push_back({name, help, MetricType::Histogram, {std::move(metric)}});
  }
  std::vector<MetricFamily> Take() { return std::move(families_); }

 private:
  std::vector<MetricFamily> families_;
};

double Load(const std::atomic<double>& v) { return v.load(std::memory_order_relaxed); }
double Load(const std::atomic<int64_t>& v) {
  return static_cast<double>(v.load(std::memory_order_relaxed));
}

std::vector<MetricFamily> CollectFamilies(const Metrics& m) {
  Families f;
  // Sources.
  f.Counter("sluice_sources_seen_total", "Sources (files, stdin) found.", m.sources_seen);
  f.Counter("sluice_sources_ok_total", "Sources parsed and chunked.", m.sources_ok);
  f.Counter("sluice_sources_skipped_total", "Sources skipped (unsupported or empty).",
            m.sources_skipped);
  f.Counter("sluice_sources_failed_total", "Sources dead-lettered whole.", m.sources_failed);
  f.Counter("sluice_read_bytes_total", "Bytes read from the sources.", m.bytes_read);
  // Chunks: produced = stored + dead-lettered + abandoned at the end of a run.
  f.Counter("sluice_chunks_produced_total", "Chunks the readers produced.", m.chunks_produced);
  f.Counter("sluice_chunks_embedded_total", "Chunks embedded by the API or the offline embedder.",
            m.chunks_embedded);
  f.Counter("sluice_chunks_stored_total", "Chunks committed to the store.", m.chunks_stored);
  f.Counter("sluice_chunks_dead_lettered_total", "Chunks written to the dead-letter file.",
            m.chunks_dead_lettered);
  // Embedding requests.
  f.Counter("sluice_embed_requests_total", "Embedding requests sent, retries included.",
            m.requests);
  f.Counter("sluice_embed_requests_succeeded_total", "Embedding requests answered with vectors.",
            m.requests_ok);
  f.Counter("sluice_embed_retries_total", "Requests re-sent after a retryable failure.", m.retries);
  f.Labelled("sluice_embed_request_errors_total",
             "Failed embedding requests by kind (rate_limited: 429 answers).", MetricType::Counter,
             "kind",
             {{"rate_limited", static_cast<double>(Get(m.rate_limited))},
              {"server_error", static_cast<double>(Get(m.server_errors))},
              {"transport", static_cast<double>(Get(m.transport_errors))},
              {"malformed", static_cast<double>(Get(m.malformed_responses))}});
  f.Counter("sluice_embed_prompt_tokens_total", "Prompt tokens the service counted (usage).",
            m.prompt_tokens);
  f.Counter("sluice_embed_oversize_inputs_total", "Inputs split or truncated to fit the service.",
            m.oversize_inputs);
  f.Gauge("sluice_embed_requests_in_flight", "Embedding requests in flight now.",
          Load(m.in_flight));
  f.Gauge("sluice_embed_concurrency_limit", "Requests allowed in flight (the limiter's limit).",
          Load(m.concurrency_limit));
  // The rate budget: only limits that are known (--rpm/--tpm or the
  // service's x-ratelimit-* headers); an unknown limit has no series.
  const double rpm = Load(m.rate_limit_requests_per_minute);
  const double tpm = Load(m.rate_limit_tokens_per_minute);
  if (rpm > 0) {
    f.Gauge("sluice_rate_limit_requests_per_minute", "Request limit in use (learned or --rpm).",
            rpm);
    f.Gauge("sluice_rate_budget_requests_remaining", "Requests the pacer's budget holds now.",
            Load(m.rate_requests_remaining));
  }
  if (tpm > 0) {
    f.Gauge("sluice_rate_limit_tokens_per_minute", "Token limit in use (learned or --tpm).", tpm);
    f.Gauge("sluice_rate_budget_tokens_remaining", "Tokens the pacer's budget holds now.",
            Load(m.rate_tokens_remaining));
  }
  // Cost only when the model's price is known: never guessed.
  if (const double price = Load(m.price_per_mtok_usd); price >= 0) {
    f.Gauge("sluice_estimated_cost_usd", "Prompt tokens so far times the model's price.",
            static_cast<double>(Get(m.prompt_tokens)) / 1e6 * price);
  }
  f.Histogram("sluice_embed_request_duration_seconds", "Embedding request latency, send to answer.",
              m.embed_latency.histogram());
  // Store and aggregator.
  f.Counter("sluice_store_transactions_total", "Store write transactions.", m.store_batches);
  f.Counter("sluice_store_retries_total", "Store writes retried after a retryable failure.",
            m.store_retries);
  f.Histogram("sluice_store_transaction_duration_seconds", "Store write transaction latency.",
              m.store_latency.histogram());
  f.Counter("sluice_aggregate_files_written_total", "Aggregate JSON files (re)written.",
            m.aggregate_files_written);
  // Per stage.
  const auto stages = StagesOf(m);
  for (const StageSeries& series : StageSeriesTable()) {
    std::vector<std::pair<const char*, double>> values;
    for (const NamedStageMetrics& entry : stages)
      values.emplace_back(entry.name, series.value(entry.stage));
    f.Labelled(series.name, series.help, series.type, "stage", values);
  }
  // The read stage per format: which format is slow to parse.
  const std::map<std::string, FormatParseStats> formats = m.parse_times.Snapshot();
  std::vector<std::pair<const char*, double>> files, bytes, seconds;
  for (const auto& [format, p] : formats) {
    files.emplace_back(format.c_str(), static_cast<double>(p.files));
    bytes.emplace_back(format.c_str(), static_cast<double>(p.bytes));
    seconds.emplace_back(format.c_str(), static_cast<double>(p.busy_ns) / 1e9);
  }
  if (!formats.empty()) {  // a family needs a sample: none before the first file
    f.Labelled("sluice_parse_files_total", "Files parsed, by format.", MetricType::Counter,
               "format", files);
    f.Labelled("sluice_parse_bytes_total", "Bytes parsed, by format.", MetricType::Counter,
               "format", bytes);
    f.Labelled("sluice_parse_seconds_total", "Time spent parsing and chunking, by format.",
               MetricType::Counter, "format", seconds);
  }
  return f.Take();
}

}  // namespace

std::string PrometheusText(const Metrics& metrics) {
  return prometheus::TextSerializer().Serialize(CollectFamilies(metrics));
}

std::string PrometheusText(const std::vector<LabelledRun>& runs, const std::string& label,
                           const std::vector<LabelledGauge>& gauges) {
  std::vector<MetricFamily> families;
  for (const LabelledGauge& gauge : gauges) {
    MetricFamily family{gauge.name, gauge.help, MetricType::Gauge, {}};
    for (const auto& [label_value, value] : gauge.values) {
      family.metric.push_back(Value(MetricType::Gauge, value, {{gauge.label, label_value}}));
    }
    families.push_back(std::move(family));
  }
  // Every run yields the same families in the same order (CollectFamilies
  // does not depend on the values), so the first run's order is kept and the
  // others' series are appended by name.
  std::map<std::string, size_t> index_of;
  for (const LabelledRun& run : runs) {
    if (run.metrics == nullptr) continue;
    for (MetricFamily& family : CollectFamilies(*run.metrics)) {
      for (ClientMetric& metric : family.metric) {
        metric.label.insert(metric.label.begin(), ClientMetric::Label{label, run.label_value});
      }
      auto [it, added] = index_of.emplace(family.name, families.size());
      if (added) {
        families.push_back(std::move(family));
      } else {
        auto& into = families[it->second].metric;
        into.insert(into.end(), std::make_move_iterator(family.metric.begin()),
                    std::make_move_iterator(family.metric.end()));
      }
    }
  }
  return prometheus::TextSerializer().Serialize(families);
}

}  // namespace sluice
