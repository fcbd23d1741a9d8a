// Unit tests of the JSON aggregator on a real temp directory.
#include <gtest/gtest.h>

#include <simdjson.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>
#include <tuple>

#include <atomic>
#include <filesystem>
#include <fstream>
#include <future>
#include <set>
#include <span>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "aggregate/json_aggregator.h"
#include "sluice/aggregator.h"
#include "testing/sanitizer.h"

namespace sluice {
namespace {

namespace fs = std::filesystem;

std::string ReadFile(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

class AggregatorTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() /
           ("sluice_agg_test_" + std::to_string(::getpid()) + "_" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(dir_);
    fs::create_directories(dir_);
    out_ = (dir_ / "out").string();
  }
  void TearDown() override { fs::remove_all(dir_); }

  AggregatorOptions Options(size_t flush_every = 100) {
    AggregatorOptions o;
    o.out_dir = out_;
    o.flush_every = flush_every;
    o.min_flush_interval = Duration::zero();  // the chunk cadence alone, unless a test sets it
    return o;
  }

  std::unique_ptr<JsonAggregator> MustOpen(const AggregatorOptions& o,
                                           const AggregatorLimits& limits = {}) {
    auto agg = JsonAggregator::Open(o, limits);
    EXPECT_TRUE(agg.ok()) << agg.status().ToString();
    return agg.ok() ? std::move(agg).value() : nullptr;
  }

  // manuals/pumps.json as a person or another tool might format it (not one
  // chunk per line): chunks b.md#0 ("old b", page 7) and a.md#0 ("old a",
  // page 9).
  void WriteHandFormattedGroupFile() {
    fs::create_directories(out_ + "/manuals");
    std::ofstream(out_ + "/manuals/pumps.json") << R"({
  "domain": "manuals",
  "category": "pumps",
  "chunks": [
    {"id": "b.md#0", "source_id": "b.md", "ordinal": 0,
     "text": "old b", "metadata": {"page_start": 7}},
    {
      "id": "a.md#0", "source_id": "a.md", "ordinal": 0,
      "text": "old a", "metadata": {"page_start": 9}
    }
  ]
}
)";
  }

  static EmbeddedChunk MakeChunk(const std::string& source, uint32_t ordinal,
                                 const std::string& domain = "manuals",
                                 const std::string& category = "pumps") {
    EmbeddedChunk e;
    e.chunk.source_id = source;
    e.chunk.ordinal = ordinal;
    e.chunk.id = source + "#" + std::to_string(ordinal);
    e.chunk.text = "text of " + e.chunk.id + " with \"quotes\" and \n newline";
    e.chunk.domain = domain;
    e.chunk.category = category;
    e.chunk.metadata_json = R"({"page_start":)" + std::to_string(ordinal + 1) + "}";
    e.embedding = {0.5f, -1.25f, static_cast<float>(ordinal)};
    e.model = "m";
    return e;
  }

  // Parses a group file; fails the test when it is not valid JSON.
  struct Parsed {
    std::string domain, category;
    uint64_t chunk_count = 0;
    std::vector<std::string> sources;
    std::vector<std::string> ids, texts;
    std::vector<uint64_t> ordinals;
    std::vector<std::vector<double>> embeddings;
    std::vector<uint64_t> page_starts;
    bool any_embedding_key = false;
  };
  static bool Parse(const std::string& json, Parsed& p) {
    simdjson::dom::parser parser;
    simdjson::dom::element doc;
    if (parser.parse(json).get(doc)) return false;
    std::string_view sv;
    if (doc["domain"].get_string().get(sv)) return false;
    p.domain = sv;
    if (doc["category"].get_string().get(sv)) return false;
    p.category = sv;
    if (doc["chunk_count"].get_uint64().get(p.chunk_count)) return false;
    simdjson::dom::array arr;
    if (doc["sources"].get_array().get(arr)) return false;
    for (auto s : arr) p.sources.emplace_back(std::string_view(s.get_string()));
    if (doc["chunks"].get_array().get(arr)) return false;
    for (auto c : arr) {
      p.ids.emplace_back(std::string_view(c["id"].get_string()));
      p.texts.emplace_back(std::string_view(c["text"].get_string()));
      p.ordinals.push_back(uint64_t(c["ordinal"].get_uint64()));
      p.page_starts.push_back(uint64_t(c["metadata"]["page_start"].get_uint64()));
      simdjson::dom::array emb;
      if (!c["embedding"].get_array().get(emb)) {
        p.any_embedding_key = true;
        std::vector<double> v;
        for (auto x : emb) v.push_back(double(x.get_double()));
        p.embeddings.push_back(v);
      }
    }
    return true;
  }
  Parsed MustParse(const std::string& path) {
    Parsed p;
    EXPECT_TRUE(Parse(ReadFile(path), p)) << path;
    return p;
  }

  // A file where the manuals group's folder should be: its writes fail.
  void BlockTheManualsFolder() {
    std::ofstream(out_ + "/manuals") << "a file where the domain folder should be";
  }
  // `s` is that failure, nothing was written; the folder is unblocked again.
  void ExpectTheManualsFolderWasBlocked(const Status& s, const JsonAggregator& agg) {
    EXPECT_EQ(s.code(), StatusCode::kIOError);
    EXPECT_NE(s.message().find("cannot create aggregate directory '" + out_ + "/manuals'"),
              std::string::npos)
        << s.message();
    EXPECT_EQ(agg.FilesWritten(), 0u);
    fs::remove(out_ + "/manuals");
  }
  // An aggregator whose every cadence rewrite runs on the background thread.
  std::unique_ptr<JsonAggregator> MustOpenRewritingInBackground(size_t flush_every) {
    AggregatorLimits limits;
    limits.background_rewrite_bytes = 1;
    return MustOpen(Options(flush_every), limits);
  }
  // Holds each background rewrite of `agg` before it streams, until the
  // returned promise is set.
  static std::promise<void> HoldBackgroundRewrites(JsonAggregator& agg) {
    std::promise<void> release;
    std::shared_future<void> released = release.get_future().share();
    agg.SetBackgroundRewriteHookForTest([released] { released.wait(); });
    return release;
  }

  // Adds 4,096 chunks of 1.5 KB to manuals/pumps (one source) and finishes
  // while another thread reads and parses the group file as fast as it can:
  // how many reads parsed whole and how many did not.
  struct ReaderCounts {
    int whole = 0, broken = 0;
  };
  ReaderCounts AddWhileAReaderParses(JsonAggregator& agg) {
    const std::string file = out_ + "/manuals/pumps.json";
    std::atomic<bool> done{false};
    std::atomic<int> whole{0}, broken{0};
    std::thread reader([&] {
      while (!done.load()) {
        std::string json = ReadFile(file);
        if (json.empty()) continue;  // not created yet
        Parsed p;
        if (Parse(json, p) && p.chunk_count == p.ids.size()) {
          ++whole;
        } else {
          ++broken;
        }
      }
    });
    bool added = true;
    for (uint32_t i = 0; i < 4096 && added; ++i) {
      EmbeddedChunk c = MakeChunk("a.md", i);
      c.chunk.text.assign(1500, static_cast<char>('a' + i % 26));
      added = agg.Add(c).ok();
    }
    EXPECT_TRUE(added);
    EXPECT_TRUE(agg.Finish().ok());
    done = true;
    reader.join();
    return {whole.load(), broken.load()};
  }

  fs::path dir_;
  std::string out_;
};

TEST(SafeFileComponentTest, TraversalAndSeparatorsAreNeutralised) {
  for (const char* name : {"../../etc", "..", ".", "./x", "a/../b", "a\\b", "/abs", ".hidden"}) {
    const std::string s = SafeFileComponent(name);
    EXPECT_EQ(s.find('/'), std::string::npos) << name;
    EXPECT_EQ(s.find('\\'), std::string::npos) << name;
    EXPECT_EQ(s.find(".."), std::string::npos) << name << " -> " << s;
    ASSERT_FALSE(s.empty());
    EXPECT_NE(s[0], '.') << name << " -> " << s;
  }
}

