// Parsing of the rate-limit headers OpenAI-compatible services send
// (x-ratelimit-*, Retry-After, retry-after-ms) into RateLimitInfo.
//
// Thread safety: pure functions.
#pragma once

#include <optional>
#include <string_view>

#include "sluice/embed.h"

namespace sluice {

// Parses a Go-style duration as OpenAI sends it: a sequence of
// <decimal number><unit> with unit in h, m, s, ms, us, µs, ns
// ("1s", "6m0s", "12ms", "0.5s", "1h2m3.5s"). A bare number means seconds.
// nullopt when malformed or negative.
std::optional<Duration> ParseRateLimitDuration(std::string_view text);

// Folds one raw header line ("Name: value\r\n", name case-insensitive) into
// `info`; unrelated or malformed headers are ignored. Retry-After is read as
// seconds (an HTTP-date is ignored); retry-after-ms wins over Retry-After
// whichever comes first.
void ParseRateLimitHeader(std::string_view line, RateLimitInfo& info);

}  // namespace sluice
