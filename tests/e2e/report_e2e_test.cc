// Issue 12 (items 4 and 6) through the real `sluice` binary and the
// simulated API over loopback: the HTML run report opened in a real headless
// Chromium (no console error, no request but the file itself, charts with
// data, a screenshot kept as an artefact); --trace by extension or refused;
// --log-format json with one parseable event per line and no secret in it.
#include <gtest/gtest.h>

#include <filesystem>
#include <sstream>

#include <simdjson.h>

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
const std::string kBrowserCheck = SLUICE_SOURCE_DIR "/tests/e2e/browser_check.mjs";
const std::string kArtefactDir = SLUICE_ARTEFACT_DIR;
const std::string kChromium = "/usr/bin/chromium";

// A folder name that would load an image (blocked, so a console error) if
// the report put it into the page unescaped.
const std::string kHostileFolder = "<img src=x onerror=alert(1)>";

std::unique_ptr<MockApiServer> StartMock(MockApiOptions options) {
  auto server = MockApiServer::Start(options);
  EXPECT_TRUE(server.ok()) << server.status().ToString();
  return server.ok() ? std::move(server).value() : nullptr;
}

// A corpus under the hostile folder: 40 text files and a JSONL file with one
// broken record (a dead-letter reason for the report).
std::string MakeCorpus(const TempDir& dir) {
  const std::string root = dir / kHostileFolder;
  for (int i = 0; i < 40; ++i) {
    WriteFile(root + "/notes/n" + std::to_string(i) + ".txt",
              testing::Paragraphs(12, "gate" + std::to_string(i)));
  }
  WriteFile(root + "/records.jsonl", "{\"id\":\"ok\",\"text\":\"the seal\"}\n{\"id\":\"broken\"\n");
  return root;
}

std::string Quote(const std::string& s) {
  std::string out = "'";
  for (char c : s) out += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return out + "'";
}

std::vector<std::string> Lines(const std::string& text) {
  std::vector<std::string> lines;
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);) lines.push_back(line);
  return lines;
}

TEST(ReportE2eTest, HtmlReportOpensCleanInHeadlessChromiumWithChartsOfTheRun) {
  ASSERT_TRUE(fs::exists(kChromium)) << "chromium is missing: run scripts/install-deps.sh";
  MockApiOptions mock_options;
  mock_options.dimensions = 16;
  mock_options.base_latency = std::chrono::milliseconds(30);
  auto mock = StartMock(mock_options);
  ASSERT_NE(mock, nullptr);
  TempDir dir;
  const std::string corpus = MakeCorpus(dir);
  const std::string html = dir / "run/report.html";
  auto r = RunCommand(kSluice + " ingest " + Quote(corpus) + " --endpoint " + mock->BaseUrl() +
                      " --model m --store sqlite:" + (dir / "s.db") + " --out " + (dir / "out") +
                      " --batch-size 8 --html-report " + html + " --trace " + (dir / "trace.html") +
                      " --no-progress");
  ASSERT_EQ(r.exit_code, 3) << r.output;  // the broken record is dead-lettered
  ASSERT_TRUE(fs::is_regular_file(html)) << r.output;
  ASSERT_TRUE(fs::is_regular_file(dir / "trace.html")) << r.output;
  const std::string page = ReadFile(html);
  EXPECT_NE(page.find("&lt;img src=x onerror=alert(1)&gt;"), std::string::npos);

  const std::string png = kArtefactDir + "/html-report.png";
  fs::remove(png);
  auto check = RunCommand("node " + kBrowserCheck + " " + kChromium + " " + html + " " + png +
                          " 120000 2>/dev/null");
  ASSERT_EQ(check.exit_code, 0) << check.output;
  simdjson::dom::parser parser;
  simdjson::dom::element doc;
  ASSERT_EQ(parser.parse(check.output).get(doc), simdjson::SUCCESS) << check.output;
  bool loaded = false;
  ASSERT_EQ(doc["loaded"].get(loaded), simdjson::SUCCESS);
  EXPECT_TRUE(loaded) << check.output;

  // No console error or warning (a blocked load would be one: the page's CSP).
  simdjson::dom::array console, requests, charts;
  ASSERT_EQ(doc["console"].get(console), simdjson::SUCCESS) << check.output;
  EXPECT_EQ(console.size(), 0u) << check.output;
  // No request but the page itself.
  std::string_view url;
  ASSERT_EQ(doc["url"].get(url), simdjson::SUCCESS);
  ASSERT_EQ(doc["requests"].get(requests), simdjson::SUCCESS);
  for (simdjson::dom::element request : requests) {
    std::string_view requested;
    ASSERT_EQ(request.get(requested), simdjson::SUCCESS);
    EXPECT_EQ(requested, url) << check.output;
  }
  int64_t scripts = -1;
  ASSERT_EQ(doc["page"]["scripts"].get(scripts), simdjson::SUCCESS);
  EXPECT_EQ(scripts, 0) << check.output;

  // Six charts, each an SVG with drawn polylines of at least two points.
  std::vector<std::string> ids;
  ASSERT_EQ(doc["charts"].get(charts), simdjson::SUCCESS);
  for (simdjson::dom::element chart : charts) {
    std::string_view id;
    int64_t svg = 0, width = 0;
    simdjson::dom::array points;
    ASSERT_EQ(chart["id"].get(id), simdjson::SUCCESS);
    ASSERT_EQ(chart["svg"].get(svg), simdjson::SUCCESS);
    ASSERT_EQ(chart["width"].get(width), simdjson::SUCCESS);
    ASSERT_EQ(chart["points"].get(points), simdjson::SUCCESS);
    ids.emplace_back(id);
    EXPECT_EQ(svg, 1) << check.output;
    EXPECT_GT(width, 100) << check.output;
    EXPECT_GT(points.size(), 0u) << id;
    for (simdjson::dom::element n : points) {
      int64_t count = 0;
      ASSERT_EQ(n.get(count), simdjson::SUCCESS);
      EXPECT_GE(count, 2) << id;
    }
  }
  EXPECT_EQ(ids, (std::vector<std::string>{"chunks", "tokens", "in-flight", "latency", "errors",
                                           "queues"}));
  // The screenshot: a PNG of the whole page, kept in the build folder.
  int64_t png_bytes = 0;
  ASSERT_EQ(doc["png_bytes"].get(png_bytes), simdjson::SUCCESS);
  EXPECT_GT(png_bytes, 10000) << check.output;
  ASSERT_TRUE(fs::is_regular_file(png));
  EXPECT_EQ(ReadFile(png).substr(1, 3), "PNG");
}

