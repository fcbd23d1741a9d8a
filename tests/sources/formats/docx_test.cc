// DOCX parser: paragraphs, headings from styles, lists, tables, metadata, and
// broken archives.
#include <gtest/gtest.h>

#include <filesystem>

#include "sources/formats/document_parsers.h"
#include "sources/formats/fixtures.h"
#include "sources/formats/test_sink.h"

namespace sluice::formats {
namespace {

using testing::CollectingErrors;
using testing::CollectingSink;
using testing::MakeZip;
using testing::TempDir;
using testing::ZipMember;

const char kContentTypes[] =
    R"(<?xml version="1.0"?><Types xmlns="http://schemas.openxmlformats.org/package/2006/content-types"/>)";

const char kStyles[] = R"(<?xml version="1.0" encoding="UTF-8" standalone="yes"?>
<w:styles xmlns:w="http://schemas.openxmlformats.org/wordprocessingml/2006/main">
  <w:style w:type="paragraph" w:styleId="Title"><w:name w:val="Title"/></w:style>
  <w:style w:type="paragraph" w:styleId="berschrift1"><w:name w:val="heading 1"/></w:style>
  <w:style w:type="paragraph" w:styleId="Custom2"><w:name w:val="My Section"/>
    <w:pPr><w:outlineLvl w:val="1"/></w:pPr></w:style>
  <w:style w:type="paragraph" w:styleId="ListParagraph"><w:name w:val="List Paragraph"/></w:style>
</w:styles>)";

const char kDocument[] = R"(<?xml version="1.0" encoding="UTF-8" standalone="yes"?>
<w:document xmlns:w="http://schemas.openxmlformats.org/wordprocessingml/2006/main"><w:body>
<w:p><w:pPr><w:pStyle w:val="Title"/></w:pPr><w:r><w:t>Service Guide</w:t></w:r></w:p>
<w:p><w:pPr><w:pStyle w:val="berschrift1"/></w:pPr><w:r><w:t>Getting started</w:t></w:r></w:p>
<w:p><w:r><w:t xml:space="preserve">Open the </w:t></w:r><w:r><w:rPr><w:b/></w:rPr><w:t>valve</w:t></w:r><w:r><w:t xml:space="preserve"> </w:t></w:r><w:del><w:r><w:delText>slowly</w:delText></w:r></w:del><w:r><w:t>fully.</w:t><w:tab/><w:t>Then wait.</w:t><w:br/><w:t>Second line.</w:t></w:r></w:p>
<w:p><w:pPr><w:pStyle w:val="Custom2"/></w:pPr><w:r><w:t>Parts</w:t></w:r></w:p>
<w:p><w:pPr><w:pStyle w:val="ListParagraph"/><w:numPr><w:ilvl w:val="0"/><w:numId w:val="1"/></w:numPr></w:pPr><w:r><w:t>Gasket</w:t></w:r></w:p>
<w:p/>
<w:tbl><w:tr><w:tc><w:p><w:r><w:t>Part</w:t></w:r></w:p></w:tc><w:tc><w:p><w:r><w:t>Torque</w:t></w:r></w:p></w:tc></w:tr>
<w:tr><w:tc><w:p><w:r><w:t>Flange</w:t></w:r></w:p><w:p><w:r><w:t>bolt</w:t></w:r></w:p></w:tc><w:tc><w:p><w:r><w:t>25 Nm</w:t></w:r></w:p></w:tc></w:tr></w:tbl>
<w:sdt><w:sdtContent><w:p><w:pPr><w:pStyle w:val="Heading3"/></w:pPr><w:r><w:t>Appendix</w:t></w:r></w:p></w:sdtContent></w:sdt>
<w:sectPr/>
</w:body></w:document>)";

