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
      {{"@@24 Chapter 1 Safety", "", "", "Always disconnect the power supply before any mainte-",
        "nance work on the pump housing. Check the", "seals first.", "",
        "Wear gloves when handling the impeller."}});
  spec.pages.push_back({{"@@18 Operation", "", "", "Prime the pump with clean water."}});
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
    int heading_level;  // 0: a paragraph
    std::string text;
  };
  const std::vector<Expected> expected = {
      {1, 1, "Chapter 1 Safety"},
      {1, 0,
       "Always disconnect the power supply before any maintenance work on the pump housing. "
       "Check the seals first."},
      {1, 0, "Wear gloves when handling the impeller."},
      {2, 2, "Operation"},
      {2, 0, "Prime the pump with clean water."},
      {3, 0, "The warranty covers information given in this handbook."},
  };
  ASSERT_EQ(doc.blocks.size(), expected.size()) << sink.AllText();
  for (size_t i = 0; i < expected.size(); ++i) {
    EXPECT_EQ(doc.blocks[i].kind,
              expected[i].heading_level > 0 ? BlockKind::kHeading : BlockKind::kParagraph)
        << i;
    EXPECT_EQ(doc.blocks[i].heading_level, expected[i].heading_level) << i;
    EXPECT_EQ(doc.blocks[i].page, expected[i].page) << i;
    EXPECT_EQ(doc.blocks[i].text, expected[i].text) << i;
  }
  EXPECT_EQ(sink.AllText().find("mainte-"), std::string::npos);
}

TEST(PdfParserTest, ParsesTheBytesTheReaderAlreadyHas) {
  TempDir dir;
  testing::ExpectSameParseFromContents(*NewPdfParser(), dir.path(), "handbook.pdf",
                                       MakePdf(ThreePageManual()));
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

// Words on 12 pt lines 16 pt apart, as poppler reports them.
std::vector<PdfWord> WordsOnLines(const std::vector<std::vector<std::string>>& lines,
                                  double font_size = 12) {
  std::vector<PdfWord> words;
  double top = 100;
  for (const auto& line : lines) {
    double left = 72;
    for (size_t i = 0; i < line.size(); ++i) {
      const double width = 6.0 * static_cast<double>(line[i].size());
      words.push_back(
          {line[i], left, top, left + width, top + font_size, i + 1 < line.size(), font_size});
      left += width + 3;
    }
    top += line.empty() ? 16 : font_size + 4;
  }
  return words;
}

std::vector<std::string> Texts(const std::vector<PdfParagraph>& paragraphs) {
  std::vector<std::string> out;
  for (const auto& p : paragraphs) out.push_back(p.text);
  return out;
}

TEST(PdfPageParagraphsTest, JoinsWrappedLinesAndSplitWords) {
  EXPECT_EQ(Texts(PdfPageParagraphs(WordsOnLines(
                {{"extraction", "of", "infor-"}, {"mation", "works", "and"}, {"wraps."}}))),
            std::vector<std::string>{"extraction of information works and wraps."});
  // An upper-case continuation keeps its hyphen (a compound like "Part-B" is
  // rare enough; a dropped letter is worse).
  EXPECT_EQ(Texts(PdfPageParagraphs(WordsOnLines({{"see", "Part-"}, {"B", "below"}}))),
            std::vector<std::string>{"see Part- B below"});
  // A blank line separates paragraphs.
  EXPECT_EQ(Texts(PdfPageParagraphs(WordsOnLines({{"a"}, {}, {"b"}}))),
            (std::vector<std::string>{"a", "b"}));
  EXPECT_TRUE(PdfPageParagraphs({}).empty());
}

TEST(PdfPageParagraphsTest, FontSizeChangeStartsAParagraphAndMarksHeadings) {
  std::vector<PdfWord> words = WordsOnLines({{"Big", "Title"}}, 24);
  for (PdfWord& w : WordsOnLines({{"body", "text", "here"}, {"and", "more."}})) {
    w.top += 30;
    w.bottom += 30;
    words.push_back(w);
  }
  const auto paragraphs = PdfPageParagraphs(words);
  ASSERT_EQ(paragraphs.size(), 2u);
  EXPECT_EQ(paragraphs[0].text, "Big Title");
  EXPECT_EQ(paragraphs[1].text, "body text here and more.");
  const double body = PdfBodyFontSize(words);
  EXPECT_EQ(body, 12.0);
  EXPECT_EQ(PdfHeadingLevel(paragraphs[0], body), 1);
  EXPECT_EQ(PdfHeadingLevel(paragraphs[1], body), 0);
  EXPECT_EQ(PdfHeadingLevel({"Sub", 16.5}, body), 2);
  EXPECT_EQ(PdfHeadingLevel({"Minor", 14.5}, body), 3);
  EXPECT_EQ(PdfHeadingLevel({"A big sentence.", 30}, body), 0);  // ends like prose
}

TEST(PdfPageParagraphsTest, CleansGlyphs) {
  EXPECT_EQ(NormalizePdfText("e\xEF\xAC\x83"
                             "cient o\xEF\xAC\x83"
                             "ce re\xC2\xAD"
                             "use\x01\tend\xFF"),
            "efficient office reuse end\xEF\xBF\xBD");
}

}  // namespace
}  // namespace sluice::formats
