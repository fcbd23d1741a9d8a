// Internal factories of the text-family parsers (registered together by
// RegisterTextParsers in text_parser.cc).
// Thread safety: the parsers are immutable; Parse() is reentrant.
#pragma once

#include <memory>

#include "sluice/parser.h"

namespace sluice::sources_internal {

std::unique_ptr<Parser> MakeTextParser();
std::unique_ptr<Parser> MakeMarkdownParser();
std::unique_ptr<Parser> MakeJsonlParser();

// Fails inputs bigger than limits.max_file_bytes (when set).
Status CheckFileSize(const SourceFile& file, const ParseLimits& limits);

}  // namespace sluice::sources_internal
