// EPUB parser: spine order, chapter titles, book metadata, and the broken or
// hostile archives (0 bytes, malformed XML, zip bombs) that must fail cleanly.
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

const char kContainer[] = R"(<?xml version="1.0"?>
<container version="1.0" xmlns="urn:oasis:names:tc:opendocument:xmlns:container">
  <rootfiles><rootfile full-path="OEBPS/content.opf" media-type="application/oebps-package+xml"/></rootfiles>
</container>)";

std::string Opf(const std::string& extra_manifest = "", const std::string& extra_spine = "") {
  return R"(<?xml version="1.0" encoding="UTF-8"?>
<package xmlns="http://www.idpf.org/2007/opf" version="3.0" unique-identifier="id">
  <metadata xmlns:dc="http://purl.org/dc/elements/1.1/">
    <dc:identifier id="id">urn:uuid:1234</dc:identifier>
    <dc:title>The Pump   Book</dc:title>
    <dc:creator>Ada Lovelace</dc:creator>
    <dc:language>en</dc:language>
  </metadata>
  <manifest>
    <item id="c2" href="text/chapter%202.xhtml" media-type="application/xhtml+xml"/>
    <item id="nav" href="nav.xhtml" media-type="application/xhtml+xml" properties="nav"/>
    <item id="c1" href="text/ch1.xhtml" media-type="application/xhtml+xml"/>
    <item id="css" href="style.css" media-type="text/css"/>
    )" + extra_manifest +
         R"(
  </manifest>
  <spine><itemref idref="c1"/><itemref idref="c2"/>)" +
         extra_spine + R"(</spine>
</package>)";
}

const char kNav[] = R"(<?xml version="1.0" encoding="UTF-8"?>
<html xmlns="http://www.w3.org/1999/xhtml" xmlns:epub="http://www.idpf.org/2007/ops">
<head><title>Contents</title></head><body>
<nav epub:type="toc"><ol>
  <li><a href="text/ch1.xhtml">One: Priming</a></li>
  <li><a href="text/chapter%202.xhtml#start">Two: Maintenance</a></li>
</ol></nav></body></html>)";

const char kChapter1[] = R"(<?xml version="1.0" encoding="UTF-8"?>
<html xmlns="http://www.w3.org/1999/xhtml"><head><title>ch1</title></head><body>
<h1>Priming the Pump</h1><p>Fill the casing with water before the first start.</p>
<h2>Checks</h2><p>Listen for air in the line.</p></body></html>)";

const char kChapter2[] = R"(<?xml version="1.0" encoding="UTF-8"?>
<html xmlns="http://www.w3.org/1999/xhtml"><head><title>ch2</title></head><body>
<p>Replace the seal every two years.</p></body></html>)";

std::vector<ZipMember> BookMembers() {
  return {
      {"mimetype", "application/epub+zip", true},
      {"META-INF/container.xml", kContainer},
      {"OEBPS/content.opf", Opf()},
      {"OEBPS/nav.xhtml", kNav},
      {"OEBPS/text/chapter 2.xhtml", kChapter2},
      {"OEBPS/text/ch1.xhtml", kChapter1},
      {"OEBPS/style.css", "p { margin: 0 }"},
  };
}

struct Outcome {
  Status status;
  CollectingSink sink;
  CollectingErrors errors;
  ParseStats stats;
};

void ParseEpub(const std::string& path, Outcome& out, ParseLimits limits = {}) {
  SourceFile file;
  file.path = path;
  file.relative_path = std::filesystem::path(path).filename().string();
  out.status = NewEpubParser()->Parse(file, limits, out.sink, out.errors, out.stats);
}

