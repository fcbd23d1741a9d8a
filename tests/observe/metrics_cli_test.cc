// --metrics-listen through the binary: served during the run (port 0 logs
// the bound address), loopback only unless --metrics-allow-remote, a taken
// port or a bad address fails before any work with the address named.
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <filesystem>

#include "testing/test_util.h"

namespace sluice {
namespace {

using testing::RunCommand;
using testing::TempDir;
using testing::WriteFile;

const std::string kSluice = SLUICE_BINARY;

std::string Ingest(const TempDir& dir, const std::string& flags) {
  WriteFile(dir / "corpus/a.md", "# Gates\n\nThe lock keeper greases the gate hinges weekly.\n");
  return "cd " + dir.path() + " && " + kSluice +
         " ingest corpus --store sqlite:store.db --out out --quiet " + flags;
}

TEST(MetricsCliTest, PortZeroServesDuringTheRunAndLogsTheBoundAddress) {
  TempDir dir;
  const auto r = RunCommand(Ingest(dir, "--metrics-listen 127.0.0.1:0"));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  // (std::regex is avoided: GCC 12 warns inside it at -O1.)
  const std::string prefix = "metrics: serving http://127.0.0.1:";
  const size_t at = r.output.find(prefix);
  ASSERT_NE(at, std::string::npos) << r.output;
  const size_t port_at = at + prefix.size();
  const size_t slash = r.output.find("/metrics", port_at);
  ASSERT_NE(slash, std::string::npos) << r.output;
  const std::string port = r.output.substr(port_at, slash - port_at);
  ASSERT_FALSE(port.empty());
  EXPECT_EQ(port.find_first_not_of("0123456789"), std::string::npos) << port;
  EXPECT_NE(std::stoi(port), 0);
}

TEST(MetricsCliTest, NonLoopbackIsRefusedBeforeAnyWorkUnlessAllowed) {
  TempDir dir;
  auto r = RunCommand(Ingest(dir, "--metrics-listen 0.0.0.0:0"));
  EXPECT_EQ(r.exit_code, 2) << r.output;
  EXPECT_NE(r.output.find("0.0.0.0:0"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("--metrics-allow-remote"), std::string::npos) << r.output;
  EXPECT_FALSE(std::filesystem::exists(dir / "store.db"));  // nothing was ingested

  r = RunCommand(Ingest(dir, "--metrics-listen 0.0.0.0:0 --metrics-allow-remote"));
  EXPECT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("metrics: serving http://0.0.0.0:"), std::string::npos) << r.output;
}

TEST(MetricsCliTest, ATakenPortIsAClearErrorNamingTheAddress) {
  // Hold a listening socket on a kernel-chosen port for the whole test.
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  ASSERT_GE(fd, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof(a);
  ASSERT_EQ(bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a)), 0);
  ASSERT_EQ(listen(fd, 1), 0);
  ASSERT_EQ(getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len), 0);
  const std::string taken = "127.0.0.1:" + std::to_string(ntohs(a.sin_port));

  TempDir dir;
  const auto r = RunCommand(Ingest(dir, "--metrics-listen " + taken));
  close(fd);
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_NE(r.output.find("cannot listen on " + taken), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("in use"), std::string::npos) << r.output;
  EXPECT_FALSE(std::filesystem::exists(dir / "store.db"));
}

TEST(MetricsCliTest, ABadAddressIsAUsageError) {
  TempDir dir;
  const auto r = RunCommand(Ingest(dir, "--metrics-listen 9464"));
  EXPECT_EQ(r.exit_code, 2) << r.output;
  EXPECT_NE(r.output.find("--metrics-listen '9464'"), std::string::npos) << r.output;
}

TEST(MetricsCliTest, TheAddressIsAlsoAConfigKey) {
  TempDir dir;
  WriteFile(dir / "cfg.toml", "metrics-listen = \"127.0.0.1:0\"\n");
  const auto r = RunCommand(Ingest(dir, "--config cfg.toml"));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("metrics: serving http://127.0.0.1:"), std::string::npos) << r.output;
}

TEST(MetricsCliTest, DeadLetterRetryDoesNotOfferTheFlag) {
  TempDir dir;
  const auto r = RunCommand("cd " + dir.path() + " && " + kSluice +
                            " dead-letter retry --metrics-listen 127.0.0.1:0");
  EXPECT_NE(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("metrics-listen"), std::string::npos) << r.output;
}

}  // namespace
}  // namespace sluice
