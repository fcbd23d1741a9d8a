#include "common/base64.h"

#include <array>
#include <cstdint>

namespace sluice {

namespace {

constexpr char kAlphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

constexpr std::array<int8_t, 256> kDecodeTable = [] {
  std::array<int8_t, 256> t{};
  t.fill(-1);
  for (int i = 0; i < 64; ++i) t[static_cast<unsigned char>(kAlphabet[i])] = static_cast<int8_t>(i);
  return t;
}();

size_t UnpaddedLength(std::string_view b64) {
  size_t n = b64.size();
  while (n > 0 && b64[n - 1] == '=') --n;
  return n;
}

}  // namespace

void AppendBase64(std::span<const uint8_t> bytes, std::string& out) {
  const size_t size = bytes.size();
  out.reserve(out.size() + (size + 2) / 3 * 4);
  size_t i = 0;
  for (; i + 3 <= size; i += 3) {
    const uint32_t v = (uint32_t{bytes[i]} << 16) | (uint32_t{bytes[i + 1]} << 8) | bytes[i + 2];
    const char quad[4] = {kAlphabet[v >> 18], kAlphabet[(v >> 12) & 63], kAlphabet[(v >> 6) & 63],
                          kAlphabet[v & 63]};
    out.append(quad, 4);
  }
  if (size - i == 1) {
    const uint32_t v = uint32_t{bytes[i]} << 16;
    const char quad[4] = {kAlphabet[v >> 18], kAlphabet[(v >> 12) & 63], '=', '='};
    out.append(quad, 4);
  } else if (size - i == 2) {
    const uint32_t v = (uint32_t{bytes[i]} << 16) | (uint32_t{bytes[i + 1]} << 8);
    const char quad[4] = {kAlphabet[v >> 18], kAlphabet[(v >> 12) & 63], kAlphabet[(v >> 6) & 63],
                          '='};
    out.append(quad, 4);
  }
}

size_t Base64DecodedSize(std::string_view b64) {
  const size_t n = UnpaddedLength(b64);
  if (b64.size() - n > 2 || n % 4 == 1) return SIZE_MAX;
  return n / 4 * 3 + (n % 4 == 0 ? 0 : n % 4 - 1);
}

size_t DecodeBase64(std::string_view b64, std::span<uint8_t> out) {
  const size_t n = UnpaddedLength(b64);
  uint32_t acc = 0;
  int bits = 0;
  size_t written = 0;
  for (size_t i = 0; i < n; ++i) {
    const int8_t v = kDecodeTable[static_cast<unsigned char>(b64[i])];
    if (v < 0) return i;
    acc = (acc << 6) | static_cast<uint32_t>(v);
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      if (written < out.size()) out[written] = static_cast<uint8_t>((acc >> bits) & 0xFF);
      ++written;
    }
  }
  return std::string_view::npos;
}

}  // namespace sluice
