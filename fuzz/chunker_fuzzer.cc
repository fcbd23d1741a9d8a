// libFuzzer target for the Chunker (src/chunking): the first bytes pick the
// options, the rest becomes blocks (split at blank lines, kind and heading
// level from a byte each). Every chunk must be valid UTF-8, non-empty, with
// consecutive ordinals and a JSON-object metadata.
#include <cstdint>
#include <string>

#include "common/utf8.h"
#include "fuzz_util.h"
#include "sluice/chunker.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 4) return 0;
  sluice::ChunkerOptions options;
  options.chunk_tokens = 8 + data[0] % 120;
  options.overlap_tokens = data[1] % options.chunk_tokens;
  options.chars_per_token = 1.0 + (data[2] % 8);
  const uint8_t kinds = data[3];
  std::string text;
  sluice::AppendRepairedUtf8(std::string_view(reinterpret_cast<const char*>(data + 4), size - 4),
                             text);

  uint32_t expected_ordinal = 0;
  sluice::Chunker chunker(options, [&](sluice::Chunk&& chunk) -> sluice::Status {
    if (!sluice::IsValidUtf8(chunk.text)) sluice::fuzz::ContractBroken("chunk not UTF-8");
    if (chunk.text.empty()) sluice::fuzz::ContractBroken("empty chunk");
    if (chunk.ordinal != expected_ordinal++) sluice::fuzz::ContractBroken("ordinal gap");
    if (chunk.source_id != "fuzz") sluice::fuzz::ContractBroken("source_id");
    if (chunk.metadata_json.empty() || chunk.metadata_json.front() != '{') {
      sluice::fuzz::ContractBroken("metadata_json");
    }
    if (chunk.byte_begin > chunk.byte_end) sluice::fuzz::ContractBroken("byte range");
    return sluice::Status::OK();
  });
  sluice::SourceInfo info;
  info.source_id = "fuzz";
  info.title = "Fuzz";
  if (!chunker.BeginDocument(info).ok()) return 0;
  size_t pos = 0;
  int index = 0;
  while (pos < text.size()) {
    size_t end = text.find("\n\n", pos);
    if (end == std::string::npos) end = text.size();
    sluice::TextBlock block;
    block.text = text.substr(pos, end - pos);
    pos = end + 2;
    if (block.text.empty()) continue;
    const int selector = (kinds >> (2 * (index++ % 4))) & 3;
    if (selector == 1) {
      block.kind = sluice::BlockKind::kHeading;
      block.heading_level = 1 + static_cast<int>(block.text.size() % 6);
    } else if (selector == 2) {
      block.kind = sluice::BlockKind::kCode;
    } else if (selector == 3) {
      block.kind = sluice::BlockKind::kListItem;
    }
    block.page = index / 3;
    if (!chunker.AddBlock(block).ok()) return 0;
  }
  (void)chunker.EndDocument();
  return 0;
}