TEST(EpubParserTest, SpineOrderChapterTitlesAndMetadata) {
  TempDir dir;
  const std::string path = dir.Write("book.epub", MakeZip(BookMembers()));
  Outcome out;
  ParseEpub(path, out);
  ASSERT_TRUE(out.status.ok()) << out.status.ToString();
  ASSERT_EQ(out.sink.docs.size(), 1u);
  const auto& doc = out.sink.docs[0];
  EXPECT_TRUE(doc.ended);
  EXPECT_EQ(doc.info.title, "The Pump Book");
  EXPECT_EQ(doc.info.author, "Ada Lovelace");
  EXPECT_EQ(doc.info.source_id, "book.epub");
  EXPECT_EQ(doc.info.metadata_json, R"({"format":"epub","language":"en"})");
  struct Expected {
    BlockKind kind;
    int level;
    std::string text;
  };
  // Spine order (ch1 then chapter 2) although the manifest lists chapter 2
  // first; chapter 2 has no heading, so its nav label becomes one.
  const std::vector<Expected> expected = {
      {BlockKind::kHeading, 1, "Priming the Pump"},
      {BlockKind::kParagraph, 0, "Fill the casing with water before the first start."},
      {BlockKind::kHeading, 2, "Checks"},
      {BlockKind::kParagraph, 0, "Listen for air in the line."},
      {BlockKind::kHeading, 1, "Two: Maintenance"},
      {BlockKind::kParagraph, 0, "Replace the seal every two years."},
  };
  ASSERT_EQ(doc.blocks.size(), expected.size()) << out.sink.AllText();
  for (size_t i = 0; i < expected.size(); ++i) {
    EXPECT_EQ(doc.blocks[i].kind, expected[i].kind) << i;
    EXPECT_EQ(doc.blocks[i].heading_level, expected[i].level) << i;
    EXPECT_EQ(doc.blocks[i].text, expected[i].text) << i;
  }
}

TEST(EpubParserTest, ParsesTheBytesTheReaderAlreadyHas) {
  TempDir dir;
  testing::ExpectSameParseFromContents(*NewEpubParser(), dir.path(), "book.epub",
                                       MakeZip(BookMembers()));
}

TEST(EpubParserTest, Epub2NcxLabelsAreUsedWithoutNav) {
  const char ncx[] = R"(<?xml version="1.0"?>
<ncx xmlns="http://www.daisy.org/z3986/2005/ncx/" version="2005-1"><navMap>
<navPoint id="p1"><navLabel><text>First</text></navLabel><content src="text/ch1.xhtml"/></navPoint>
<navPoint id="p2"><navLabel><text>Second Part</text></navLabel><content src="text/chapter%202.xhtml"/></navPoint>
</navMap></ncx>)";
  std::string opf = Opf(R"(<item id="ncx" href="toc.ncx" media-type="application/x-dtbncx+xml"/>)");
  // Drop the EPUB 3 nav and point the spine at the NCX.
  opf.replace(opf.find(R"( properties="nav")"), 17, "");
  opf.replace(opf.find("<spine>"), 7, R"(<spine toc="ncx">)");
  auto members = BookMembers();
  members[2].data = opf;
  members.push_back({"OEBPS/toc.ncx", ncx});
  TempDir dir;
  const std::string path = dir.Write("ncx.epub", MakeZip(members));
  Outcome out;
  ParseEpub(path, out);
  ASSERT_TRUE(out.status.ok()) << out.status.ToString();
  const auto& blocks = out.sink.docs.at(0).blocks;
  ASSERT_GE(blocks.size(), 5u);
  // The nav document itself is not in the spine, so no "Contents" text.
  EXPECT_EQ(blocks[4].text, "Second Part");
  EXPECT_EQ(blocks[4].kind, BlockKind::kHeading);
}

TEST(EpubParserTest, Sniff) {
  auto parser = NewEpubParser();
  const std::string zip = MakeZip(BookMembers());
  EXPECT_TRUE(parser->Sniff(std::string_view(zip).substr(0, 4096)));
  const std::string docx =
      MakeZip({{"[Content_Types].xml", "<Types/>"}, {"word/document.xml", "<w/>"}});
  EXPECT_FALSE(parser->Sniff(docx));
  EXPECT_FALSE(parser->Sniff("PK\x03\x04"));
  EXPECT_EQ(parser->Extensions(), std::vector<std::string>{"epub"});
}

TEST(EpubParserTest, ZeroByteAndNonZipFilesAreCorrupt) {
  TempDir dir;
  for (const std::string& content :
       {std::string(), std::string("PK\x03\x04 truncated"), std::string("plain text")}) {
    const std::string path = dir.Write("bad.epub", content);
    Outcome out;
    ParseEpub(path, out);
    EXPECT_EQ(out.status.code(), StatusCode::kCorrupt) << out.status.ToString();
    EXPECT_TRUE(out.sink.docs.empty());
  }
}

TEST(EpubParserTest, MissingContainerIsCorrupt) {
  TempDir dir;
  auto members = BookMembers();
  members.erase(members.begin() + 1);
  const std::string path = dir.Write("nocontainer.epub", MakeZip(members));
  Outcome out;
  ParseEpub(path, out);
  EXPECT_EQ(out.status.code(), StatusCode::kCorrupt);
  EXPECT_NE(out.status.message().find("container.xml"), std::string::npos);
}