TEST(SafeFileComponentTest, PlainNamesAreKeptAndLookalikesStayDistinct) {
  EXPECT_EQ(SafeFileComponent("pumps"), "pumps");
  EXPECT_EQ(SafeFileComponent("a_b"), "a_b");
  EXPECT_EQ(SafeFileComponent("v1.2-final"), "v1.2-final");
  const std::set<std::string> names = {SafeFileComponent("a/b"), SafeFileComponent("a_b"),
                                       SafeFileComponent("a?b"), SafeFileComponent("a b"),
                                       SafeFileComponent("a\nb")};
  EXPECT_EQ(names.size(), 5u);
  EXPECT_EQ(SafeFileComponent("a/b").substr(0, 4), "a_b-");
  EXPECT_EQ(SafeFileComponent("a/b").size(), 12u);                // "a_b-" + 8 hex
  EXPECT_EQ(SafeFileComponent("a/b"), SafeFileComponent("a/b"));  // stable
}

TEST(SafeFileComponentTest, UnicodeEmptyAndLongNames) {
  const std::string u = SafeFileComponent("Prüfung/Übersicht");
  for (char c : u) EXPECT_LT(static_cast<unsigned char>(c), 0x80) << u;
  EXPECT_EQ(u.substr(0, 18), "Pr_fung__bersicht-");  // one '_' per code point
  EXPECT_NE(SafeFileComponent("日本"), SafeFileComponent("中国"));
  EXPECT_NE(SafeFileComponent("\xff\xfe"), SafeFileComponent("__"));  // invalid UTF-8

  const std::string empty = SafeFileComponent("");
  EXPECT_FALSE(empty.empty());
  EXPECT_EQ(empty[0], '_');
  EXPECT_NE(empty, SafeFileComponent("_"));

  const std::string long_ascii(1000, 'x');
  const std::string cut = SafeFileComponent(long_ascii);
  EXPECT_LE(cut.size(), 89u);
  EXPECT_NE(cut, SafeFileComponent(long_ascii + "y"));  // the hash covers the whole name
  std::string long_utf8;
  for (int i = 0; i < 300; ++i) long_utf8 += "é";
  EXPECT_LE(SafeFileComponent(long_utf8).size(), 89u);
}

TEST_F(AggregatorTest, OneFilePerGroupOrderedWithSchema) {
  auto agg = MustOpen(Options());
  ASSERT_NE(agg, nullptr);
  // Out of order on purpose, two groups.
  for (auto [src, ord] : std::vector<std::pair<std::string, uint32_t>>{
           {"b.md", 1}, {"a.md", 2}, {"b.md", 0}, {"a.md", 0}, {"a.md", 1}, {"a.md", 10}}) {
    ASSERT_TRUE(agg->Add(MakeChunk(src, ord)).ok());
  }
  ASSERT_TRUE(agg->Add(MakeChunk("c.md", 0, "manuals", "valves")).ok());
  EXPECT_EQ(agg->FilesWritten(), 0u);  // nothing reached flush_every
  ASSERT_TRUE(agg->Finish().ok());
  EXPECT_EQ(agg->FilesWritten(), 2u);

  const std::string pumps = out_ + "/manuals/pumps.json";
  EXPECT_EQ(agg->GroupFilePath("manuals", "pumps"), pumps);
  Parsed p = MustParse(pumps);
  EXPECT_EQ(p.domain, "manuals");
  EXPECT_EQ(p.category, "pumps");
  EXPECT_EQ(p.chunk_count, 6u);
  EXPECT_EQ(p.sources, (std::vector<std::string>{"a.md", "b.md"}));
  EXPECT_EQ(p.ids, (std::vector<std::string>{"a.md#0", "a.md#1", "a.md#2", "a.md#10", "b.md#0",
                                             "b.md#1"}));
  EXPECT_EQ(p.ordinals, (std::vector<uint64_t>{0, 1, 2, 10, 0, 1}));
  EXPECT_EQ(p.page_starts, (std::vector<uint64_t>{1, 2, 3, 11, 1, 2}));
  EXPECT_EQ(p.texts[0], "text of a.md#0 with \"quotes\" and \n newline");
  EXPECT_FALSE(p.any_embedding_key);
  Parsed v = MustParse(out_ + "/manuals/valves.json");
  EXPECT_EQ(v.chunk_count, 1u);

  EXPECT_EQ(agg->Add(MakeChunk("d.md", 0)).code(), StatusCode::kInvalidArgument);
}

TEST_F(AggregatorTest, IncludeEmbeddingsWritesVectors) {
  auto o = Options();
  o.include_embeddings = true;
  auto agg = MustOpen(o);
  ASSERT_NE(agg, nullptr);
  ASSERT_TRUE(agg->Add(MakeChunk("a.md", 3)).ok());
  ASSERT_TRUE(agg->Finish().ok());
  Parsed p = MustParse(out_ + "/manuals/pumps.json");
  ASSERT_EQ(p.embeddings.size(), 1u);
  EXPECT_EQ(p.embeddings[0], (std::vector<double>{0.5, -1.25, 3.0}));
}

TEST_F(AggregatorTest, RepeatedIdsAreDeduplicatedLatestWins) {
  auto agg = MustOpen(Options(3));
  ASSERT_NE(agg, nullptr);
  EmbeddedChunk c = MakeChunk("a.md", 0);
  ASSERT_TRUE(agg->Add(c).ok());
  ASSERT_TRUE(agg->Add(c).ok());  // a retry
  c.chunk.text = "second version";
  ASSERT_TRUE(agg->Add(c).ok());  // flush point (3 adds)
  ASSERT_TRUE(agg->Add(MakeChunk("a.md", 1)).ok());
  ASSERT_TRUE(agg->Finish().ok());
  Parsed p = MustParse(out_ + "/manuals/pumps.json");
  EXPECT_EQ(p.chunk_count, 2u);
  EXPECT_EQ(p.ids, (std::vector<std::string>{"a.md#0", "a.md#1"}));
  EXPECT_EQ(p.texts[0], "second version");
}

TEST_F(AggregatorTest, FlushCadenceDoublesPerGroup) {
  auto agg = MustOpen(Options(2));
  ASSERT_NE(agg, nullptr);
  const std::string file = out_ + "/manuals/pumps.json";
  // count of chunks visible in the file after each Add (0: no file yet)
  const std::vector<uint64_t> expected = {0, 2, 2, 4, 4, 4, 4, 8, 8};
  for (uint32_t i = 0; i < expected.size(); ++i) {
    ASSERT_TRUE(agg->Add(MakeChunk("a.md", i)).ok());
    if (expected[i] == 0) {
      EXPECT_FALSE(fs::exists(file)) << i;
    } else {
      EXPECT_EQ(MustParse(file).chunk_count, expected[i]) << "after add " << i + 1;
    }
    // Another group's adds do not move this group's cadence.
    ASSERT_TRUE(agg->Add(MakeChunk("z.md", i, "other", "misc")).ok());
  }
  EXPECT_EQ(agg->Rewrites(), 3u * 2);  // at 2, 4, 8 for each of the two groups
  ASSERT_TRUE(agg->Finish().ok());
  EXPECT_EQ(MustParse(file).chunk_count, 9u);
  EXPECT_EQ(agg->Rewrites(), 4u * 2);
  EXPECT_EQ(agg->FilesWritten(), 2u);
}

