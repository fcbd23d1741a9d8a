// RegisterDocumentParsers with the real ParserRegistry (from sluice_sources,
// when it builds): sniffing beats the extension, extension is the fallback.
#include <gtest/gtest.h>

#include "sluice/parser.h"
#include "sources/formats/fixtures.h"

namespace sluice::formats {
namespace {

#ifdef SLUICE_HAVE_PARSER_REGISTRY
TEST(DocumentParserRegistryTest, SniffingAndExtensions) {
  ParserRegistry registry;
  RegisterDocumentParsers(registry);
  for (const char* name : {"html", "pdf", "epub", "docx"}) {
    ASSERT_NE(registry.FindByName(name), nullptr) << name;
  }
  auto name_of = [&](std::string_view path, std::string_view head) -> std::string {
    const Parser* p = registry.Find(path, head);
    return p == nullptr ? "" : std::string(p->Name());
  };
  EXPECT_EQ(name_of("notes.txt", "\n  <!DOCTYPE html><html>"), "html");  // a .txt that is HTML
  EXPECT_EQ(name_of("scan", "%PDF-1.5\n"), "pdf");                       // no extension
  EXPECT_EQ(name_of("page.HTM", ""), "html");
  EXPECT_EQ(name_of("book.epub", ""), "epub");
  EXPECT_EQ(name_of("memo.docx", ""), "docx");
  const std::string epub = testing::MakeZip(
      {{"mimetype", "application/epub+zip", true}, {"META-INF/container.xml", "<container/>"}});
  EXPECT_EQ(name_of("download.bin", epub), "epub");
  const std::string docx =
      testing::MakeZip({{"[Content_Types].xml", "<Types/>"}, {"word/document.xml", "<w/>"}});
  EXPECT_EQ(name_of("download.zip", docx), "docx");
}
#else
TEST(DocumentParserRegistryTest, SniffingAndExtensions) {
  GTEST_SKIP() << "sluice_sources (ParserRegistry) is not built yet";
}
#endif

}  // namespace
}  // namespace sluice::formats
