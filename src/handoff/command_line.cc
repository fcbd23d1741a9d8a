// SplitCommandLine: argv from one line, the way a user writes it in a config
// file, without a shell (so nothing in it is expanded or interpreted).
#include <string>

#include "sluice/handoff.h"

namespace sluice {

Result<std::vector<std::string>> SplitCommandLine(std::string_view line) {
  std::vector<std::string> argv;
  std::string word;
  bool in_word = false;  // a word has started (even an empty quoted one: '')
  enum class Quote { kNone, kSingle, kDouble } quote = Quote::kNone;
  for (size_t i = 0; i < line.size(); ++i) {
    const char c = line[i];
    switch (quote) {
      case Quote::kSingle:
        if (c == '\'') {
          quote = Quote::kNone;
        } else {
          word.push_back(c);
        }
        continue;
      case Quote::kDouble:
        if (c == '"') {
          quote = Quote::kNone;
        } else if (c == '\\' && i + 1 < line.size() &&
                   (line[i + 1] == '"' || line[i + 1] == '\\')) {
          word.push_back(line[++i]);
        } else {
          word.push_back(c);
        }
        continue;
      case Quote::kNone:
        break;
    }
    if (c == ' ' || c == '\t' || c == '\n' || c == '\r') {
      if (in_word) argv.push_back(std::move(word));
      word.clear();
      in_word = false;
    } else if (c == '\'') {
      quote = Quote::kSingle;
      in_word = true;
    } else if (c == '"') {
      quote = Quote::kDouble;
      in_word = true;
    } else if (c == '\\') {
      if (i + 1 >= line.size()) return Status::InvalidArgument("command ends with a backslash");
      word.push_back(line[++i]);
      in_word = true;
    } else {
      word.push_back(c);
      in_word = true;
    }
  }
  if (quote != Quote::kNone) {
    return Status::InvalidArgument(std::string("unterminated ") +
                                   (quote == Quote::kSingle ? "single" : "double") +
                                   " quote in the command");
  }
  if (in_word) argv.push_back(std::move(word));
  if (argv.empty()) return Status::InvalidArgument("the command is empty");
  return argv;
}

}  // namespace sluice
