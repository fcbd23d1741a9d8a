#include "pipeline/seen_texts.h"

#include <algorithm>

namespace sluice {

SeenTexts::SeenTexts(size_t bytes)
    : blocks_(std::max<size_t>(1, bytes / (kWordsPerBlock * sizeof(uint64_t)))),
      words_(blocks_ * kWordsPerBlock, 0) {}

// The block comes from the low half of the hash (multiply-shift, no
// modulo), the bits inside it from 9-bit slices of the high half: XXH3-128's
// halves are independent.
size_t SeenTexts::BlockStart(const Hash128Value& text) const {
  const auto block =
      static_cast<size_t>((static_cast<unsigned __int128>(text.low) * blocks_) >> 64);
  return block * kWordsPerBlock;
}

unsigned SeenTexts::BitInBlock(const Hash128Value& text, int i) {
  return static_cast<unsigned>(text.high >> (9 * i)) & 511u;
}

void SeenTexts::Add(const Hash128Value& text) {
  uint64_t* block = words_.data() + BlockStart(text);
  for (int i = 0; i < kBitsPerText; ++i) {
    const unsigned bit = BitInBlock(text, i);
    block[bit >> 6] |= uint64_t{1} << (bit & 63u);
  }
}

bool SeenTexts::MayContain(const Hash128Value& text) const {
  const uint64_t* block = words_.data() + BlockStart(text);
  for (int i = 0; i < kBitsPerText; ++i) {
    const unsigned bit = BitInBlock(text, i);
    if ((block[bit >> 6] & (uint64_t{1} << (bit & 63u))) == 0) return false;
  }
  return true;
}

}  // namespace sluice
