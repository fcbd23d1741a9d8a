// The Prometheus endpoint: serves a run's Metrics in the text exposition
// format (version 0.0.4) at GET /metrics, for `--metrics-listen HOST:PORT`.
//
// The series are built from the counters at scrape time (nothing is kept
// per scrape or per item); names follow Prometheus's conventions
// (`sluice_chunks_stored_total`, units in the name, `_seconds` histograms)
// and are documented in docs/OBSERVABILITY.md. No label ever carries
// configuration (endpoint, store URI, key): only fixed words such as a
// stage name, so no secret can reach a scraper.
//
// Thread safety: PrometheusText() may run on any thread while the pipeline
// updates the counters. A MetricsServer answers scrapes on its own thread;
// Start/Stop/destruction from one owner thread.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "sluice/metrics.h"
#include "sluice/status.h"

namespace sluice {

// The run's metrics in the Prometheus text exposition format.
std::string PrometheusText(const Metrics& metrics);

// One of several runs exported together (`sluice serve`'s running jobs).
struct LabelledRun {
  std::string label_value;  // e.g. a job id: never configuration
  const Metrics* metrics = nullptr;
};

// A gauge whose series differ by one label (e.g. jobs by state).
struct LabelledGauge {
  std::string name, help, label;
  std::vector<std::pair<std::string, double>> values;
};

// Several runs' metrics in one exposition: every series of a run carries
// `label`="its label_value" besides its own labels, and a metric name appears
// once (one HELP/TYPE) with the series of all runs under it. `gauges` come
// first. With no run, only the gauges: a scraper sees an empty, valid page.
std::string PrometheusText(const std::vector<LabelledRun>& runs, const std::string& label,
                           const std::vector<LabelledGauge>& gauges);

// A parsed `--metrics-listen` value.
struct ListenAddress {
  std::string host;  // a numeric IPv4 or IPv6 address ("localhost" is 127.0.0.1)
  uint16_t port = 0;
  bool ipv6 = false;
  bool loopback = false;  // 127.0.0.0/8 or ::1
};

// Parses "HOST:PORT" ("127.0.0.1:9464", "[::1]:9464", "localhost:0"). HOST
// must be an IP address literal or "localhost"; PORT 0..65535 (0: any free
// port). InvalidArgument naming the value otherwise.
Result<ListenAddress> ParseListenAddress(std::string_view text);

struct MetricsServerOptions {
  std::string listen = "127.0.0.1:9464";
  // Metrics say how much a run has done and costs: by default only the local
  // machine may read them. A non-loopback address (0.0.0.0, a LAN address)
  // is refused unless this is set (--metrics-allow-remote).
  bool allow_remote = false;
};

class MetricsServer {
 public:
  // Listens before returning (a scraper can connect as soon as it does).
  // InvalidArgument for a bad or (without allow_remote) non-loopback address;
  // Unavailable naming the address when it cannot be bound (in use, not an
  // address of this machine). REQUIRES: `metrics` outlives the server.
  static Result<std::unique_ptr<MetricsServer>> Start(const MetricsServerOptions& options,
                                                      const Metrics& metrics);
  virtual ~MetricsServer() = default;  // stops

  // The bound port (the one picked for port 0).
  virtual uint16_t Port() const = 0;
  // "http://HOST:PORT/metrics" with the bound port.
  virtual std::string Url() const = 0;
  // Stops listening and waits for scrapes in progress. Idempotent.
  virtual void Stop() = 0;
};

}  // namespace sluice
