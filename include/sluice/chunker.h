// The chunker cuts documents into chunks of a token budget with overlap. It is
// a DocumentSink, so parsers push blocks straight into it and chunks leave as
// soon as they are complete (bounded memory whatever the document size).
//
// Cuts fall at a section boundary when possible, then at a paragraph, a
// sentence, a word, and never inside a UTF-8 sequence. Each chunk carries its
// heading path and page range in its metadata.
//
// Thread safety: one Chunker per thread.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>

#include "sluice/parser.h"
#include "sluice/status.h"
#include "sluice/types.h"

namespace sluice {

struct ChunkerOptions {
  uint32_t chunk_tokens = 512;   // Default: 512. Budget per chunk (estimated tokens).
  uint32_t overlap_tokens = 64;  // Default: 64. Must be < chunk_tokens.
  double chars_per_token = 4.0;  // Default: 4.0. Estimation ratio (bytes of UTF-8 per token).
};

// Estimated tokens of `text` under `chars_per_token` (at least 1 for non-empty text).
uint32_t EstimateTokens(std::string_view text, double chars_per_token);

// Stable chunk id: lower-case hex of XXH3-128 over source_id, '\0', ordinal
// (decimal), '\0', text.
std::string MakeChunkId(std::string_view source_id, uint32_t ordinal, std::string_view text);

class Chunker final : public DocumentSink {
 public:
  using EmitFn = std::function<Status(Chunk&&)>;
  // REQUIRES: options.overlap_tokens < options.chunk_tokens.
  Chunker(ChunkerOptions options, EmitFn emit);
  ~Chunker() override;
  Chunker(const Chunker&) = delete;
  Chunker& operator=(const Chunker&) = delete;

  Status BeginDocument(const SourceInfo& info) override;
  Status AddBlock(const TextBlock& block) override;
  Status EndDocument() override;

  // Chunks emitted for the current/last document.
  uint32_t ChunksInDocument() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace sluice
