// UTF-8 helpers: validation with repair (invalid bytes become U+FFFD) and
// finding safe cut points so no chunk ever splits a multi-byte sequence.
// Thread safety: pure functions.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace sluice {

// Length of the valid UTF-8 sequence starting at s[i], or 0 if invalid
// (overlong forms, surrogates and code points above U+10FFFF are invalid).
size_t Utf8SequenceLength(std::string_view s, size_t i);

bool IsValidUtf8(std::string_view s);

// Appends `in` to `out`, replacing each maximal invalid subsequence by U+FFFD.
// Returns the number of invalid bytes replaced.
uint64_t AppendRepairedUtf8(std::string_view in, std::string& out);

// The largest position <= pos that is not inside a multi-byte sequence.
// REQUIRES: s is valid UTF-8.
size_t Utf8BoundaryAtOrBefore(std::string_view s, size_t pos);

// Number of bytes at the end of `s` that form an incomplete (but so far
// valid) UTF-8 sequence, for streaming decoders that read in blocks.
size_t Utf8IncompleteTail(std::string_view s);

// Appends the UTF-8 encoding of `code_point` (U+FFFD when invalid).
void AppendUtf8(uint32_t code_point, std::string& out);

}  // namespace sluice