TEST(ReportE2eTest, TraceFormatFollowsTheExtensionAndAnyOtherIsRefusedBeforeWork) {
  TempDir dir;
  WriteFile(dir / "corpus/a.txt", "The gate opens slowly.\n\nThe seal is new.\n");
  const std::string base = kSluice + " ingest " + (dir / "corpus") + " --embedder hash --out " +
                           (dir / "out") + " --no-progress --store sqlite:";
  for (const std::string bad : {"trace.txt", "trace", "trace.csv.gz"}) {
    auto r = RunCommand(base + (dir / "s.db") + " --trace " + (dir / bad));
    EXPECT_EQ(r.exit_code, 2) << bad << ": " << r.output;
    EXPECT_NE(r.output.find("the extension must be .csv, .json or .html"), std::string::npos)
        << r.output;
    EXPECT_FALSE(fs::exists(dir / "s.db")) << "work started for " << bad;
    EXPECT_FALSE(fs::exists(dir / bad));
  }
  // The same refusal from a config file key.
  WriteFile(dir / "sluice.toml", "trace = \"t.log\"\n");
  auto r = RunCommand(base + (dir / "s.db") + " --config " + (dir / "sluice.toml"));
  EXPECT_EQ(r.exit_code, 2) << r.output;
  EXPECT_FALSE(fs::exists(dir / "s.db"));

  r = RunCommand(base + (dir / "s1.db") + " --trace " + (dir / "t.csv"));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_EQ(ReadFile(dir / "t.csv").rfind("t_s,limit,in_flight,", 0), 0u);
  r = RunCommand(base + (dir / "s2.db") + " --trace " + (dir / "t.JSON"));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_EQ(ReadFile(dir / "t.JSON").rfind("{\"resolution_s\":1,", 0), 0u);
  r = RunCommand(base + (dir / "s3.db") + " --trace " + (dir / "t.html"));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  const std::string html = ReadFile(dir / "t.html");
  EXPECT_EQ(html.rfind("<!DOCTYPE html>", 0), 0u);
  EXPECT_NE(html.find("<polyline class=\"series\""), std::string::npos);

  // An unwritable --html-report is a clear error, not a silent success (its
  // folder would be under a regular file: unwritable even for root).
  WriteFile(dir / "plain-file", "x");
  const std::string unwritable = dir / "plain-file/r.html";
  r = RunCommand(base + (dir / "s4.db") + " --html-report " + unwritable);
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_NE(r.output.find("cannot write " + unwritable), std::string::npos) << r.output;
}

