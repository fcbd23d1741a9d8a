// Standard base64 (RFC 4648: A-Z a-z 0-9 + /, '=' padding), the encoding of
// the embeddings API's `encoding_format: "base64"`. One implementation for
// the HTTP client's decoder and the simulated API's encoder.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>

namespace sluice {

// Appends the base64 of `bytes`, padded with '=' to a multiple of 4.
void AppendBase64(std::span<const uint8_t> bytes, std::string& out);

// The number of bytes `b64` decodes to (padding optional), or SIZE_MAX when
// its length is not one of base64 (more than two '=', or 4k+1 characters).
size_t Base64DecodedSize(std::string_view b64);

// Decodes `b64` into `out`, which must hold Base64DecodedSize(b64) bytes.
// Returns the offset of the first character outside the alphabet, or
// std::string_view::npos when all were valid.
size_t DecodeBase64(std::string_view b64, std::span<uint8_t> out);

}  // namespace sluice