// min_flush_interval holds a due rewrite back until the previous write is
// that old (the first write is never held back), and the doubling then
// continues from the group's size at the rewrite.
TEST_F(AggregatorTest, ARewriteWaitsForTheMinimumIntervalAfterThePreviousOne) {
  ManualClock clock;
  AggregatorOptions options = Options(2);
  options.min_flush_interval = std::chrono::seconds(10);
  options.clock = &clock;
  auto agg = MustOpen(options);
  ASSERT_NE(agg, nullptr);
  const std::string file = out_ + "/manuals/pumps.json";
  uint32_t ordinal = 0;
  auto add = [&] { ASSERT_TRUE(agg->Add(MakeChunk("a.md", ordinal++)).ok()); };
  add();
  EXPECT_FALSE(fs::exists(file));
  add();  // 2 chunks: the first write, at once
  EXPECT_EQ(MustParse(file).chunk_count, 2u);
  for (int i = 0; i < 5; ++i) add();  // 7: due at 4, but only 0 s have passed
  clock.Advance(std::chrono::milliseconds(9999));
  add();  // 8
  EXPECT_EQ(MustParse(file).chunk_count, 2u);
  EXPECT_EQ(agg->Rewrites(), 1u);
  clock.Advance(std::chrono::milliseconds(1));
  add();  // 9, 10 s after the first write: the held-back rewrite
  EXPECT_EQ(MustParse(file).chunk_count, 9u);
  EXPECT_EQ(agg->Rewrites(), 2u);
  clock.Advance(std::chrono::seconds(60));
  for (int i = 0; i < 8; ++i) add();  // 17: next due at 2 x 9 = 18
  EXPECT_EQ(MustParse(file).chunk_count, 9u);
  add();  // 18
  EXPECT_EQ(MustParse(file).chunk_count, 18u);
  add();  // Finish is never held back
  ASSERT_TRUE(agg->Finish().ok());
  EXPECT_EQ(MustParse(file).chunk_count, 19u);
  EXPECT_EQ(agg->Rewrites(), 4u);
}

TEST_F(AggregatorTest, FlushIsAtomicReaderAlwaysSeesAWholeFile) {
  AggregatorLimits limits;
  limits.background_rewrite_bytes = SIZE_MAX;  // every rewrite in Add (see the next test)
  auto agg = MustOpen(Options(1), limits);
  ASSERT_NE(agg, nullptr);
  const std::string file = out_ + "/manuals/pumps.json";
  const ReaderCounts counts = AddWhileAReaderParses(*agg);
  EXPECT_EQ(counts.broken, 0);
  EXPECT_GT(counts.whole, 0);
  EXPECT_EQ(MustParse(file).chunk_count, 4096u);
  for (const auto& entry : fs::recursive_directory_iterator(out_)) {
    EXPECT_EQ(entry.path().filename().string().find(".tmp."), std::string::npos) << entry.path();
  }
  EXPECT_FALSE(fs::exists(agg->SpoolDir()));
  EXPECT_FALSE(fs::exists(out_ + "/.spool"));
}

// A large group's cadence rewrite runs on a thread of its own (limits set so
// every rewrite does) and writes the group as it was when the rewrite
// started, while Add goes on: a later chunk, and a later copy of an id
// already in the file, wait for the next rewrite.
TEST_F(AggregatorTest, ABackgroundRewriteWritesTheSnapshotWhileAddsGoOn) {
  auto agg = MustOpenRewritingInBackground(2);
  ASSERT_NE(agg, nullptr);
  std::promise<void> release = HoldBackgroundRewrites(*agg);
  const std::string file = out_ + "/manuals/pumps.json";
  ASSERT_TRUE(agg->Add(MakeChunk("a.md", 0)).ok());
  ASSERT_TRUE(agg->Add(MakeChunk("a.md", 1)).ok());  // due: the rewrite starts and is held
  EXPECT_EQ(agg->BackgroundRewrites(), 1u);
  EmbeddedChunk retried = MakeChunk("a.md", 0);
  retried.chunk.text = "retried";
  ASSERT_TRUE(agg->Add(retried).ok());
  for (uint32_t i = 2; i < 9; ++i) ASSERT_TRUE(agg->Add(MakeChunk("a.md", i)).ok());
  EXPECT_FALSE(fs::exists(file));            // still held
  EXPECT_EQ(agg->BackgroundRewrites(), 1u);  // due at 4 and 8, one at a time
  release.set_value();
  agg->WaitForBackgroundRewriteForTest();
  Parsed first = MustParse(file);
  EXPECT_EQ(first.chunk_count, 2u);
  ASSERT_EQ(first.ids.size(), 2u);
  EXPECT_EQ(first.texts[0], MakeChunk("a.md", 0).chunk.text);  // the copy of its snapshot
  ASSERT_TRUE(agg->Add(MakeChunk("a.md", 9)).ok());  // reaps it, then the held-back rewrite
  EXPECT_EQ(agg->Rewrites(), 1u);
  EXPECT_EQ(agg->BackgroundRewrites(), 2u);
  agg->WaitForBackgroundRewriteForTest();
  Parsed second = MustParse(file);
  EXPECT_EQ(second.chunk_count, 10u);
  ASSERT_EQ(second.texts.size(), 10u);
  EXPECT_EQ(second.texts[0], "retried");
  ASSERT_TRUE(agg->Add(MakeChunk("a.md", 10)).ok());
  ASSERT_TRUE(agg->Finish().ok());
  EXPECT_EQ(MustParse(file).chunk_count, 11u);
  EXPECT_EQ(agg->Rewrites(), 3u);
  EXPECT_EQ(agg->FilesWritten(), 1u);
  EXPECT_FALSE(fs::exists(agg->IndexPath()));
  EXPECT_FALSE(fs::exists(agg->IndexPath() + "-wal"));
  EXPECT_FALSE(fs::exists(out_ + "/.spool"));
}

// A background rewrite that fails fails the next Add; the group stays to be
// written, so a Finish once the cause is gone writes all of it.
TEST_F(AggregatorTest, AFailedBackgroundRewriteIsReportedAndItsGroupWrittenLater) {
  auto agg = MustOpenRewritingInBackground(2);
  ASSERT_NE(agg, nullptr);
  BlockTheManualsFolder();
  ASSERT_TRUE(agg->Add(MakeChunk("a.md", 0)).ok());
  ASSERT_TRUE(agg->Add(MakeChunk("a.md", 1)).ok());  // starts; fails on its thread
  agg->WaitForBackgroundRewriteForTest();
  Status s = agg->Add(MakeChunk("a.md", 2));
  ExpectTheManualsFolderWasBlocked(s, *agg);
  ASSERT_TRUE(agg->Add(MakeChunk("a.md", 2)).ok());
  ASSERT_TRUE(agg->Finish().ok());
  EXPECT_EQ(MustParse(out_ + "/manuals/pumps.json").chunk_count, 3u);
}

// Closing the aggregator (a cancelled run) stops a running background
// rewrite: no temp file, spool or index is left, and the group file, if the
// rewrite got that far, is whole.
TEST_F(AggregatorTest, ClosingStopsABackgroundRewriteAndLeavesNothingBehind) {
  auto agg = MustOpenRewritingInBackground(4000);
  ASSERT_NE(agg, nullptr);
  std::promise<void> release = HoldBackgroundRewrites(*agg);
  for (uint32_t i = 0; i < 4000; ++i) ASSERT_TRUE(agg->Add(MakeChunk("a.md", i)).ok());
  EXPECT_EQ(agg->BackgroundRewrites(), 1u);
  const std::string spool = agg->SpoolDir();
  release.set_value();
  agg.reset();
  const std::string file = out_ + "/manuals/pumps.json";
  if (fs::exists(file)) {
    EXPECT_EQ(MustParse(file).chunk_count, 4000u);
  }
  for (const auto& entry : fs::recursive_directory_iterator(out_)) {
    EXPECT_EQ(entry.path().filename().string().find(".tmp."), std::string::npos) << entry.path();
  }
  EXPECT_FALSE(fs::exists(spool));
  EXPECT_FALSE(fs::exists(out_ + "/.spool"));
}

