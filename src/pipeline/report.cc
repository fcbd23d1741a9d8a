// End-of-run reports: a human-readable summary and the JSON report.
#include <fmt/format.h>

#include "common/json_writer.h"
#include "sluice/pipeline.h"

namespace sluice {

namespace {

double ChunksPerSecond(const IngestReport& r, const Metrics& m) {
  return r.elapsed_s > 0 ? static_cast<double>(Get(m.chunks_stored)) / r.elapsed_s : 0;
}

void WriteLatency(JsonWriter& w, const LatencySummary& s) {
  w.BeginObject();
  w.Key("count").Uint(s.count);
  w.Key("p50_ms").Double(s.p50_ms);
  w.Key("p95_ms").Double(s.p95_ms);
  w.Key("p99_ms").Double(s.p99_ms);
  w.Key("max_ms").Double(s.max_ms);
  w.Key("mean_ms").Double(s.mean_ms);
  w.EndObject();
}

}  // namespace

std::string FormatReportText(const IngestReport& r, const Metrics& m) {
  std::string out;
  auto line = [&](std::string_view label, const std::string& value) {
    out += fmt::format("  {:<22}{}\n", label, value);
  };
  out += fmt::format("sluice ingest {} in {:.1f}s\n",
                     r.status.ok()
                         ? "finished"
                         : (r.status.code() == StatusCode::kCancelled ? "stopped" : "FAILED"),
                     r.elapsed_s);
  if (!r.status.ok()) line("error", r.status.ToString());
  line("embedder", r.embedder_description);
  line("store", r.store_description);
  line("sources", fmt::format("{} ok, {} skipped, {} failed", Get(m.sources_ok),
                              Get(m.sources_skipped), Get(m.sources_failed)));
  for (const auto& [reason, n] : r.skipped_reasons)
    line("  skipped", fmt::format("{} ({})", n, reason));
  if (Get(m.invalid_utf8_replaced) > 0 || Get(m.latin1_fallbacks) > 0) {
    line("encoding", fmt::format("{} invalid UTF-8 bytes replaced, {} files read as Latin-1",
                                 Get(m.invalid_utf8_replaced), Get(m.latin1_fallbacks)));
  }
  if (r.sources_unchanged > 0 || r.sources_completed > 0 || r.sources_deleted > 0) {
    line("incremental",
         fmt::format("{} unchanged (skipped), {} fingerprinted, {} deleted (gone from the roots)",
                     r.sources_unchanged, r.sources_completed, r.sources_deleted));
  }
  line("chunks",
       fmt::format("{} produced = {} stored + {} dead-lettered + {} abandoned{}",
                   Get(m.chunks_produced), Get(m.chunks_stored), Get(m.chunks_dead_lettered),
                   r.chunks_abandoned, r.reconciled ? "" : "  (DOES NOT RECONCILE)"));
  if (r.chunks_abandoned > 0) {
    line("  abandoned", fmt::format("{} (stopped before storing; rerun the same command to resume)",
                                    r.chunks_abandoned));
  }
  if (r.chunks_deleted_stale > 0) {
    line("  deleted", fmt::format("{} stale chunks", r.chunks_deleted_stale));
  }
  line("embedding cache", r.embedding_cache
                              ? fmt::format("{} hits, {} requests and ~{} tokens saved",
                                            r.cache_hits, r.api_requests_saved, r.api_tokens_saved)
                              : std::string("off"));
  for (const auto& [reason, n] : r.dead_letter_reasons) {
    line("  dead-lettered", fmt::format("{} ({})", n, reason));
  }
  line("throughput", fmt::format("{:.0f} chunks/s, {} prompt tokens", ChunksPerSecond(r, m),
                                 Get(m.prompt_tokens)));
  if (r.estimated_cost_usd) line("estimated cost", fmt::format("${:.4f}", *r.estimated_cost_usd));
  line("requests",
       fmt::format("{} sent, {} ok, {} retries, {} rate-limited (429), {} server errors, "
                   "{} transport errors, {} malformed",
                   Get(m.requests), Get(m.requests_ok), Get(m.retries), Get(m.rate_limited),
                   Get(m.server_errors), Get(m.transport_errors), Get(m.malformed_responses)));
  const LatencySummary embed = m.embed_latency.Summary();
  line("embed latency", fmt::format("p50 {:.1f} ms, p95 {:.1f} ms, p99 {:.1f} ms", embed.p50_ms,
                                    embed.p95_ms, embed.p99_ms));
  const LatencySummary store = m.store_latency.Summary();
  line("store latency",
       fmt::format("p50 {:.1f} ms, p95 {:.1f} ms, p99 {:.1f} ms ({} batches, {} retries)",
                   store.p50_ms, store.p95_ms, store.p99_ms, Get(m.store_batches),
                   Get(m.store_retries)));
  std::string queues;
  for (const auto& [name, n] : r.queue_high_water) {
    if (!queues.empty()) queues += ", ";
    queues += fmt::format("{} {}", name, n);
  }
  line("queue high water", queues);
  if (!r.trace_summary.empty()) line("controller", r.trace_summary);
  // "read 1.2s, cache 0.3s, ..." of one StageMetrics counter, leaving out the
  // stages below `at_least_ns`.
  const auto per_stage = [&m](Counter StageMetrics::*field, uint64_t at_least_ns) {
    std::string out;
    for (const NamedStageMetrics& s : StagesOf(m)) {
      const uint64_t ns = Get(s.stage.*field);
      if (ns < at_least_ns) continue;
      if (!out.empty()) out += ", ";
      out += fmt::format("{} {:.1f}s", s.name, static_cast<double>(ns) / 1e9);
    }
    return out;
  };
  line("stage busy time", per_stage(&StageMetrics::busy_ns, 0));
  // Time held back by a full queue downstream, where a stage had any: not
  // counted as busy above.
  const std::string blocked = per_stage(&StageMetrics::blocked_ns, 50'000'000);
  if (!blocked.empty()) line("blocked downstream", blocked);
  std::string cpu = per_stage(&StageMetrics::cpu_ns, 0);
  if (r.cpu_cores > 0) {
    cpu += fmt::format(" (the whole process {:.1f}s in {:.1f}s on {} cores)", r.process_cpu_s,
                       r.elapsed_s, r.cpu_cores);
  }
  line("stage CPU time", cpu);
  if (!r.bottleneck_stage.empty()) {
    line("bottleneck",
         r.cpu_bound ? fmt::format("{} stage, the most CPU of a run that kept its {} cores {:.0f}% "
                                   "busy",
                                   r.bottleneck_stage, r.cpu_cores,
                                   100.0 * r.process_cpu_s / (r.elapsed_s * r.cpu_cores))
                     : r.bottleneck_stage + " stage");
  }
  for (const auto& [format, p] : m.parse_times.Snapshot()) {
    const double secs = static_cast<double>(p.busy_ns) / 1e9;
    line("  parse " + format,
         fmt::format("{} files, {:.1f} MB in {:.2f}s ({:.1f} MB/s)", p.files,
                     static_cast<double>(p.bytes) / 1e6, secs,
                     secs > 0 ? static_cast<double>(p.bytes) / 1e6 / secs : 0.0));
  }
  if (Get(m.aggregate_files_written) > 0) {
    line("aggregate files", std::to_string(Get(m.aggregate_files_written)));
  }
  return out;
}

std::string FormatReportJson(const IngestReport& r, const Metrics& m) {
  std::string out;
  JsonWriter w(out);
  w.BeginObject();
  w.Key("status").String(r.status.ok() ? "ok" : StatusCodeName(r.status.code()));
  if (!r.status.ok()) w.Key("error").String(r.status.message());
  w.Key("embedder").String(r.embedder_description);
  w.Key("store").String(r.store_description);
  w.Key("sources_ok").Uint(Get(m.sources_ok));
  w.Key("sources_skipped").Uint(Get(m.sources_skipped));
  w.Key("sources_failed").Uint(Get(m.sources_failed));
  w.Key("skipped_reasons").BeginObject();
  for (const auto& [reason, n] : r.skipped_reasons) w.Key(reason).Uint(n);
  w.EndObject();
  w.Key("invalid_utf8_bytes_replaced").Uint(Get(m.invalid_utf8_replaced));
  w.Key("latin1_fallbacks").Uint(Get(m.latin1_fallbacks));
  w.Key("bytes_read").Uint(Get(m.bytes_read));
  w.Key("chunks_produced").Uint(Get(m.chunks_produced));
  w.Key("chunks_stored").Uint(Get(m.chunks_stored));
  w.Key("chunks_dead_lettered").Uint(Get(m.chunks_dead_lettered));
  w.Key("dead_letter_reasons").BeginObject();
  for (const auto& [reason, n] : r.dead_letter_reasons) w.Key(reason).Uint(n);
  w.EndObject();
  w.Key("chunks_abandoned").Uint(r.chunks_abandoned);
  w.Key("chunks_deleted_stale").Uint(r.chunks_deleted_stale);
  w.Key("sources_unchanged").Uint(r.sources_unchanged);
  w.Key("sources_touched").Uint(r.sources_touched);
  w.Key("sources_completed").Uint(r.sources_completed);
  w.Key("sources_deleted").Uint(r.sources_deleted);
  w.Key("embedding_cache").Bool(r.embedding_cache);
  w.Key("cache_hits").Uint(r.cache_hits);
  w.Key("api_requests_saved").Uint(r.api_requests_saved);
  w.Key("api_tokens_saved").Uint(r.api_tokens_saved);
  w.Key("reconciled").Bool(r.reconciled);
  w.Key("requests").Uint(Get(m.requests));
  w.Key("requests_ok").Uint(Get(m.requests_ok));
  w.Key("retries").Uint(Get(m.retries));
  w.Key("rate_limited").Uint(Get(m.rate_limited));
  w.Key("server_errors").Uint(Get(m.server_errors));
  w.Key("transport_errors").Uint(Get(m.transport_errors));
  w.Key("malformed_responses").Uint(Get(m.malformed_responses));
  w.Key("oversize_inputs").Uint(Get(m.oversize_inputs));
  w.Key("prompt_tokens").Uint(Get(m.prompt_tokens));
  w.Key("tokens").Uint(Get(m.prompt_tokens));
  w.Key("estimated_cost_usd");
  if (r.estimated_cost_usd) {
    w.Double(*r.estimated_cost_usd);
  } else {
    w.Null();
  }
  w.Key("embed_latency");
  WriteLatency(w, m.embed_latency.Summary());
  w.Key("store_latency");
  WriteLatency(w, m.store_latency.Summary());
  w.Key("store_batches").Uint(Get(m.store_batches));
  w.Key("store_retries").Uint(Get(m.store_retries));
  w.Key("aggregate_files_written").Uint(Get(m.aggregate_files_written));
  w.Key("queue_high_water").BeginObject();
  for (const auto& [name, n] : r.queue_high_water) w.Key(name).Uint(n);
  w.EndObject();
  if (!r.trace_summary_json.empty()) w.Key("controller").Raw(r.trace_summary_json);
  w.Key("stages").BeginObject();
  for (const NamedStageMetrics& s : StagesOf(m)) {
    w.Key(s.name).BeginObject();
    w.Key("items_in").Uint(Get(s.stage.items_in));
    w.Key("items_out").Uint(Get(s.stage.items_out));
    w.Key("bytes").Uint(Get(s.stage.bytes));
    w.Key("errors").Uint(Get(s.stage.errors));
    w.Key("dead_lettered").Uint(Get(s.stage.dead_lettered));
    w.Key("busy_s").Double(static_cast<double>(Get(s.stage.busy_ns)) / 1e9);
    w.Key("blocked_s").Double(static_cast<double>(Get(s.stage.blocked_ns)) / 1e9);
    w.Key("cpu_s").Double(static_cast<double>(Get(s.stage.cpu_ns)) / 1e9);
    w.EndObject();
  }
  w.EndObject();
  w.Key("bottleneck_stage").String(r.bottleneck_stage);
  w.Key("cpu_bound").Bool(r.cpu_bound);
  w.Key("process_cpu_s").Double(r.process_cpu_s);
  w.Key("cpu_cores").Int(r.cpu_cores);
  w.Key("parse_formats").BeginObject();
  for (const auto& [format, p] : m.parse_times.Snapshot()) {
    w.Key(format).BeginObject();
    w.Key("files").Uint(p.files);
    w.Key("bytes").Uint(p.bytes);
    w.Key("busy_s").Double(static_cast<double>(p.busy_ns) / 1e9);
    w.EndObject();
  }
  w.EndObject();
  w.Key("elapsed_s").Double(r.elapsed_s);
  w.Key("chunks_per_s").Double(ChunksPerSecond(r, m));
  if (!r.handoff_json.empty()) w.Key("handoff").Raw(r.handoff_json);
  w.EndObject();
  out.push_back('\n');
  return out;
}

}  // namespace sluice
