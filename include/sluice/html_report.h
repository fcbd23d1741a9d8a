// The HTML run report (--html-report FILE, --trace FILE.html, `sluice demo`):
// one self-contained page, viewable offline, with inline SVG charts of the
// 1-second controller trace (chunks/s, tokens/s, requests in flight vs the
// limit, p50/p95 latency, 429s and retries, queue depths) and the final
// counts, bottleneck stage, cost and dead-letter reasons.
//
// The page loads nothing: no script, font, image or stylesheet from outside,
// and a Content-Security-Policy that blocks (and reports as a console error)
// anything that would. Every text taken from the run (paths, reasons, error
// messages) is HTML-escaped and its invalid UTF-8 repaired.
//
// Thread safety: pure functions of their arguments.
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "sluice/control.h"
#include "sluice/metrics.h"
#include "sluice/pipeline.h"
#include "sluice/status.h"

namespace sluice {

struct HtmlReportOptions {
  std::vector<std::string> inputs;  // what was ingested, shown in the heading
  std::string generated_at;         // a timestamp shown in the heading; empty: none
  // Charts keep at most this many points per series; a longer trace is
  // averaged over buckets of whole seconds so the page stays small.
  size_t max_points = 1000;
};

// `text` escaped for HTML text and attribute values (& < > " '), invalid
// UTF-8 replaced by U+FFFD.
std::string HtmlEscape(std::string_view text);

// The whole page. `rows` is the controller trace (IngestReport::trace_rows).
std::string RenderHtmlReport(const IngestReport& report, const Metrics& metrics,
                             const std::vector<TraceRow>& rows, const HtmlReportOptions& options);

// Renders the report (rows from report.trace_rows) and writes it atomically,
// mode 0600 for a new file (it names the sources). IOError when it cannot.
Status WriteHtmlReport(const std::string& path, const IngestReport& report, const Metrics& metrics,
                       const HtmlReportOptions& options);

}  // namespace sluice
