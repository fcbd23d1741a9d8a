// Measurements of the JSON aggregator at corpus scale (LABELS bench: too slow
// for the unit suite). Each test runs in its own process under ctest, so
// ru_maxrss is the peak of this workload alone.
#include <gtest/gtest.h>
#include <sys/resource.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <string>

#include "aggregate/json_aggregator.h"
#include "testing/sanitizer.h"

namespace sluice {
namespace {

namespace fs = std::filesystem;

long PeakRssKiB() {
  rusage usage{};
  ::getrusage(RUSAGE_SELF, &usage);
  return usage.ru_maxrss;  // KiB on Linux
}

// 200k chunks of ~2 KB text over 200 sources in one group, default cadence
// (rewrites at 100, 200, 400, ... chunks) and Finish: the shape of a 400 MB
// corpus. Reports Add throughput and the peak RSS growth; asserts the growth
// stays far below what the old in-memory index (~160 bytes per chunk, +30 MB
// measured) or the texts themselves (~400 MB) would need.
TEST(AggregatorBench, Add200kChunksOf2KB) {
  const fs::path dir =
      fs::temp_directory_path() / ("sluice_agg_bench_" + std::to_string(::getpid()));
  fs::remove_all(dir);
  AggregatorOptions options;
  options.out_dir = (dir / "out").string();
  // A 4 MiB index cache (the default is 16 MiB): the bound below is what the
  // old in-memory index would exceed, not what the page cache may fill.
  AggregatorLimits limits;
  limits.index_cache_bytes = 4 * 1024 * 1024;
  auto opened = JsonAggregator::Open(options, limits);
  ASSERT_TRUE(opened.ok()) << opened.status().ToString();
  auto agg = std::move(opened).value();

  constexpr uint32_t kChunks = 200'000;
  EmbeddedChunk c;
  c.chunk.domain = "bench";
  c.chunk.category = "all";
  c.chunk.metadata_json = R"({"page_start":1})";
  const std::string base(2000, 'x');
  const long rss_before = PeakRssKiB();
  const auto start = std::chrono::steady_clock::now();
  for (uint32_t i = 0; i < kChunks; ++i) {
    c.chunk.source_id = "source-" + std::to_string(i % 200) + ".md";
    c.chunk.ordinal = i / 200;
    c.chunk.id = c.chunk.source_id + "#" + std::to_string(c.chunk.ordinal);
    c.chunk.text = base;
    c.chunk.text.replace(0, c.chunk.id.size(), c.chunk.id);
    ASSERT_TRUE(agg->Add(c).ok()) << i;
  }
  const auto added = std::chrono::steady_clock::now();
  ASSERT_TRUE(agg->Finish().ok());
  const auto finished = std::chrono::steady_clock::now();
  const long rss_after = PeakRssKiB();

  const double add_s = std::chrono::duration<double>(added - start).count();
  const double finish_s = std::chrono::duration<double>(finished - added).count();
  std::printf(
      "aggregator: %u chunks, Add %.2f s (%.0f chunks/s, rewrites included), Finish %.2f s, "
      "peak RSS %ld KiB -> %ld KiB (+%ld KiB)\n",
      kChunks, add_s, kChunks / add_s, finish_s, rss_before, rss_after, rss_after - rss_before);
  EXPECT_EQ(agg->FilesWritten(), 1u);
#if !defined(SLUICE_SANITIZED)                   // sanitizers inflate RSS
  EXPECT_LT(rss_after - rss_before, 12 * 1024);  // KiB; the in-memory index took ~30 MB
#endif
  fs::remove_all(dir);
}

}  // namespace
}  // namespace sluice