// Readers see whole files while rewrites run on the background thread, and
// Finish holds every chunk.
TEST_F(AggregatorTest, BackgroundRewritesKeepEveryFileWhole) {
  auto agg = MustOpenRewritingInBackground(1);
  ASSERT_NE(agg, nullptr);
  EXPECT_EQ(AddWhileAReaderParses(*agg).broken, 0);
  // The first at 1 chunk; how many more depends on how fast each finishes
  // (one at a time, a due one waits for the next Add).
  EXPECT_GE(agg->BackgroundRewrites(), 1u);
  Parsed p = MustParse(out_ + "/manuals/pumps.json");
  ASSERT_EQ(p.ordinals.size(), 4096u);
  for (uint32_t i = 0; i < 4096; ++i) EXPECT_EQ(p.ordinals[i], i);
}

TEST_F(AggregatorTest, SpoolKeepsMemoryBounded) {
  AggregatorLimits limits;
  limits.group_buffer_bytes = 16 * 1024;
  limits.total_buffer_bytes = 32 * 1024;
  auto agg = MustOpen(Options(0), limits);  // 0: only Finish writes files
  ASSERT_NE(agg, nullptr);
  size_t max_buffered = 0;
  for (uint32_t i = 0; i < 600; ++i) {
    // Three groups so the total limit, not only the per-group one, is hit.
    EmbeddedChunk c = MakeChunk("s" + std::to_string(i % 7), i, "d", "c" + std::to_string(i % 3));
    c.chunk.text.assign(1000, 'x');
    ASSERT_TRUE(agg->Add(c).ok());
    max_buffered = std::max(max_buffered, agg->BufferedBytes());
  }
  EXPECT_LE(max_buffered, limits.total_buffer_bytes + 2048);
  // The texts live in the spool files, not in memory.
  uintmax_t spooled = 0;
  for (const auto& entry : fs::directory_iterator(agg->SpoolDir())) {
    EXPECT_EQ(entry.path().extension(), ".jsonl");
    spooled += entry.file_size();
  }
  EXPECT_GE(spooled + agg->BufferedBytes(), 600u * 1000);
  EXPECT_EQ(agg->FilesWritten(), 0u);
  ASSERT_TRUE(agg->Finish().ok());
  EXPECT_EQ(agg->FilesWritten(), 3u);
  EXPECT_EQ(MustParse(out_ + "/d/c0.json").chunk_count, 200u);
}

TEST_F(AggregatorTest, RerunMergesWithExistingFileBySource) {
  {
    auto agg = MustOpen(Options());
    ASSERT_NE(agg, nullptr);
    for (uint32_t i = 0; i < 2; ++i) {
      ASSERT_TRUE(agg->Add(MakeChunk("a.md", i)).ok());
      ASSERT_TRUE(agg->Add(MakeChunk("b.md", i)).ok());
    }
    ASSERT_TRUE(agg->Finish().ok());
  }
  const std::string file = out_ + "/manuals/pumps.json";
  const std::string first = ReadFile(file);
  {
    // An identical rerun reproduces the file byte for byte: no duplicates.
    auto agg = MustOpen(Options());
    ASSERT_NE(agg, nullptr);
    for (uint32_t i = 0; i < 2; ++i) {
      ASSERT_TRUE(agg->Add(MakeChunk("a.md", i)).ok());
      ASSERT_TRUE(agg->Add(MakeChunk("b.md", i)).ok());
    }
    ASSERT_TRUE(agg->Finish().ok());
  }
  EXPECT_EQ(ReadFile(file), first);
  {
    // An incremental run: b.md changed (now one chunk), c.md is new, a.md
    // was skipped. a.md's chunks are kept, b.md's old ones replaced.
    auto agg = MustOpen(Options());
    ASSERT_NE(agg, nullptr);
    EmbeddedChunk b = MakeChunk("b.md", 0);
    b.chunk.id = "b.md#0-v2";
    b.chunk.text = "new b";
    ASSERT_TRUE(agg->Add(b).ok());
    ASSERT_TRUE(agg->Add(MakeChunk("c.md", 0)).ok());
    ASSERT_TRUE(agg->Finish().ok());
  }
  Parsed p = MustParse(file);
  EXPECT_EQ(p.ids, (std::vector<std::string>{"a.md#0", "a.md#1", "b.md#0-v2", "c.md#0"}));
  EXPECT_EQ(p.sources, (std::vector<std::string>{"a.md", "b.md", "c.md"}));
  EXPECT_EQ(p.texts[2], "new b");
  EXPECT_EQ(p.page_starts[1], 2u);  // imported chunks keep their metadata
}

// A source whose domain or category changed leaves its old group: from a
// group this run touched (superseded rows not written) and from one it did
// not touch (rewritten, or removed with its folder when emptied), so the
// files are what a fresh run of the same chunks writes.
TEST_F(AggregatorTest, SourceThatChangedGroupLeavesItsOldGroupFile) {
  {
    auto agg = MustOpen(Options());
    ASSERT_NE(agg, nullptr);
    ASSERT_TRUE(agg->Add(MakeChunk("moves.md", 0, "old", "a")).ok());
    ASSERT_TRUE(agg->Add(MakeChunk("stays.md", 0, "old", "a")).ok());
    ASSERT_TRUE(agg->Add(MakeChunk("moves-too.md", 0, "gone", "b")).ok());
    ASSERT_TRUE(agg->Add(MakeChunk("kept.md", 0, "touched", "c")).ok());
    ASSERT_TRUE(agg->Add(MakeChunk("moves-3.md", 0, "touched", "c")).ok());
    ASSERT_TRUE(agg->Finish().ok());
  }
  const std::string untouched_a = out_ + "/old/a.json";
  {
    auto agg = MustOpen(Options());
    ASSERT_NE(agg, nullptr);
    ASSERT_TRUE(agg->Add(MakeChunk("moves.md", 0, "new", "x")).ok());
    ASSERT_TRUE(agg->Add(MakeChunk("moves-too.md", 0, "new", "x")).ok());
    ASSERT_TRUE(agg->Add(MakeChunk("moves-3.md", 0, "new", "x")).ok());
    ASSERT_TRUE(agg->Add(MakeChunk("new.md", 0, "touched", "c")).ok());  // touches touched/c
    ASSERT_TRUE(agg->Finish().ok());
  }
  // Untouched, other sources left: rewritten without the moved one.
  EXPECT_EQ(MustParse(untouched_a).sources, (std::vector<std::string>{"stays.md"}));
  // Untouched and emptied: removed, with its folder.
  EXPECT_FALSE(fs::exists(out_ + "/gone"));
  // Touched this run: the moved source's imported rows are not written.
  EXPECT_EQ(MustParse(out_ + "/touched/c.json").sources,
            (std::vector<std::string>{"kept.md", "new.md"}));
  EXPECT_EQ(MustParse(out_ + "/new/x.json").sources,
            (std::vector<std::string>{"moves-3.md", "moves-too.md", "moves.md"}));

  // The same tree as one fresh run of the current chunks.
  const std::string fresh_out = (dir_ / "fresh").string();
  {
    AggregatorOptions o = Options();
    o.out_dir = fresh_out;
    auto agg = MustOpen(o);
    ASSERT_NE(agg, nullptr);
    for (const auto& [src, d, c] : std::vector<std::tuple<std::string, std::string, std::string>>{
             {"stays.md", "old", "a"},
             {"kept.md", "touched", "c"},
             {"new.md", "touched", "c"},
             {"moves.md", "new", "x"},
             {"moves-too.md", "new", "x"},
             {"moves-3.md", "new", "x"}}) {
      ASSERT_TRUE(agg->Add(MakeChunk(src, 0, d, c)).ok());
    }
    ASSERT_TRUE(agg->Finish().ok());
  }
  for (const char* group : {"/old/a.json", "/touched/c.json", "/new/x.json"}) {
    EXPECT_EQ(ReadFile(out_ + group), ReadFile(fresh_out + group)) << group;
  }
}

