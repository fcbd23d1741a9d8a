// Issue 14 through the real `sluice` binary: sluice's own files never collide
// with document-chosen aggregate names; endpoints as users write them
// (credentials, Azure's query string) and secrets kept out of every output;
// --store-env; files created private whatever the umask, never through a
// planted symlink; the simulated API warns when exposed without a key.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <filesystem>

#include "sluice/mock_api.h"
#include "testing/test_util.h"

namespace sluice {
namespace {

namespace fs = std::filesystem;
using testing::ReadFile;
using testing::RunCommand;
using testing::TempDir;
using testing::WriteFile;

const std::string kSluice = SLUICE_BINARY;

// Two Markdown files whose front matter names domains like sluice's own
// files, and a JSONL file with one broken record (one dead letter).
void MakeCollidingCorpus(const TempDir& dir) {
  WriteFile(dir / "corpus/a.md",
            "---\ndomain: dead-letter.jsonl\ncategory: gates\n---\n# A\n\nThe gate.\n");
  WriteFile(dir / "corpus/b.md",
            "---\ndomain: .dead-letter.jsonl\ncategory: x\n---\n# B\n\nThe pump.\n");
  WriteFile(dir / "corpus/c.jsonl", "{\"id\":\"ok\",\"text\":\"the seal\"}\n{\"id\":\"broken\"\n");
}

mode_t ModeOf(const std::string& path) {
  struct stat st {};
  EXPECT_EQ(::stat(path.c_str(), &st), 0) << path;
  return st.st_mode & 07777;
}

std::unique_ptr<MockApiServer> StartMock(const std::string& api_key = "") {
  MockApiOptions options;
  options.dimensions = 16;
  options.api_key = api_key;
  auto server = MockApiServer::Start(options);
  EXPECT_TRUE(server.ok()) << server.status().ToString();
  return server.ok() ? std::move(server).value() : nullptr;
}

TEST(SecretsE2eTest, DocumentDomainsNeverCollideWithSluiceFiles) {
  // Defaults (--out out): the old dead-letter file out/dead-letter.jsonl was
  // made a folder by the first run's aggregates, and every later run exited 1.
  TempDir dir;
  MakeCollidingCorpus(dir);
  const std::string ingest = "cd " + dir.path() + " && " + kSluice +
                             " ingest corpus --embedder hash --reprocess-all --no-progress";
  for (int run = 0; run < 2; ++run) {
    auto r = RunCommand(ingest);
    ASSERT_EQ(r.exit_code, 3) << "run " << run << ": " << r.output;  // 3: dead letters
    EXPECT_NE(r.output.find("out/.dead-letter.jsonl"), std::string::npos) << r.output;
  }
  EXPECT_TRUE(fs::is_regular_file(dir / "out/dead-letter.jsonl/gates.json"));
  const std::string dead = ReadFile(dir / "out/.dead-letter.jsonl");
  EXPECT_NE(dead.find("c.jsonl"), std::string::npos) << dead;
  auto list = RunCommand("cd " + dir.path() + " && " + kSluice + " dead-letter list");
  EXPECT_EQ(list.exit_code, 0) << list.output;
  EXPECT_NE(list.output.find("dead letters in out/.dead-letter.jsonl"), std::string::npos)
      << list.output;
}

TEST(SecretsE2eTest, DeadLettersGoUnderOutAndNoEmptyOutFolderAppears) {
  TempDir dir;
  MakeCollidingCorpus(dir);
  auto r = RunCommand("cd " + dir.path() + " && " + kSluice +
                      " ingest corpus --embedder hash --no-progress --out agg");
  ASSERT_EQ(r.exit_code, 3) << r.output;
  EXPECT_TRUE(fs::is_regular_file(dir / "agg/.dead-letter.jsonl"));
  EXPECT_FALSE(fs::exists(dir / "out"));  // the old default was ./out/dead-letter.jsonl

  TempDir clean;
  WriteFile(clean / "corpus/a.txt", "Nothing wrong here.\n");
  r = RunCommand("cd " + clean.path() + " && " + kSluice +
                 " ingest corpus --embedder hash --no-progress --no-aggregate");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_FALSE(fs::exists(clean / "out"));
}

TEST(SecretsE2eTest, EndpointWithCredentialsAndQueryWorksAndIsRedacted) {
  auto mock = StartMock("sk-e2e-key");
  ASSERT_NE(mock, nullptr);
  TempDir dir;
  WriteFile(dir / "corpus/a.txt", "The gate opens slowly.\n\nThe seal is new.\n");
  // Azure OpenAI's form: the query comes after the path sluice appends.
  const std::string base = mock->BaseUrl();  // http://127.0.0.1:PORT/v1
  const std::string endpoint =
      "http://azure-user:pw-secret@" + base.substr(7) + "?api-version=2024-02-01&key=q-secret";
  auto r = RunCommand("SLUICE_KEY=sk-e2e-key " + kSluice + " ingest " + (dir / "corpus") +
                      " --endpoint '" + endpoint +
                      "' --api-key-env SLUICE_KEY --store sqlite:" + (dir / "s.db") + " --out " +
                      (dir / "out") + " --report " + (dir / "report.json") + " --no-progress");
  ASSERT_EQ(r.exit_code, 0) << r.output;  // was: 404 for every request, all dead-lettered
  const std::string report = ReadFile(dir / "report.json");
  for (const std::string& text : {r.output, report}) {
    EXPECT_EQ(text.find("pw-secret"), std::string::npos) << text;
    EXPECT_EQ(text.find("q-secret"), std::string::npos) << text;
    EXPECT_EQ(text.find("sk-e2e-key"), std::string::npos) << text;
    EXPECT_NE(text.find("azure-user:***@"), std::string::npos) << text;
    EXPECT_NE(text.find("?api-version=2024-02-01&key=***"), std::string::npos) << text;
  }
  EXPECT_GT(mock->Stats().ok, 0u);
}

TEST(SecretsE2eTest, OneLetterKeyDoesNotMangleTheServiceMessage) {
  auto mock = StartMock("sk-the-right-key");
  ASSERT_NE(mock, nullptr);
  TempDir dir;
  WriteFile(dir / "corpus/a.txt", "The gate opens slowly.\n");
  auto r =
      RunCommand("SLUICE_KEY=n " + kSluice + " ingest " + (dir / "corpus") + " --endpoint " +
                 mock->BaseUrl() + " --api-key-env SLUICE_KEY --store sqlite:" + (dir / "s.db") +
                 " --out " + (dir / "out") + " --no-progress");
  EXPECT_EQ(r.exit_code, 1) << r.output;  // 401 stops the run
  // Was "I[redacted]correct API key provided.": every 'n' replaced.
  EXPECT_NE(r.output.find("Incorrect API key provided"), std::string::npos) << r.output;
  EXPECT_EQ(r.output.find("[redacted]"), std::string::npos) << r.output;
}

TEST(SecretsE2eTest, StoreUriFromTheEnvironment) {
  TempDir dir;
  WriteFile(dir / "corpus/a.txt", "The gate opens slowly.\n");
  // `env` sets (or unsets) SLUICE_STORE for the sluice process only.
  const auto ingest = [&](const std::string& env) {
    return RunCommand("cd " + dir.path() + " && " + env + " " + kSluice +
                      " ingest corpus --embedder hash --no-progress --store-env SLUICE_STORE");
  };
  auto r = ingest("SLUICE_STORE=sqlite:" + (dir / "env.db"));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_TRUE(fs::exists(dir / "env.db"));
  EXPECT_FALSE(fs::exists(dir / "sluice.db"));  // --store's default was not used
  r = RunCommand("cd " + dir.path() + " && SLUICE_STORE=sqlite:" + (dir / "env.db") + " " +
                 kSluice + " search gate --embedder hash --store-env SLUICE_STORE");
  EXPECT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("a.txt"), std::string::npos) << r.output;
  r = RunCommand("cd " + dir.path() + " && SLUICE_STORE=sqlite:" + (dir / "env.db") + " " +
                 kSluice + " verify --store-env SLUICE_STORE");
  EXPECT_EQ(r.exit_code, 0) << r.output;

