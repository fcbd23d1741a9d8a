// RegisterDocumentParsers: the one registration line per document format.
#include "sluice/parser.h"
#include "sources/formats/document_parsers.h"

namespace sluice {

void RegisterDocumentParsers(ParserRegistry& registry) {
  registry.Add(formats::NewHtmlParser());
  registry.Add(formats::NewPdfParser());
  registry.Add(formats::NewEpubParser());
  registry.Add(formats::NewDocxParser());
}

}  // namespace sluice