// Every line of `log` is a JSON object with time, level and message, and no
// secret appears anywhere in it.
void ExpectJsonLinesWithoutSecrets(const std::string& log, const std::vector<std::string>& secrets,
                                   size_t min_lines) {
  const std::vector<std::string> lines = Lines(log);
  EXPECT_GE(lines.size(), min_lines) << log;
  simdjson::dom::parser parser;
  for (const std::string& line : lines) {
    simdjson::dom::element doc;
    ASSERT_EQ(parser.parse(line).get(doc), simdjson::SUCCESS) << "not JSON: " << line;
    std::string_view level, time, message;
    EXPECT_EQ(doc["level"].get(level), simdjson::SUCCESS) << line;
    EXPECT_EQ(doc["time"].get(time), simdjson::SUCCESS) << line;
    EXPECT_EQ(doc["message"].get(message), simdjson::SUCCESS) << line;
  }
  for (const std::string& secret : secrets) {
    EXPECT_EQ(log.find(secret), std::string::npos) << secret << " in " << log;
  }
}

TEST(ReportE2eTest, JsonLogsAreOneEventPerLineAndHoldNoSecret) {
  MockApiOptions mock_options;
  mock_options.dimensions = 16;
  mock_options.api_key = "sk-the-right-key";
  mock_options.base_latency = std::chrono::milliseconds(20);
  auto mock = StartMock(mock_options);
  ASSERT_NE(mock, nullptr);
  TempDir dir;
  for (int i = 0; i < 20; ++i) {
    WriteFile(dir / ("corpus/n" + std::to_string(i) + ".txt"), testing::Paragraphs(8, "seal"));
  }
  WriteFile(dir / "corpus/r.jsonl", "{\"id\":\"broken\"\n");  // a warning about a dead letter
  const std::string ingest = kSluice + " ingest " + (dir / "corpus") + " --endpoint " +
                             mock->BaseUrl() + " --model m --api-key-env SLUICE_KEY --out " +
                             (dir / "out") + " --log-format json --log-level debug";

  // A successful run, progress lines included (stderr is not a terminal).
  auto r = RunCommand(
      "{ SLUICE_KEY=sk-the-right-key " + ingest + " --store sqlite:" + (dir / "a.db") +
      " --progress --progress-interval 0.1 --batch-size 4 2> " + (dir / "ok.log") + "; }");
  EXPECT_EQ(r.exit_code, 3) << r.output << ReadFile(dir / "ok.log");
  const std::string ok_log = ReadFile(dir / "ok.log");
  ExpectJsonLinesWithoutSecrets(ok_log, {"sk-the-right-key"}, 2);
  EXPECT_NE(ok_log.find("\"level\":\"warn\""), std::string::npos) << ok_log;
  EXPECT_NE(ok_log.find("\"message\":\"progress: "), std::string::npos) << ok_log;

  // A wrong key: the fatal error is logged, the key is not.
  r = RunCommand("{ SLUICE_KEY=sk-wrong-secret-key " + ingest +
                 " --store sqlite:" + (dir / "b.db") + " 2> " + (dir / "key.log") + "; }");
  EXPECT_EQ(r.exit_code, 1) << r.output;
  const std::string key_log = ReadFile(dir / "key.log");
  ExpectJsonLinesWithoutSecrets(key_log, {"sk-wrong-secret-key", "sk-the-right-key"}, 1);
  EXPECT_NE(key_log.find("\"level\":\"error\""), std::string::npos) << key_log;

  // A PostgreSQL store with a password that cannot be reached: the error
  // names the store, never the password.
  r = RunCommand(
      "{ SLUICE_KEY=sk-the-right-key " + ingest +
      " --store 'postgres://sluice:pw-json-secret@127.0.0.1:1/db?connect_timeout=5' 2> " +
      (dir / "pg.log") + "; }");
  EXPECT_NE(r.exit_code, 0) << r.output;
  const std::string pg_log = ReadFile(dir / "pg.log");
  ExpectJsonLinesWithoutSecrets(pg_log, {"pw-json-secret", "sk-the-right-key"}, 1);
  EXPECT_NE(pg_log.find("\"level\":\"error\""), std::string::npos) << pg_log;
  for (const std::string& text : {r.output}) {
    EXPECT_EQ(text.find("pw-json-secret"), std::string::npos) << text;
  }

  // A bad format value is a usage error.
  r = RunCommand(ingest + " --store sqlite:" + (dir / "c.db") + " --log-format xml");
  EXPECT_EQ(r.exit_code, 2) << r.output;
}

}  // namespace
}  // namespace sluice