  r = ingest("env -u SLUICE_STORE");
  EXPECT_EQ(r.exit_code, 2) << r.output;
  EXPECT_NE(r.output.find("--store-env SLUICE_STORE"), std::string::npos) << r.output;

  // A password given this way is in neither the process list nor the output
  // (port 1: nothing listens, the connection is refused at once).
  r = ingest("SLUICE_STORE='postgres://sluice:hunter2-secret@127.0.0.1:1/rag'");
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_EQ(r.output.find("hunter2-secret"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("sluice:***@127.0.0.1:1"), std::string::npos) << r.output;
}

// Runs `sluice ingest` with the test process's umask set to 000 (inherited by
// the child), the case where the old code created 0666 files.
class UmaskZero {
 public:
  UmaskZero() : old_(::umask(0)) {}
  ~UmaskZero() { ::umask(old_); }

 private:
  mode_t old_;
};

TEST(SecretsE2eTest, FilesAreCreatedPrivateAndRewritesKeepTheOwnersMode) {
  auto mock = StartMock();
  ASSERT_NE(mock, nullptr);
  TempDir dir;
  WriteFile(dir / "corpus/a.md", "---\ndomain: ops\ncategory: gates\n---\n# A\n\nThe gate.\n");
  WriteFile(dir / "corpus/c.jsonl", "{\"id\":\"broken\"\n");
  const std::string ingest = kSluice + " ingest " + (dir / "corpus") + " --endpoint " +
                             mock->BaseUrl() + " --store sqlite:" + (dir / "s.db") + " --out " +
                             (dir / "out") + " --report " + (dir / "report.json") + " --trace " +
                             (dir / "trace.csv") + " --no-progress --reprocess-all --no-cache";
  UmaskZero umask_zero;
  auto r = RunCommand(ingest);
  ASSERT_EQ(r.exit_code, 3) << r.output;
  EXPECT_EQ(ModeOf(dir / "s.db"), 0600u);
  EXPECT_EQ(ModeOf(dir / "out"), 0700u);
  EXPECT_EQ(ModeOf(dir / "out/ops"), 0700u);
  EXPECT_EQ(ModeOf(dir / "out/ops/gates.json"), 0600u);
  EXPECT_EQ(ModeOf(dir / "out/.dead-letter.jsonl"), 0600u);
  EXPECT_EQ(ModeOf(dir / "report.json"), 0600u);
  EXPECT_EQ(ModeOf(dir / "trace.csv"), 0600u);

  // The owner's choice survives the rewrites of the next run.
  ASSERT_EQ(::chmod((dir / "report.json").c_str(), 0640), 0);
  ASSERT_EQ(::chmod((dir / "out/ops/gates.json").c_str(), 0400), 0);
  ASSERT_EQ(::chmod((dir / "trace.csv").c_str(), 0644), 0);
  r = RunCommand(ingest);
  ASSERT_EQ(r.exit_code, 3) << r.output;
  EXPECT_EQ(ModeOf(dir / "report.json"), 0640u);
  EXPECT_EQ(ModeOf(dir / "out/ops/gates.json"), 0400u);
  EXPECT_EQ(ModeOf(dir / "trace.csv"), 0644u);
  EXPECT_NE(ReadFile(dir / "report.json").find("\"reconciled\":true"), std::string::npos);
}

TEST(SecretsE2eTest, PlantedSymlinkAtTheOldReportTempNameIsNotFollowed) {
  TempDir dir;
  WriteFile(dir / "corpus/a.txt", "The gate opens slowly.\n");
  WriteFile(dir / "victim", "precious");
  ASSERT_EQ(::symlink((dir / "victim").c_str(), (dir / "report.json.tmp").c_str()), 0);
  auto r = RunCommand(kSluice + " ingest " + (dir / "corpus") +
                      " --embedder hash --store sqlite:" + (dir / "s.db") + " --out " +
                      (dir / "out") + " --report " + (dir / "report.json") + " --no-progress");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_EQ(ReadFile(dir / "victim"), "precious");
  EXPECT_NE(ReadFile(dir / "report.json").find("\"reconciled\":true"), std::string::npos);
}

// A listening socket on 0.0.0.0:port, so `sluice mock-api` on that port fails
// to start right after deciding whether to warn (no waiting on a live server).
class BusyPort {
 public:
  BusyPort() : fd_(::socket(AF_INET, SOCK_STREAM, 0)) {
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_ANY);
    EXPECT_EQ(::bind(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0);
    EXPECT_EQ(::listen(fd_, 1), 0);
    socklen_t len = sizeof addr;
    ::getsockname(fd_, reinterpret_cast<sockaddr*>(&addr), &len);
    port_ = ntohs(addr.sin_port);
  }
  ~BusyPort() { ::close(fd_); }
  std::string port() const { return std::to_string(port_); }

 private:
  int fd_;
  uint16_t port_ = 0;
};

TEST(SecretsE2eTest, MockApiWarnsWhenExposedWithoutAKey) {
  BusyPort busy;
  const std::string warning = "reachable from other machines";
  auto r = RunCommand(kSluice + " mock-api --host 0.0.0.0 --port " + busy.port());
  EXPECT_EQ(r.exit_code, 1) << r.output;  // the port is taken
  EXPECT_NE(r.output.find(warning), std::string::npos) << r.output;

  r = RunCommand("SLUICE_MOCK_KEY=k " + kSluice + " mock-api --host 0.0.0.0 --port " + busy.port() +
                 " --api-key-env SLUICE_MOCK_KEY");
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_EQ(r.output.find(warning), std::string::npos) << r.output;

  r = RunCommand(kSluice + " mock-api --host 127.0.0.1 --port " + busy.port());
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_EQ(r.output.find(warning), std::string::npos) << r.output;
}

}  // namespace
}  // namespace sluice
