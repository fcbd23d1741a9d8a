#include "sluice/chunker.h"

#include <gtest/gtest.h>
#include <simdjson.h>

#include "common/hashing.h"
#include "common/utf8.h"

namespace sluice {
namespace {

TextBlock Para(std::string text, int page = 0) {
  TextBlock b;
  b.text = std::move(text);
  b.page = page;
  return b;
}

TextBlock Heading(std::string text, int level) {
  TextBlock b;
  b.kind = BlockKind::kHeading;
  b.text = std::move(text);
  b.heading_level = level;
  return b;
}

TextBlock Code(std::string text) {
  TextBlock b;
  b.kind = BlockKind::kCode;
  b.text = std::move(text);
  return b;
}

// Runs blocks through a chunker; also builds the extracted text.
struct Chunked {
  std::vector<Chunk> chunks;
  std::string extracted;
};

Chunked ChunkBlocks(const std::vector<TextBlock>& blocks, ChunkerOptions options,
                    SourceInfo info = {}) {
  if (info.source_id.empty()) info.source_id = "docs/a.md";
  Chunked out;
  Chunker chunker(options, [&out](Chunk&& c) {
    out.chunks.push_back(std::move(c));
    return Status::OK();
  });
  EXPECT_TRUE(chunker.BeginDocument(info).ok());
  for (const TextBlock& b : blocks) {
    EXPECT_TRUE(chunker.AddBlock(b).ok());
    if (!b.text.empty()) out.extracted += b.text + "\n\n";
  }
  EXPECT_TRUE(chunker.EndDocument().ok());
  EXPECT_EQ(chunker.ChunksInDocument(), out.chunks.size());
  return out;
}

// A paragraph of numbered sentences, ~`words` words long.
std::string Sentences(int words, int seed) {
  std::string s;
  for (int i = 0; i < words; ++i) {
    s += "word" + std::to_string((i * 7 + seed) % 97);
    s += (i % 9 == 8) ? ". " : " ";
  }
  s.pop_back();
  s += ".";
  return s;
}

bool IsWs(char c) { return c == ' ' || c == '\n' || c == '\t' || c == '\r'; }

// Every chunk is its slice of the extracted text; the chunks in order cover
// all of it except whitespace between them.
void ExpectExactCover(const Chunked& r) {
  uint64_t prev_end = 0;
  std::string rebuilt;
  for (size_t i = 0; i < r.chunks.size(); ++i) {
    SCOPED_TRACE(i);
    const Chunk& c = r.chunks[i];
    ASSERT_LE(c.byte_end, r.extracted.size());
    ASSERT_LT(c.byte_begin, c.byte_end);
    EXPECT_EQ(c.text, r.extracted.substr(c.byte_begin, c.byte_end - c.byte_begin));
    EXPECT_EQ(c.ordinal, i);
    EXPECT_GT(c.byte_end, prev_end);  // progress
    if (c.byte_begin >= prev_end) {
      const std::string gap = r.extracted.substr(prev_end, c.byte_begin - prev_end);
      for (char ch : gap) EXPECT_TRUE(IsWs(ch)) << "text lost between chunks: " << gap;
      rebuilt += gap + c.text;
    } else {
      rebuilt += c.text.substr(prev_end - c.byte_begin);  // drop the overlap
    }
    prev_end = c.byte_end;
  }
  std::string_view all = r.extracted;
  while (!all.empty() && IsWs(all.back())) all.remove_suffix(1);
  while (!all.empty() && IsWs(all.front())) all.remove_prefix(1);
  EXPECT_EQ(rebuilt.substr(rebuilt.find_first_not_of(" \n")), std::string(all));
}

simdjson::dom::element ParseMeta(simdjson::dom::parser& parser, const std::string& json) {
  simdjson::dom::element e;
  EXPECT_EQ(parser.parse(json).get(e), simdjson::SUCCESS) << json;
  return e;
}

TEST(ChunkerTest, EstimateTokensAndIds) {
  EXPECT_EQ(EstimateTokens("", 4.0), 0u);
  EXPECT_EQ(EstimateTokens("a", 4.0), 1u);
  EXPECT_EQ(EstimateTokens("abcd", 4.0), 1u);
  EXPECT_EQ(EstimateTokens("abcde", 4.0), 2u);
  EXPECT_EQ(EstimateTokens("abcdefghij", 2.5), 4u);
  const std::string id = MakeChunkId("s", 7, "text");
  EXPECT_EQ(id, Hash128Hex(std::string("s\0"
                                       "7\0"
                                       "text",
                                       8)));
  EXPECT_EQ(id.size(), 32u);
  EXPECT_NE(id, MakeChunkId("s", 8, "text"));
}

TEST(ChunkerTest, BudgetRespectedAndPlainParagraphsReassemble) {
  std::vector<TextBlock> blocks;
  for (int i = 0; i < 40; ++i) blocks.push_back(Para(Sentences(20 + i * 7, i)));
  for (uint32_t overlap : {0u, 16u}) {
    SCOPED_TRACE(overlap);
    ChunkerOptions o;
    o.chunk_tokens = 64;
    o.overlap_tokens = overlap;
    const Chunked r = ChunkBlocks(blocks, o);
    ASSERT_GT(r.chunks.size(), 20u);
    for (const Chunk& c : r.chunks) {
      EXPECT_LE(c.token_estimate, 64u);
      EXPECT_LE(c.text.size(), 256u);
      EXPECT_EQ(c.token_estimate, EstimateTokens(c.text, 4.0));
      EXPECT_FALSE(IsWs(c.text.front()));
      EXPECT_FALSE(IsWs(c.text.back()));
    }
    ExpectExactCover(r);
  }
}

TEST(ChunkerTest, OverlapRepeatsTailAtWordBoundary) {
  ChunkerOptions o;
  o.chunk_tokens = 50;
  o.overlap_tokens = 10;  // 40 bytes
  const Chunked r = ChunkBlocks({Para(Sentences(400, 3))}, o);
  ASSERT_GT(r.chunks.size(), 5u);
  for (size_t i = 1; i < r.chunks.size(); ++i) {
    SCOPED_TRACE(i);
    const Chunk& prev = r.chunks[i - 1];
    const Chunk& c = r.chunks[i];
    ASSERT_LT(c.byte_begin, prev.byte_end);  // overlaps
    EXPECT_LE(prev.byte_end - c.byte_begin, 40u);
    EXPECT_GE(prev.byte_end - c.byte_begin, 20u);
    EXPECT_TRUE(IsWs(r.extracted[c.byte_begin - 1]));  // starts at a word
    EXPECT_TRUE(prev.text.ends_with(c.text.substr(0, prev.byte_end - c.byte_begin)));
  }
  ExpectExactCover(r);
}

TEST(ChunkerTest, CutsAtSentenceEnds) {
  ChunkerOptions o;
  o.chunk_tokens = 40;
  o.overlap_tokens = 0;
  const Chunked r = ChunkBlocks({Para(Sentences(300, 1))}, o);
  ASSERT_GT(r.chunks.size(), 3u);
  for (size_t i = 0; i + 1 < r.chunks.size(); ++i) {
    EXPECT_EQ(r.chunks[i].text.back(), '.') << r.chunks[i].text;
    EXPECT_GE(r.chunks[i].text.size(), 80u);  // cut in the second half of the budget
  }
  ExpectExactCover(r);
}

TEST(ChunkerTest, PrefersParagraphBreaks) {
  ChunkerOptions o;
  o.chunk_tokens = 30;  // 120 bytes
  o.overlap_tokens = 0;
  const Chunked r = ChunkBlocks(
      {Para(std::string(50, 'a') + ". b."), Para(std::string(30, 'c')), Para(std::string(60, 'd'))},
      o);
  ASSERT_EQ(r.chunks.size(), 2u);
  EXPECT_EQ(r.chunks[0].text, std::string(50, 'a') + ". b.\n\n" + std::string(30, 'c'));
  EXPECT_EQ(r.chunks[1].text, std::string(60, 'd'));
}

TEST(ChunkerTest, NeverSplitsUtf8AndCutsCjkSentences) {
  std::string cjk;  // no spaces, no sentence ends: only UTF-8 boundaries
  for (int i = 0; i < 500; ++i) cjk += (i % 2) ? "\u4e2d" : "\U0001F600";
  ChunkerOptions o;
  o.chunk_tokens = 25;  // 100 bytes: not a multiple of 3 or 4
  o.overlap_tokens = 5;
  Chunked r = ChunkBlocks({Para(cjk)}, o);
  ASSERT_GT(r.chunks.size(), 10u);
  for (const Chunk& c : r.chunks) {
    EXPECT_TRUE(IsValidUtf8(c.text));
    EXPECT_LE(c.text.size(), 100u);
  }
  ExpectExactCover(r);

  std::string sentences;
  for (int i = 0; i < 60; ++i) sentences += "\u4e2d\u6587\u53e5\u5b50\u3002";  // 15 bytes each
  o.overlap_tokens = 0;
  r = ChunkBlocks({Para(sentences)}, o);
  ASSERT_GT(r.chunks.size(), 5u);
  for (const Chunk& c : r.chunks) EXPECT_TRUE(c.text.ends_with("\u3002"));
  ExpectExactCover(r);
}

TEST(ChunkerTest, HeadingPathAndSectionBoundaries) {
  ChunkerOptions o;
  o.chunk_tokens = 200;
  o.overlap_tokens = 20;
  const Chunked r = ChunkBlocks({Heading("Part I", 1), Heading("Chapter 3", 2), Para("Intro."),
                                 Heading("Rates", 3), Para("Rate text."), Heading("Chapter 4", 2),
                                 Para("More."), Heading("Part II", 1), Para("End.")},
                                o);
  ASSERT_EQ(r.chunks.size(), 4u);
  EXPECT_EQ(r.chunks[0].text, "Part I\n\nChapter 3\n\nIntro.");
  EXPECT_EQ(r.chunks[1].text, "Rates\n\nRate text.");
  EXPECT_EQ(r.chunks[2].text, "Chapter 4\n\nMore.");
  EXPECT_EQ(r.chunks[3].text, "Part II\n\nEnd.");
  const std::vector<std::string> paths = {"Part I > Chapter 3", "Part I > Chapter 3 > Rates",
                                          "Part I > Chapter 4", "Part II"};
  simdjson::dom::parser parser;
  for (size_t i = 0; i < paths.size(); ++i) {
    std::string_view path;
    ASSERT_EQ(ParseMeta(parser, r.chunks[i].metadata_json)["heading_path"].get(path),
              simdjson::SUCCESS);
    EXPECT_EQ(path, paths[i]);
  }
  ExpectExactCover(r);
}

TEST(ChunkerTest, LongSectionKeepsHeadingPathOnEveryChunk) {
  ChunkerOptions o;
  o.chunk_tokens = 30;
  o.overlap_tokens = 0;
  const Chunked r = ChunkBlocks({Heading("Only", 1), Para(Sentences(200, 2))}, o);
  ASSERT_GT(r.chunks.size(), 3u);
  EXPECT_TRUE(r.chunks[0].text.starts_with("Only\n\n"));
  for (const Chunk& c : r.chunks) {
    EXPECT_NE(c.metadata_json.find(R"("heading_path":"Only")"), std::string::npos);
  }
}

TEST(ChunkerTest, PagesFromBlocks) {
  ChunkerOptions o;
  o.chunk_tokens = 30;  // 120 bytes
  o.overlap_tokens = 0;
  const Chunked r = ChunkBlocks({Para(std::string(50, 'a'), 1), Para(std::string(50, 'b'), 2),
                                 Para(std::string(50, 'c'), 3), Para(std::string(10, 'd'))},
                                o);
  ASSERT_EQ(r.chunks.size(), 2u);
  simdjson::dom::parser parser;
  int64_t start = 0, end = 0;
  auto meta = ParseMeta(parser, r.chunks[0].metadata_json);
  ASSERT_EQ(meta["page_start"].get(start), simdjson::SUCCESS);
  ASSERT_EQ(meta["page_end"].get(end), simdjson::SUCCESS);
  EXPECT_EQ(start, 1);
  EXPECT_EQ(end, 2);
  meta = ParseMeta(parser, r.chunks[1].metadata_json);
  ASSERT_EQ(meta["page_start"].get(start), simdjson::SUCCESS);
  ASSERT_EQ(meta["page_end"].get(end), simdjson::SUCCESS);
  EXPECT_EQ(start, 3);
  EXPECT_EQ(end, 3);
  // No pages known: no page keys.
  const Chunked plain = ChunkBlocks({Para("x")}, o);
  EXPECT_EQ(plain.chunks[0].metadata_json.find("page_start"), std::string::npos);
}

TEST(ChunkerTest, CodeBlockKeptWholeWhenItFits) {
  ChunkerOptions o;
  o.chunk_tokens = 50;  // 200 bytes
  o.overlap_tokens = 5;
  std::string code;
  for (int i = 0; i < 12; ++i) code += "x = f(" + std::to_string(i) + ")\n";
  code.pop_back();  // ~110 bytes, with newlines and no sentence ends
  const Chunked r = ChunkBlocks({Para(Sentences(25, 1)), Code(code), Para(Sentences(30, 2))}, o);
  int whole = 0;
  for (const Chunk& c : r.chunks) {
    if (c.text.find(code) != std::string::npos) ++whole;
    EXPECT_LE(c.text.size(), 200u);
  }
  EXPECT_EQ(whole, 1);
  ExpectExactCover(r);
}

TEST(ChunkerTest, OversizedCodeIsCutLikeText) {
  ChunkerOptions o;
  o.chunk_tokens = 20;
  o.overlap_tokens = 0;
  std::string code;
  for (int i = 0; i < 40; ++i) code += "line " + std::to_string(i) + "\n";
  const Chunked r = ChunkBlocks({Code(code)}, o);
  EXPECT_GT(r.chunks.size(), 3u);
  for (const Chunk& c : r.chunks) EXPECT_LE(c.text.size(), 80u);
  ExpectExactCover(r);
}

TEST(ChunkerTest, DeterministicIdsAndFields) {
  ChunkerOptions o;
  o.chunk_tokens = 40;
  o.overlap_tokens = 8;
  SourceInfo info;
  info.source_id = "manuals/pump.md";
  info.domain = "engineering";
  info.category = "pumps";
  const std::vector<TextBlock> blocks = {Para(Sentences(200, 5))};
  const Chunked a = ChunkBlocks(blocks, o, info);
  const Chunked b = ChunkBlocks(blocks, o, info);
  ASSERT_EQ(a.chunks.size(), b.chunks.size());
  for (size_t i = 0; i < a.chunks.size(); ++i) {
    EXPECT_EQ(a.chunks[i].id, b.chunks[i].id);
    EXPECT_EQ(a.chunks[i].id,
              MakeChunkId("manuals/pump.md", static_cast<uint32_t>(i), a.chunks[i].text));
    EXPECT_EQ(a.chunks[i].source_id, "manuals/pump.md");
    EXPECT_EQ(a.chunks[i].domain, "engineering");
    EXPECT_EQ(a.chunks[i].category, "pumps");
  }
}

TEST(ChunkerTest, MetadataMergedAsValidJson) {
  ChunkerOptions o;
  SourceInfo info;
  info.source_id = "r1";
  info.title = "Pump \"X\"";
  info.author = "Ada";
  info.metadata_json = R"({"lang":"en","title":"old","nested":{"a":[1,2]}})";
  const Chunked r = ChunkBlocks({Heading("H", 1), Para("body")}, o, info);
  ASSERT_EQ(r.chunks.size(), 1u);
  simdjson::dom::parser parser;
  auto meta = ParseMeta(parser, r.chunks[0].metadata_json);
  std::string_view s;
  ASSERT_EQ(meta["lang"].get(s), simdjson::SUCCESS);
  EXPECT_EQ(s, "en");
  ASSERT_EQ(meta["title"].get(s), simdjson::SUCCESS);
  EXPECT_EQ(s, "Pump \"X\"");
  ASSERT_EQ(meta["author"].get(s), simdjson::SUCCESS);
  EXPECT_EQ(s, "Ada");
  ASSERT_EQ(meta["heading_path"].get(s), simdjson::SUCCESS);
  EXPECT_EQ(s, "H");
  int64_t a1 = 0;
  ASSERT_EQ(meta["nested"]["a"].at(1).get(a1), simdjson::SUCCESS);
  EXPECT_EQ(a1, 2);
  EXPECT_EQ(r.chunks[0].metadata_json.find("old"), std::string::npos);  // no duplicate key

  info.metadata_json = "{broken";
  const Chunked bad = ChunkBlocks({Para("body")}, o, info);
  meta = ParseMeta(parser, bad.chunks[0].metadata_json);
  ASSERT_EQ(meta["source_metadata"].get(s), simdjson::SUCCESS);
  EXPECT_EQ(s, "{broken");
}

TEST(ChunkerTest, EmptyDocumentsAndEmptyBlocks) {
  ChunkerOptions o;
  EXPECT_TRUE(ChunkBlocks({}, o).chunks.empty());
  EXPECT_TRUE(ChunkBlocks({Para(""), Para("   ")}, o).chunks.empty());
  const Chunked r = ChunkBlocks({Heading("Lonely heading", 2)}, o);
  ASSERT_EQ(r.chunks.size(), 1u);
  EXPECT_EQ(r.chunks[0].text, "Lonely heading");
}

TEST(ChunkerTest, HugeBlockIsChunkedProgressively) {
  ChunkerOptions o;
  o.chunk_tokens = 128;
  o.overlap_tokens = 16;
  const std::string big = Sentences(400000, 9);  // ~3 MB in one block
  size_t chunks_seen = 0;
  size_t max_size = 0;
  Chunker chunker(o, [&](Chunk&& c) {
    ++chunks_seen;
    max_size = std::max(max_size, c.text.size());
    return Status::OK();
  });
  SourceInfo info;
  info.source_id = "big";
  ASSERT_TRUE(chunker.BeginDocument(info).ok());
  ASSERT_TRUE(chunker.AddBlock(Para(big)).ok());
  EXPECT_GT(chunks_seen, 5000u);  // emitted while the block was fed, not at the end
  ASSERT_TRUE(chunker.EndDocument().ok());
  EXPECT_LE(max_size, 512u);
}

TEST(ChunkerTest, EmitFailureStopsAndIsReturned) {
  ChunkerOptions o;
  o.chunk_tokens = 10;
  o.overlap_tokens = 0;
  Chunker chunker(o, [](Chunk&&) { return Status::Cancelled("queue closed"); });
  SourceInfo info;
  info.source_id = "x";
  ASSERT_TRUE(chunker.BeginDocument(info).ok());
  Status s = chunker.AddBlock(Para(Sentences(100, 1)));
  EXPECT_EQ(s.code(), StatusCode::kCancelled);
  EXPECT_EQ(Chunker(o, nullptr).AddBlock(Para("x")).code(), StatusCode::kInternal);
}

}  // namespace
}  // namespace sluice