const char kCore[] = R"(<?xml version="1.0" encoding="UTF-8" standalone="yes"?>
<cp:coreProperties xmlns:cp="http://schemas.openxmlformats.org/package/2006/metadata/core-properties"
 xmlns:dc="http://purl.org/dc/elements/1.1/"><dc:title>Valve Service Guide</dc:title>
<dc:creator>Grace Hopper</dc:creator></cp:coreProperties>)";

std::vector<ZipMember> DocxMembers() {
  return {{"[Content_Types].xml", kContentTypes},
          {"word/document.xml", kDocument},
          {"word/styles.xml", kStyles},
          {"docProps/core.xml", kCore}};
}

struct DocxOutcome {
  Status status;
  CollectingSink sink;
};

void ParseDocx(const std::string& path, DocxOutcome& out, ParseLimits limits = {}) {
  SourceFile file;
  file.path = path;
  file.relative_path = std::filesystem::path(path).filename().string();
  CollectingErrors errors;
  ParseStats stats;
  out.status = NewDocxParser()->Parse(file, limits, out.sink, errors, stats);
}

TEST(DocxParserTest, ParagraphsHeadingsListsTablesAndMetadata) {
  TempDir dir;
  const std::string path = dir.Write("guide.docx", MakeZip(DocxMembers()));
  DocxOutcome out;
  ParseDocx(path, out);
  ASSERT_TRUE(out.status.ok()) << out.status.ToString();
  const auto& doc = out.sink.docs.at(0);
  EXPECT_TRUE(doc.ended);
  EXPECT_EQ(doc.info.title, "Valve Service Guide");
  EXPECT_EQ(doc.info.author, "Grace Hopper");
  EXPECT_EQ(doc.info.metadata_json, R"({"format":"docx"})");
  struct Expected {
    BlockKind kind;
    int level;
    std::string text;
  };
  const std::vector<Expected> expected = {
      {BlockKind::kHeading, 1, "Service Guide"},
      {BlockKind::kHeading, 1, "Getting started"},
      {BlockKind::kParagraph, 0, "Open the valve fully.\tThen wait.\nSecond line."},
      {BlockKind::kHeading, 2, "Parts"},
      {BlockKind::kListItem, 0, "Gasket"},
      {BlockKind::kListItem, 0, "Part | Torque"},
      {BlockKind::kListItem, 0, "Flange bolt | 25 Nm"},
      {BlockKind::kHeading, 3, "Appendix"},
  };
  ASSERT_EQ(doc.blocks.size(), expected.size()) << out.sink.AllText();
  for (size_t i = 0; i < expected.size(); ++i) {
    EXPECT_EQ(doc.blocks[i].kind, expected[i].kind) << i;
    EXPECT_EQ(doc.blocks[i].heading_level, expected[i].level) << i;
    EXPECT_EQ(doc.blocks[i].text, expected[i].text) << i;
  }
  EXPECT_EQ(out.sink.AllText().find("slowly"), std::string::npos);
}

TEST(DocxParserTest, ParsesTheBytesTheReaderAlreadyHas) {
  TempDir dir;
  testing::ExpectSameParseFromContents(*NewDocxParser(), dir.path(), "guide.docx",
                                       MakeZip(DocxMembers()));
  // Broken bytes from the reader are as corrupt as a broken file.
  for (const std::string& bytes : {std::string(), std::string("PK\x03\x04 not really a zip")}) {
    SourceFile file;
    file.path = dir.path() + "/no-such-file.docx";
    file.contents = bytes;
    DocxOutcome out;
    CollectingErrors errors;
    ParseStats stats;
    out.status = NewDocxParser()->Parse(file, ParseLimits{}, out.sink, errors, stats);
    EXPECT_EQ(out.status.code(), StatusCode::kCorrupt) << out.status.ToString();
  }
}

