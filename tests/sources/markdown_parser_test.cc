#include "sluice/parser.h"
#include "sources/test_util.h"

namespace sluice {
namespace {

using testing::FileFor;
using testing::RecordingErrors;
using testing::RecordingSink;
using testing::TempDir;

testing::RecordedDocument ParseMarkdown(const std::string& content,
                                        ParseStats* stats_out = nullptr) {
  TempDir dir;
  const std::string path = dir.Write("doc.md", content);
  ParserRegistry registry;
  RegisterTextParsers(registry);
  RecordingSink sink;
  RecordingErrors errors;
  ParseStats stats;
  Status s =
      registry.FindByName("markdown")->Parse(FileFor(path, "doc.md"), {}, sink, errors, stats);
  EXPECT_TRUE(s.ok()) << s.ToString();
  EXPECT_EQ(sink.docs.size(), 1u);
  if (stats_out != nullptr) *stats_out = stats;
  if (sink.docs.empty()) return {};
  EXPECT_TRUE(sink.docs[0].ended);
  return sink.docs[0];
}

TEST(MarkdownParserTest, FrontMatterOverridesSourceInfo) {
  const auto doc = ParseMarkdown(
      "---\n"
      "title: \"Pump Manual\"\n"
      "author: Ada\n"
      "domain: engineering\n"
      "category: pumps\n"
      "version: 3\n"
      "tags:\n"
      "  - a\n"
      "---\n"
      "Body text.\n");
  EXPECT_EQ(doc.info.title, "Pump Manual");
  EXPECT_EQ(doc.info.author, "Ada");
  EXPECT_EQ(doc.info.domain, "engineering");
  EXPECT_EQ(doc.info.category, "pumps");
  EXPECT_EQ(doc.info.metadata_json, R"({"version":"3"})");
  ASSERT_EQ(doc.blocks.size(), 1u);
  EXPECT_EQ(doc.blocks[0].text, "Body text.");
}

TEST(MarkdownParserTest, WithoutFrontMatterKeepsRoute) {
  const auto doc = ParseMarkdown("Just text\n");
  EXPECT_EQ(doc.info.domain, "dom");
  EXPECT_EQ(doc.info.category, "cat");
  EXPECT_EQ(doc.info.metadata_json, "{}");
}

TEST(MarkdownParserTest, UnclosedFrontMatterIsText) {
  const auto doc = ParseMarkdown("---\ntitle: x\n");
  EXPECT_EQ(doc.info.title, "");
  ASSERT_EQ(doc.blocks.size(), 1u);
  EXPECT_EQ(doc.blocks[0].text, "title: x");
}

TEST(MarkdownParserTest, StructureBlocks) {
  const auto doc = ParseMarkdown(
      "# Part I #\n"
      "Intro line one\n"
      "line two\n"
      "\n"
      "Chapter 3\n"
      "=========\n"
      "Rates\n"
      "-----\n"
      "### Deep\n"
      "```python\n"
      "# not a heading\n"
      "\n"
      "x = 1\n"
      "```\n"
      "| Name | Rate |\n"
      "|------|-----:|\n"
      "| a    | 1    |\n"
      "| b    | 2    |\n"
      "\n"
      "- first item\n"
      "  continued\n"
      "* second item\n"
      "1. third\n"
      "\n"
      "> quoted text\n"
      "\n"
      "***\n"
      "#nospace is text\n");
  struct Want {
    BlockKind kind;
    int level;
    std::string text;
  };
  const std::vector<Want> want = {
      {BlockKind::kHeading, 1, "Part I"},
      {BlockKind::kParagraph, 0, "Intro line one\nline two"},
      {BlockKind::kHeading, 1, "Chapter 3"},
      {BlockKind::kHeading, 2, "Rates"},
      {BlockKind::kHeading, 3, "Deep"},
      {BlockKind::kCode, 0, "# not a heading\n\nx = 1"},
      {BlockKind::kTable, 0, "| Name | Rate |\n| a    | 1    |\n| b    | 2    |"},
      {BlockKind::kListItem, 0, "first item\ncontinued"},
      {BlockKind::kListItem, 0, "second item"},
      {BlockKind::kListItem, 0, "third"},
      {BlockKind::kParagraph, 0, "quoted text"},
      {BlockKind::kParagraph, 0, "#nospace is text"},
  };
  ASSERT_EQ(doc.blocks.size(), want.size());
  for (size_t i = 0; i < want.size(); ++i) {
    SCOPED_TRACE(i);
    EXPECT_EQ(doc.blocks[i].kind, want[i].kind);
    EXPECT_EQ(doc.blocks[i].heading_level, want[i].level);
    EXPECT_EQ(doc.blocks[i].text, want[i].text);
  }
}

TEST(MarkdownParserTest, InlineMarkupDropped) {
  const auto doc = ParseMarkdown(
      "## See **[the docs](http://x/y)** and ![a pump](p.png)\n"
      "Use `make run`, ~~not~~ \\*literal\\* and snake_case * 2.\n"
      "```\n**kept** `in code`\n```\n");
  ASSERT_EQ(doc.blocks.size(), 3u);
  EXPECT_EQ(doc.blocks[0].text, "See the docs and a pump");
  EXPECT_EQ(doc.blocks[1].text, "Use make run, not *literal* and snake_case * 2.");
  EXPECT_EQ(doc.blocks[2].text, "**kept** `in code`");
}

TEST(MarkdownParserTest, UnclosedFenceKeepsCode) {
  const auto doc = ParseMarkdown("text\n~~~~\ncode line\n");
  ASSERT_EQ(doc.blocks.size(), 2u);
  EXPECT_EQ(doc.blocks[1].kind, BlockKind::kCode);
  EXPECT_EQ(doc.blocks[1].text, "code line");
}

TEST(MarkdownParserTest, Latin1MarkdownDecoded) {
  ParseStats stats;
  const auto doc = ParseMarkdown("# Caf\xE9\n", &stats);
  EXPECT_TRUE(stats.latin1_fallback);
  ASSERT_EQ(doc.blocks.size(), 1u);
  EXPECT_EQ(doc.blocks[0].text, "Caf\u00e9");
}

TEST(MarkdownParserTest, EmptyMarkdown) {
  const auto doc = ParseMarkdown("");
  EXPECT_TRUE(doc.blocks.empty());
}

}  // namespace
}  // namespace sluice
