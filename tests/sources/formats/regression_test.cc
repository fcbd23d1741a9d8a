// Inputs found by the fuzzers (fuzz/), one test each: every one must parse or
// fail with a Status, never crash.
//
// Findings so far:
// - fuzz_pdf: LeakSanitizer reported fontconfig allocations once poppler was
//   asked for font details (text_list_include_font). Fixed by using word box
//   heights; PdfParserTest.* under the ASan build (check-sanitize) is the
//   regression test, since any PDF page reproduced it.
// - HTML: deeply nested elements made gumbo quadratic (found while sizing
//   the limits, not by the fuzzer, whose inputs are too small to show it).
//   Regression test: HtmlParserTest.NestingUpToTheLimitParsesAndDeeperIsRejectedQuickly.
#include <gtest/gtest.h>

#include "sources/formats/document_parsers.h"
#include "sources/formats/fixtures.h"
#include "sources/formats/test_sink.h"

namespace sluice::formats {
namespace {

Status ParseBytes(const Parser& parser, const std::string& name, const std::string& bytes) {
  testing::TempDir dir;
  SourceFile file;
  file.path = dir.Write(name, bytes);
  file.relative_path = name;
  testing::CollectingSink sink;
  testing::CollectingErrors errors;
  ParseStats stats;
  return parser.Parse(file, ParseLimits{}, sink, errors, stats);
}

TEST(FormatsRegressionTest, PlaceholderEmptyInputs) {
  // Empty input to every parser: the first thing a fuzzer tries.
  EXPECT_TRUE(ParseBytes(*NewHtmlParser(), "e.html", "").ok());
  EXPECT_FALSE(ParseBytes(*NewPdfParser(), "e.pdf", "").ok());
  EXPECT_FALSE(ParseBytes(*NewEpubParser(), "e.epub", "").ok());
  EXPECT_FALSE(ParseBytes(*NewDocxParser(), "e.docx", "").ok());
}

}  // namespace
}  // namespace sluice::formats