TEST(EpubParserTest, MalformedOpfIsCorruptWithOffset) {
  TempDir dir;
  auto members = BookMembers();
  members[2].data = "<package><metadata><dc:title>x</metadata>";
  const std::string path = dir.Write("badxml.epub", MakeZip(members));
  Outcome out;
  ParseEpub(path, out);
  EXPECT_EQ(out.status.code(), StatusCode::kCorrupt);
  EXPECT_NE(out.status.message().find("malformed XML in OEBPS/content.opf"), std::string::npos)
      << out.status.message();
  EXPECT_NE(out.status.message().find("at offset"), std::string::npos);
}

TEST(EpubParserTest, MissingSpinePartIsReportedAndTheRestIsRead) {
  TempDir dir;
  auto members = BookMembers();
  members.erase(members.begin() + 4);  // chapter 2.xhtml
  const std::string path = dir.Write("partial.epub", MakeZip(members));
  Outcome out;
  ParseEpub(path, out);
  ASSERT_TRUE(out.status.ok()) << out.status.ToString();
  EXPECT_EQ(out.stats.records_skipped, 1u);
  ASSERT_EQ(out.errors.calls.size(), 1u);
  EXPECT_EQ(out.errors.calls[0].first, "partial.epub#OEBPS/text/chapter 2.xhtml");
  EXPECT_EQ(out.sink.docs.at(0).blocks.size(), 4u);
}

TEST(EpubParserTest, DrmEncryptedSpineIsInvalidArgumentButObfuscatedFontsAreFine) {
  auto encryption = [](const std::string& uri) {
    return R"(<?xml version="1.0"?>
<encryption xmlns="urn:oasis:names:tc:opendocument:xmlns:container"
  xmlns:enc="http://www.w3.org/2001/04/xmlenc#"><enc:EncryptedData>
  <enc:EncryptionMethod Algorithm="http://www.w3.org/2001/04/xmlenc#aes128-cbc"/>
  <enc:CipherData><enc:CipherReference URI=")" +
           uri + R"("/></enc:CipherData></enc:EncryptedData></encryption>)";
  };
  TempDir dir;
  auto drm = BookMembers();
  drm.push_back({"META-INF/encryption.xml", encryption("OEBPS/text/ch1.xhtml")});
  Outcome locked;
  ParseEpub(dir.Write("drm.epub", MakeZip(drm)), locked);
  EXPECT_EQ(locked.status.code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(locked.status.message(), "encrypted EPUB (DRM)");
  EXPECT_TRUE(locked.sink.docs.empty());

  auto fonts = BookMembers();
  fonts.push_back({"META-INF/encryption.xml", encryption("OEBPS/fonts/serif.otf")});
  Outcome open;
  ParseEpub(dir.Write("fonts.epub", MakeZip(fonts)), open);
  EXPECT_TRUE(open.status.ok()) << open.status.ToString();
  EXPECT_EQ(open.sink.docs.at(0).blocks.size(), 6u);
}

TEST(EpubParserTest, DecompressedSizeLimitStopsABomb) {
  auto members = BookMembers();
  members[5].data = std::string(kChapter1) + std::string(200000, ' ');
  TempDir dir;
  const std::string path = dir.Write("big.epub", MakeZip(members));
  Outcome out;
  ParseLimits limits;
  limits.max_decompressed_bytes = 100000;
  limits.max_compression_ratio = 1e9;
  ParseEpub(path, out, limits);
  EXPECT_EQ(out.status.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(out.status.message().find("max_decompressed_bytes"), std::string::npos)
      << out.status.message();
}

TEST(EpubParserTest, CompressionRatioLimitStopsABomb) {
  auto members = BookMembers();
  // 4 MiB of one byte deflates about 1000:1, far beyond the default 200.
  members[5].data = std::string(kChapter1) + std::string(4 << 20, 'a');
  TempDir dir;
  const std::string path = dir.Write("ratio.epub", MakeZip(members));
  Outcome out;
  ParseEpub(path, out);
  EXPECT_EQ(out.status.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(out.status.message().find("max_compression_ratio"), std::string::npos)
      << out.status.message();
}

}  // namespace
}  // namespace sluice::formats
