// Files sluice writes are private whatever the umask, keep a mode their owner
// chose, and are never written through a planted symlink (issue 14).
#include "common/private_file.h"

#include <sys/stat.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <sstream>

namespace sluice {
namespace {

namespace fs = std::filesystem;

std::string ReadAll(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

mode_t ModeOf(const std::string& path) {
  struct stat st {};
  EXPECT_EQ(::lstat(path.c_str(), &st), 0) << path;
  return st.st_mode & 07777;
}

// Runs each test under umask 000, the case where the old code made files
// 0666 and folders 0777; restores the umask afterwards.
class PrivateFileTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string tmpl = (fs::temp_directory_path() / "sluice-private-XXXXXX").string();
    ASSERT_NE(::mkdtemp(tmpl.data()), nullptr);
    dir_ = tmpl;
    old_umask_ = ::umask(0);
  }
  void TearDown() override {
    ::umask(old_umask_);
    std::error_code ec;
    fs::remove_all(dir_, ec);
  }
  std::string Path(const std::string& rel) const { return dir_ + "/" + rel; }

  std::string dir_;
  mode_t old_umask_ = 0;
};

TEST_F(PrivateFileTest, NewFilesAre0600AndNewFolders0700UnderUmask000) {
  const std::string file = Path("a/b/report.json");
  std::error_code ec;
  ASSERT_TRUE(CreatePrivateDirectories(Path("a/b"), ec)) << ec.message();
  ASSERT_TRUE(WriteFileAtomically(file, "{}").ok());
  EXPECT_EQ(ReadAll(file), "{}");
  EXPECT_EQ(ModeOf(file), 0600u);
  EXPECT_EQ(ModeOf(Path("a")), 0700u);
  EXPECT_EQ(ModeOf(Path("a/b")), 0700u);

  Result<int> fd = OpenPrivateFileForAppend(Path("a/dead.jsonl"));
  ASSERT_TRUE(fd.ok()) << fd.status().ToString();
  ::close(*fd);
  EXPECT_EQ(ModeOf(Path("a/dead.jsonl")), 0600u);
}

TEST_F(PrivateFileTest, RewriteKeepsTheModeTheOwnerChose) {
  const std::string narrowed = Path("narrowed.json");
  const std::string widened = Path("widened.json");
  ASSERT_TRUE(WriteFileAtomically(narrowed, "old").ok());
  ASSERT_TRUE(WriteFileAtomically(widened, "old").ok());
  ASSERT_EQ(::chmod(narrowed.c_str(), 0400), 0);
  ASSERT_EQ(::chmod(widened.c_str(), 0644), 0);
  ASSERT_TRUE(WriteFileAtomically(narrowed, "new").ok());
  ASSERT_TRUE(WriteFileAtomically(widened, "new").ok());
  EXPECT_EQ(ReadAll(narrowed), "new");
  EXPECT_EQ(ModeOf(narrowed), 0400u);
  EXPECT_EQ(ModeOf(widened), 0644u);
}

TEST_F(PrivateFileTest, PlantedSymlinkAtTheOldTempNameIsNotFollowed) {
  // The old report writer opened "<report>.tmp" with O_TRUNC, following a
  // symlink planted there.
  const std::string victim = Path("victim");
  { std::ofstream(victim) << "precious"; }
  const std::string report = Path("report.json");
  ASSERT_EQ(::symlink(victim.c_str(), (report + ".tmp").c_str()), 0);
  ASSERT_TRUE(WriteFileAtomically(report, "{\"ok\":true}").ok());
  EXPECT_EQ(ReadAll(victim), "precious");
  EXPECT_EQ(ReadAll(report), "{\"ok\":true}");
  EXPECT_TRUE(fs::is_symlink(report + ".tmp"));  // left alone, not ours
}

TEST_F(PrivateFileTest, AppendNeverFollowsASymlinkAtThePath) {
  const std::string victim = Path("victim");
  { std::ofstream(victim) << "precious"; }
  const std::string dead = Path("dead.jsonl");
  ASSERT_EQ(::symlink(victim.c_str(), dead.c_str()), 0);
  Result<int> fd = OpenPrivateFileForAppend(dead);
  EXPECT_FALSE(fd.ok());
  EXPECT_EQ(ReadAll(victim), "precious");
}

TEST_F(PrivateFileTest, AbandonedWriterLeavesNoTempAndTheOldFile) {
  const std::string file = Path("group.json");
  ASSERT_TRUE(WriteFileAtomically(file, "old").ok());
  {
    auto writer = AtomicFileWriter::Create(file);
    ASSERT_TRUE(writer.ok()) << writer.status().ToString();
    ASSERT_TRUE((*writer)->Append("half").ok());
    EXPECT_TRUE(fs::exists((*writer)->temp_path()));
    EXPECT_EQ((*writer)->temp_path().rfind(file + ".tmp." + std::to_string(::getpid()) + ".", 0),
              0u);
  }
  EXPECT_EQ(ReadAll(file), "old");
  size_t entries = 0;
  for (const auto& e : fs::directory_iterator(dir_)) entries += e.exists() ? 1 : 0;
  EXPECT_EQ(entries, 1u);
}

// Writeback started part way (and after Commit, a no-op) changes nothing of
// what the file holds once committed.
TEST_F(PrivateFileTest, WritebackStartedMidWayKeepsTheContentWhole) {
  const std::string file = Path("group.json");
  ASSERT_TRUE(WriteFileAtomically(file, "old").ok());
  auto writer = AtomicFileWriter::Create(file);
  ASSERT_TRUE(writer.ok()) << writer.status().ToString();
  const std::string part(3 << 20, 'x');
  ASSERT_TRUE((*writer)->Append(part).ok());
  (*writer)->StartWriteback();
  EXPECT_EQ(ReadAll(file), "old");  // nothing is visible before Commit
  ASSERT_TRUE((*writer)->Append("tail").ok());
  (*writer)->StartWriteback();
  ASSERT_TRUE((*writer)->Commit().ok());
  (*writer)->StartWriteback();
  EXPECT_EQ(ReadAll(file), part + "tail");
}

TEST_F(PrivateFileTest, MissingFolderIsAnErrorNotANewTree) {
  Status s = WriteFileAtomically(Path("no/such/folder/trace.csv"), "x");
  EXPECT_EQ(s.code(), StatusCode::kIOError) << s.ToString();
  EXPECT_FALSE(fs::exists(Path("no")));
}

TEST_F(PrivateFileTest, FolderInTheWayIsAClearError) {
  { std::ofstream(Path("file")) << "x"; }
  std::error_code ec;
  EXPECT_FALSE(CreatePrivateDirectories(Path("file/sub"), ec));
  EXPECT_EQ(ec, std::errc::not_a_directory);
  ASSERT_TRUE(CreatePrivateDirectories(Path("dir"), ec));
  EXPECT_FALSE(WriteFileAtomically(Path("dir"), "x").ok());  // a folder is not replaced
  EXPECT_TRUE(fs::is_directory(Path("dir")));
}

}  // namespace
}  // namespace sluice