TEST_F(AggregatorTest, CorruptExistingFileIsAClearError) {
  fs::create_directories(out_ + "/manuals");
  std::ofstream(out_ + "/manuals/pumps.json") << "{\"chunks\": [ truncated";
  auto agg = MustOpen(Options());
  ASSERT_NE(agg, nullptr);
  Status s = agg->Add(MakeChunk("a.md", 0));
  EXPECT_EQ(s.code(), StatusCode::kCorrupt);
  EXPECT_NE(s.message().find("existing aggregate '" + out_ + "/manuals/pumps.json'"),
            std::string::npos)
      << s.message();
  // Other groups are unaffected.
  EXPECT_TRUE(agg->Add(MakeChunk("a.md", 0, "manuals", "valves")).ok());
}

TEST_F(AggregatorTest, BadChunksAreRejected) {
  auto agg = MustOpen(Options());
  ASSERT_NE(agg, nullptr);
  EmbeddedChunk no_id = MakeChunk("a.md", 0);
  no_id.chunk.id.clear();
  EXPECT_EQ(agg->Add(no_id).code(), StatusCode::kRejected);
  EmbeddedChunk bad_meta = MakeChunk("a.md", 1);
  bad_meta.chunk.metadata_json = "{not json";
  EXPECT_EQ(agg->Add(bad_meta).code(), StatusCode::kRejected);
  bad_meta.chunk.metadata_json = "[1,2]";
  EXPECT_EQ(agg->Add(bad_meta).code(), StatusCode::kRejected);
  EmbeddedChunk empty_meta = MakeChunk("a.md", 2);
  empty_meta.chunk.metadata_json.clear();  // written as {}
  ASSERT_TRUE(agg->Add(empty_meta).ok());
  ASSERT_TRUE(agg->Finish().ok());
  simdjson::dom::parser parser;
  simdjson::dom::element doc;
  ASSERT_FALSE(parser.parse(ReadFile(out_ + "/manuals/pumps.json")).get(doc));
  EXPECT_EQ(uint64_t(doc["chunk_count"].get_uint64()), 1u);
  EXPECT_TRUE(doc["chunks"].at(0)["metadata"].is_object());
}

TEST_F(AggregatorTest, HostileGroupNamesStayInsideOutDir) {
  auto agg = MustOpen(Options());
  ASSERT_NE(agg, nullptr);
  ASSERT_TRUE(agg->Add(MakeChunk("a.md", 0, "../../etc", "passwd")).ok());
  ASSERT_TRUE(agg->Add(MakeChunk("a.md", 0, "", "")).ok());
  ASSERT_TRUE(agg->Finish().ok());
  EXPECT_EQ(agg->FilesWritten(), 2u);
  const std::string canonical_out = fs::canonical(out_).string();
  size_t files = 0;
  for (const auto& entry : fs::recursive_directory_iterator(out_)) {
    if (!entry.is_regular_file()) continue;
    ++files;
    EXPECT_EQ(fs::canonical(entry.path()).string().rfind(canonical_out + "/", 0), 0u);
    Parsed p = MustParse(entry.path().string());
    EXPECT_EQ(p.chunk_count, 1u);
  }
  EXPECT_EQ(files, 2u);
  EXPECT_EQ(MustParse(agg->GroupFilePath("../../etc", "passwd")).domain, "../../etc");
}

TEST_F(AggregatorTest, UnwritableOutDirIsAClearError) {
  // Tests run as root, so permissions cannot block us; a path below a
  // regular file can never be created.
  const std::string file = (dir_ / "plain_file").string();
  std::ofstream(file) << "x";
  AggregatorOptions o = Options();
  o.out_dir = file + "/sub";
  auto r = OpenAggregator(o);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), StatusCode::kIOError);
  EXPECT_EQ(r.status().message(),
            "cannot create output directory '" + file + "/sub': Not a directory");
  o.out_dir = file;
  auto not_dir = OpenAggregator(o);
  ASSERT_FALSE(not_dir.ok());
  EXPECT_EQ(not_dir.status().message(), "output path '" + file + "' is not a directory");
  o.out_dir = "";
  EXPECT_EQ(OpenAggregator(o).status().code(), StatusCode::kInvalidArgument);
}

TEST_F(AggregatorTest, StaleSpoolOfADeadProcessIsRemovedAtOpen) {
  // pid 999999999 is above Linux's pid_max: never a live process.
  const std::string stale = out_ + "/.spool/999999999-0";
  fs::create_directories(stale);
  std::ofstream(stale + "/g0.jsonl") << "{}\n";
  std::ofstream(stale + ".index") << "index of a crashed run";
  // Killed during a background rewrite: the index was in WAL mode.
  std::ofstream(stale + ".index-wal") << "its log";
  std::ofstream(stale + ".index-shm") << "its shared memory";
  const std::string live = out_ + "/.spool/" + std::to_string(::getpid()) + "-999";
  fs::create_directories(live);
  auto agg = MustOpen(Options());
  ASSERT_NE(agg, nullptr);
  EXPECT_FALSE(fs::exists(stale));
  EXPECT_FALSE(fs::exists(stale + ".index"));
  EXPECT_FALSE(fs::exists(stale + ".index-wal"));
  EXPECT_FALSE(fs::exists(stale + ".index-shm"));
  EXPECT_TRUE(fs::exists(live));  // a running process's spool is left alone
}

TEST_F(AggregatorTest, StaleProbeOfADeadProcessIsRemovedAtOpen) {
  // A kill -9 between creating and unlinking the writability probe leaves it
  // behind; the next open removes it. pid 1 always runs: its probe stays.
  fs::create_directories(out_);
  const std::string stale = out_ + "/.sluice-probe-999999999";
  const std::string live = out_ + "/.sluice-probe-1";
  std::ofstream(stale) << "probe";
  std::ofstream(live) << "probe";
  auto agg = MustOpen(Options());
  ASSERT_NE(agg, nullptr);
  EXPECT_FALSE(fs::exists(stale));
  EXPECT_TRUE(fs::exists(live));
}

TEST_F(AggregatorTest, StaleRewriteTempOfADeadProcessIsRemovedAtOpen) {
  // A kill -9 between creating a group's temp file and renaming it leaves
  // FILE.tmp.<pid> behind; the next open removes it. pid 1 and this process
  // run: their temps may be mid-write (two runs may share a folder briefly)
  // and stay, like anything that is not a temp name.
  fs::create_directories(out_ + "/manuals");
  const std::string stale = out_ + "/manuals/pumps.json.tmp.999999999";
  const std::string live = out_ + "/manuals/pumps.json.tmp.1";
  const std::string own = out_ + "/manuals/valves.json.tmp." + std::to_string(::getpid());
  const std::string not_a_temp = out_ + "/manuals/pumps.json.tmp.x1";
  const std::string hidden = out_ + "/.spool-like/pumps.json.tmp.999999999";
  fs::create_directories(out_ + "/.spool-like");
  for (const std::string& f : {stale, live, own, not_a_temp, hidden}) std::ofstream(f) << "part";
  auto agg = MustOpen(Options());
  ASSERT_NE(agg, nullptr);
  EXPECT_FALSE(fs::exists(stale));
  EXPECT_TRUE(fs::exists(live));
  EXPECT_TRUE(fs::exists(own));
  EXPECT_TRUE(fs::exists(not_a_temp));
  EXPECT_TRUE(fs::exists(hidden));  // dot folders hold no groups
}

TEST_F(AggregatorTest, SpoolWriteFailureIsIOError) {
  AggregatorLimits limits;
  limits.group_buffer_bytes = 1;  // every Add appends to the spool
  auto agg = MustOpen(Options(), limits);
  ASSERT_NE(agg, nullptr);
  ASSERT_TRUE(agg->Add(MakeChunk("a.md", 0)).ok());
  fs::remove_all(agg->SpoolDir());
  Status s = agg->Add(MakeChunk("a.md", 1));
  EXPECT_EQ(s.code(), StatusCode::kIOError);
  EXPECT_NE(s.message().find("cannot open spool"), std::string::npos) << s.message();
}

