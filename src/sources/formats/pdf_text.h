// Turning the text poppler gives for one page into paragraphs: lines joined,
// line-end hyphens of split words removed ("infor-" + "mation"), soft hyphens
// dropped, typographic ligatures (U+FB00..U+FB06) spelled out, control
// characters removed. Separate from the parser so tests and the fuzzer can
// drive it without a PDF.
//
// Thread safety: pure function.
#pragma once

#include <string>
#include <string_view>
#include <vector>

namespace sluice::formats {

// `page_text` is poppler's reading-order text (one text block per line,
// blank lines between flows; some versions keep the block's wrapped lines).
// Returns the page's paragraphs, each non-empty valid UTF-8 on one line.
std::vector<std::string> PdfPageParagraphs(std::string_view page_text);

}  // namespace sluice::formats