TEST(DocxParserTest, HeadingStyleIdsWorkWithoutStylesPart) {
  auto members = DocxMembers();
  members.erase(members.begin() + 2);
  members.erase(members.begin() + 2);  // core.xml too: no title/author
  TempDir dir;
  const std::string path = dir.Write("bare.docx", MakeZip(members));
  DocxOutcome out;
  ParseDocx(path, out);
  ASSERT_TRUE(out.status.ok()) << out.status.ToString();
  const auto& doc = out.sink.docs.at(0);
  EXPECT_EQ(doc.info.title, "");
  EXPECT_EQ(doc.blocks.at(0).kind, BlockKind::kHeading);    // style id "Title"
  EXPECT_EQ(doc.blocks.at(1).kind, BlockKind::kParagraph);  // "berschrift1" unknown now
  EXPECT_EQ(doc.blocks.back().text, "Appendix");
  EXPECT_EQ(doc.blocks.back().heading_level, 3);  // style id "Heading3"
}

TEST(DocxParserTest, MalformedXmlIsCorruptWithMessageAndOffset) {
  auto members = DocxMembers();
  members[1].data = R"(<w:document xmlns:w="x"><w:body><w:p><w:r><w:t>cut</w:r></w:body>)";
  TempDir dir;
  const std::string path = dir.Write("broken.docx", MakeZip(members));
  DocxOutcome out;
  ParseDocx(path, out);
  EXPECT_EQ(out.status.code(), StatusCode::kCorrupt);
  EXPECT_NE(out.status.message().find("malformed XML in word/document.xml"), std::string::npos)
      << out.status.message();
  EXPECT_NE(out.status.message().find("at offset"), std::string::npos);
  EXPECT_TRUE(out.sink.docs.empty());
}

TEST(DocxParserTest, RandomBytesAndZipsWithoutDocumentAreCorrupt) {
  TempDir dir;
  std::string random(3000, '\0');
  uint64_t x = 0x9E3779B97F4A7C15ull;
  for (char& c : random) {
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    c = static_cast<char>(x);
  }
  for (const auto& [name, content] : std::vector<std::pair<std::string, std::string>>{
           {"random.docx", random},
           {"empty.docx", ""},
           {"other.docx", MakeZip({{"readme.txt", "not a word file"}})}}) {
    DocxOutcome out;
    ParseDocx(dir.Write(name, content), out);
    EXPECT_EQ(out.status.code(), StatusCode::kCorrupt) << name << " " << out.status.ToString();
  }
}

TEST(DocxParserTest, DecompressionLimitsApply) {
  auto members = DocxMembers();
  members[1].data = std::string(kDocument).insert(
      std::string(kDocument).find("<w:sectPr/>"),
      "<w:p><w:r><w:t>" + std::string(300000, 'z') + "</w:t></w:r></w:p>");
  TempDir dir;
  const std::string path = dir.Write("bomb.docx", MakeZip(members));
  DocxOutcome ratio;
  ParseDocx(path, ratio);  // default ratio 200: 300 KB of 'z' deflates ~1000:1
  EXPECT_EQ(ratio.status.code(), StatusCode::kInvalidArgument) << ratio.status.ToString();
  EXPECT_NE(ratio.status.message().find("max_compression_ratio"), std::string::npos);
  DocxOutcome size;
  ParseLimits limits;
  limits.max_compression_ratio = 1e9;
  limits.max_decompressed_bytes = 50000;
  ParseDocx(path, size, limits);
  EXPECT_EQ(size.status.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(size.status.message().find("max_decompressed_bytes"), std::string::npos);
}

TEST(DocxParserTest, Sniff) {
  auto parser = NewDocxParser();
  const std::string zip = MakeZip(DocxMembers());
  EXPECT_TRUE(parser->Sniff(std::string_view(zip).substr(0, 4096)));
  EXPECT_FALSE(parser->Sniff("PK\x03\x04 but nothing else"));
  EXPECT_FALSE(parser->Sniff("<html>"));
  EXPECT_EQ(parser->Extensions(), std::vector<std::string>{"docx"});
}

}  // namespace
}  // namespace sluice::formats