TEST_F(AggregatorTest, GroupFileWriteFailureIsIOError) {
  auto agg = MustOpen(Options(1));
  ASSERT_NE(agg, nullptr);
  BlockTheManualsFolder();
  Status s = agg->Add(MakeChunk("a.md", 0));
  ExpectTheManualsFolderWasBlocked(s, *agg);
  ASSERT_TRUE(agg->Finish().ok());  // the chunk was kept and is written now
  EXPECT_EQ(MustParse(out_ + "/manuals/pumps.json").chunk_count, 1u);
}

TEST_F(AggregatorTest, OpenCreatesOutDirAndLeavesNoProbe) {
  AggregatorOptions o = Options();
  o.out_dir = out_ + "/nested/deeper";
  auto agg = OpenAggregator(o);
  ASSERT_TRUE(agg.ok()) << agg.status().ToString();
  EXPECT_TRUE(fs::is_directory(o.out_dir));
  for (const auto& entry : fs::directory_iterator(o.out_dir)) {
    EXPECT_EQ(entry.path().filename().string().find("probe"), std::string::npos);
  }
  // Destroyed without Finish: the spool is cleaned up all the same.
  agg->reset();
  EXPECT_FALSE(fs::exists(o.out_dir + "/.spool"));
}

// The index lives on disk: what the aggregator holds (buffered lines, the
// index's page cache and statements, the parser) stays under its limits
// however many chunks arrive.
TEST_F(AggregatorTest, HeldBytesStayBoundedWhileAdding100kChunks) {
  AggregatorLimits limits;
  limits.total_buffer_bytes = 256 * 1024;
  limits.index_cache_bytes = 1024 * 1024;
  limits.index_batch_rows = 1000;
  auto agg = MustOpen(Options(), limits);  // default cadence: rewrites at 100, 200, 400, ...
  ASSERT_NE(agg, nullptr);
  size_t max_held = 0, max_index = 0;
  constexpr uint32_t kChunks = 100'000;
  for (uint32_t i = 0; i < kChunks; ++i) {
    // Two groups, 50 sources interleaved; every 1000th add is followed by a
    // retry of an earlier (even) id with new text.
    ASSERT_TRUE(agg->Add(MakeChunk("s" + std::to_string(i % 50) + ".md", i / 50, "d",
                                   i % 2 == 0 ? "even" : "odd"))
                    .ok())
        << i;
    if (i % 1000 == 999) {
      const uint32_t n = i - 501;
      EmbeddedChunk c = MakeChunk("s" + std::to_string(n % 50) + ".md", n / 50, "d", "even");
      c.chunk.text = "retried";
      ASSERT_TRUE(agg->Add(c).ok()) << i;
    }
    max_held = std::max(max_held, agg->HeldBytes());
    max_index = std::max(max_index, agg->IndexMemoryBytes());
  }
  EXPECT_LE(max_index, limits.index_cache_bytes + 256 * 1024);
  EXPECT_LE(max_held, limits.index_cache_bytes + limits.total_buffer_bytes + 512 * 1024);
  EXPECT_GT(max_index, 0u);
  ASSERT_TRUE(agg->Finish().ok());
  Parsed even = MustParse(out_ + "/d/even.json");
  EXPECT_EQ(even.chunk_count, kChunks / 2);  // the 100 retries replaced their ids
  ASSERT_EQ(even.ids.size(), even.chunk_count);
  EXPECT_EQ(even.sources.size(), 25u);
  EXPECT_EQ(even.ids[0], "s0.md#0");
  EXPECT_EQ(even.ids[1], "s0.md#1");  // ordinal order within a source
  size_t retried = 0;
  for (const std::string& t : even.texts) retried += t == "retried";
  EXPECT_EQ(retried, 100u);  // the latest copy won
  EXPECT_FALSE(fs::exists(agg->IndexPath()));
}

// Peak RSS growth while adding 200k small chunks. The old in-memory index
// alone took ~160 bytes per chunk (~32 MB here). ru_maxrss is a process
// peak, so run alone (ctest runs each test in its own process) it measures
// this workload only. The index's page cache is pinned at its earlier 4 MiB
// (the default is 16 MiB since the cache was sized for speed): the bound
// below is that cache plus what does not grow with the chunk count.
TEST_F(AggregatorTest, PeakRssStaysFlatFor200kSmallChunks) {
  AggregatorLimits limits;
  limits.index_cache_bytes = 4 * 1024 * 1024;
  auto agg = MustOpen(Options(), limits);
  ASSERT_NE(agg, nullptr);
  rusage before{}, after{};
  ::getrusage(RUSAGE_SELF, &before);
  for (uint32_t i = 0; i < 200'000; ++i) {
    EmbeddedChunk c = MakeChunk("source-" + std::to_string(i % 100) + ".md", i / 100);
    c.embedding.clear();
    ASSERT_TRUE(agg->Add(c).ok()) << i;
  }
  ASSERT_TRUE(agg->Finish().ok());
  ::getrusage(RUSAGE_SELF, &after);
  const long delta_kib = after.ru_maxrss - before.ru_maxrss;
  std::printf("peak RSS %ld KiB -> %ld KiB (+%ld KiB) for 200k chunks\n", before.ru_maxrss,
              after.ru_maxrss, delta_kib);
  // Sanitizers keep freed memory in quarantine and shadow every byte: RSS
  // there says nothing about the aggregator, so only the plain build checks it.
#if !defined(SLUICE_SANITIZED)
  EXPECT_LT(delta_kib, 12 * 1024);
#endif
}

TEST_F(AggregatorTest, LargeExistingFileIsImportedOneLineAtATime) {
  const std::string file = out_ + "/manuals/pumps.json";
  {
    auto agg = MustOpen(Options(0));
    ASSERT_NE(agg, nullptr);
    for (uint32_t i = 0; i < 4000; ++i) {
      EmbeddedChunk c = MakeChunk("a.md", i);
      c.chunk.text.assign(1000, 'a');
      ASSERT_TRUE(agg->Add(c).ok());
    }
    ASSERT_TRUE(agg->Finish().ok());
  }
  ASSERT_GT(fs::file_size(file), 4'000'000u);
  AggregatorLimits limits;
  limits.index_cache_bytes = 256 * 1024;
  auto agg = MustOpen(Options(), limits);
  ASSERT_NE(agg, nullptr);
  ASSERT_TRUE(agg->Add(MakeChunk("b.md", 0)).ok());  // imports the 4 MB file
  // A whole-file parse would hold the file and its tape (> 4 MB).
  EXPECT_LT(agg->HeldBytes(), 1024u * 1024);
  ASSERT_TRUE(agg->Finish().ok());
  Parsed p = MustParse(file);
  EXPECT_EQ(p.chunk_count, 4001u);
  EXPECT_EQ(p.sources, (std::vector<std::string>{"a.md", "b.md"}));
  EXPECT_EQ(p.page_starts[3999], 4000u);
}

TEST_F(AggregatorTest, ExistingFileInAnotherLayoutIsMergedWhole) {
  // Hand-edited or re-formatted: not one chunk per line.
  WriteHandFormattedGroupFile();
  auto agg = MustOpen(Options());
  ASSERT_NE(agg, nullptr);
  EmbeddedChunk b = MakeChunk("b.md", 0);
  b.chunk.text = "new b";
  ASSERT_TRUE(agg->Add(b).ok());
  ASSERT_TRUE(agg->Finish().ok());
  Parsed p = MustParse(out_ + "/manuals/pumps.json");
  EXPECT_EQ(p.ids, (std::vector<std::string>{"a.md#0", "b.md#0"}));
  EXPECT_EQ(p.texts, (std::vector<std::string>{"old a", "new b"}));
  EXPECT_EQ(p.page_starts[0], 9u);
}

