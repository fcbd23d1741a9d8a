// A folder mixing every supported format, ingested end to end into SQLite by
// the real pipeline: every format's known sentence is stored, without markup,
// with its heading path / page / title metadata; a corrupt file is
// dead-lettered with its reason and the run goes on.
#include <gtest/gtest.h>
#include <sqlite3.h>

#include <string>
#include <vector>

#include "sluice/pipeline.h"
#include "sources/formats/fixtures.h"
#include "testing/test_util.h"

namespace sluice {
namespace {

using formats::testing::MakePdf;
using formats::testing::MakeZip;
using formats::testing::PdfPage;
using formats::testing::PdfSpec;
using sluice::testing::ReadFile;
using sluice::testing::TempDir;
using sluice::testing::WriteFile;

struct StoredRow {
  std::string source_id, text, metadata;
};

std::vector<StoredRow> ReadRows(const std::string& db_path) {
  std::vector<StoredRow> rows;
  sqlite3* db = nullptr;
  sqlite3_open_v2(db_path.c_str(), &db, SQLITE_OPEN_READONLY, nullptr);
  sqlite3_stmt* st = nullptr;
  sqlite3_prepare_v2(db, "SELECT source_id, text, metadata FROM chunks ORDER BY source_id, ordinal",
                     -1, &st, nullptr);
  while (sqlite3_step(st) == SQLITE_ROW) {
    rows.push_back({reinterpret_cast<const char*>(sqlite3_column_text(st, 0)),
                    reinterpret_cast<const char*>(sqlite3_column_text(st, 1)),
                    reinterpret_cast<const char*>(sqlite3_column_text(st, 2))});
  }
  sqlite3_finalize(st);
  sqlite3_close(db);
  return rows;
}

// The first stored chunk of `source` containing `needle`, or nullptr.
const StoredRow* Find(const std::vector<StoredRow>& rows, const std::string& source,
                      const std::string& needle) {
  for (const auto& r : rows) {
    if (r.source_id == source && r.text.find(needle) != std::string::npos) return &r;
  }
  return nullptr;
}

std::string Epub() {
  const std::string container =
      R"(<?xml version="1.0"?><container version="1.0" xmlns="urn:oasis:names:tc:opendocument:xmlns:container">)"
      R"(<rootfiles><rootfile full-path="OEBPS/content.opf" media-type="application/oebps-package+xml"/></rootfiles></container>)";
  const std::string opf =
      R"(<?xml version="1.0" encoding="UTF-8"?><package xmlns="http://www.idpf.org/2007/opf" version="3.0" unique-identifier="id">)"
      R"(<metadata xmlns:dc="http://purl.org/dc/elements/1.1/"><dc:identifier id="id">x</dc:identifier>)"
      R"(<dc:title>The Weir Book</dc:title><dc:creator>Zoë Hartley</dc:creator></metadata>)"
      R"(<manifest><item id="c1" href="c1.xhtml" media-type="application/xhtml+xml"/></manifest>)"
      R"(<spine><itemref idref="c1"/></spine></package>)";
  const std::string chapter =
      R"(<?xml version="1.0" encoding="UTF-8"?><html xmlns="http://www.w3.org/1999/xhtml"><head><title>c</title></head>)"
      R"(<body><h1>Sluice History</h1><p>The first weir was built of oak piles in 1712.</p></body></html>)";
  return MakeZip({{"mimetype", "application/epub+zip", true},
                  {"META-INF/container.xml", container},
                  {"OEBPS/content.opf", opf},
                  {"OEBPS/c1.xhtml", chapter}});
}

std::string Docx() {
  const std::string doc =
      R"(<?xml version="1.0" encoding="UTF-8" standalone="yes"?>)"
      R"(<w:document xmlns:w="http://schemas.openxmlformats.org/wordprocessingml/2006/main"><w:body>)"
      R"(<w:p><w:pPr><w:pStyle w:val="Heading1"/></w:pPr><w:r><w:t>Valve Service</w:t></w:r></w:p>)"
      R"(<w:p><w:r><w:t>Grease the valve stem every quarter.</w:t></w:r></w:p></w:body></w:document>)";
  return MakeZip(
      {{"[Content_Types].xml",
        R"(<?xml version="1.0"?><Types xmlns="http://schemas.openxmlformats.org/package/2006/content-types"/>)"},
       {"word/document.xml", doc}});
}

TEST(MixedFormatsTest, EveryFormatIngestsEndToEndAndCorruptFilesAreDeadLettered) {
  TempDir dir;
  const std::string root = dir / "library";
  WriteFile(root + "/web/manual.html",
            "<!DOCTYPE html><html><head><title>Gate Manual</title><script>var x=1;</script></head>"
            "<body><nav>Home | Index</nav><h1>Gate Controller</h1><h2>Resets</h2>"
            "<p>Hold the <b>reset</b> button for five seconds.</p></body></html>");
  PdfSpec pdf;
  pdf.title = "Flood Plan";
  pdf.pages = {PdfPage{{"Introduction to the plan."}},
               PdfPage{{"Evacuate the lower meadow when the level passes", "fourteen metres."}}};
  WriteFile(root + "/plans/flood.pdf", MakePdf(pdf));
  WriteFile(root + "/books/weir.epub", Epub());
  WriteFile(root + "/office/valves.docx", Docx());
  WriteFile(root + "/notes/seals.md",
            "---\ntitle: Seal Notes\n---\n# Seals\n\n## Replacement\n\n"
            "Replace a worn seal with the spare from store B.\n");
  WriteFile(root + "/notes/plain.txt", "The night shift checks the trash rack at midnight.\n");
  WriteFile(
      root + "/records/log.jsonl",
      "{\"id\":\"log-1\",\"text\":\"Gate 3 exercised without fault.\",\"domain\":\"records\"}\n");
  WriteFile(root + "/plans/broken.pdf", "%PDF-1.4\n1 0 obj << /Type /Catalog");  // truncated

  IngestOptions o;
  o.inputs = {root};
  o.embedder = EmbedderKind::kHash;
  o.hash.dimensions = 64;
  o.store_uri = "sqlite:" + (dir / "store.db");
  o.aggregate.out_dir = dir / "out";
  o.dead_letter_path = dir / "out/dead.jsonl";
  o.progress = false;
  Pipeline pipeline(o);
  IngestReport report = pipeline.Run();
  ASSERT_TRUE(report.status.ok()) << report.status.ToString();
  EXPECT_TRUE(report.reconciled);
  EXPECT_EQ(Get(pipeline.metrics().sources_ok), 7u);
  EXPECT_EQ(Get(pipeline.metrics().sources_failed), 1u);
  const std::string dead = ReadFile(dir / "out/dead.jsonl");
  EXPECT_NE(dead.find("plans/broken.pdf"), std::string::npos) << dead;
  EXPECT_NE(dead.find("\"kind\":\"source\""), std::string::npos) << dead;

  const auto rows = ReadRows(dir / "store.db");
  const StoredRow* html = Find(rows, "web/manual.html", "Hold the reset button for five seconds.");
  ASSERT_NE(html, nullptr);
  EXPECT_EQ(html->text.find("<b>"), std::string::npos);
  EXPECT_EQ(html->text.find("var x"), std::string::npos);         // script dropped
  EXPECT_EQ(html->text.find("Home | Index"), std::string::npos);  // nav dropped
  EXPECT_NE(html->metadata.find("Gate Controller > Resets"), std::string::npos) << html->metadata;

  const StoredRow* page2 = Find(rows, "plans/flood.pdf", "Evacuate the lower meadow");
  ASSERT_NE(page2, nullptr);
  EXPECT_NE(page2->text.find("fourteen metres"), std::string::npos);
  EXPECT_NE(page2->metadata.find("\"page_end\":2"), std::string::npos) << page2->metadata;

  const StoredRow* epub = Find(rows, "books/weir.epub", "oak piles in 1712");
  ASSERT_NE(epub, nullptr);
  EXPECT_NE(epub->metadata.find("The Weir Book"), std::string::npos) << epub->metadata;
  EXPECT_NE(epub->metadata.find("Zoë Hartley"), std::string::npos) << epub->metadata;

  const StoredRow* docx = Find(rows, "office/valves.docx", "Grease the valve stem every quarter.");
  ASSERT_NE(docx, nullptr);
  EXPECT_NE(docx->metadata.find("Valve Service"), std::string::npos) << docx->metadata;

  const StoredRow* md = Find(rows, "notes/seals.md", "Replace a worn seal");
  ASSERT_NE(md, nullptr);
  EXPECT_NE(md->metadata.find("Seals > Replacement"), std::string::npos) << md->metadata;
  EXPECT_NE(md->metadata.find("Seal Notes"), std::string::npos) << md->metadata;

  EXPECT_NE(Find(rows, "notes/plain.txt", "trash rack at midnight"), nullptr);
  EXPECT_NE(Find(rows, "records/log.jsonl#log-1", "Gate 3 exercised"), nullptr);

  // Routing: default domain = first folder; the JSONL record's own domain wins.
  EXPECT_TRUE(std::filesystem::exists(dir / "out/web/general.json"));
  EXPECT_TRUE(std::filesystem::exists(dir / "out/records/general.json"));
}

}  // namespace
}  // namespace sluice
