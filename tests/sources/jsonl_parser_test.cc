#include "sluice/parser.h"
#include "sources/jsonl_records.h"
#include "sources/test_util.h"
#include "sources/text_input.h"

namespace sluice {
namespace {

using testing::FileFor;
using testing::RecordingErrors;
using testing::RecordingSink;
using testing::TempDir;

// Parses the file at `path` (relative path `name`) with the registered jsonl
// parser.
Status ParseJsonl(const std::string& path, const std::string& name, RecordingSink& sink,
                  RecordingErrors& errors, ParseStats& stats) {
  ParserRegistry registry;
  RegisterTextParsers(registry);
  return registry.FindByName("jsonl")->Parse(FileFor(path, name), {}, sink, errors, stats);
}

TEST(JsonlParserTest, GoodRecords) {
  TempDir dir;
  const std::string path = dir.Write(
      "data/recs.jsonl",
      "\xEF\xBB\xBF{\"id\":\"doc-1\",\"text\":\"Hello\\n\\nWorld\",\"domain\":\"hr\"}\n"
      "\n"
      "{\"id\":42,\"text\":\"Answer\",\"category\":\"faq\",\"title\":\"T\",\"author\":\"A\","
      "\"metadata\":{\"lang\":\"en\",\"n\":[1,2]},\"extra\":true}\r\n"
      "{\"id\":\"empty\",\"text\":\"\"}");  // last line without '\n'
  ParserRegistry registry;
  RegisterTextParsers(registry);
  RecordingSink sink;
  RecordingErrors errors;
  ParseStats stats;
  Status s =
      registry.Find(path, "")->Parse(FileFor(path, "data/recs.jsonl"), {}, sink, errors, stats);
  ASSERT_TRUE(s.ok()) << s.ToString();
  EXPECT_TRUE(errors.calls.empty());
  EXPECT_EQ(stats.records_skipped, 0u);
  ASSERT_EQ(sink.docs.size(), 3u);
  const auto& a = sink.docs[0];
  EXPECT_EQ(a.info.source_id, "data/recs.jsonl#doc-1");  // the file is part of it
  EXPECT_EQ(a.info.domain, "hr");
  EXPECT_EQ(a.info.category, "cat");  // default from the file's route
  EXPECT_EQ(a.info.metadata_json, "{}");
  ASSERT_EQ(a.blocks.size(), 2u);
  EXPECT_EQ(a.blocks[0].text, "Hello");
  EXPECT_EQ(a.blocks[1].text, "World");
  const auto& b = sink.docs[1];
  EXPECT_EQ(b.info.source_id, "data/recs.jsonl#42");
  EXPECT_EQ(b.info.domain, "dom");
  EXPECT_EQ(b.info.category, "faq");
  EXPECT_EQ(b.info.title, "T");
  EXPECT_EQ(b.info.author, "A");
  EXPECT_EQ(b.info.metadata_json, R"({"lang":"en","n":[1,2]})");
  EXPECT_TRUE(sink.docs[2].ended);
  EXPECT_TRUE(sink.docs[2].blocks.empty());
}

TEST(JsonlParserTest, MalformedLinesDeadLetteredAndSkipped) {
  TempDir dir;
  const std::string path = dir.Write("bad.jsonl",
                                     "{\"id\":\"ok1\",\"text\":\"fine\"}\n"              // 1
                                     "{not json}\n"                                      // 2
                                     "{\"text\":\"no id\"}\n"                            // 3
                                     "{\"id\":\"t\",\"text\":5}\n"                       // 4
                                     "{\"id\":\"m\",\"text\":\"x\",\"metadata\":[1]}\n"  // 5
                                     "[1,2]\n"                                           // 6
                                     "{\"id\":true,\"text\":\"x\"}\n"                    // 7
                                     "{\"id\":\"d\",\"text\":\"x\",\"domain\":7}\n"      // 8
                                     "{\"id\":\"ok2\",\"text\":\"also fine\"}\n");       // 9
  ParserRegistry registry;
  RegisterTextParsers(registry);
  RecordingSink sink;
  RecordingErrors errors;
  ParseStats stats;
  Status s =
      registry.FindByName("jsonl")->Parse(FileFor(path, "bad.jsonl"), {}, sink, errors, stats);
  ASSERT_TRUE(s.ok()) << s.ToString();
  ASSERT_EQ(sink.docs.size(), 2u);
  EXPECT_EQ(sink.docs[0].info.source_id, "bad.jsonl#ok1");
  EXPECT_EQ(sink.docs[1].info.source_id, "bad.jsonl#ok2");
  EXPECT_EQ(stats.records_skipped, 7u);
  ASSERT_EQ(errors.calls.size(), 7u);
  const std::vector<std::pair<std::string, std::string>> want = {
      {"bad.jsonl:2", "line 2: invalid JSON"},
      {"bad.jsonl:3", "line 3: missing \"id\""},
      {"bad.jsonl#t", "line 4: \"text\" must be a string"},
      {"bad.jsonl#m", "line 5: \"metadata\" must be an object"},
      {"bad.jsonl:6", "line 6: record is not a JSON object"},
      {"bad.jsonl:7", "line 7: \"id\" must be a string or a number"},
      {"bad.jsonl#d", "line 8: \"domain\" must be a string"},
  };
  for (size_t i = 0; i < want.size(); ++i) {
    SCOPED_TRACE(i);
    EXPECT_EQ(errors.calls[i].first, want[i].first);
    EXPECT_EQ(errors.calls[i].second.code(), StatusCode::kCorrupt);
    EXPECT_TRUE(errors.calls[i].second.message().starts_with(want[i].second))
        << errors.calls[i].second.message();
  }
}

TEST(JsonlParserTest, TooLongLineDiscardedThenReported) {
  std::vector<std::tuple<std::string, uint64_t, bool>> lines;
  sources_internal::LineSplitter splitter(
      10, sources_internal::LineSplitter::Overflow::kDiscard,
      [&lines](std::string_view line, uint64_t n, bool too_long) {
        lines.emplace_back(std::string(line), n, too_long);
        return Status::OK();
      });
  ASSERT_TRUE(splitter.Feed("short\nthis line is far too").ok());
  ASSERT_TRUE(splitter.Feed(" long for ten\r\nok\r\nlast").ok());
  ASSERT_TRUE(splitter.Finish().ok());
  ASSERT_EQ(lines.size(), 4u);
  EXPECT_EQ(lines[0], std::make_tuple(std::string("short"), 1ull, false));
  EXPECT_EQ(lines[1], std::make_tuple(std::string(), 2ull, true));
  EXPECT_EQ(lines[2], std::make_tuple(std::string("ok"), 3ull, false));
  EXPECT_EQ(lines[3], std::make_tuple(std::string("last"), 4ull, false));

  // The reader dead-letters a too-long line under "<file>:<line>".
  RecordingSink sink;
  RecordingErrors errors;
  ParseStats stats;
  SourceFile file = FileFor("x.jsonl", "x.jsonl");
  sources_internal::JsonlRecordReader reader(file, sink, errors, stats);
  ASSERT_TRUE(reader.HandleLine({}, 2, true).ok());
  ASSERT_EQ(errors.calls.size(), 1u);
  EXPECT_EQ(errors.calls[0].first, "x.jsonl:2");
  EXPECT_NE(errors.calls[0].second.message().find("longer than"), std::string::npos);
  EXPECT_EQ(stats.records_skipped, 1u);
}

TEST(JsonlParserTest, SplitModeHandsOutPiecesAtUtf8Boundaries) {
  std::vector<std::string> lines;
  sources_internal::LineSplitter splitter(8, sources_internal::LineSplitter::Overflow::kSplit,
                                          [&lines](std::string_view line, uint64_t, bool) {
                                            lines.emplace_back(line);
                                            return Status::OK();
                                          });
  ASSERT_TRUE(splitter.Feed("\u00e9\u00e9\u00e9\u00e9\u00e9\u00e9\nab\n").ok());  // 12 bytes
  ASSERT_TRUE(splitter.Finish().ok());
  EXPECT_EQ(lines, (std::vector<std::string>{"\u00e9\u00e9\u00e9\u00e9", "\u00e9\u00e9", "ab"}));
}

TEST(JsonlParserTest, SinkFailureStopsTheInput) {
  class FailingSink final : public DocumentSink {
   public:
    Status BeginDocument(const SourceInfo&) override { return Status::Cancelled("stop"); }
    Status AddBlock(const TextBlock&) override { return Status::OK(); }
    Status EndDocument() override { return Status::OK(); }
  };
  TempDir dir;
  const std::string path = dir.Write("a.jsonl", "{\"id\":\"1\",\"text\":\"x\"}\n");
  ParserRegistry registry;
  RegisterTextParsers(registry);
  FailingSink sink;
  RecordingErrors errors;
  ParseStats stats;
  Status s = registry.FindByName("jsonl")->Parse(FileFor(path, "a.jsonl"), {}, sink, errors, stats);
  EXPECT_EQ(s.code(), StatusCode::kCancelled);
}

// Issue 14, defect 3: equal ids in two files were one source (the rerun of
// one file dropped the other's records from the aggregate).
TEST(JsonlParserTest, RecordIdentityIncludesTheFile) {
  TempDir dir;
  const std::string record = "{\"id\":\"1\",\"text\":\"same id\"}\n";
  const std::string a = dir.Write("feed/a.jsonl", record);
  const std::string b = dir.Write("feed/b.jsonl", record);
  ParserRegistry registry;
  RegisterTextParsers(registry);
  RecordingSink sink;
  RecordingErrors errors;
  ParseStats stats;
  const Parser& jsonl = *registry.FindByName("jsonl");
  ASSERT_TRUE(jsonl.Parse(FileFor(a, "feed/a.jsonl"), {}, sink, errors, stats).ok());
  ASSERT_TRUE(jsonl.Parse(FileFor(b, "feed/b.jsonl"), {}, sink, errors, stats).ok());
  ASSERT_EQ(sink.docs.size(), 2u);
  EXPECT_EQ(sink.docs[0].info.source_id, "feed/a.jsonl#1");
  EXPECT_EQ(sink.docs[1].info.source_id, "feed/b.jsonl#1");
  EXPECT_TRUE(errors.calls.empty());
}

// Three records with one id in one file were all kept under one identity
// (ordinal 0 each, overwriting each other): the repeats are refused now,
// naming their line and the first one's.
TEST(JsonlParserTest, RepeatedIdInOneFileIsRefusedNamingBothLines) {
  TempDir dir;
  const std::string path = dir.Write("dup.jsonl",
                                     "{\"id\":\"1\",\"text\":\"first\"}\n"        // 1
                                     "{\"id\":\"2\",\"text\":\"other\"}\n"        // 2
                                     "{\"id\":\"1\",\"text\":\"second\"}\n"       // 3
                                     "{\"id\":1,\"text\":\"number one\"}\n"       // 4: "1" again
                                     "{\"id\":\"3\",\"text\":5}\n"                // 5: refused
                                     "{\"id\":\"3\",\"text\":\"valid three\"}\n"  // 6: first valid
                                     "{\"id\":\"1\",\"text\":\"third\"}\n");      // 7
  RecordingSink sink;
  RecordingErrors errors;
  ParseStats stats;
  ASSERT_TRUE(ParseJsonl(path, "dup.jsonl", sink, errors, stats).ok());
  ASSERT_EQ(sink.docs.size(), 3u);
  EXPECT_EQ(sink.docs[0].info.source_id, "dup.jsonl#1");
  EXPECT_EQ(sink.docs[0].blocks[0].text, "first");
  EXPECT_EQ(sink.docs[1].info.source_id, "dup.jsonl#2");
  EXPECT_EQ(sink.docs[2].info.source_id, "dup.jsonl#3");
  EXPECT_EQ(sink.docs[2].blocks[0].text, "valid three");
  ASSERT_EQ(errors.calls.size(), 4u);
  EXPECT_EQ(errors.calls[0].first, "dup.jsonl:3");
  EXPECT_TRUE(
      errors.calls[0].second.message().starts_with("line 3: duplicate id \"1\" (first on line 1)"))
      << errors.calls[0].second.message();
  EXPECT_EQ(errors.calls[1].first, "dup.jsonl:4");
  EXPECT_TRUE(errors.calls[2].second.message().starts_with("line 5: \"text\" must be a string"));
  EXPECT_EQ(errors.calls[3].first, "dup.jsonl:7");
  EXPECT_TRUE(
      errors.calls[3].second.message().starts_with("line 7: duplicate id \"1\" (first on line 1)"));
  EXPECT_EQ(stats.records_skipped, 4u);
}

// Stdin has no file: its records keep their own ids (and repeats are refused
// there too).
TEST(JsonlParserTest, StdinRecordsKeepTheirOwnIds) {
  RecordingSink sink;
  RecordingErrors errors;
  ParseStats stats;
  SourceFile file;
  file.path = "-";
  file.relative_path = "stdin";
  sources_internal::JsonlRecordReader reader(file, sink, errors, stats);
  std::string line = "{\"id\":\"r-1\",\"text\":\"from a pipe\"}";
  const size_t size = line.size();
  line.append(sources_internal::kJsonlLinePadding, '\0');
  ASSERT_TRUE(reader.HandleLine(std::string_view(line.data(), size), 1, false).ok());
  ASSERT_TRUE(reader.HandleLine(std::string_view(line.data(), size), 2, false).ok());
  ASSERT_EQ(sink.docs.size(), 1u);
  EXPECT_EQ(sink.docs[0].info.source_id, "r-1");
  ASSERT_EQ(errors.calls.size(), 1u);
  EXPECT_TRUE(errors.calls[0].second.message().starts_with("line 2: duplicate id \"r-1\""));
}

// Issue 14, defect 10: one invalid byte dead-lettered the whole record while
// the text parser repairs it; now it is repaired and counted the same way.
TEST(JsonlParserTest, InvalidUtf8IsRepairedNotDeadLettered) {
  TempDir dir;
  const std::string path = dir.Write("bytes.jsonl",
                                     "{\"id\":\"a\",\"text\":\"caf\xE9 ok\"}\n"
                                     "{\"id\":\"b\",\"text\":\"fine\",\"title\":\"t\xFF\"}\n");
  RecordingSink sink;
  RecordingErrors errors;
  ParseStats stats;
  ASSERT_TRUE(ParseJsonl(path, "bytes.jsonl", sink, errors, stats).ok());
  EXPECT_TRUE(errors.calls.empty());
  EXPECT_EQ(stats.records_skipped, 0u);
  EXPECT_EQ(stats.invalid_utf8_replaced, 2u);
  ASSERT_EQ(sink.docs.size(), 2u);
  EXPECT_EQ(sink.docs[0].blocks[0].text, "caf\xEF\xBF\xBD ok");
  EXPECT_EQ(sink.docs[1].info.title, "t\xEF\xBF\xBD");
}

// A huge record's text reaches the sink in bounded pieces, never whole.
TEST(JsonlParserTest, HugeRecordTextArrivesInBoundedPieces) {
  TempDir dir;
  std::string text;
  while (text.size() < 5 * sources_internal::kMaxPieceBytes) text += "word ";
  const std::string path = dir.Write(
      "big.jsonl", "{\"id\":\"big\",\"text\":\"" + text + "\"}\n{\"id\":\"n\",\"text\":\"x\"}\n");
  RecordingSink sink;
  RecordingErrors errors;
  ParseStats stats;
  ASSERT_TRUE(ParseJsonl(path, "big.jsonl", sink, errors, stats).ok());
  ASSERT_EQ(sink.docs.size(), 2u);
  for (const TextBlock& b : sink.docs[0].blocks) {
    EXPECT_LE(b.text.size(), sources_internal::kMaxPieceBytes);
  }
  EXPECT_GE(sink.docs[0].blocks.size(), 5u);
  EXPECT_EQ(sink.docs[1].info.source_id, "big.jsonl#n");
}

// A record of more than 4 MiB gives its line's buffer back once parsed
// (LineSplitter::ReleaseLine), before its text is emitted; the record and
// the lines after it arrive whole and in order (and under ASan, nothing
// reads the freed line).
TEST(JsonlParserTest, AHugeRecordsLineIsFreedBeforeItsTextIsEmitted) {
  TempDir dir;
  std::string text;
  while (text.size() < (5u << 20)) text += "word ";
  text.pop_back();
  const std::string path =
      dir.Write("big.jsonl", "{\"id\":\"a\",\"text\":\"one\"}\n{\"id\":\"big\",\"text\":\"" + text +
                                 "\"}\n{\"id\":\"b\",\"text\":\"t\\u00e9l\\u00e9\"}\n"
                                 "{\"id\":\"c\",\"text\":\"last\"}");
  RecordingSink sink;
  RecordingErrors errors;
  ParseStats stats;
  ASSERT_TRUE(ParseJsonl(path, "big.jsonl", sink, errors, stats).ok());
  EXPECT_TRUE(errors.calls.empty());
  ASSERT_EQ(sink.docs.size(), 4u);
  // Its pieces hold the whole text but the spaces they were cut at.
  std::string big;
  for (const TextBlock& b : sink.docs[1].blocks) big += b.text;
  std::erase(big, ' ');
  std::erase(text, ' ');
  EXPECT_EQ(big, text);
  EXPECT_EQ(sink.docs[1].info.source_id, "big.jsonl#big");
  EXPECT_EQ(sink.docs[2].blocks.at(0).text, "t\u00e9l\u00e9");
  EXPECT_EQ(sink.docs[3].blocks.at(0).text, "last");
}

// ReleaseLine inside the callback: the line's view is not read again, the
// splitter carries on with the rest of a split line, the next lines and
// their numbers.
TEST(JsonlParserTest, LineSplitterReleasesALineFromInsideTheCallback) {
  using Overflow = sources_internal::LineSplitter::Overflow;
  for (const Overflow overflow : {Overflow::kDiscard, Overflow::kSplit}) {
    std::vector<std::pair<std::string, uint64_t>> lines;
    sources_internal::LineSplitter* self = nullptr;
    sources_internal::LineSplitter splitter(
        6, overflow,
        [&](std::string_view line, uint64_t n, bool) {
          lines.emplace_back(std::string(line), n);
          if (line.starts_with("fre")) self->ReleaseLine();
          return Status::OK();
        },
        4);
    self = &splitter;
    ASSERT_TRUE(splitter.Feed("free\nkeep\nfr").ok());
    ASSERT_TRUE(splitter.Feed("ee\nfreefreefree\nabc").ok());
    ASSERT_TRUE(splitter.Finish().ok());
    std::vector<std::pair<std::string, uint64_t>> want = {{"free", 1}, {"keep", 2}, {"free", 3}};
    if (overflow == Overflow::kSplit) {
      want.insert(want.end(), {{"freefr", 4}, {"eefree", 4}});
    } else {
      want.emplace_back("", 4);  // too long: dropped and reported
    }
    want.emplace_back("abc", 5);
    EXPECT_EQ(lines, want);
  }
}

// Lines are handed out followed by zero padding, so simdjson parses them in
// place.
TEST(JsonlParserTest, LineSplitterPadsEveryLine) {
  std::vector<std::string> tails;
  sources_internal::LineSplitter splitter(
      1 << 20, sources_internal::LineSplitter::Overflow::kDiscard,
      [&tails](std::string_view line, uint64_t, bool) {
        tails.emplace_back(line.data() + line.size(), 8);
        return Status::OK();
      },
      8);
  ASSERT_TRUE(splitter.Feed("one\r\ntwo\nthree").ok());
  ASSERT_TRUE(splitter.Finish().ok());
  ASSERT_EQ(tails.size(), 3u);
  for (const std::string& t : tails) EXPECT_EQ(t, std::string(8, '\0'));
}

}  // namespace
}  // namespace sluice