TEST_F(AggregatorTest, WholeFileImportGivesItsParserMemoryBack) {
  // 3000 chunks of 1 KB, two lines each: not our layout, so parsed whole.
  fs::create_directories(out_ + "/manuals");
  {
    std::ofstream f(out_ + "/manuals/pumps.json");
    f << "{\n\"domain\":\"manuals\",\"category\":\"pumps\",\"chunks\":[";
    for (int i = 0; i < 3000; ++i) {
      f << (i == 0 ? "\n" : ",\n") << R"({"id":"a.md#)" << i << R"(","source_id":"a.md","ordinal":)"
        << i << ",\n"
        << R"("text":")" << std::string(1000, 'a') << R"(","metadata":{"page_start":1}})";
    }
    f << "\n]}\n";
  }
  AggregatorLimits limits;
  limits.index_cache_bytes = 256 * 1024;
  auto agg = MustOpen(Options(), limits);
  ASSERT_NE(agg, nullptr);
  ASSERT_TRUE(agg->Add(MakeChunk("b.md", 0)).ok());
  EXPECT_LT(agg->HeldBytes(), 1024u * 1024);  // the 3 MB file's parse is not kept
  ASSERT_TRUE(agg->Finish().ok());
  EXPECT_EQ(MustParse(out_ + "/manuals/pumps.json").chunk_count, 3001u);
}

TEST_F(AggregatorTest, TruncatedOrDamagedExistingFileIsCorruptAndLeavesNothingBehind) {
  const std::string file = out_ + "/manuals/pumps.json";
  {
    auto agg = MustOpen(Options());
    ASSERT_NE(agg, nullptr);
    for (uint32_t i = 0; i < 3; ++i) ASSERT_TRUE(agg->Add(MakeChunk("a.md", i)).ok());
    ASSERT_TRUE(agg->Finish().ok());
  }
  const std::string good = ReadFile(file);
  ASSERT_EQ(good.substr(good.size() - 4), "\n]}\n");
  const std::string truncated = good.substr(0, good.size() - 3);  // no closing "]}"
  std::string damaged = good;
  damaged.replace(damaged.find("{\"id\":\"a.md#1\""), 5, "{\"i\"x");
  for (const std::string& bad : {truncated, damaged}) {
    std::ofstream(file, std::ios::trunc) << bad;
    auto agg = MustOpen(Options());
    ASSERT_NE(agg, nullptr);
    Status s = agg->Add(MakeChunk("b.md", 0));
    EXPECT_EQ(s.code(), StatusCode::kCorrupt) << s.ToString();
    EXPECT_NE(s.message().find("existing aggregate '" + file + "' cannot be merged"),
              std::string::npos)
        << s.message();
    // Moved away, the group starts afresh: no rows of the failed import.
    fs::remove(file);
    ASSERT_TRUE(agg->Add(MakeChunk("b.md", 0)).ok());
    ASSERT_TRUE(agg->Finish().ok());
    Parsed p = MustParse(file);
    EXPECT_EQ(p.ids, (std::vector<std::string>{"b.md#0"}));
  }
}

TEST_F(AggregatorTest, IndexThatCannotBeCreatedIsAClearError) {
  auto first = MustOpen(Options());
  ASSERT_NE(first, nullptr);
  // The next aggregator of this process takes the next instance number;
  // a directory where its index file goes makes SQLite fail to open it.
  const std::string path = first->IndexPath();
  const size_t dash = path.rfind('-');
  const size_t n = std::stoul(path.substr(dash + 1));
  const std::string next = path.substr(0, dash + 1) + std::to_string(n + 1) + ".index";
  fs::create_directories(next);
  auto r = JsonAggregator::Open(Options());
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), StatusCode::kIOError);
  EXPECT_NE(r.status().message().find("aggregate index '" + next + "': cannot open"),
            std::string::npos)
      << r.status().message();
  fs::remove_all(next);
}

// ------------------------------------------------------------------ Retain

// Keeps what `keep_sources` lists, drops what `drop_sources` lists, asks chunk
// by chunk for the rest (keeping the ids in `keep_ids`); records every call.
struct TestPolicy {
  std::set<std::string> keep_sources, drop_sources, keep_ids;
  std::vector<std::string> sources_asked;
  std::vector<std::string> groups_asked;  // "domain/category" per chunks batch
  std::vector<size_t> batch_sizes;
  Status source_error, chunks_error;

  RetentionPolicy Make() {
    RetentionPolicy p;
    p.source = [this](std::string_view src) -> Result<SourceRetention> {
      sources_asked.emplace_back(src);
      if (!source_error.ok()) return source_error;
      if (keep_sources.count(std::string(src))) return SourceRetention::kKeep;
      if (drop_sources.count(std::string(src))) return SourceRetention::kDrop;
      return SourceRetention::kCheckChunks;
    };
    p.chunks = [this](std::string_view d, std::string_view c, std::span<const std::string> ids,
                      std::vector<bool>& keep) -> Status {
      if (!chunks_error.ok()) return chunks_error;
      groups_asked.push_back(std::string(d) + "/" + std::string(c));
      batch_sizes.push_back(ids.size());
      EXPECT_EQ(keep.size(), ids.size());
      for (size_t i = 0; i < ids.size(); ++i) {
        EXPECT_FALSE(keep[i]);
        keep[i] = keep_ids.count(ids[i]) > 0;
      }
      return Status::OK();
    };
    return p;
  }
};

TEST_F(AggregatorTest, RetainNeedsAFinishedAggregatorAndAFullPolicy) {
  auto agg = MustOpen(Options());
  ASSERT_NE(agg, nullptr);
  ASSERT_TRUE(agg->Add(MakeChunk("a.md", 0)).ok());
  TestPolicy policy;
  auto r = agg->Retain(policy.Make());
  EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument);
  ASSERT_TRUE(agg->Finish().ok());
  r = agg->Retain(RetentionPolicy{});
  EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument);
  // Nothing of the file changed.
  EXPECT_EQ(MustParse(out_ + "/manuals/pumps.json").ids, (std::vector<std::string>{"a.md#0"}));
}

