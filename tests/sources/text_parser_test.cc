#include <sys/resource.h>

#include <fstream>

#include "common/utf8.h"
#include "sluice/parser.h"
#include "sources/test_util.h"
#include "sources/text_input.h"
#include "testing/sanitizer.h"

namespace sluice {
namespace {

using testing::FileFor;
using testing::RecordingErrors;
using testing::RecordingSink;
using testing::TempDir;

struct Parsed {
  Status status;
  RecordingSink sink;
  RecordingErrors errors;
  ParseStats stats;
};

std::unique_ptr<Parsed> ParseWith(std::string_view parser_name, const std::string& path,
                                  const std::string& rel) {
  ParserRegistry registry;
  RegisterTextParsers(registry);
  const Parser* parser = registry.FindByName(parser_name);
  auto out = std::make_unique<Parsed>();
  if (parser == nullptr) {
    out->status = Status::NotFound("no parser");
    return out;
  }
  out->status =
      parser->Parse(FileFor(path, rel), ParseLimits{}, out->sink, out->errors, out->stats);
  return out;
}

std::vector<std::string> Texts(const testing::RecordedDocument& doc) {
  std::vector<std::string> t;
  for (const TextBlock& b : doc.blocks) t.push_back(b.text);
  return t;
}

std::string Utf16(std::u16string_view s, bool little_endian) {
  std::string out = little_endian ? "\xFF\xFE" : "\xFE\xFF";
  for (char16_t c : s) {
    const char lo = static_cast<char>(c & 0xFF), hi = static_cast<char>(c >> 8);
    out.push_back(little_endian ? lo : hi);
    out.push_back(little_endian ? hi : lo);
  }
  return out;
}

// The reader hands a small file's bytes to the parser (SourceFile::contents)
// instead of letting it open the file again: the text-family parsers parse
// those bytes, the same as the file, and never open the path.
TEST(TextParserTest, ParsersReadTheBytesTheReaderAlreadyHas) {
  TempDir dir;
  const struct {
    const char* parser;
    const char* rel;
    std::string bytes;
  } cases[] = {
      {"text", "a.txt",
       "\xEF\xBB\xBF"
       "First line\r\nsecond\r\n\r\nThird.\n"},
      {"text", "latin1.txt", "caf\xE9 cr\xE8me \xE0 la carte\n\nna\xEFve\n"},
      {"markdown", "b.md", "---\ntitle: T\n---\n# Head\n\nBody text.\n\n- item one\n"},
      {"jsonl", "c.jsonl",
       "{\"id\":\"1\",\"text\":\"one\"}\nnot json\n{\"id\":\"2\",\"text\":\"two\"}\n"},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.rel);
    const std::string path = dir.Write(c.rel, c.bytes);
    auto from_file = ParseWith(c.parser, path, c.rel);
    ASSERT_TRUE(from_file->status.ok()) << from_file->status.ToString();

    ParserRegistry registry;
    RegisterTextParsers(registry);
    SourceFile in_memory = FileFor(path, c.rel);
    in_memory.path = dir.path() + "/no-such-file";  // opening it would fail
    in_memory.contents = c.bytes;
    Parsed from_memory;
    from_memory.status = registry.FindByName(c.parser)->Parse(
        in_memory, ParseLimits{}, from_memory.sink, from_memory.errors, from_memory.stats);
    ASSERT_TRUE(from_memory.status.ok()) << from_memory.status.ToString();

    ASSERT_EQ(from_memory.sink.docs.size(), from_file->sink.docs.size());
    ASSERT_FALSE(from_file->sink.docs.empty());
    for (size_t i = 0; i < from_file->sink.docs.size(); ++i) {
      EXPECT_EQ(Texts(from_memory.sink.docs[i]), Texts(from_file->sink.docs[i]));
      EXPECT_EQ(from_memory.sink.docs[i].info.title, from_file->sink.docs[i].info.title);
    }
    EXPECT_EQ(from_memory.errors.calls.size(), from_file->errors.calls.size());
    EXPECT_EQ(from_memory.stats.latin1_fallback, from_file->stats.latin1_fallback);
    EXPECT_EQ(from_memory.stats.records_skipped, from_file->stats.records_skipped);
  }
}

TEST(TextParserTest, ParagraphsBomAndCrlf) {
  TempDir dir;
  const std::string path =
      dir.Write("notes/a.txt", "\xEF\xBB\xBF  First line\r\nsecond line\r\n\r\n \t \nThird.\n\n\n");
  auto p = ParseWith("text", path, "notes/a.txt");
  ASSERT_TRUE(p->status.ok()) << p->status.ToString();
  ASSERT_EQ(p->sink.docs.size(), 1u);
  const auto& doc = p->sink.docs[0];
  EXPECT_TRUE(doc.ended);
  EXPECT_EQ(doc.info.source_id, "notes/a.txt");
  EXPECT_EQ(doc.info.domain, "dom");
  EXPECT_EQ(doc.info.category, "cat");
  EXPECT_EQ(Texts(doc), (std::vector<std::string>{"First line\nsecond line", "Third."}));
  for (const TextBlock& b : doc.blocks) EXPECT_EQ(b.kind, BlockKind::kParagraph);
  EXPECT_EQ(p->stats.invalid_utf8_replaced, 0u);
  EXPECT_FALSE(p->stats.latin1_fallback);
}

TEST(TextParserTest, Utf16LittleAndBigEndianWithBom) {
  TempDir dir;
  const std::u16string text = u"H\u00e9llo w\u00f6rld \U0001F600\n\nSecond \u4e2d\u6587";
  for (bool le : {true, false}) {
    const std::string path = dir.Write(le ? "le.txt" : "be.txt", Utf16(text, le));
    auto p = ParseWith("text", path, "x.txt");
    ASSERT_TRUE(p->status.ok()) << p->status.ToString();
    ASSERT_EQ(p->sink.docs.size(), 1u);
    EXPECT_EQ(Texts(p->sink.docs[0]), (std::vector<std::string>{"H\u00e9llo w\u00f6rld \U0001F600",
                                                                "Second \u4e2d\u6587"}));
    EXPECT_EQ(p->stats.invalid_utf8_replaced, 0u);
  }
}

TEST(TextParserTest, Utf16UnpairedSurrogateReplaced) {
  TempDir dir;
  std::u16string text = u"ab";
  text.push_back(static_cast<char16_t>(0xD800));
  text += u"cd";
  const std::string path = dir.Write("s.txt", Utf16(text, true));
  auto p = ParseWith("text", path, "s.txt");
  ASSERT_TRUE(p->status.ok());
  EXPECT_EQ(Texts(p->sink.docs[0]), std::vector<std::string>{"ab\uFFFDcd"});
  EXPECT_EQ(p->stats.invalid_utf8_replaced, 1u);
}

TEST(TextParserTest, Latin1Fallback) {
  TempDir dir;
  const std::string path = dir.Write("l.txt", "Caf\xE9 na\xEFve \xE0 la cr\xE8me\n");
  auto p = ParseWith("text", path, "l.txt");
  ASSERT_TRUE(p->status.ok());
  EXPECT_TRUE(p->stats.latin1_fallback);
  EXPECT_EQ(p->stats.invalid_utf8_replaced, 0u);
  EXPECT_EQ(Texts(p->sink.docs[0]),
            std::vector<std::string>{"Caf\u00e9 na\u00efve \u00e0 la cr\u00e8me"});
}

TEST(TextParserTest, InvalidBytesRepairedAndCounted) {
  TempDir dir;
  const std::string path =
      dir.Write("r.txt", "gr\u00fc\u00dfe \u00e0 \u00e9t\u00e9 \u4e2d\u6587 ok \xFF then \xC3 end");
  auto p = ParseWith("text", path, "r.txt");
  ASSERT_TRUE(p->status.ok());
  EXPECT_FALSE(p->stats.latin1_fallback);
  EXPECT_EQ(p->stats.invalid_utf8_replaced, 2u);
  EXPECT_EQ(Texts(p->sink.docs[0]),
            std::vector<std::string>{
                "gr\u00fc\u00dfe \u00e0 \u00e9t\u00e9 \u4e2d\u6587 ok \uFFFD then \uFFFD end"});
}

TEST(TextParserTest, BinaryRefused) {
  TempDir dir;
  const std::string path = dir.Write("b.txt", std::string("\x89PNG\r\n\x1a\n\0\0\0\rIHDR", 16));
  auto p = ParseWith("text", path, "b.txt");
  EXPECT_EQ(p->status.code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(p->status.message(), "binary file");
  EXPECT_TRUE(p->sink.docs.empty());
}

TEST(TextParserTest, EmptyFileIsDocumentWithoutBlocks) {
  TempDir dir;
  for (const char* content : {"", "\xEF\xBB\xBF", "\n\n  \n"}) {
    const std::string path = dir.Write("e.txt", content);
    auto p = ParseWith("text", path, "e.txt");
    ASSERT_TRUE(p->status.ok());
    ASSERT_EQ(p->sink.docs.size(), 1u);
    EXPECT_TRUE(p->sink.docs[0].ended);
    EXPECT_TRUE(p->sink.docs[0].blocks.empty());
  }
}

TEST(TextParserTest, MissingFileAndSizeLimit) {
  ParserRegistry registry;
  RegisterTextParsers(registry);
  const Parser* text = registry.FindByName("text");
  RecordingSink sink;
  RecordingErrors errors;
  ParseStats stats;
  Status s = text->Parse(FileFor("/nonexistent/x.txt", "x.txt"), {}, sink, errors, stats);
  EXPECT_EQ(s.code(), StatusCode::kNotFound);
  TempDir dir;
  const std::string path = dir.Write("big.txt", std::string(100, 'a'));
  ParseLimits limits;
  limits.max_file_bytes = 10;
  s = text->Parse(FileFor(path, "big.txt"), limits, sink, errors, stats);
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
}

// Counts blocks without keeping them, so the test measures the parser.
class SizeSink final : public DocumentSink {
 public:
  Status BeginDocument(const SourceInfo&) override { return Status::OK(); }
  Status AddBlock(const TextBlock& b) override {
    ++blocks;
    max_block = std::max(max_block, b.text.size());
    total += b.text.size();
    for (char c : b.text) non_space += c != ' ' ? 1 : 0;
    all_valid = all_valid && IsValidUtf8(b.text);
    return Status::OK();
  }
  Status EndDocument() override { return Status::OK(); }
  size_t blocks = 0, max_block = 0, total = 0, non_space = 0;
  bool all_valid = true;
};

long MaxRssKiB() {
  struct rusage ru;
  getrusage(RUSAGE_SELF, &ru);
  return ru.ru_maxrss;
}

TEST(TextParserTest, HugeSingleLineStreamsInBoundedPieces) {
  TempDir dir;
  const std::string path = dir.path() + "/huge.txt";
  size_t expected_non_space = 0;
  {
    std::ofstream out(path, std::ios::binary);
    const std::string word = "w\u00f6rd ";  // 2-byte char so reads split sequences
    std::string piece;
    for (int i = 0; i < 10000; ++i) piece += word;
    for (int i = 0; i < 350; ++i) out << piece;  // ~21 MB, one line
    expected_non_space = 350ull * 10000 * (word.size() - 1);
  }
  ParserRegistry registry;
  RegisterTextParsers(registry);
  SizeSink sink;
  RecordingErrors errors;
  ParseStats stats;
  const long rss_before = MaxRssKiB();
  Status s = registry.FindByName("text")->Parse(FileFor(path, "huge.txt"), {}, sink, errors, stats);
  [[maybe_unused]] const long rss_growth_kib = MaxRssKiB() - rss_before;
  ASSERT_TRUE(s.ok()) << s.ToString();
  EXPECT_GE(sink.blocks, 20u);
  EXPECT_LE(sink.max_block, sources_internal::kMaxPieceBytes);
  EXPECT_TRUE(sink.all_valid);
  EXPECT_EQ(sink.non_space, expected_non_space);  // nothing lost at piece or read boundaries
  EXPECT_EQ(stats.invalid_utf8_replaced, 0u);
#if !defined(SLUICE_SANITIZED)
  EXPECT_LT(rss_growth_kib, 12 * 1024) << "peak memory grew like the file size";
#endif
}

TEST(TextParserTest, Utf16SurrogatePairsAcrossReadBlocks) {
  TempDir dir;
  std::u16string text;
  for (int i = 0; i < 300000; ++i) text += (i % 50 == 49) ? u" " : u"\U0001F600";  // 1.2 MB UTF-16
  const std::string path = dir.Write("emoji.txt", Utf16(text, true));
  ParserRegistry registry;
  RegisterTextParsers(registry);
  SizeSink sink;
  RecordingErrors errors;
  ParseStats stats;
  ASSERT_TRUE(
      registry.FindByName("text")->Parse(FileFor(path, "e.txt"), {}, sink, errors, stats).ok());
  EXPECT_TRUE(sink.all_valid);
  EXPECT_EQ(stats.invalid_utf8_replaced, 0u);
  EXPECT_EQ(sink.non_space, 300000u / 50 * 49 * 4);  // every emoji survived as 4 UTF-8 bytes
}

TEST(TextParserTest, HugeLineWithoutSpacesCutsAtUtf8Boundaries) {
  sources_internal::ParagraphAssembler paragraphs(
      [](std::string&& t) {
        EXPECT_TRUE(IsValidUtf8(t));
        EXPECT_LE(t.size(), 1000u);
        return Status::OK();
      },
      1000);
  std::string text;
  for (int i = 0; i < 3000; ++i) text += "\u4e2d";
  size_t pieces = 0;
  sources_internal::ParagraphAssembler counting(
      [&pieces](std::string&& t) {
        ++pieces;
        EXPECT_TRUE(IsValidUtf8(t));
        return Status::OK();
      },
      1000);
  ASSERT_TRUE(paragraphs.Feed(text).ok());
  ASSERT_TRUE(paragraphs.Finish().ok());
  ASSERT_TRUE(counting.Feed(text).ok());
  ASSERT_TRUE(counting.Finish().ok());
  EXPECT_EQ(pieces, 10u);  // 9000 bytes: nine pieces of 999 (333 characters) and the rest
}

// A parser that claims files starting with "MAGIC".
class MagicParser final : public Parser {
 public:
  std::string_view Name() const override { return "magic"; }
  std::vector<std::string> Extensions() const override { return {"mag"}; }
  bool Sniff(std::string_view head) const override { return head.starts_with("MAGIC"); }
  Status Parse(const SourceFile&, const ParseLimits&, DocumentSink&, RecordErrorSink&,
               ParseStats&) const override {
    return Status::OK();
  }
};

TEST(ParserRegistryTest, SniffThenExtensionThenTextFallback) {
  ParserRegistry registry;
  RegisterTextParsers(registry);
  registry.Add(std::make_unique<MagicParser>());
  EXPECT_EQ(registry.Names(), (std::vector<std::string>{"text", "markdown", "jsonl", "magic"}));
  EXPECT_EQ(registry.Find("a/b.MD", "# hi")->Name(), "markdown");
  EXPECT_EQ(registry.Find("a/b.Markdown", "# hi")->Name(), "markdown");
  EXPECT_EQ(registry.Find("x.ndjson", "{}")->Name(), "jsonl");
  EXPECT_EQ(registry.Find("-", "")->Name(), "jsonl");
  EXPECT_EQ(registry.Find("notes.txt", "MAGIC...")->Name(), "magic");  // sniff beats extension
  EXPECT_EQ(registry.Find("x.mag", "other")->Name(), "magic");
  EXPECT_EQ(registry.Find("README", "plain words")->Name(), "text");
  EXPECT_EQ(registry.Find("data.weird", "plain words")->Name(), "text");
  EXPECT_EQ(registry.Find("image.png", std::string_view("\x89PNG\0\0", 6)), nullptr);
  EXPECT_EQ(registry.FindByName("nope"), nullptr);
}

}  // namespace
}  // namespace sluice
