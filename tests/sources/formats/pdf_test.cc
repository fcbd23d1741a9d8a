// PDF parser: pages, reading order, de-hyphenation, metadata, and the broken
// and encrypted files that must be dead-lettered instead of crashing.
#include <gtest/gtest.h>

#include <filesystem>

#include "common/utf8.h"
#include "sources/formats/document_parsers.h"
#include "sources/formats/fixtures.h"
#include "sources/formats/pdf_text.h"
#include "sources/formats/test_sink.h"

namespace sluice::formats {
namespace {

using testing::CollectingErrors;
using testing::CollectingSink;
using testing::MakePdf;
using testing::PdfSpec;
using testing::TempDir;

Status ParsePdf(const std::string& path, CollectingSink& sink, ParseLimits limits = {}) {
  SourceFile file;
  file.path = path;
  file.relative_path = "books/" + std::filesystem::path(path).filename().string();
  file.size_bytes = std::filesystem::exists(path) ? std::filesystem::file_size(path) : 0;
  CollectingErrors errors;
  ParseStats stats;
  return NewPdfParser()->Parse(file, limits, sink, errors, stats);
}

PdfSpec ThreePageManual() {
  PdfSpec spec;
  spec.title = "Pump Handbook";
  spec.author = "Jane Roe";
  spec.pages.push_back(
      {{"Chapter 1 Safety", "", "Always disconnect the power supply before any mainte-",
        "nance work on the pump housing.", "", "Wear gloves when handling the impeller."}});
  spec.pages.push_back({{"Chapter 2 Operation", "", "Prime the pump with clean water."}});
  spec.pages.push_back({{"The warranty covers infor-", "mation given in this handbook."}});
  return spec;
}

TEST(PdfParserTest, TextPerPageInReadingOrderWithoutHyphenationDebris) {
  TempDir dir;
  const std::string path = dir.Write("handbook.pdf", MakePdf(ThreePageManual()));
  CollectingSink sink;
  ASSERT_TRUE(ParsePdf(path, sink).ok());
  ASSERT_EQ(sink.docs.size(), 1u);
  const auto& doc = sink.docs[0];
  EXPECT_TRUE(doc.ended);
  EXPECT_EQ(doc.info.title, "Pump Handbook");
  EXPECT_EQ(doc.info.author, "Jane Roe");
  EXPECT_EQ(doc.info.source_id, "books/handbook.pdf");
  EXPECT_EQ(doc.info.metadata_json, R"({"format":"pdf","pages":3})");

  struct Expected {
    int page;
    std::string text;
  };
  const std::vector<Expected> expected = {
      {1, "Chapter 1 Safety"},
      {1, "Always disconnect the power supply before any maintenance work on the pump housing."},
      {1, "Wear gloves when handling the impeller."},
      {2, "Chapter 2 Operation"},
      {2, "Prime the pump with clean water."},
      {3, "The warranty covers information given in this handbook."},
  };
  ASSERT_EQ(doc.blocks.size(), expected.size()) << sink.AllText();
  for (size_t i = 0; i < expected.size(); ++i) {
    EXPECT_EQ(doc.blocks[i].kind, BlockKind::kParagraph);
    EXPECT_EQ(doc.blocks[i].page, expected[i].page) << i;
    EXPECT_EQ(doc.blocks[i].text, expected[i].text) << i;
  }
  EXPECT_EQ(sink.AllText().find("mainte-"), std::string::npos);
}

TEST(PdfParserTest, SniffsMagicWithoutExtension) {
  auto parser = NewPdfParser();
  EXPECT_TRUE(parser->Sniff("%PDF-1.7\n..."));
  EXPECT_TRUE(parser->Sniff(std::string_view("\x00\x01junk%PDF-1.4", 14)));
  EXPECT_FALSE(parser->Sniff("PDF-1.4"));
  EXPECT_FALSE(parser->Sniff("<html>"));
  EXPECT_EQ(parser->Extensions(), std::vector<std::string>{"pdf"});
}

TEST(PdfParserTest, EncryptedPdfIsInvalidArgument) {
  PdfSpec spec = ThreePageManual();
  spec.encrypted = true;
  TempDir dir;
  const std::string path = dir.Write("locked.pdf", MakePdf(spec));
  CollectingSink sink;
  const Status st = ParsePdf(path, sink);
  EXPECT_EQ(st.code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(st.message(), "encrypted PDF");
  EXPECT_TRUE(sink.docs.empty());
}

TEST(PdfParserTest, TruncatedAndGarbageFilesAreCorruptNotCrashes) {
  TempDir dir;
  const std::string pdf = MakePdf(ThreePageManual());
  for (size_t keep : {size_t{0}, size_t{9}, size_t{40}}) {
    const std::string path = dir.Write("cut" + std::to_string(keep) + ".pdf", pdf.substr(0, keep));
    CollectingSink sink;
    const Status st = ParsePdf(path, sink);
    EXPECT_EQ(st.code(), StatusCode::kCorrupt) << keep << " " << st.ToString();
  }
  const std::string garbage = dir.Write("garbage.pdf", "%PDF-1.4\n\x01\x02\x03 not a pdf at all");
  CollectingSink sink;
  EXPECT_EQ(ParsePdf(garbage, sink).code(), StatusCode::kCorrupt);
}

TEST(PdfParserTest, TruncatedTailStillYieldsValidTextOrAnError) {
  // Cut inside the last page: poppler may rebuild the xref and read what is
  // left. Either outcome is fine; a crash or invalid UTF-8 is not.
  TempDir dir;
  const std::string pdf = MakePdf(ThreePageManual());
  const std::string path = dir.Write("tail.pdf", pdf.substr(0, pdf.size() * 3 / 4));
  CollectingSink sink;
  const Status st = ParsePdf(path, sink);
  if (st.ok()) {
    for (const TextBlock& b : sink.docs.at(0).blocks) EXPECT_TRUE(IsValidUtf8(b.text));
  } else {
    EXPECT_EQ(st.code(), StatusCode::kCorrupt);
  }
}

TEST(PdfParserTest, FileOverLimitIsRejected) {
  TempDir dir;
  const std::string path = dir.Write("h.pdf", MakePdf(ThreePageManual()));
  CollectingSink sink;
  ParseLimits limits;
  limits.max_file_bytes = 100;
  EXPECT_EQ(ParsePdf(path, sink, limits).code(), StatusCode::kInvalidArgument);
}

TEST(PdfPageParagraphsTest, JoinsSplitWordsAndCleansGlyphs) {
  EXPECT_EQ(PdfPageParagraphs("extraction of infor-\nmation works\n"),
            std::vector<std::string>{"extraction of information works"});
  // An upper-case continuation is a real hyphen (or a new block): kept apart.
  EXPECT_EQ(PdfPageParagraphs("see Part-\nB below"),
            (std::vector<std::string>{"see Part-", "B below"}));
  // Ligatures spelled out, soft hyphens and control characters removed.
  EXPECT_EQ(PdfPageParagraphs("e\xEF\xAC\x83"
                              "cient o\xEF\xAC\x83"
                              "ce re\xC2\xAD"
                              "use\x01"),
            std::vector<std::string>{"efficient office reuse"});
  EXPECT_EQ(PdfPageParagraphs("a\n\n\nb\n \n"), (std::vector<std::string>{"a", "b"}));
  EXPECT_TRUE(PdfPageParagraphs("").empty());
  EXPECT_TRUE(PdfPageParagraphs("\n\n   \n").empty());
}

}  // namespace
}  // namespace sluice::formats
