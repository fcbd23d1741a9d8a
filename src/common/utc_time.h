// The current time as UTC ISO 8601 to the second ("2026-12-06T20:00:00Z"):
// the form every record sluice writes for people and tools to read (job
// records, reports, dead-letter entries).
//
// Thread safety: thread-safe (gmtime_r).
#pragma once

#include <string>

namespace sluice {

std::string UtcNowIso8601();

}  // namespace sluice
