// Factories for the document parsers of this folder. RegisterDocumentParsers()
// (sluice/parser.h) adds all four to a registry; tests and fuzz targets build
// them one at a time here.
//
// Thread safety: the parsers are immutable; Parse() may run concurrently.
#pragma once

#include <memory>

#include "sluice/parser.h"

namespace sluice::formats {

// "html": .html .htm .xhtml; sniffs "<!DOCTYPE html" / "<html" (after BOM and
// whitespace, any case). Whole file in memory, capped (kDefaultHtmlMaxBytes).
std::unique_ptr<Parser> NewHtmlParser();
// "pdf": .pdf; sniffs "%PDF-". Page by page; locked files fail with
// InvalidArgument("encrypted PDF").
std::unique_ptr<Parser> NewPdfParser();
// "epub": .epub; sniffs a zip whose first member is "mimetype" =
// application/epub+zip. Spine order, each part through the HTML extraction.
std::unique_ptr<Parser> NewEpubParser();
// "docx": .docx; sniffs a zip that names "word/" members in its head.
std::unique_ptr<Parser> NewDocxParser();

}  // namespace sluice::formats
