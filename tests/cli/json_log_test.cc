// --log-format json: one parseable JSON object per event, whatever the message holds.
#include <gtest/gtest.h>

#include <sstream>

#include <simdjson.h>
#include <spdlog/sinks/ostream_sink.h>
#include <spdlog/spdlog.h>

#include "cli/json_log.h"

namespace sluice::cli {
namespace {

std::vector<std::string> Lines(const std::string& text) {
  std::vector<std::string> lines;
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);) lines.push_back(line);
  return lines;
}

TEST(JsonLogTest, OneObjectPerLineWithTimeLevelAndAnEscapedMessage) {
  std::ostringstream out;
  auto sink = std::make_shared<spdlog::sinks::ostream_sink_mt>(out);
  spdlog::logger logger("sluice", sink);
  logger.set_formatter(std::make_unique<JsonLogFormatter>());
  logger.set_level(spdlog::level::debug);
  const std::string hostile = "say \"hi\"\\ \n second line\r\t\x01 caf\xc3\xa9 \xe2\x9c\x93 \xff";
  logger.warn("{}", hostile);
  logger.info("plain");
  logger.error("e");
  logger.debug("d");
  logger.flush();

  const std::vector<std::string> lines = Lines(out.str());
  ASSERT_EQ(lines.size(), 4u) << out.str();
  simdjson::dom::parser parser;
  const char* levels[] = {"warn", "info", "error", "debug"};
  for (size_t i = 0; i < lines.size(); ++i) {
    simdjson::dom::element doc;
    ASSERT_EQ(parser.parse(lines[i]).get(doc), simdjson::SUCCESS) << lines[i];
    std::string_view level, time, name, message;
    ASSERT_EQ(doc["level"].get(level), simdjson::SUCCESS);
    ASSERT_EQ(doc["time"].get(time), simdjson::SUCCESS);
    ASSERT_EQ(doc["logger"].get(name), simdjson::SUCCESS);
    ASSERT_EQ(doc["message"].get(message), simdjson::SUCCESS);
    EXPECT_EQ(level, levels[i]);
    EXPECT_EQ(name, "sluice");
    // 2026-12-06T00:12:03.123Z
    ASSERT_EQ(time.size(), 24u) << time;
    EXPECT_EQ(time[10], 'T');
    EXPECT_EQ(time[19], '.');
    EXPECT_EQ(time.back(), 'Z');
    if (i == 0) {
      // Everything survives the round trip except the invalid byte (U+FFFD).
      EXPECT_EQ(std::string(message),
                "say \"hi\"\\ \n second line\r\t\x01 caf\xc3\xa9 \xe2\x9c\x93 \xef\xbf\xbd");
    }
  }
  EXPECT_EQ(lines[1], lines[1].substr(0, lines[1].find("\"level\"")) +
                          "\"level\":\"info\",\"logger\":\"sluice\",\"message\":\"plain\"}");
}

TEST(JsonLogTest, LevelNamesMatchLogLevelFlag) {
  EXPECT_STREQ(LogLevelName(spdlog::level::warn), "warn");
  EXPECT_STREQ(LogLevelName(spdlog::level::err), "error");
  EXPECT_STREQ(LogLevelName(spdlog::level::critical), "critical");
}

}  // namespace
}  // namespace sluice::cli
