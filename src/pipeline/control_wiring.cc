#include "pipeline/control_wiring.h"

namespace sluice {

std::unique_ptr<ConcurrencyLimiter> MakeLimiter(const IngestOptions& options) {
  // Until the adaptive controller lands, 0 (adaptive) falls back to 16.
  return MakeFixedLimiter(options.concurrency > 0 ? static_cast<size_t>(options.concurrency) : 16);
}

std::unique_ptr<RatePacer> MakePacer(const IngestOptions&) { return MakeCooldownOnlyPacer(); }

struct TraceHook::Impl {};

TraceHook::TraceHook(const IngestOptions&, EmbedStage&, Metrics&)
    : impl_(std::make_unique<Impl>()) {}
TraceHook::~TraceHook() = default;
TraceHook::TraceHook(TraceHook&&) noexcept = default;
void TraceHook::Finish(IngestReport&) {}

}  // namespace sluice
