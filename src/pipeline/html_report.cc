// The HTML run report: inline SVG drawn here, so the page needs no script and
// renders the same offline, in a browser with scripts disabled, or printed.
#include "sluice/html_report.h"

#include <algorithm>
#include <cmath>
#include <functional>

#include <fmt/format.h>

#include "common/private_file.h"
#include "common/utf8.h"

namespace sluice {

namespace {

// Nothing may load: the only sources the policy allows are the inline styles.
// A blocked load shows as a console error, which the browser test looks for.
constexpr const char* kContentSecurityPolicy =
    "default-src 'none'; style-src 'unsafe-inline'; img-src 'none'; script-src 'none'; "
    "base-uri 'none'; form-action 'none'";

constexpr const char* kStyle = R"(
body{font:14px/1.4 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:24px;color:#1d2330;background:#fff}
h1{font-size:22px;margin:0 0 4px}h2{font-size:17px;margin:28px 0 8px}
.sub{color:#5a6270;margin:2px 0}.bad{color:#b42318;font-weight:600}.ok{color:#067647;font-weight:600}
.cards{display:flex;flex-wrap:wrap;gap:10px;margin:16px 0}
.card{border:1px solid #d8dce3;border-radius:6px;padding:8px 12px;min-width:120px}
.card b{display:block;font-size:18px}.card span{color:#5a6270;font-size:12px}
.charts{display:grid;grid-template-columns:repeat(auto-fill,minmax(520px,1fr));gap:16px}
figure{margin:0;border:1px solid #d8dce3;border-radius:6px;padding:8px}
figcaption{font-weight:600;margin-bottom:4px}
svg{width:100%;height:auto;display:block}
.legend span{margin-right:12px;font-size:12px}.legend i{display:inline-block;width:10px;height:10px;margin-right:4px;border-radius:2px}
table{border-collapse:collapse;margin:4px 0 12px}td,th{border-bottom:1px solid #e6e8ec;padding:3px 10px;text-align:left}
td.n{text-align:right;font-variant-numeric:tabular-nums}
.none{color:#8a919c;font-style:italic}
)";

struct Series {
  std::string name;
  const char* color;
  std::vector<double> values;
};

// An axis label: integers as such, else up to 3 significant digits.
std::string Num(double v) {
  if (v == std::floor(v) && std::fabs(v) < 1e15) return fmt::format("{:.0f}", v);
  return fmt::format("{:.3g}", v);
}

// The smallest "nice" value (1, 2, 2.5 or 5 x 10^k) at or above `v`.
double NiceCeiling(double v) {
  if (v <= 0) return 1;
  const double magnitude = std::pow(10.0, std::floor(std::log10(v)));
  for (double step : {1.0, 2.0, 2.5, 5.0, 10.0}) {
    if (step * magnitude >= v) return step * magnitude;
  }
  return 10 * magnitude;
}

// Averages `values` over buckets of `bucket` consecutive seconds.
std::vector<double> Downsample(const std::vector<double>& values, size_t bucket) {
  if (bucket <= 1) return values;
  std::vector<double> out;
  for (size_t i = 0; i < values.size(); i += bucket) {
    const size_t end = std::min(values.size(), i + bucket);
    double sum = 0;
    for (size_t j = i; j < end; ++j) sum += values[j];
    out.push_back(sum / static_cast<double>(end - i));
  }
  return out;
}

// One line chart: x is the run's seconds, one polyline per series.
std::string LineChart(std::string_view id, std::string_view title, std::string_view unit,
                      const std::vector<Series>& series, size_t seconds, size_t bucket) {
  constexpr double kWidth = 560, kHeight = 220, kLeft = 52, kRight = 12, kTop = 10, kBottom = 26;
  constexpr double kPlotW = kWidth - kLeft - kRight, kPlotH = kHeight - kTop - kBottom;
  std::string out = fmt::format("<figure id=\"{}\"><figcaption>{}</figcaption>\n", id, title);
  out += "<div class=\"legend\">";
  for (const Series& s : series) {
    out +=
        fmt::format("<span><i style=\"background:{}\"></i>{}</span>", s.color, HtmlEscape(s.name));
  }
  out += "</div>\n";
  out += fmt::format(
      "<svg class=\"chart\" viewBox=\"0 0 {:.0f} {:.0f}\" role=\"img\" aria-label=\"{}\">\n",
      kWidth, kHeight, title);
  double max_value = 0;
  size_t points = 0;
  for (const Series& s : series) {
    points = std::max(points, s.values.size());
    for (double v : s.values) max_value = std::max(max_value, v);
  }
  // Four grid steps of a round size (1, 2, 2.5 or 5 x 10^k).
  const double y_max = 4 * NiceCeiling(max_value / 4);
  // Grid and y labels.
  for (int i = 0; i <= 4; ++i) {
    const double y = kTop + kPlotH - kPlotH * i / 4;
    out += fmt::format(
        "<line x1=\"{:.0f}\" y1=\"{:.1f}\" x2=\"{:.0f}\" y2=\"{:.1f}\" stroke=\"#e6e8ec\"/>"
        "<text x=\"{:.0f}\" y=\"{:.1f}\" font-size=\"11\" text-anchor=\"end\" fill=\"#5a6270\">{}"
        "</text>\n",
        kLeft, y, kWidth - kRight, y, kLeft - 6, y + 4, Num(y_max * i / 4));
  }
  const double x_span = static_cast<double>(std::max<size_t>(1, seconds));
  out += fmt::format(
      "<text x=\"{:.0f}\" y=\"{:.0f}\" font-size=\"11\" fill=\"#5a6270\">0 s</text>"
      "<text x=\"{:.0f}\" y=\"{:.0f}\" font-size=\"11\" text-anchor=\"end\" fill=\"#5a6270\">{} s"
      "</text><text x=\"{:.0f}\" y=\"{:.0f}\" font-size=\"11\" text-anchor=\"middle\" "
      "fill=\"#5a6270\">{}</text>\n",
      kLeft, kHeight - 8, kWidth - kRight, kHeight - 8, seconds, kLeft + kPlotW / 2, kHeight - 8,
      unit);
  if (points == 0) {
    out += fmt::format(
        "<text x=\"{:.0f}\" y=\"{:.0f}\" text-anchor=\"middle\" fill=\"#8a919c\">no data</text>\n",
        kLeft + kPlotW / 2, kTop + kPlotH / 2);
  }
  for (const Series& s : series) {
    if (s.values.empty()) continue;
    std::string coords;
    auto point = [&](double second, double v) {
      const double x = kLeft + kPlotW * std::min(1.0, second / x_span);
      const double y = kTop + kPlotH - kPlotH * std::clamp(v / y_max, 0.0, 1.0);
      coords += fmt::format("{:.1f},{:.1f} ", x, y);
    };
    for (size_t i = 0; i < s.values.size(); ++i) {
      point(static_cast<double>(i * bucket), s.values[i]);
    }
    // One sample still draws a line: across its second.
    if (s.values.size() == 1) point(static_cast<double>(bucket), s.values[0]);
    coords.pop_back();
    out += fmt::format(
        "<polyline class=\"series\" data-series=\"{}\" fill=\"none\" stroke=\"{}\" "
        "stroke-width=\"1.6\" points=\"{}\"/>\n",
        HtmlEscape(s.name), s.color, coords);
  }
  out += "</svg></figure>\n";
  return out;
}

std::string Card(std::string_view label, const std::string& value) {
  return fmt::format("<div class=\"card\"><b>{}</b><span>{}</span></div>", HtmlEscape(value),
                     HtmlEscape(label));
}

std::string Row(std::string_view label, const std::string& value) {
  return fmt::format("<tr><th>{}</th><td class=\"n\">{}</td></tr>\n", HtmlEscape(label),
                     HtmlEscape(value));
}

template <typename Map>
std::string CountTable(const Map& counts, std::string_view empty) {
  if (counts.empty()) return fmt::format("<p class=\"none\">{}</p>\n", HtmlEscape(empty));
  std::string out = "<table>\n";
  for (const auto& [name, n] : counts) out += Row(name, std::to_string(n));
  return out + "</table>\n";
}

std::string LatencyRow(std::string_view label, const LatencySummary& s) {
  return fmt::format(
      "<tr><th>{}</th><td class=\"n\">{}</td><td class=\"n\">{:.1f}</td><td class=\"n\">{:.1f}"
      "</td><td class=\"n\">{:.1f}</td><td class=\"n\">{:.1f}</td></tr>\n",
      HtmlEscape(label), s.count, s.p50_ms, s.p95_ms, s.p99_ms, s.max_ms);
}

std::string FormatSeconds(double s) {
  if (s < 60) return fmt::format("{:.1f} s", s);
  const auto total = static_cast<int64_t>(s);
  if (total < 3600) return fmt::format("{}m{:02}s", total / 60, total % 60);
  return fmt::format("{}h{:02}m{:02}s", total / 3600, (total / 60) % 60, total % 60);
}

}  // namespace

std::string HtmlEscape(std::string_view text) {
  std::string valid;
  if (!IsValidUtf8(text)) {
    AppendRepairedUtf8(text, valid);
    text = valid;
  }
  std::string out;
  out.reserve(text.size());
  for (char c : text) {
    switch (c) {
      case '&':
        out += "&amp;";
        break;
      case '<':
        out += "&lt;";
        break;
      case '>':
        out += "&gt;";
        break;
      case '"':
        out += "&quot;";
        break;
      case '\'':
        out += "&#39;";
        break;
      default:
        out += c;
    }
  }
  return out;
}

std::string RenderHtmlReport(const IngestReport& r, const Metrics& m,
                             const std::vector<TraceRow>& rows, const HtmlReportOptions& options) {
  const size_t max_points = std::max<size_t>(2, options.max_points);
  const size_t bucket = std::max<size_t>(1, (rows.size() + max_points - 1) / max_points);
  auto column = [&](const std::function<double(const TraceRow&)>& get) {
    std::vector<double> values;
    values.reserve(rows.size());
    for (const TraceRow& row : rows) values.push_back(get(row));
    return Downsample(values, bucket);
  };
  const size_t seconds = rows.size();

  const char* outcome = r.status.ok()                               ? "finished"
                        : r.status.code() == StatusCode::kCancelled ? "stopped"
                                                                    : "FAILED";
  const uint64_t stored = Get(m.chunks_stored);
  const double chunks_per_s = r.elapsed_s > 0 ? static_cast<double>(stored) / r.elapsed_s : 0;

  std::string out;
  out.reserve(64 * 1024);
  out += "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\n";
  out += fmt::format("<meta http-equiv=\"Content-Security-Policy\" content=\"{}\">\n",
                     kContentSecurityPolicy);
  out += "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n";
  out += "<title>sluice run report</title>\n<style>";
  out += kStyle;
  out += "</style></head><body>\n";

  out += fmt::format("<h1>sluice run report: <span class=\"{}\">{}</span> in {}</h1>\n",
                     r.status.ok() ? "ok" : "bad", outcome, FormatSeconds(r.elapsed_s));
  if (!options.inputs.empty()) {
    std::string inputs;
    for (const std::string& input : options.inputs) {
      if (!inputs.empty()) inputs += ", ";
      inputs += input;
    }
    out += fmt::format("<p class=\"sub\">inputs: {}</p>\n", HtmlEscape(inputs));
  }
  out += fmt::format("<p class=\"sub\">embedder: {}</p>\n", HtmlEscape(r.embedder_description));
  out += fmt::format("<p class=\"sub\">store: {}</p>\n", HtmlEscape(r.store_description));
  if (!options.generated_at.empty()) {
    out += fmt::format("<p class=\"sub\">generated {}</p>\n", HtmlEscape(options.generated_at));
  }
  if (!r.status.ok()) {
    out += fmt::format("<p class=\"bad\">{}</p>\n", HtmlEscape(r.status.ToString()));
  }

  out += "<div class=\"cards\">";
  out += Card("chunks stored", std::to_string(stored));
  out += Card("chunks/s", fmt::format("{:.1f}", chunks_per_s));
  out += Card("tokens", std::to_string(Get(m.prompt_tokens)));
  out += Card("estimated cost",
              r.estimated_cost_usd ? fmt::format("${:.4f}", *r.estimated_cost_usd) : "unknown");
  out += Card("requests", std::to_string(Get(m.requests)));
  out += Card("429s", std::to_string(Get(m.rate_limited)));
  out += Card("retries", std::to_string(Get(m.retries)));
  out += Card("chunks dead-lettered", std::to_string(Get(m.chunks_dead_lettered)));
  out += Card("sources failed", std::to_string(Get(m.sources_failed)));
  out += Card("abandoned", std::to_string(r.chunks_abandoned));
  if (!r.bottleneck_stage.empty()) out += Card("bottleneck stage", r.bottleneck_stage);
  out += "</div>\n";

  out += fmt::format("<h2>Over time</h2>\n<p class=\"sub\">{} one-second samples{}</p>\n", seconds,
                     bucket > 1 ? fmt::format(", averaged over {} s per point", bucket) : "");
  out += "<div class=\"charts\">\n";
  out += LineChart("chunks", "Chunks embedded per second", "chunks/s",
                   {{"chunks/s", "#2563eb",
                     column([](const TraceRow& t) { return static_cast<double>(t.chunks); })}},
                   seconds, bucket);
  out += LineChart("tokens", "Tokens per second", "tokens/s",
                   {{"tokens/s", "#7c3aed",
                     column([](const TraceRow& t) { return static_cast<double>(t.tokens); })}},
                   seconds, bucket);
  out += LineChart("in-flight", "Requests in flight vs the concurrency limit", "requests",
                   {{"in flight", "#0891b2", column([](const TraceRow& t) { return t.in_flight; })},
                    {"limit", "#dc2626", column([](const TraceRow& t) { return t.limit; })}},
                   seconds, bucket);
  out += LineChart("latency", "Request latency", "ms",
                   {{"p50", "#059669", column([](const TraceRow& t) { return t.p50_latency_ms; })},
                    {"p95", "#d97706", column([](const TraceRow& t) { return t.p95_latency_ms; })}},
                   seconds, bucket);
  out += LineChart(
      "errors", "429s, retries and failures per second", "per second",
      {{"429s", "#dc2626", column([](const TraceRow& t) { return double(t.http_429); })},
       {"retries", "#d97706", column([](const TraceRow& t) { return double(t.retries); })},
       {"failures", "#6b7280", column([](const TraceRow& t) { return double(t.failures); })}},
      seconds, bucket);
  {
    static constexpr const char* kQueueColors[kTraceQueues] = {"#2563eb", "#7c3aed", "#dc2626",
                                                               "#059669", "#d97706"};
    std::vector<Series> queues;
    for (size_t i = 0; i < kTraceQueues; ++i) {
      queues.push_back({kTraceQueueNames[i], kQueueColors[i],
                        column([i](const TraceRow& t) { return t.queue_depth[i]; })});
    }
    out += LineChart("queues", "Items waiting in each stage's input queue", "items", queues,
                     seconds, bucket);
  }
  out += "</div>\n";

  out += "<h2>Counts</h2>\n<table>\n";
  out += Row("sources ok / skipped / failed",
             fmt::format("{} / {} / {}", Get(m.sources_ok), Get(m.sources_skipped),
                         Get(m.sources_failed)));
  out += Row("sources unchanged (not re-read)", std::to_string(r.sources_unchanged));
  out += Row("chunks produced", std::to_string(Get(m.chunks_produced)));
  out += Row("chunks stored", std::to_string(stored));
  out += Row("chunks dead-lettered", std::to_string(Get(m.chunks_dead_lettered)));
  out += Row("chunks abandoned", std::to_string(r.chunks_abandoned));
  out += Row("reconciled", r.reconciled ? "yes" : "NO");
  out += Row("embedding cache hits", std::to_string(r.cache_hits));
  out += Row("requests sent / ok", fmt::format("{} / {}", Get(m.requests), Get(m.requests_ok)));
  out += Row("server / transport errors, malformed",
             fmt::format("{} / {} / {}", Get(m.server_errors), Get(m.transport_errors),
                         Get(m.malformed_responses)));
  if (!r.bottleneck_stage.empty()) out += Row("bottleneck stage", r.bottleneck_stage);
  out += "</table>\n";

  out += "<h2>Dead-letter reasons</h2>\n";
  out += CountTable(r.dead_letter_reasons, "nothing was dead-lettered");
  out += "<h2>Skipped sources</h2>\n";
  out += CountTable(r.skipped_reasons, "no source was skipped");

  out +=
      "<h2>Latency</h2>\n<table>\n<tr><th></th><th>count</th><th>p50 ms</th><th>p95 ms</th>"
      "<th>p99 ms</th><th>max ms</th></tr>\n";
  out += LatencyRow("embedding requests", m.embed_latency.Summary());
  out += LatencyRow("store transactions", m.store_latency.Summary());
  out += "</table>\n";

  out +=
      "<h2>Stages</h2>\n<table>\n<tr><th>stage</th><th>busy</th><th>queue high water</th>"
      "</tr>\n";
  {
    // Queue names in the report's high-water map, by the stage reading them.
    static constexpr const char* kQueueOf[kTraceQueues] = {"files", "chunks", "embed", "vectors",
                                                           "aggregate"};
    const StageMetrics* stages[kTraceQueues] = {&m.reader, &m.cache, &m.embedder, &m.store,
                                                &m.aggregator};
    for (size_t i = 0; i < kTraceQueues; ++i) {
      const uint64_t busy_ns = Get(stages[i]->busy_ns);
      const auto high = r.queue_high_water.find(kQueueOf[i]);
      out += fmt::format("<tr><th>{}</th><td class=\"n\">{}</td><td class=\"n\">{}</td></tr>\n",
                         kTraceQueueNames[i],
                         busy_ns > 0 ? FormatSeconds(static_cast<double>(busy_ns) / 1e9) : "-",
                         high == r.queue_high_water.end() ? "-" : std::to_string(high->second));
    }
  }
  out += "</table>\n";
  if (!r.trace_summary.empty()) {
    out += fmt::format("<h2>Concurrency controller</h2>\n<p>{}</p>\n", HtmlEscape(r.trace_summary));
  }
  out += "</body></html>\n";
  return out;
}

Status WriteHtmlReport(const std::string& path, const IngestReport& report, const Metrics& metrics,
                       const HtmlReportOptions& options) {
  Status written =
      WriteFileAtomically(path, RenderHtmlReport(report, metrics, report.trace_rows, options));
  if (!written.ok()) return written.WithContext("HTML report");
  return Status::OK();
}

}  // namespace sluice
