// SourceTracker (when a file may be fingerprinted) and InflightTexts (copies of
// a text waiting for its first copy): deterministic unit tests, no threads.
#include "pipeline/source_tracker.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <string>
#include <utility>
#include <vector>

#include "pipeline/inflight_texts.h"

namespace sluice {
namespace {

Chunk MakeChunk(const std::string& source, uint32_t ordinal, const std::string& text) {
  Chunk c;
  c.source_id = source;
  c.ordinal = ordinal;
  c.text = text;
  c.id = source + "#" + std::to_string(ordinal);
  return c;
}

// What the embed stage makes in place of (source, ordinal)'s chunk: a piece
// or a truncated copy, with an id of its own.
Chunk Replacement(const std::string& source, uint32_t ordinal, const std::string& text,
                  const std::string& id, const std::string& metadata_json = "{}") {
  Chunk c = MakeChunk(source, ordinal, text);
  c.id = id;
  c.metadata_json = metadata_json;
  return c;
}

SourceFingerprint Fp(const std::string& id) {
  SourceFingerprint f;
  f.file_id = id;
  f.path = "/c/" + id;
  return f;
}

// A file `file_id` whose parse produced only `chunk` and has ended.
void TrackOneChunk(SourceTracker& t, const std::string& file_id, const Chunk& chunk) {
  const auto token = t.Begin(Fp(file_id), true, 7);
  t.ChunkProduced(token, chunk);
  t.ParseFinished(token, true);
}

TEST(SourceTrackerTest, FileCompletesWhenParsedAndEveryChunkResolved) {
  SourceTracker t;
  const auto token = t.Begin(Fp("a.md"), true, 7);
  const Chunk c0 = MakeChunk("a.md", 0, "x"), c1 = MakeChunk("a.md", 1, "y");
  t.ChunkProduced(token, c0);
  t.ChunkProduced(token, c1);
  t.Resolved(c0, false);
  t.Resolved(c1, false);                   // stored and dead-lettered both count as done
  EXPECT_TRUE(t.TakeCompleted().empty());  // parse not finished yet
  t.ParseFinished(token, true);
  auto done = t.TakeCompleted();
  ASSERT_EQ(done.size(), 1u);
  EXPECT_EQ(done[0].fingerprint.chunk_count, 2u);
  EXPECT_EQ(done[0].run_id, 7u);
  EXPECT_TRUE(done[0].delete_stale);
  EXPECT_EQ(t.FilesInFlight(), 0u);
}

// A file of any size costs the tracker one entry plus its chunks still in
// flight: resolved chunks leave nothing behind (no id list per file).
TEST(SourceTrackerTest, ResolvedChunksOfAnOpenFileLeaveNothingBehind) {
  SourceTracker t;
  const auto token = t.Begin(Fp("huge.jsonl"), true, 7);
  for (uint32_t i = 0; i < 100000; ++i) {
    const Chunk c = MakeChunk("huge.jsonl#" + std::to_string(i / 10), i % 10, "t");
    t.ChunkProduced(token, c);
    t.Resolved(c, false);
    ASSERT_EQ(t.ChunksInFlight(), 0u);
  }
  t.ParseFinished(token, true);
  auto done = t.TakeCompleted();
  ASSERT_EQ(done.size(), 1u);
  EXPECT_EQ(done[0].fingerprint.chunk_count, 100000u);
}

TEST(SourceTrackerTest, AbandonedChunkOrFailedParseMeansNoFingerprint) {
  SourceTracker t;
  const auto a = t.Begin(Fp("a.md"), true, 7);
  const Chunk c = MakeChunk("a.md", 0, "x");
  t.ChunkProduced(a, c);
  t.ParseFinished(a, true);
  t.Resolved(c, /*abandoned=*/true);
  const auto b = t.Begin(Fp("b.md"), true, 7);
  t.ParseFinished(b, false);
  EXPECT_TRUE(t.TakeCompleted().empty());
  EXPECT_EQ(t.FilesInFlight(), 0u);
  // Unknown chunks (stdin records, replays) are ignored.
  t.Resolved(MakeChunk("stdin#1", 0, "z"), false);
  t.ResolvedId("nope", true);
  EXPECT_TRUE(t.TakeCompleted().empty());
}

TEST(SourceTrackerTest, EmptyFileAndTouchCompleteAtOnce) {
  SourceTracker t;
  t.ParseFinished(t.Begin(Fp("empty.txt"), false, 7), true);
  t.Touch(Fp("same.md"));
  auto done = t.TakeCompleted();
  ASSERT_EQ(done.size(), 2u);
  EXPECT_EQ(done[0].fingerprint.chunk_count, 0u);
  EXPECT_FALSE(done[0].delete_stale);
  EXPECT_TRUE(done[1].facts_only);
}

TEST(SourceTrackerTest, SplitPiecesReplaceTheirOriginalInTheCount) {
  SourceTracker t;
  const auto token = t.Begin(Fp("a.md"), true, 7);
  const Chunk before = MakeChunk("a.md", 0, "x"), big = MakeChunk("a.md", 1, "long");
  const Chunk after = MakeChunk("a.md", 2, "z");
  for (const Chunk* c : {&before, &big, &after}) t.ChunkProduced(token, *c);
  t.ParseFinished(token, true);
  const Chunk p1 = Replacement("a.md", 1, "lo", "piece-1", R"({"split_part":1,"split_parts":2})");
  const Chunk p2 = Replacement("a.md", 1, "ng", "piece-2", R"({"split_part":2,"split_parts":2})");
  t.Replaced(big.id, {p1.id, p2.id});  // the embed stage's hook
  t.Resolved(before, false);
  t.Resolved(after, false);
  t.Resolved(p2, false);  // out of order
  EXPECT_TRUE(t.TakeCompleted().empty());
  t.Resolved(p1, false);
  auto done = t.TakeCompleted();
  ASSERT_EQ(done.size(), 1u);
  EXPECT_EQ(done[0].fingerprint.chunk_count, 4u);  // before, two pieces, after
}

TEST(SourceTrackerTest, TruncatedCopyReplacesItsOriginal) {
  SourceTracker t;
  const Chunk big = MakeChunk("a.md", 0, "long text");
  TrackOneChunk(t, "a.md", big);
  const Chunk cut = Replacement("a.md", 0, "long", "cut", R"({"truncated":true})");
  t.Replaced(big.id, {cut.id});
  t.Resolved(cut, false);
  auto done = t.TakeCompleted();
  ASSERT_EQ(done.size(), 1u);
  EXPECT_EQ(done[0].fingerprint.chunk_count, 1u);
}

// Only what Replaced announced stands for an original: a chunk of the same
// source and ordinal with another id resolves nothing, an announcement for
// a chunk nobody tracks is ignored, and a piece with its original's own id
// resolves the original and leaves nothing behind.
TEST(SourceTrackerTest, OnlyAnnouncedPiecesResolveTheirOriginal) {
  SourceTracker t;
  const Chunk big = MakeChunk("a.md", 0, "long text");
  TrackOneChunk(t, "a.md", big);
  t.Resolved(Replacement("a.md", 0, "long", "not-announced"), false);
  EXPECT_TRUE(t.TakeCompleted().empty());
  EXPECT_EQ(t.ChunksInFlight(), 1u);

  t.Replaced("nobody-tracks-this", {"x"});
  t.Resolved(Replacement("b.md", 0, "x", "x"), false);
  EXPECT_TRUE(t.TakeCompleted().empty());

  t.Replaced(big.id, {big.id});  // one piece, the original's text and id
  t.Resolved(big, false);
  auto done = t.TakeCompleted();
  ASSERT_EQ(done.size(), 1u);
  EXPECT_EQ(done[0].fingerprint.chunk_count, 1u);
  EXPECT_EQ(t.ChunksInFlight(), 0u);
  EXPECT_EQ(t.FilesInFlight(), 0u);
}

// A JSONL file may repeat a record: two chunks with one id in flight, each
// split. Every piece counts, and the file completes when all have resolved;
// an abandoned piece means no fingerprint.
TEST(SourceTrackerTest, RepeatedOversizeChunksAreEachReplacedByTheirPieces) {
  for (const bool abandon_one : {false, true}) {
    SCOPED_TRACE(abandon_one ? "one piece abandoned" : "all stored");
    SourceTracker t;
    const auto token = t.Begin(Fp("r.jsonl"), true, 7);
    const Chunk big = MakeChunk("rec-1", 0, "long");
    t.ChunkProduced(token, big);
    t.ChunkProduced(token, big);
    t.ParseFinished(token, true);
    std::vector<Chunk> pieces;
    for (int copy = 0; copy < 2; ++copy) {
      for (int part = 1; part <= 2; ++part) {
        // The same text in both copies: the same ids.
        pieces.push_back(
            Replacement("rec-1", 0, part == 1 ? "lo" : "ng", "piece-" + std::to_string(part),
                        R"({"split_part":)" + std::to_string(part) + R"(,"split_parts":2})"));
      }
      t.Replaced(big.id, {"piece-1", "piece-2"});
    }
    for (size_t i = 0; i < pieces.size(); ++i) {
      EXPECT_TRUE(t.TakeCompleted().empty()) << i;
      t.Resolved(pieces[i], abandon_one && i == 2);
    }
    auto done = t.TakeCompleted();
    EXPECT_EQ(t.ChunksInFlight(), 0u);
    EXPECT_EQ(t.FilesInFlight(), 0u);
    if (abandon_one) {
      EXPECT_TRUE(done.empty());
    } else {
      ASSERT_EQ(done.size(), 1u);
      EXPECT_EQ(done[0].fingerprint.chunk_count, 4u);
    }
  }
}

TEST(InflightTextsTest, CopiesWaitForTheOwnerAndAreReleasedOnce) {
  InflightTexts inflight(2);
  Chunk owner = MakeChunk("a.md", 0, "same text");
  Chunk copy1 = MakeChunk("b.md", 0, "same text");
  Chunk copy2 = MakeChunk("c.md", 0, "same text");
  Chunk copy3 = MakeChunk("d.md", 0, "same text");
  Chunk other = MakeChunk("e.md", 0, "other text");
  EXPECT_FALSE(inflight.ParkOrOwn(owner));
  EXPECT_TRUE(inflight.ParkOrOwn(copy1));
  EXPECT_TRUE(inflight.ParkOrOwn(copy2));
  EXPECT_FALSE(inflight.ParkOrOwn(copy3));  // over the cap: embedded again
  EXPECT_FALSE(inflight.ParkOrOwn(other));
  EXPECT_EQ(inflight.parked(), 2u);
  EXPECT_TRUE(inflight.Release("b.md#0").empty());  // not an owner
  auto released = inflight.Release(owner.id);
  ASSERT_EQ(released.size(), 2u);
  EXPECT_EQ(released[0].source_id, "b.md");
  EXPECT_EQ(released[1].source_id, "c.md");
  EXPECT_TRUE(inflight.Release(owner.id).empty());
  EXPECT_EQ(inflight.parked(), 0u);
  // After release the text has no owner: the next copy owns it again.
  Chunk again = MakeChunk("f.md", 0, "same text");
  EXPECT_FALSE(inflight.ParkOrOwn(again));
  Chunk late = MakeChunk("g.md", 0, "same text");
  EXPECT_TRUE(inflight.ParkOrOwn(late));
  auto left = inflight.TakeAll();
  ASSERT_EQ(left.size(), 1u);
  EXPECT_EQ(left[0].source_id, "g.md");
}

// StoredAll resolves a whole write as Resolved(c, false) would one by one,
// pieces of a split chunk included.
TEST(SourceTrackerTest, StoredAllResolvesAWriteAsOneByOneWould) {
  SourceTracker t;
  const auto a = t.Begin(Fp("a.md"), true, 7);
  const auto b = t.Begin(Fp("b.md"), true, 7);
  const Chunk a0 = MakeChunk("a.md", 0, "x"), a1 = MakeChunk("a.md", 1, "y");
  const Chunk b0 = MakeChunk("b.md", 0, "z");
  t.ChunkProduced(a, a0);
  t.ChunkProduced(a, a1);
  t.ChunkProduced(b, b0);
  t.ParseFinished(a, true);
  t.ParseFinished(b, true);
  // a1 was split in two pieces: both must be stored before a.md completes.
  const std::string split = R"({"split_part":0,"split_parts":2})";
  const Chunk piece0 = Replacement("a.md", 1, "y0", "a.md#1/0", split);
  const Chunk piece1 = Replacement("a.md", 1, "y1", "a.md#1/1", split);
  t.Replaced(a1.id, {piece0.id, piece1.id});
  const EmbeddedChunk first[] = {{a0, {}, {}}, {b0, {}, {}}, {piece0, {}, {}}};
  t.StoredAll(first);
  auto done = t.TakeCompleted();
  ASSERT_EQ(done.size(), 1u);
  EXPECT_EQ(done[0].fingerprint.file_id, "b.md");
  const EmbeddedChunk second[] = {{piece1, {}, {}}};
  t.StoredAll(second);
  done = t.TakeCompleted();
  ASSERT_EQ(done.size(), 1u);
  EXPECT_EQ(done[0].fingerprint.file_id, "a.md");
  EXPECT_EQ(done[0].fingerprint.chunk_count, 3u);  // the original counted as its two pieces
  EXPECT_EQ(t.ChunksInFlight(), 0u);
  EXPECT_EQ(t.FilesInFlight(), 0u);
}

// ReleaseAll hands back each owner's parked copies with the owner's index,
// once, as Release would one owner at a time.
TEST(InflightTextsTest, ReleaseAllHandsBackEachOwnersCopiesWithItsIndex) {
  InflightTexts inflight(10);
  Chunk owner1 = MakeChunk("a.md", 0, "one"), owner2 = MakeChunk("a.md", 1, "two");
  Chunk lone = MakeChunk("a.md", 2, "three");
  Chunk copy1 = MakeChunk("b.md", 0, "one"), copy2a = MakeChunk("c.md", 0, "two");
  Chunk copy2b = MakeChunk("d.md", 0, "two");
  for (Chunk* c : {&owner1, &owner2, &lone}) EXPECT_FALSE(inflight.ParkOrOwn(*c));
  for (Chunk* c : {&copy1, &copy2a, &copy2b}) EXPECT_TRUE(inflight.ParkOrOwn(*c));
  const EmbeddedChunk stored[] = {{lone, {}, {}}, {owner2, {}, {}}, {owner1, {}, {}}};
  auto released = inflight.ReleaseAll(stored);
  ASSERT_EQ(released.size(), 3u);
  std::vector<std::pair<size_t, std::string>> got;
  for (const auto& [owner, c] : released) got.emplace_back(owner, c.source_id);
  std::sort(got.begin(), got.end());
  const std::vector<std::pair<size_t, std::string>> want = {{1, "c.md"}, {1, "d.md"}, {2, "b.md"}};
  EXPECT_EQ(got, want);
  EXPECT_EQ(inflight.parked(), 0u);
  EXPECT_TRUE(inflight.ReleaseAll(stored).empty());  // released once
  EXPECT_TRUE(inflight.TakeAll().empty());
}

}  // namespace
}  // namespace sluice
