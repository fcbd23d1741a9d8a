// SpoolReader: exact bytes whatever the access pattern, and fewer reads than
// lines when the lines are read in file order.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <cstdint>
#include <filesystem>
#include <random>
#include <string>
#include <vector>

#include "aggregate/aggregate_util.h"
#include "testing/test_util.h"

namespace sluice::aggregate {
namespace {

struct Line {
  uint64_t offset;
  size_t length;
};

class SpoolReaderTest : public ::testing::Test {
 protected:
  void SetUp() override {
    // `kLines` lines of 1,000-1,999 bytes, each byte a function of its offset.
    std::mt19937_64 rng(42);
    std::string data;
    for (int i = 0; i < kLines; ++i) {
      const size_t length = 1000 + rng() % 1000;
      lines_.push_back({data.size(), length});
      for (size_t b = 0; b < length; ++b)
        data.push_back(static_cast<char>((data.size() * 7) % 251));
    }
    const int fd = ::open(path_.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
    ASSERT_GE(fd, 0);
    ASSERT_TRUE(WriteAll(fd, data).ok());
    ::close(fd);
    data_ = std::move(data);
    fd_ = ::open(path_.c_str(), O_RDONLY);
    ASSERT_GE(fd_, 0);
  }
  void TearDown() override {
    if (fd_ >= 0) ::close(fd_);
  }

  // Reads `order` through one reader and checks every byte.
  uint64_t ReadAll(const std::vector<size_t>& order) {
    SpoolReader reader(fd_);
    std::string got;
    for (size_t i : order) {
      got.assign(lines_[i].length, '\0');
      Status s = reader.Read(got.data(), got.size(), lines_[i].offset);
      EXPECT_TRUE(s.ok()) << s.ToString();
      EXPECT_EQ(got, data_.substr(lines_[i].offset, lines_[i].length)) << "line " << i;
    }
    return reader.reads();
  }

  static constexpr int kLines = 4000;
  testing::TempDir dir_;
  std::string path_ = dir_ / "spool.jsonl";
  std::string data_;
  std::vector<Line> lines_;
  int fd_ = -1;
};

TEST_F(SpoolReaderTest, InFileOrderAFewReadsServeAllLines) {
  std::vector<size_t> order(kLines);
  for (size_t i = 0; i < order.size(); ++i) order[i] = i;
  const uint64_t reads = ReadAll(order);
  // ~6 MB in blocks of up to 256 KiB: a few dozen reads, not 4,000.
  EXPECT_LT(reads, 100u);
}

TEST_F(SpoolReaderTest, ManyInterleavedSourcesFallBackToOneReadPerLine) {
  // 100 sources round-robin, each read in turn: a source's next line is
  // ~150 KB further, so a block serves one line.
  std::vector<size_t> order;
  for (size_t source = 0; source < 100; ++source) {
    for (size_t i = source; i < kLines; i += 100) order.push_back(i);
  }
  SpoolReader reader(fd_);
  std::string got;
  for (size_t i : order) {
    got.assign(lines_[i].length, '\0');
    ASSERT_TRUE(reader.Read(got.data(), got.size(), lines_[i].offset).ok());
    ASSERT_EQ(got, data_.substr(lines_[i].offset, lines_[i].length));
  }
  EXPECT_EQ(reader.read_ahead(), 0u) << "the read-ahead must have shrunk away";
  EXPECT_LE(reader.reads(), order.size()) << "never more reads than lines";
}

TEST_F(SpoolReaderTest, RandomOrderStillExactAndTwoSourcesStillCheap) {
  std::vector<size_t> order(kLines);
  for (size_t i = 0; i < order.size(); ++i) order[i] = i;
  std::shuffle(order.begin(), order.end(), std::mt19937_64(7));
  ReadAll(order);  // exact bytes; the count does not matter here

  // Two readers' sources interleaved line by line in the spool, each read
  // through in turn: every block still serves half its lines.
  std::vector<size_t> two;
  for (size_t i = 0; i < kLines; i += 2) two.push_back(i);
  for (size_t i = 1; i < kLines; i += 2) two.push_back(i);
  EXPECT_LT(ReadAll(two), 200u);
}

TEST_F(SpoolReaderTest, ALineBeyondTheEndIsAnError) {
  SpoolReader reader(fd_);
  std::string got(100, '\0');
  Status s = reader.Read(got.data(), got.size(), data_.size() - 50);
  EXPECT_FALSE(s.ok());
  EXPECT_NE(s.message().find("shorter"), std::string::npos) << s.ToString();
  // The last line itself, read whole, is fine (the block stops at the end).
  const Line& last = lines_.back();
  got.assign(last.length, '\0');
  ASSERT_TRUE(reader.Read(got.data(), got.size(), last.offset).ok());
  EXPECT_EQ(got, data_.substr(last.offset));
}

}  // namespace
}  // namespace sluice::aggregate
