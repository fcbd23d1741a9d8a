// HTML parser: blocks, metadata, sniffing, limits, a real manual from
// /usr/share/doc.
#include <gtest/gtest.h>

#include <chrono>
#include <filesystem>
#include <string_view>
#include <vector>

#include "common/utf8.h"
#include "sources/formats/document_parsers.h"
#include "sources/formats/fixtures.h"
#include "sources/formats/html_extract.h"
#include "sources/formats/test_sink.h"

namespace sluice::formats {
namespace {

using testing::CollectingErrors;
using testing::CollectingSink;
using testing::TempDir;

Status ParseFile(const Parser& parser, const std::string& path, CollectingSink& sink,
                 ParseStats& stats, ParseLimits limits = {}) {
  SourceFile file;
  file.path = path;
  file.relative_path = std::filesystem::path(path).filename().string();
  file.domain = "manuals";
  file.category = "pumps";
  file.size_bytes = std::filesystem::exists(path) ? std::filesystem::file_size(path) : 0;
  file.mtime_ns = 42;
  CollectingErrors errors;
  return parser.Parse(file, limits, sink, errors, stats);
}

const char kPage[] = R"(<!DOCTYPE html>
<html lang="en"><head><title>  Pump
 Manual </title><meta name="Author" content="Jane  Roe">
<style>p { color: red }</style><script>var secret = "no";</script></head>
<body>
<nav><a href="/">Home</a> | <a href="/x">Menu item</a></nav>
<h1>Installation</h1>
<p>The pump must be <b>bolted</b> to a
   level floor &amp; primed before use. Caf&eacute; note.</p>
<p>Line one<br>Line two</p>
<h2>Parts</h2>
<ul><li>Impeller</li><li>Seal <i>kit</i></li></ul>
<table><tr><th>Part</th><th>Qty</th></tr><tr><td>Bolt <p>M8</p></td><td>4</td></tr></table>
<pre>
  make install
    done
</pre>
<noscript>Enable JS</noscript><template><p>hidden</p></template>
</body></html>)";

TEST(HtmlParserTest, ExtractsBlocksInOrderWithoutMarkup) {
  TempDir dir;
  const std::string path = dir.Write("pump.html", kPage);
  auto parser = NewHtmlParser();
  CollectingSink sink;
  ParseStats stats;
  ASSERT_TRUE(ParseFile(*parser, path, sink, stats).ok());
  ASSERT_EQ(sink.docs.size(), 1u);
  const auto& doc = sink.docs[0];
  EXPECT_TRUE(doc.ended);
  EXPECT_EQ(doc.info.title, "Pump Manual");
  EXPECT_EQ(doc.info.author, "Jane Roe");
  EXPECT_EQ(doc.info.source_id, "pump.html");
  EXPECT_EQ(doc.info.domain, "manuals");
  EXPECT_EQ(doc.info.category, "pumps");
  EXPECT_EQ(doc.info.mtime_ns, 42);
  EXPECT_EQ(doc.info.metadata_json, R"({"format":"html","language":"en"})");

  struct Expected {
    BlockKind kind;
    int level;
    std::string text;
  };
  const std::vector<Expected> expected = {
      {BlockKind::kHeading, 1, "Installation"},
      {BlockKind::kParagraph, 0,
       "The pump must be bolted to a level floor & primed before use. Caf\xC3\xA9 note."},
      {BlockKind::kParagraph, 0, "Line one\nLine two"},
      {BlockKind::kHeading, 2, "Parts"},
      {BlockKind::kListItem, 0, "Impeller"},
      {BlockKind::kListItem, 0, "Seal kit"},
      {BlockKind::kListItem, 0, "Part | Qty"},
      {BlockKind::kListItem, 0, "Bolt M8 | 4"},
      {BlockKind::kCode, 0, "  make install\n    done"},
  };
  ASSERT_EQ(doc.blocks.size(), expected.size()) << sink.AllText();
  for (size_t i = 0; i < expected.size(); ++i) {
    EXPECT_EQ(doc.blocks[i].kind, expected[i].kind) << i;
    EXPECT_EQ(doc.blocks[i].heading_level, expected[i].level) << i;
    EXPECT_EQ(doc.blocks[i].text, expected[i].text) << i;
    EXPECT_EQ(doc.blocks[i].page, 0);
  }
  const std::string all = sink.AllText();
  for (const char* dropped : {"secret", "color", "Menu item", "Enable JS", "hidden", "<", ">"}) {
    EXPECT_EQ(all.find(dropped), std::string::npos) << dropped;
  }
}

// A small file's bytes come from the reader (SourceFile::contents): the
// parser takes them, opens nothing, and still applies its size cap.
TEST(HtmlParserTest, ParsesTheBytesTheReaderAlreadyHas) {
  TempDir dir;
  auto parser = NewHtmlParser();
  testing::ExpectSameParseFromContents(*parser, dir.path(), "pump.html", kPage);

  SourceFile file;
  file.path = dir.path() + "/no-such-file.html";
  file.contents = std::string_view(kPage);
  ParseLimits small;
  small.max_file_bytes = 100;
  CollectingSink capped;
  CollectingErrors errors;
  ParseStats stats;
  const Status st = parser->Parse(file, small, capped, errors, stats);
  EXPECT_EQ(st.code(), StatusCode::kInvalidArgument) << st.ToString();
  EXPECT_TRUE(capped.docs.empty());
}

TEST(HtmlParserTest, SniffsDoctypeAndHtmlAfterBomAndWhitespace) {
  auto parser = NewHtmlParser();
  EXPECT_TRUE(parser->Sniff("<!DOCTYPE html><p>x"));
  EXPECT_TRUE(parser->Sniff("\xEF\xBB\xBF  \n<!doctype HTML>"));
  EXPECT_TRUE(parser->Sniff("\r\n\t<HTML lang=en>"));
  EXPECT_TRUE(
      parser->Sniff("<?xml version=\"1.0\"?>\n<html xmlns=\"http://www.w3.org/1999/xhtml\">"));
  EXPECT_FALSE(parser->Sniff("just text mentioning <html> later"));
  EXPECT_FALSE(parser->Sniff("%PDF-1.4"));
  EXPECT_FALSE(parser->Sniff(""));
  const auto ext = parser->Extensions();
  EXPECT_EQ(ext, (std::vector<std::string>{"html", "htm", "xhtml"}));
}

TEST(HtmlParserTest, FileOverSizeCapIsRejectedWithReason) {
  TempDir dir;
  const std::string path = dir.Write("big.html", std::string(5000, 'x'));
  auto parser = NewHtmlParser();
  CollectingSink sink;
  ParseStats stats;
  ParseLimits limits;
  limits.max_file_bytes = 1000;
  const Status st = ParseFile(*parser, path, sink, stats, limits);
  EXPECT_EQ(st.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(st.message().find("limit"), std::string::npos) << st.ToString();
  EXPECT_TRUE(sink.docs.empty());
}

TEST(HtmlParserTest, MissingFileIsNotFound) {
  auto parser = NewHtmlParser();
  CollectingSink sink;
  ParseStats stats;
  EXPECT_EQ(ParseFile(*parser, "/nonexistent/sluice/x.html", sink, stats).code(),
            StatusCode::kNotFound);
}

TEST(HtmlParserTest, InvalidUtf8IsRepairedAndCounted) {
  TempDir dir;
  const std::string path = dir.Write("bad.html", "<p>ok \xFF\xFE bytes</p><p>\xC3</p>");
  auto parser = NewHtmlParser();
  CollectingSink sink;
  ParseStats stats;
  ASSERT_TRUE(ParseFile(*parser, path, sink, stats).ok());
  EXPECT_EQ(stats.invalid_utf8_replaced, 3u);
  ASSERT_EQ(sink.docs[0].blocks.size(), 2u);
  for (const TextBlock& b : sink.docs[0].blocks) EXPECT_TRUE(IsValidUtf8(b.text));
  EXPECT_EQ(sink.docs[0].blocks[0].text, "ok \xEF\xBF\xBD\xEF\xBF\xBD bytes");
}

TEST(HtmlParserTest, NestingUpToTheLimitParsesAndDeeperIsRejectedQuickly) {
  std::string html;
  for (size_t i = 0; i < kMaxHtmlNesting; ++i) html += "<span>";
  html += "deep text";
  auto doc = HtmlDocument::Parse(html);
  ASSERT_TRUE(doc.ok()) << doc.status().ToString();
  std::string text;
  ASSERT_TRUE((*doc)
                  ->EmitBlocks([&](TextBlock&& b) {
                    text += b.text;
                    return Status::OK();
                  })
                  .ok());
  EXPECT_EQ(text, "deep text");

  // 700k nested <div> would keep gumbo busy for half an hour; refused at once.
  std::string hostile;
  for (int i = 0; i < 700000; ++i) hostile += "<div>";
  TempDir dir;
  const std::string path = dir.Write("deep.html", hostile);
  CollectingSink sink;
  ParseStats stats;
  const Status st = ParseFile(*NewHtmlParser(), path, sink, stats);
  EXPECT_EQ(st.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(st.message().find("nest deeper"), std::string::npos) << st.ToString();
}

TEST(HtmlNestingDepthTest, CountsOnlyElementsThatNest) {
  EXPECT_EQ(HtmlNestingDepth("<div><div>x</div></div><div></div>", 100), 2u);
  // A p or li is one level (the next one closes it), as the tree builder has it.
  EXPECT_EQ(HtmlNestingDepth("<p>a<p>b<br><img src=x><li>c<li>d", 100), 1u);
  EXPECT_EQ(HtmlNestingDepth("<b>x<script>'<div><div><div>'</SCRIPT><i></i></b>", 100), 2u);
  // "/>" does not close a non-void element (issue 14, defect 5).
  EXPECT_EQ(HtmlNestingDepth("<!-- <div><div> --><section/>", 100), 1u);
  EXPECT_EQ(HtmlNestingDepth("<div><div><div><div>", 2), 3u);  // stops just past the bound
  EXPECT_EQ(HtmlNestingDepth("", 10), 0u);
  EXPECT_EQ(HtmlNestingDepth("<div", 10), 0u);
}

// Issue 14, defect 5: the guard counted "<div/>" as closed, let a stray end
// tag pop, and read "<!-->" as the start of a comment running to the end, so
// these nested as deep as they are long and gumbo spent minutes on them.
TEST(HtmlNestingDepthTest, CountsAsTheHtml5TreeBuilder) {
  auto repeat = [](std::string_view s, int n) {
    std::string out;
    for (int i = 0; i < n; ++i) out += s;
    return out;
  };
  EXPECT_EQ(HtmlNestingDepth("<html><body>" + repeat("<div/>", 7) + "x</body></html>", 100), 7u);
  EXPECT_EQ(HtmlNestingDepth(repeat("<div></x>", 7), 100), 7u);
  EXPECT_EQ(HtmlNestingDepth("<!-->" + repeat("<div>", 7), 100), 7u);
  EXPECT_EQ(HtmlNestingDepth("<!--->" + repeat("<div>", 7) + "-->", 100), 7u);
  // Void elements and foreign "/>" close; <br/> or <img/> nest nothing.
  EXPECT_EQ(HtmlNestingDepth("<div><br/><img src=x/><svg><path/><path/></svg></div>", 100), 2u);
  // A '>' inside a quoted attribute value does not end the tag (the scan
  // would otherwise read "<!--" in the value as a comment hiding the rest).
  EXPECT_EQ(HtmlNestingDepth("<div title='><!--'>" + repeat("<div>", 7) + "-->", 100), 8u);
  // "<" not followed by a letter is text, not a tag that swallows the next one.
  EXPECT_EQ(HtmlNestingDepth(repeat("1 < <div>", 7), 100), 7u);
  // End tags blocked by a scope boundary or a special element pop nothing.
  EXPECT_EQ(HtmlNestingDepth(repeat("<div><object></div>", 5), 100), 10u);
  EXPECT_EQ(HtmlNestingDepth(repeat("<span><div></span>", 5), 100), 10u);
  // Formatting elements closed by an ancestor's end tag are reopened by the
  // next text: each round adds its ten <b>.
  std::string reopened;
  for (int round = 0; round < 3; ++round) {
    reopened += "<div>";
    for (int i = 0; i < 10; ++i) reopened += "<b id=" + std::to_string(i) + ">";
    reopened += "</div>x";
  }
  EXPECT_EQ(HtmlNestingDepth(reopened, 100), 31u);
  // Balanced and implied closes stay flat.
  EXPECT_EQ(HtmlNestingDepth(repeat("<div><p>a<p>b</div><ul><li>c<li>d</ul>", 50), 100), 2u);
  EXPECT_EQ(HtmlNestingDepth("<table>" + repeat("<tr><td>a<td>b<tr><th>c", 50) + "</table>" +
                                 repeat("<table><tbody><tr><td>x</td></tr></tbody></table>", 50),
                             100),
            4u);
}

// The hostile inputs of defect 5, at the size reported (~600 KB), are refused
// in a time comparable to parsing a flat document of the same size: the scan
// is linear and gumbo never sees them.
TEST(HtmlParserTest, HostileNestingIsRefusedInLinearTime) {
  constexpr size_t kSize = 600 * 1024;
  auto fill = [](std::string head, std::string_view unit, std::string_view tail) {
    while (head.size() + unit.size() + tail.size() <= kSize) head += unit;
    return head + std::string(tail);
  };
  const std::string flat = fill("<html><body>", "<div>x</div>", "</body></html>");
  const std::vector<std::string> hostile = {
      fill("<html><body>", "<div/>", "x</body></html>"),
      fill("", "<div></x>", ""),
      fill("<!-->", "<div>", ""),
      fill("", "<span><div></span>", ""),
  };
  // The fastest of three runs: the machine is shared, and what is compared is
  // the work each input costs, not the scheduler's noise.
  auto fastest = [](const std::string& html, Status* status) {
    auto best = std::chrono::steady_clock::duration::max();
    for (int run = 0; run < 3; ++run) {
      const auto start = std::chrono::steady_clock::now();
      auto doc = HtmlDocument::Parse(html);
      best = std::min(best, std::chrono::steady_clock::now() - start);
      *status = doc.status();
    }
    return best;
  };
  Status flat_status;
  const auto flat_time = fastest(flat, &flat_status);
  ASSERT_TRUE(flat_status.ok()) << flat_status.ToString();
  for (size_t i = 0; i < hostile.size(); ++i) {
    SCOPED_TRACE(i);
    Status status;
    const auto time = fastest(hostile[i], &status);
    EXPECT_EQ(status.code(), StatusCode::kInvalidArgument) << status.ToString();
    EXPECT_NE(status.message().find("nest deeper"), std::string::npos) << status.ToString();
    EXPECT_LT(time, flat_time * 20)
        << "hostile " << std::chrono::duration<double>(time).count() << " s, flat "
        << std::chrono::duration<double>(flat_time).count() << " s";
  }
  // Deep but allowed: nesting just under the limit, then end tags that make
  // the builder look through the whole stack, still cost time linear in size.
  std::string deep;
  for (size_t i = 0; i + 2 < kMaxHtmlNesting; ++i) deep += "<div>";
  const std::vector<std::string> deep_but_allowed = {fill(deep, "</p>", ""), fill(deep, "</x>", ""),
                                                     fill(deep, "<b></i>", ""),
                                                     fill(deep, "x</td>", "")};
  for (size_t i = 0; i < deep_but_allowed.size(); ++i) {
    SCOPED_TRACE(i);
    Status status;
    const auto time = fastest(deep_but_allowed[i], &status);
    EXPECT_LT(time, flat_time * 20)
        << "deep " << std::chrono::duration<double>(time).count() << " s, flat "
        << std::chrono::duration<double>(flat_time).count() << " s " << status.ToString();
  }
  // Degrades gracefully: the same constructs under the limit still parse.
  std::string shallow = "<html><body>";
  for (size_t i = 0; i + 1 < kMaxHtmlNesting; ++i) shallow += "<div/>";
  shallow += "kept text</body></html>";
  auto doc = HtmlDocument::Parse(shallow);
  ASSERT_TRUE(doc.ok()) << doc.status().ToString();
  std::string text;
  ASSERT_TRUE((*doc)
                  ->EmitBlocks([&](TextBlock&& b) {
                    text += b.text;
                    return Status::OK();
                  })
                  .ok());
  EXPECT_EQ(text, "kept text");
}

TEST(HtmlParserTest, SinkErrorStopsTheParse) {
  TempDir dir;
  const std::string path = dir.Write("p.html", kPage);
  class FailingSink final : public DocumentSink {
   public:
    Status BeginDocument(const SourceInfo&) override { return Status::OK(); }
    Status AddBlock(const TextBlock&) override {
      ++blocks;
      return Status::Cancelled("stop");
    }
    Status EndDocument() override { return Status::OK(); }
    int blocks = 0;
  } sink;
  CollectingErrors errors;
  ParseStats stats;
  SourceFile file;
  file.path = path;
  EXPECT_EQ(NewHtmlParser()->Parse(file, {}, sink, errors, stats).code(), StatusCode::kCancelled);
  EXPECT_EQ(sink.blocks, 1);
}

TEST(HtmlSegmentCutTest, CutsBeforeABlockTagOutsideRawText) {
  const std::string html = "<p>one</p><p>two</p><script>x = '<p>in script';</script>tail";
  // The last block start before the limit is inside <script>: the cut moves
  // to the <p> before the script.
  const size_t limit = html.find("in script");
  EXPECT_EQ(FindHtmlSegmentCut(html, limit), html.find("<p>two"));
  const std::string commented = "<p>intro</p><div>a</div><!-- <h2>x</h2> --> more text here";
  EXPECT_EQ(FindHtmlSegmentCut(commented, commented.find("x</h2>")), commented.find("<div>a"));
  // No block tag: after the last '>', else at whitespace, else at the limit.
  EXPECT_EQ(FindHtmlSegmentCut("<b>bold</b> and plain words", 20), 11u);
  EXPECT_EQ(FindHtmlSegmentCut("plain words only here", 16), 11u);
  EXPECT_EQ(FindHtmlSegmentCut("abcdefghijklmnop", 8), 8u);
  EXPECT_EQ(FindHtmlSegmentCut("<p>short", 100), 8u);  // limit past the end: all of it
  // Tags are matched whole: "<PRE" is not "<P", so the cut is after its '>'.
  EXPECT_EQ(FindHtmlSegmentCut("<P>a</P><PRE>b</PRE>c", 16), 13u);
  EXPECT_EQ(FindHtmlSegmentCut("xxxxxxxx<P>a</P>", 14), 8u);
}

TEST(HtmlParserTest, LargeFileIsParsedInSegmentsWithNothingLostOrSplit) {
  // Just over kHtmlWholeParseBytes, so the segmented path runs (~5 segments).
  std::string html = "<!DOCTYPE html><html><head><title>Big Manual</title></head><body>\n";
  int sections = 0;
  while (html.size() < kHtmlWholeParseBytes + kHtmlSegmentBytes / 2) {
    const std::string n = std::to_string(sections++);
    html += "<h2>Section " + n + "</h2><p>Paragraph " + n +
            " explains the <b>pump</b> in enough words to fill a line.</p>"
            "<script>var s = '<p>not text " +
            n +
            "</p>';</script>"
            "<table><tr><td>a" +
            n + "</td><td>b</td></tr></table>\n";
  }
  html += "</body></html>";
  TempDir dir;
  const std::string path = dir.Write("big.html", html);
  CollectingSink sink;
  ParseStats stats;
  ASSERT_TRUE(ParseFile(*NewHtmlParser(), path, sink, stats).ok());
  const auto& doc = sink.docs.at(0);
  EXPECT_EQ(doc.info.title, "Big Manual");
  ASSERT_EQ(doc.blocks.size(), static_cast<size_t>(3 * sections));
  for (int i = 0; i < sections; ++i) {
    const std::string n = std::to_string(i);
    ASSERT_EQ(doc.blocks[3 * i].text, "Section " + n);
    ASSERT_EQ(doc.blocks[3 * i + 1].text,
              "Paragraph " + n + " explains the pump in enough words to fill a line.");
    ASSERT_EQ(doc.blocks[3 * i + 2].text, "a" + n + " | b");
  }
}

// A real manual installed by a Debian package (bzip2's DocBook HTML).
TEST(HtmlParserTest, RealManualFromUsrShareDoc) {
  const std::string path = "/usr/share/doc/bzip2/manual.html";
  if (!std::filesystem::exists(path)) GTEST_SKIP() << path << " is not installed";
  auto parser = NewHtmlParser();
  CollectingSink sink;
  ParseStats stats;
  ASSERT_TRUE(ParseFile(*parser, path, sink, stats).ok());
  const auto& doc = sink.docs.at(0);
  EXPECT_EQ(doc.info.title, "bzip2 and libbzip2, version 1.0.8");
  size_t intro = doc.blocks.size();
  for (size_t i = 0; i < doc.blocks.size(); ++i) {
    if (doc.blocks[i].kind == BlockKind::kHeading && doc.blocks[i].text == "1. Introduction") {
      intro = i;
      EXPECT_EQ(doc.blocks[i].heading_level, 1);
      break;
    }
  }
  ASSERT_LT(intro + 1, doc.blocks.size());
  EXPECT_EQ(doc.blocks[intro + 1].kind, BlockKind::kParagraph);
  EXPECT_EQ(doc.blocks[intro + 1].text,
            "bzip2 compresses files using the Burrows-Wheeler block-sorting text compression "
            "algorithm, and Huffman coding. Compression is generally considerably better than "
            "that achieved by more conventional LZ77/LZ78-based compressors, and approaches the "
            "performance of the PPM family of statistical compressors.");
  for (const TextBlock& b : doc.blocks) {
    EXPECT_TRUE(IsValidUtf8(b.text));
    EXPECT_EQ(b.text.find("</"), std::string::npos) << b.text;
  }
}

}  // namespace
}  // namespace sluice::formats
