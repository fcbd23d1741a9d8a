// One-shot throughput measurement of SqliteStore::Write (label "bench", not
// part of `ctest -L unit`): 50k rows of 384 floats + ~1 KB text in batches of
// 200, first as new rows, then the identical rerun (all no-op upserts).
// Figures go to docs/STORE_SCHEMA.md.
#include <gtest/gtest.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <string>
#include <vector>

#include "common/hashing.h"
#include "store/sqlite/sqlite_store.h"

namespace sluice {
namespace {

namespace fs = std::filesystem;

TEST(SqliteStoreBench, Write50kRows384Dims) {
  constexpr int kRows = 50'000;
  constexpr int kDims = 384;
  constexpr int kBatch = 200;
  const fs::path dir =
      fs::temp_directory_path() / ("sluice_sqlite_bench_" + std::to_string(::getpid()));
  fs::remove_all(dir);
  fs::create_directories(dir);
  SqliteStoreOptions options;
  auto store = SqliteStore::Open((dir / "bench.db").string(), options);
  ASSERT_TRUE(store.ok()) << store.status().ToString();

  uint64_t seed = 42;
  std::string filler;
  for (int i = 0; i < 1024; ++i) filler.push_back(static_cast<char>('a' + SplitMix64(seed) % 26));
  const auto make_batch = [&](int first) {
    std::vector<EmbeddedChunk> batch(kBatch);
    for (int i = 0; i < kBatch; ++i) {
      EmbeddedChunk& e = batch[i];
      const int n = first + i;
      e.chunk.source_id = "doc" + std::to_string(n / 50) + ".md";
      e.chunk.ordinal = static_cast<uint32_t>(n % 50);
      e.chunk.id = Hash128Hex(e.chunk.source_id + "#" + std::to_string(e.chunk.ordinal));
      e.chunk.text = std::to_string(n) + filler;
      e.chunk.domain = "bench";
      e.chunk.category = "rows";
      e.chunk.metadata_json = R"({"page_start":1})";
      e.model = "bench-384";
      uint64_t s = static_cast<uint64_t>(n);
      e.embedding.resize(kDims);
      for (float& x : e.embedding) x = static_cast<float>(SplitMix64(s) % 20001) / 10000.0f - 1.0f;
    }
    return batch;
  };
  // Batches are built outside the timed region.
  std::vector<std::vector<EmbeddedChunk>> batches;
  for (int first = 0; first < kRows; first += kBatch) batches.push_back(make_batch(first));

  for (const char* pass : {"insert", "identical rerun"}) {
    const auto start = std::chrono::steady_clock::now();
    for (const auto& batch : batches) {
      auto w = (*store)->Write(batch);
      ASSERT_TRUE(w.status.ok()) << w.status.ToString();
      ASSERT_TRUE(w.rejected.empty());
    }
    ASSERT_TRUE((*store)->Flush().ok());
    const double secs =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    std::printf("sqlite %s: %d rows in %.2f s = %.0f rows/s\n", pass, kRows, secs, kRows / secs);
  }
  EXPECT_EQ((*store)->Stats()->chunks, static_cast<uint64_t>(kRows));
  std::printf("database file: %.1f MB\n",
              static_cast<double>(fs::file_size(dir / "bench.db")) / 1e6);
  (*store)->Close();
  fs::remove_all(dir);
}

}  // namespace
}  // namespace sluice