TEST_F(AggregatorTest, RetainRewritesAsARunOfTheKeptChunksWould) {
  const auto add_all = [&](JsonAggregator& agg, bool with_removed) {
    for (uint32_t i = 0; i < 3; ++i) ASSERT_TRUE(agg.Add(MakeChunk("a.md", i)).ok());
    if (with_removed) {
      for (uint32_t i = 0; i < 2; ++i) ASSERT_TRUE(agg.Add(MakeChunk("b.md", i)).ok());
    }
    // A JSONL file's records: sources that are no file; one record goes.
    ASSERT_TRUE(agg.Add(MakeChunk("rec-1", 0)).ok());
    if (with_removed) {
      ASSERT_TRUE(agg.Add(MakeChunk("rec-1", 1)).ok());
      ASSERT_TRUE(agg.Add(MakeChunk("rec-2", 0)).ok());
      // A whole group of deleted chunks, and an untouched group.
      ASSERT_TRUE(agg.Add(MakeChunk("d.md", 0, "notes", "misc")).ok());
    }
    ASSERT_TRUE(agg.Add(MakeChunk("e.md", 0, "other", "kept")).ok());
  };
  auto agg = MustOpen(Options());
  ASSERT_NE(agg, nullptr);
  add_all(*agg, true);
  ASSERT_TRUE(agg->Finish().ok());
  const size_t written = agg->FilesWritten();
  const std::string kept_file = out_ + "/other/kept.json";
  struct stat before {};
  ASSERT_EQ(::stat(kept_file.c_str(), &before), 0);

  TestPolicy policy;
  policy.keep_sources = {"a.md", "e.md"};
  policy.drop_sources = {"b.md", "d.md"};
  policy.keep_ids = {"rec-1#0"};
  auto r = agg->Retain(policy.Make());
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(r->chunks_dropped, 2u + 1u + 1u + 1u);  // b.md x2, rec-1#1, rec-2#0, d.md
  EXPECT_EQ(r->files_rewritten, 1u);
  EXPECT_EQ(r->files_removed, 1u);
  EXPECT_EQ(r->files_skipped, 0u);
  EXPECT_EQ(agg->FilesWritten(), written);  // rewritten files were counted already
  for (const std::string& g : policy.groups_asked) EXPECT_EQ(g, "manuals/pumps");

  // The emptied group's file and its domain folder are gone; the untouched
  // group's file was not rewritten (same inode); no scratch is left.
  EXPECT_FALSE(fs::exists(out_ + "/notes/misc.json"));
  EXPECT_FALSE(fs::exists(out_ + "/notes"));
  struct stat after {};
  ASSERT_EQ(::stat(kept_file.c_str(), &after), 0);
  EXPECT_EQ(after.st_ino, before.st_ino);
  EXPECT_FALSE(fs::exists(out_ + "/.spool"));

  // Byte for byte what a run of the kept chunks alone writes.
  AggregatorOptions fresh = Options();
  fresh.out_dir = (dir_ / "fresh").string();
  {
    auto ref = MustOpen(fresh);
    ASSERT_NE(ref, nullptr);
    add_all(*ref, false);
    ASSERT_TRUE(ref->Finish().ok());
  }
  EXPECT_EQ(ReadFile(out_ + "/manuals/pumps.json"),
            ReadFile(fresh.out_dir + "/manuals/pumps.json"));
  EXPECT_EQ(ReadFile(kept_file), ReadFile(fresh.out_dir + "/other/kept.json"));
  std::set<std::string> ours, theirs;
  for (const auto& e : fs::recursive_directory_iterator(out_))
    ours.insert(fs::relative(e.path(), out_).string());
  for (const auto& e : fs::recursive_directory_iterator(fresh.out_dir))
    theirs.insert(fs::relative(e.path(), fresh.out_dir).string());
  EXPECT_EQ(ours, theirs);

  // Again: nothing left to drop, nothing rewritten.
  auto again = agg->Retain(policy.Make());
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(again->chunks_dropped, 0u);
  EXPECT_EQ(again->files_rewritten, 0u);
}

TEST_F(AggregatorTest, RetainReadsOnlyTheFirstLineOfAFileWhoseSourcesAllStay) {
  {
    auto agg = MustOpen(Options());
    ASSERT_NE(agg, nullptr);
    ASSERT_TRUE(agg->Add(MakeChunk("a.md", 0)).ok());
    ASSERT_TRUE(agg->Finish().ok());
  }
  // Damage every chunk line: a file whose sources all stay is not parsed
  // past its first line, so this is not noticed (nor rewritten).
  const std::string file = out_ + "/manuals/pumps.json";
  std::string text = ReadFile(file);
  text.replace(text.find("{\"id\""), 5, "{\"i\"x");
  std::ofstream(file, std::ios::trunc) << text;
  auto agg = MustOpen(Options());
  ASSERT_NE(agg, nullptr);
  ASSERT_TRUE(agg->Finish().ok());
  TestPolicy policy;
  policy.keep_sources = {"a.md"};
  auto r = agg->Retain(policy.Make());
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(r->files_rewritten, 0u);
  EXPECT_EQ(policy.sources_asked, (std::vector<std::string>{"a.md"}));
  EXPECT_EQ(ReadFile(file), text);

  // Once a chunk must go, the damage is a clear Corrupt error and the file
  // stays as it was.
  policy.keep_sources.clear();
  policy.drop_sources = {"a.md"};
  r = agg->Retain(policy.Make());
  EXPECT_EQ(r.status().code(), StatusCode::kCorrupt) << r.status().ToString();
  EXPECT_EQ(ReadFile(file), text);
  EXPECT_FALSE(fs::exists(out_ + "/.spool"));
}

TEST_F(AggregatorTest, RetainRewritesAFileInAnotherLayoutAndSkipsForeignJson) {
  WriteHandFormattedGroupFile();
  fs::create_directories(out_ + "/foreign");
  const std::string foreign = R"({"not": "an aggregate"})";
  std::ofstream(out_ + "/foreign/data.json") << foreign;
  std::ofstream(out_ + "/foreign/broken.json") << "{ nope";
  auto agg = MustOpen(Options());
  ASSERT_NE(agg, nullptr);
  ASSERT_TRUE(agg->Finish().ok());
  TestPolicy policy;
  policy.keep_sources = {"a.md"};
  policy.drop_sources = {"b.md"};
  auto r = agg->Retain(policy.Make());
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(r->files_rewritten, 1u);
  EXPECT_EQ(r->files_skipped, 2u);
  EXPECT_EQ(ReadFile(out_ + "/foreign/data.json"), foreign);
  EXPECT_EQ(
      ReadFile(out_ + "/manuals/pumps.json"),
      "{\"domain\":\"manuals\",\"category\":\"pumps\",\"chunk_count\":1,\"sources\":[\"a.md\"],"
      "\"chunks\":[\n"
      "{\"id\":\"a.md#0\",\"source_id\":\"a.md\",\"ordinal\":0,\"text\":\"old a\","
      "\"metadata\":{\"page_start\":9}}\n]}\n");
}

TEST_F(AggregatorTest, RetainAsksForChunksInBoundedBatchesInDocumentOrder) {
  const uint32_t n = 2 * kRetainBatch + 100;
  {
    auto agg = MustOpen(Options(0));
    ASSERT_NE(agg, nullptr);
    for (uint32_t i = 0; i < n; ++i) ASSERT_TRUE(agg->Add(MakeChunk("rec", i)).ok());
    ASSERT_TRUE(agg->Finish().ok());
  }
  auto agg = MustOpen(Options());
  ASSERT_NE(agg, nullptr);
  ASSERT_TRUE(agg->Finish().ok());
  TestPolicy policy;
  for (uint32_t i = 0; i < n; i += 2) policy.keep_ids.insert("rec#" + std::to_string(i));
  auto r = agg->Retain(policy.Make());
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(policy.batch_sizes, (std::vector<size_t>{kRetainBatch, kRetainBatch, 100}));
  EXPECT_EQ(r->chunks_dropped, n / 2);
  Parsed p = MustParse(out_ + "/manuals/pumps.json");
  ASSERT_EQ(p.chunk_count, n / 2);
  for (size_t i = 0; i < p.ordinals.size(); ++i) EXPECT_EQ(p.ordinals[i], 2 * i);
}

TEST_F(AggregatorTest, RetainPolicyErrorsStopItAndLeaveWholeFiles) {
  {
    auto agg = MustOpen(Options());
    ASSERT_NE(agg, nullptr);
    ASSERT_TRUE(agg->Add(MakeChunk("rec", 0)).ok());
    ASSERT_TRUE(agg->Add(MakeChunk("rec", 1)).ok());
    ASSERT_TRUE(agg->Finish().ok());
  }
  const std::string file = out_ + "/manuals/pumps.json";
  const std::string before = ReadFile(file);
  auto agg = MustOpen(Options());
  ASSERT_NE(agg, nullptr);
  ASSERT_TRUE(agg->Finish().ok());
  TestPolicy policy;
  policy.source_error = Status::IOError("store gone");
  auto r = agg->Retain(policy.Make());
  EXPECT_EQ(r.status().code(), StatusCode::kIOError);
  EXPECT_EQ(r.status().message(), "store gone");
  policy.source_error = Status::OK();
  policy.chunks_error = Status::Unavailable("store busy");
  r = agg->Retain(policy.Make());
  EXPECT_EQ(r.status().code(), StatusCode::kUnavailable);
  EXPECT_EQ(ReadFile(file), before);
  EXPECT_FALSE(fs::exists(out_ + "/.spool"));
  for (const auto& e : fs::recursive_directory_iterator(out_))
    EXPECT_EQ(e.path().string().find(".tmp."), std::string::npos) << e.path();
}

}  // namespace
}  // namespace sluice
