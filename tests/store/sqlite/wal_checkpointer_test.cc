// The background WAL checkpointer against real database files in a temp dir.
#include "store/sqlite/wal_checkpointer.h"

#include <gtest/gtest.h>
#include <sqlite3.h>

#include <filesystem>
#include <string>

#include "testing/test_util.h"

namespace sluice {
namespace {

namespace fs = std::filesystem;

class WalCheckpointerTest : public ::testing::Test {
 protected:
  void TearDown() override {
    if (writer_ != nullptr) sqlite3_close(writer_);
  }

  // A WAL database whose writer never checkpoints, holding `rows` rows of
  // 1 KiB in its log (the connection stays open: closing would checkpoint).
  void WriteIntoTheLogOnly(int rows) {
    ASSERT_EQ(sqlite3_open(path_.c_str(), &writer_), SQLITE_OK);
    ASSERT_EQ(Exec("PRAGMA journal_mode=WAL; PRAGMA wal_autocheckpoint=0;"
                   "CREATE TABLE t(x BLOB)"),
              SQLITE_OK);
    ASSERT_EQ(Exec("BEGIN"), SQLITE_OK);
    for (int i = 0; i < rows; ++i) ASSERT_EQ(Exec("INSERT INTO t VALUES (zeroblob(1024))"), 0);
    ASSERT_EQ(Exec("COMMIT"), SQLITE_OK);
  }

  int Exec(const char* sql) { return sqlite3_exec(writer_, sql, nullptr, nullptr, nullptr); }

  // Frames in the log and frames of it copied into the database, as a
  // passive checkpoint that finds nothing left to copy reports them.
  std::pair<int, int> LogAndCopied() {
    int log = -1, copied = -1;
    EXPECT_EQ(sqlite3_wal_checkpoint_v2(writer_, nullptr, SQLITE_CHECKPOINT_PASSIVE, &log, &copied),
              SQLITE_OK);
    return {log, copied};
  }

  testing::TempDir dir_;
  std::string path_ = dir_ / "db.sqlite";
  sqlite3* writer_ = nullptr;
};

TEST_F(WalCheckpointerTest, ARequestCopiesTheWholeLogIntoTheDatabase) {
  WriteIntoTheLogOnly(2000);
  const auto before = fs::file_size(path_);
  EXPECT_LT(before, 64u * 1024) << "the rows must still be in the log only";

  auto started = WalCheckpointer::Start(path_, 1000);
  ASSERT_TRUE(started.ok()) << started.status().ToString();
  WalCheckpointer& checkpointer = **started;
  checkpointer.Request();
  checkpointer.WaitIdle();
  EXPECT_EQ(checkpointer.completed(), 1u);
  EXPECT_EQ(checkpointer.failed(), 0u);

  EXPECT_GT(fs::file_size(path_), 2000u * 1024) << "the rows are in the database file now";
  const auto [log, copied] = LogAndCopied();
  EXPECT_GT(log, 0);
  EXPECT_EQ(copied, log) << "nothing of the log was left to copy";
}

TEST_F(WalCheckpointerTest, NothingAskedNothingRunAndStopIsIdempotent) {
  WriteIntoTheLogOnly(10);
  auto started = WalCheckpointer::Start(path_, 1000);
  ASSERT_TRUE(started.ok()) << started.status().ToString();
  WalCheckpointer& checkpointer = **started;
  checkpointer.WaitIdle();  // returns: nothing runs, nothing is asked
  EXPECT_EQ(checkpointer.completed(), 0u);
  checkpointer.Stop();
  checkpointer.Stop();
  checkpointer.Request();   // after Stop: ignored
  checkpointer.WaitIdle();  // and does not wait for it
  EXPECT_EQ(checkpointer.completed(), 0u);
  const auto [log, copied] = LogAndCopied();  // the writer copies it now
  EXPECT_EQ(copied, log);
}

TEST_F(WalCheckpointerTest, AMissingDatabaseIsAnErrorNamingIt) {
  auto started = WalCheckpointer::Start(dir_ / "missing.db", 1000);
  ASSERT_FALSE(started.ok());
  EXPECT_NE(started.status().message().find("missing.db"), std::string::npos)
      << started.status().ToString();
}

}  // namespace
}  // namespace sluice
