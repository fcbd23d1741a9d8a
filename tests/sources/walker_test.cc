#include <grp.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>

#include <filesystem>
#include <fstream>

#include "sluice/sources.h"
#include "sources/test_util.h"

namespace sluice {
namespace {

using testing::TempDir;

struct Walked {
  std::vector<std::string> rel;
  std::vector<std::pair<std::string, Status>> errors;
  WalkStats stats;
};

Walked WalkAll(std::vector<std::string> roots, WalkOptions options = {}) {
  Walked w;
  auto walker = SourceWalker::Open(
      std::move(roots), std::move(options),
      [&w](const std::string& path, const Status& why) { w.errors.emplace_back(path, why); });
  EXPECT_TRUE(walker.ok()) << walker.status().ToString();
  if (!walker.ok()) return w;
  while (auto f = walker->Next()) w.rel.push_back(f->relative_path);
  w.stats = walker->stats();
  return w;
}

TEST(GlobMatchTest, ComponentsAndDoubleStar) {
  EXPECT_TRUE(GlobMatch("*.md", "a/b/x.md"));  // no '/': matches the name at any depth
  EXPECT_FALSE(GlobMatch("*.md", "a/b/x.txt"));
  EXPECT_TRUE(GlobMatch("manuals/*.md", "manuals/x.md"));
  EXPECT_FALSE(GlobMatch("manuals/*.md", "manuals/sub/x.md"));  // '*' never crosses '/'
  EXPECT_TRUE(GlobMatch("manuals/**", "manuals/sub/deep/x.md"));
  EXPECT_TRUE(GlobMatch("manuals/**/*.md", "manuals/x.md"));  // ** matches zero components
  EXPECT_TRUE(GlobMatch("manuals/**/*.md", "manuals/a/b/x.md"));
  EXPECT_TRUE(GlobMatch("**/faq.md", "faq.md"));
  EXPECT_TRUE(GlobMatch("./docs/?.txt", "docs/a.txt"));
  EXPECT_FALSE(GlobMatch("docs/[bc].txt", "docs/a.txt"));
  EXPECT_FALSE(GlobMatch("", "a"));
}

TEST(WalkerTest, StableSortedDepthFirstOrder) {
  TempDir dir;
  for (const char* rel : {"b.txt", "a/z.txt", "a/b/c.txt", "A.txt", "10.txt", "9.txt"}) {
    dir.Write(rel, "x");
  }
  const Walked first = WalkAll({dir.path()});
  const std::vector<std::string> expected = {"10.txt",    "9.txt",   "A.txt",
                                             "a/b/c.txt", "a/z.txt", "b.txt"};
  EXPECT_EQ(first.rel, expected);
  EXPECT_EQ(WalkAll({dir.path()}).rel, expected);  // same order again
  EXPECT_EQ(first.stats.files, 6u);
  EXPECT_EQ(first.stats.dirs, 3u);
  EXPECT_TRUE(first.errors.empty());
}

TEST(WalkerTest, SourceFileFields) {
  TempDir dir;
  dir.Write("corpus/manuals/pump.md", "hello");
  auto walker = SourceWalker::Open({dir.path() + "/corpus/"}, {});
  ASSERT_TRUE(walker.ok());
  auto f = walker->Next();
  ASSERT_TRUE(f.has_value());
  EXPECT_EQ(f->relative_path, "manuals/pump.md");
  EXPECT_EQ(f->root_name, "corpus");
  EXPECT_EQ(f->path, dir.path() + "/corpus/manuals/pump.md");
  EXPECT_EQ(f->size_bytes, 5u);
  EXPECT_GT(f->mtime_ns, 0);
  EXPECT_FALSE(walker->Next().has_value());
}

TEST(WalkerTest, FileRootUsesFileNameAndParentFolder) {
  TempDir dir;
  const std::string file = dir.Write("notes/today.txt", "x");
  const Walked w = WalkAll({file});
  ASSERT_EQ(w.rel.size(), 1u);
  EXPECT_EQ(w.rel[0], "today.txt");
  auto walker = SourceWalker::Open({file}, {});
  ASSERT_TRUE(walker.ok());
  EXPECT_EQ(walker->Next()->root_name, "notes");
}

TEST(WalkerTest, MissingRootIsNotFound) {
  auto walker = SourceWalker::Open({"/nonexistent/sluice/root"}, {});
  ASSERT_FALSE(walker.ok());
  EXPECT_EQ(walker.status().code(), StatusCode::kNotFound);
  EXPECT_FALSE(SourceWalker::Open({}, {}).ok());
}

// Issue 14, defect 10: a FIFO or a device root was skipped silently (exit 0).
// It is refused by name, as a missing root is; one found inside a folder is
// still skipped (and counted).
TEST(WalkerTest, FifoOrDeviceRootIsRefusedByName) {
  TempDir dir;
  const std::string fifo = dir.path() + "/pipe";
  ASSERT_EQ(mkfifo(fifo.c_str(), 0600), 0);
  auto walker = SourceWalker::Open({fifo}, {});
  ASSERT_FALSE(walker.ok());
  EXPECT_EQ(walker.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(walker.status().message().find("'" + fifo + "' is a FIFO"), std::string::npos)
      << walker.status().message();
  EXPECT_NE(CheckInputRoot("/dev/null").message().find("is a character device"), std::string::npos);
  EXPECT_EQ(CheckInputRoot("/nonexistent/sluice/root").code(), StatusCode::kNotFound);
  EXPECT_TRUE(CheckInputRoot(dir.path()).ok());

  dir.Write("a.txt", "text");
  auto folder = SourceWalker::Open({dir.path()}, {});
  ASSERT_TRUE(folder.ok());
  ASSERT_TRUE(folder->Next().has_value());
  EXPECT_FALSE(folder->Next().has_value());
  EXPECT_EQ(folder->stats().skipped_filtered, 1u);  // the FIFO inside
}

TEST(WalkerTest, SymlinkLoopsTerminateAndLinksAreFollowed) {
  TempDir dir;
  dir.Write("root/x.txt", "x");
  dir.Mkdir("root/sub");
  dir.Write("elsewhere/linked/y.txt", "y");
  ASSERT_EQ(symlink("..", (dir.path() + "/root/sub/up").c_str()), 0);
  ASSERT_EQ(symlink(".", (dir.path() + "/root/sub/self").c_str()), 0);
  ASSERT_EQ(symlink((dir.path() + "/elsewhere/linked").c_str(), (dir.path() + "/root/ext").c_str()),
            0);
  ASSERT_EQ(symlink((dir.path() + "/root/x.txt").c_str(), (dir.path() + "/root/xlink.txt").c_str()),
            0);
  const Walked w = WalkAll({dir.path() + "/root"});
  const std::vector<std::string> expected = {"ext/y.txt", "x.txt", "xlink.txt"};
  EXPECT_EQ(w.rel, expected);
  EXPECT_EQ(w.stats.skipped_repeats, 2u);  // sub/self and sub/up
  EXPECT_TRUE(w.errors.empty());
}

TEST(WalkerTest, HiddenSkippedByDefault) {
  TempDir dir;
  dir.Write(".git/config", "x");
  dir.Write(".hidden.txt", "x");
  dir.Write("docs/.draft.md", "x");
  dir.Write("visible.txt", "x");
  EXPECT_EQ(WalkAll({dir.path()}).rel, std::vector<std::string>{"visible.txt"});
  WalkOptions all;
  all.include_hidden = true;
  const std::vector<std::string> expected = {".git/config", ".hidden.txt", "docs/.draft.md",
                                             "visible.txt"};
  EXPECT_EQ(WalkAll({dir.path()}, all).rel, expected);
}

TEST(WalkerTest, DanglingSymlinkReportedAndWalkContinues) {
  TempDir dir;
  dir.Write("a.txt", "x");
  dir.Write("c.txt", "x");
  ASSERT_EQ(symlink((dir.path() + "/gone.txt").c_str(), (dir.path() + "/b.txt").c_str()), 0);
  const Walked w = WalkAll({dir.path()});
  EXPECT_EQ(w.rel, (std::vector<std::string>{"a.txt", "c.txt"}));
  ASSERT_EQ(w.errors.size(), 1u);
  EXPECT_EQ(w.errors[0].first, dir.path() + "/b.txt");
  EXPECT_EQ(w.errors[0].second.code(), StatusCode::kNotFound);
  EXPECT_NE(w.errors[0].second.message().find("dangling symlink"), std::string::npos);
  EXPECT_EQ(w.stats.errors, 1u);
}

// What the walk of a tree with an unreadable folder and file must give:
// empty when it does, else what differed.
std::string UnreadableWalkProblems(const std::string& root) {
  const Walked w = WalkAll({root});
  std::string problems;
  if (w.rel != std::vector<std::string>{"open.txt"}) {
    problems += "listed " + std::to_string(w.rel.size()) + " files, not just open.txt; ";
  }
  if (w.errors.size() != 2) problems += std::to_string(w.errors.size()) + " errors, not 2; ";
  for (const auto& [path, why] : w.errors) {
    if (why.code() != StatusCode::kPermissionDenied)
      problems += path + ": " + why.ToString() + "; ";
  }
  return problems;
}

// Root reads everything, so as root the walk runs in a child process that
// has become `nobody` (65534), where the permissions apply; CI runs as root.
TEST(WalkerTest, UnreadableFolderAndFileReported) {
  const bool root = geteuid() == 0;
  // As root, under /tmp itself: $TMPDIR may be a folder only root can enter.
  std::string made = "/tmp/sluice-walk-XXXXXX";
  TempDir own;
  const char* made_dir = root ? ::mkdtemp(made.data()) : own.path().c_str();
  ASSERT_NE(made_dir, nullptr) << std::strerror(errno);
  const std::string dir = made_dir;
  struct RemoveAtEnd {  // root's tree under /tmp, whatever the outcome
    std::string path;
    ~RemoveAtEnd() {
      std::error_code ec;
      if (!path.empty()) std::filesystem::remove_all(path, ec);
    }
  } remove_at_end{root ? dir : ""};
  std::filesystem::create_directories(dir + "/locked");
  for (const char* rel : {"/locked/secret.txt", "/closed.txt", "/open.txt"}) {
    std::ofstream(dir + rel) << "x";
  }
  ASSERT_EQ(chmod(dir.c_str(), 0755), 0);
  ASSERT_EQ(chmod((dir + "/open.txt").c_str(), 0644), 0);
  ASSERT_EQ(chmod((dir + "/locked").c_str(), 0), 0);
  ASSERT_EQ(chmod((dir + "/closed.txt").c_str(), 0), 0);
  if (!root) {
    EXPECT_EQ(UnreadableWalkProblems(dir), "");
    return;
  }
  EXPECT_EXIT(
      {
        if (setgroups(0, nullptr) != 0 || setgid(65534) != 0 || setuid(65534) != 0) {
          std::fprintf(stderr, "cannot become nobody\n");
          std::_Exit(2);
        }
        const std::string problems = UnreadableWalkProblems(dir);
        std::fprintf(stderr, "%s\n", problems.c_str());
        std::_Exit(problems.empty() ? 0 : 1);
      },
      ::testing::ExitedWithCode(0), "");
}

TEST(WalkerTest, NonRegularFilesSkipped) {
  TempDir dir;
  dir.Write("a.txt", "x");
  ASSERT_EQ(mkfifo((dir.path() + "/pipe.txt").c_str(), 0600), 0);
  const Walked w = WalkAll({dir.path()});
  EXPECT_EQ(w.rel, std::vector<std::string>{"a.txt"});
  EXPECT_EQ(w.stats.skipped_filtered, 1u);
  EXPECT_TRUE(w.errors.empty());
}

TEST(WalkerTest, IncludeAndExcludeGlobs) {
  TempDir dir;
  dir.Write("a.md", "x");
  dir.Write("a.txt", "x");
  dir.Write("drafts/b.md", "x");
  dir.Write("docs/c.md", "x");
  dir.Write("docs/old/d.md", "x");
  WalkOptions o;
  o.include_globs = {"*.md"};
  o.exclude_globs = {"drafts/**", "docs/old"};
  const Walked w = WalkAll({dir.path()}, o);
  EXPECT_EQ(w.rel, (std::vector<std::string>{"a.md", "docs/c.md"}));
  EXPECT_EQ(w.stats.dirs, 2u);  // drafts/ and docs/old/ never entered
}

TEST(WalkerTest, ManyFilesInManyFolders) {
  TempDir dir;
  for (int d = 0; d < 12; ++d) {
    const std::string folder = dir.Mkdir("d" + std::to_string(d));
    for (int f = 0; f < 100; ++f) {
      std::ofstream(folder + "/f" + std::to_string(f) + ".txt") << "x";
    }
  }
  const Walked w = WalkAll({dir.path()});
  ASSERT_EQ(w.rel.size(), 1200u);
  EXPECT_TRUE(std::is_sorted(w.rel.begin(), w.rel.end()));  // "d1" < "d10" < "d2" byte-wise too
}

TEST(WalkerTest, SeveralRootsInOrder) {
  TempDir dir;
  dir.Write("one/z.txt", "x");
  dir.Write("two/a.txt", "x");
  const Walked w = WalkAll({dir.path() + "/two", dir.path() + "/one"});
  EXPECT_EQ(w.rel, (std::vector<std::string>{"a.txt", "z.txt"}));
}

}  // namespace
}  // namespace sluice
