// The "markdown" parser: a line-by-line subset of CommonMark good enough to
// keep a document's structure for chunking.
//  - Front matter: a first line "---", then simple `key: value` lines, closed
//    by "---" or "...". title/author/domain/category override SourceInfo
//    (and so the route); other keys go into metadata_json as strings. Lines
//    that are not `key: value` (YAML lists, nesting) are ignored. A front
//    matter that is not closed within 1000 lines is read as ordinary text.
//  - ATX ("## Rates") and setext (text underlined by === or ---) headings.
//  - Fenced code (``` or ~~~) -> one kCode block with the fence lines dropped.
//  - Pipe tables (rows with '|', optionally a |---| delimiter row, which is
//    dropped) -> one kTable block, rows joined by '\n'.
//  - List items ("- ", "* ", "+ ", "1. ", "1) ") -> kListItem, continuation
//    lines joined.
//  - Everything else: paragraphs (blank-line separated); '>' quote markers
//    and thematic breaks are dropped.
//  - Inline markup outside code: links and images become their text
//    ("[docs](http://x)" -> "docs"), "**", "~~" and '`' are dropped, a
//    backslash escape keeps the escaped character. Single '*'/'_' emphasis is
//    kept (too easily confused with snake_case and arithmetic).
// Any block longer than 1 MiB is emitted in pieces of the same kind.
#include <cctype>
#include <string>
#include <vector>

#include "common/json_writer.h"
#include "common/utf8.h"
#include "sources/text_input.h"
#include "sources/text_parsers.h"

namespace sluice::sources_internal {
namespace {

constexpr size_t kMaxFrontMatterLines = 1000;

size_t LeadingSpaces(std::string_view s) {
  size_t n = 0;
  while (n < s.size() && s[n] == ' ') ++n;
  return n;
}

bool AllOf(std::string_view s, char c) {
  if (s.empty()) return false;
  for (char x : s) {
    if (x != c) return false;
  }
  return true;
}

// "---", "***", "___" with optional spaces between.
bool IsThematicBreak(std::string_view t) {
  if (t.empty() || (t[0] != '-' && t[0] != '*' && t[0] != '_')) return false;
  int count = 0;
  for (char c : t) {
    if (c == t[0]) {
      ++count;
    } else if (c != ' ' && c != '\t') {
      return false;
    }
  }
  return count >= 3;
}

// "|---|:--:|", "--- | ---".
bool IsTableDelimiter(std::string_view t) {
  if (t.find('-') == std::string_view::npos) return false;
  bool has_pipe = false;
  for (char c : t) {
    if (c == '|') {
      has_pipe = true;
    } else if (c != '-' && c != ':' && c != ' ' && c != '\t') {
      return false;
    }
  }
  return has_pipe;
}

// Length of a list marker plus its following space, or 0.
size_t ListMarker(std::string_view t) {
  if (t.size() >= 2 && (t[0] == '-' || t[0] == '*' || t[0] == '+') &&
      (t[1] == ' ' || t[1] == '\t')) {
    return 2;
  }
  size_t i = 0;
  while (i < t.size() && i < 9 && t[i] >= '0' && t[i] <= '9') ++i;
  if (i > 0 && i + 1 < t.size() && (t[i] == '.' || t[i] == ')') &&
      (t[i + 1] == ' ' || t[i + 1] == '\t')) {
    return i + 2;
  }
  return 0;
}

std::string_view Unquote(std::string_view v) {
  if (v.size() >= 2 &&
      ((v.front() == '"' && v.back() == '"') || (v.front() == '\'' && v.back() == '\''))) {
    return v.substr(1, v.size() - 2);
  }
  return v;
}

// Drops inline markup (see the header comment). ASCII-only edits, so valid
// UTF-8 stays valid.
std::string StripInline(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  size_t i = 0;
  while (i < s.size()) {
    const char c = s[i];
    if (c == '\\' && i + 1 < s.size() && std::ispunct(static_cast<unsigned char>(s[i + 1]))) {
      out.push_back(s[i + 1]);
      i += 2;
      continue;
    }
    if (c == '`') {
      ++i;
      continue;
    }
    if ((c == '*' || c == '~') && i + 1 < s.size() && s[i + 1] == c) {
      i += 2;
      continue;
    }
    const bool image = c == '!' && i + 1 < s.size() && s[i + 1] == '[';
    if (c == '[' || image) {
      const size_t open = image ? i + 1 : i;
      const size_t close = s.find(']', open + 1);
      if (close != std::string_view::npos && close + 1 < s.size() && s[close + 1] == '(') {
        const size_t paren = s.find(')', close + 2);
        if (paren != std::string_view::npos) {
          out.append(StripInline(s.substr(open + 1, close - open - 1)));
          i = paren + 1;
          continue;
        }
      }
    }
    out.push_back(c);
    ++i;
  }
  return out;
}

class MarkdownState {
 public:
  MarkdownState(SourceInfo info, DocumentSink& sink) : info_(std::move(info)), sink_(sink) {}

  Status Line(std::string_view line) {
    switch (phase_) {
      case Phase::kStart:
        if (Trim(line) == "---") {
          phase_ = Phase::kFrontMatter;
          return Status::OK();
        }
        phase_ = Phase::kBody;
        return Body(line);
      case Phase::kFrontMatter: {
        const std::string_view t = Trim(line);
        if (t == "---" || t == "...") {
          ApplyFrontMatter();
          phase_ = Phase::kBody;
          return Status::OK();
        }
        front_matter_.emplace_back(line);
        if (front_matter_.size() > kMaxFrontMatterLines) return AbandonFrontMatter();
        return Status::OK();
      }
      case Phase::kBody:
        return Body(line);
    }
    return Status::OK();
  }

  Status Finish() {
    if (phase_ == Phase::kFrontMatter) {
      Status s = AbandonFrontMatter();
      if (!s.ok()) return s;
    }
    if (in_code_) {
      Status s = Emit(BlockKind::kCode, code_, 0);
      if (!s.ok()) return s;
      in_code_ = false;
    }
    Status s = Flush();
    if (!s.ok()) return s;
    s = Begin();
    if (!s.ok()) return s;
    return sink_.EndDocument();
  }

 private:
  enum class Phase { kStart, kFrontMatter, kBody };
  enum class Pending { kNone, kParagraph, kListItem, kTable };

  Status AbandonFrontMatter() {
    phase_ = Phase::kBody;
    std::vector<std::string> lines = std::move(front_matter_);
    front_matter_.clear();
    Status s = Body("---");
    for (size_t i = 0; s.ok() && i < lines.size(); ++i) s = Body(lines[i]);
    return s;
  }

  void ApplyFrontMatter() {
    std::string meta;
    JsonWriter w(meta);
    w.BeginObject();
    for (const std::string& raw : front_matter_) {
      const std::string_view line = raw;
      if (line.empty() || line[0] == ' ' || line[0] == '\t' || line[0] == '#') continue;
      const size_t colon = line.find(':');
      if (colon == std::string_view::npos || colon == 0) continue;
      const std::string_view key = Trim(line.substr(0, colon));
      if (key.find_first_of(" \t\"'") != std::string_view::npos) continue;
      const std::string_view value = Unquote(Trim(line.substr(colon + 1)));
      if (value.empty()) continue;
      std::string repaired;
      AppendRepairedUtf8(value, repaired);
      if (key == "title") {
        info_.title = repaired;
      } else if (key == "author") {
        info_.author = repaired;
      } else if (key == "domain") {
        info_.domain = repaired;
      } else if (key == "category") {
        info_.category = repaired;
      } else {
        w.Key(key).String(repaired);
      }
    }
    w.EndObject();
    info_.metadata_json = meta;
    front_matter_.clear();
  }

  Status Begin() {
    if (begun_) return Status::OK();
    begun_ = true;
    return sink_.BeginDocument(info_);
  }

  Status Emit(BlockKind kind, std::string_view text, int level) {
    std::string t;
    if (kind == BlockKind::kCode) {
      std::string_view c = text;
      while (!c.empty() && c.back() == '\n') c.remove_suffix(1);
      if (Trim(c).empty()) return Status::OK();
      t = std::string(c);
    } else {
      t = std::string(Trim(StripInline(text)));
      if (t.empty()) return Status::OK();
    }
    Status s = Begin();
    if (!s.ok()) return s;
    TextBlock block;
    block.kind = kind;
    block.text = std::move(t);
    block.heading_level = level;
    return sink_.AddBlock(block);
  }

  Status Flush() {
    Status s;
    switch (pending_) {
      case Pending::kNone:
        break;
      case Pending::kParagraph:
        s = Emit(BlockKind::kParagraph, text_, 0);
        break;
      case Pending::kListItem:
        s = Emit(BlockKind::kListItem, text_, 0);
        break;
      case Pending::kTable:
        s = Emit(BlockKind::kTable, text_, 0);
        break;
    }
    pending_ = Pending::kNone;
    text_.clear();
    pending_lines_ = 0;
    return s;
  }

  BlockKind PendingKind() const {
    switch (pending_) {
      case Pending::kListItem:
        return BlockKind::kListItem;
      case Pending::kTable:
        return BlockKind::kTable;
      default:
        return BlockKind::kParagraph;
    }
  }

  Status Append(Pending kind, std::string_view content) {
    if (pending_ != kind) {
      Status s = Flush();
      if (!s.ok()) return s;
      pending_ = kind;
    }
    if (!text_.empty()) text_.push_back('\n');
    text_.append(content);
    ++pending_lines_;
    if (text_.size() >= kMaxPieceBytes) {  // bounded: emit what we have as a piece
      Status s = Emit(PendingKind(), text_, 0);
      text_.clear();
      pending_lines_ = 0;
      return s;
    }
    return Status::OK();
  }

  Status Body(std::string_view line) {
    if (in_code_) {
      const std::string_view t = Trim(line);
      if (LeadingSpaces(line) <= 3 && t.size() >= fence_len_ && AllOf(t, fence_char_)) {
        in_code_ = false;
        Status s = Emit(BlockKind::kCode, code_, 0);
        code_.clear();
        return s;
      }
      code_.append(line);
      code_.push_back('\n');
      if (code_.size() >= kMaxPieceBytes) {
        Status s = Emit(BlockKind::kCode, code_, 0);
        code_.clear();
        return s;
      }
      return Status::OK();
    }
    const std::string_view t = Trim(line);
    if (t.empty()) return Flush();
    const size_t indent = LeadingSpaces(line);
    std::string_view lt = line.substr(indent);

    if (indent <= 3 && (lt.starts_with("```") || lt.starts_with("~~~"))) {
      Status s = Flush();
      if (!s.ok()) return s;
      fence_char_ = lt[0];
      fence_len_ = 0;
      while (fence_len_ < lt.size() && lt[fence_len_] == fence_char_) ++fence_len_;
      in_code_ = true;
      code_.clear();
      return Status::OK();
    }
    if (indent <= 3 && lt[0] == '#') {
      size_t level = 0;
      while (level < lt.size() && lt[level] == '#') ++level;
      if (level <= 6 && (level == lt.size() || lt[level] == ' ' || lt[level] == '\t')) {
        std::string_view title = Trim(lt.substr(level));
        // Drop a closing "###" sequence.
        size_t end = title.size();
        while (end > 0 && title[end - 1] == '#') --end;
        if (end == 0 || title[end - 1] == ' ' || title[end - 1] == '\t')
          title = Trim(title.substr(0, end));
        Status s = Flush();
        if (!s.ok()) return s;
        return Emit(BlockKind::kHeading, title, static_cast<int>(level));
      }
    }
    if (pending_ == Pending::kParagraph && indent <= 3 && (AllOf(t, '=') || AllOf(t, '-'))) {
      const int level = t[0] == '=' ? 1 : 2;
      std::string heading = std::move(text_);
      text_.clear();
      pending_ = Pending::kNone;
      pending_lines_ = 0;
      return Emit(BlockKind::kHeading, heading, level);
    }
    if (IsThematicBreak(t)) return Flush();
    if (pending_ == Pending::kParagraph && pending_lines_ == 1 &&
        text_.find('|') != std::string::npos && IsTableDelimiter(t)) {
      pending_ = Pending::kTable;  // the paragraph line was the header row
      return Status::OK();
    }
    if (pending_ == Pending::kTable && t.find('|') != std::string_view::npos) {
      if (IsTableDelimiter(t)) return Status::OK();
      return Append(Pending::kTable, t);
    }
    if (t[0] == '|') return Append(Pending::kTable, t);
    if (const size_t marker = ListMarker(t); marker > 0) {
      Status s = Flush();
      if (!s.ok()) return s;
      return Append(Pending::kListItem, Trim(t.substr(marker)));
    }
    std::string_view content = t;
    if (content[0] == '>') {
      while (!content.empty() && (content[0] == '>' || content[0] == ' ')) content.remove_prefix(1);
      if (content.empty()) return Status::OK();
    }
    if (pending_ == Pending::kListItem) return Append(Pending::kListItem, content);
    return Append(Pending::kParagraph, content);
  }

  SourceInfo info_;
  DocumentSink& sink_;
  Phase phase_ = Phase::kStart;
  std::vector<std::string> front_matter_;
  bool begun_ = false;
  Pending pending_ = Pending::kNone;
  std::string text_;
  size_t pending_lines_ = 0;
  bool in_code_ = false;
  char fence_char_ = '`';
  size_t fence_len_ = 3;
  std::string code_;
};

class MarkdownParser final : public Parser {
 public:
  std::string_view Name() const override { return "markdown"; }
  std::vector<std::string> Extensions() const override { return {"md", "markdown"}; }
  bool Sniff(std::string_view) const override { return false; }

  Status Parse(const SourceFile& file, const ParseLimits& limits, DocumentSink& sink,
               RecordErrorSink&, ParseStats& stats) const override {
    Status s = CheckFileSize(file, limits);
    if (!s.ok()) return s;
    MarkdownState state(FileSourceInfo(file), sink);
    LineSplitter lines(
        kMaxPieceBytes, LineSplitter::Overflow::kSplit,
        [&state](std::string_view line, uint64_t, bool) { return state.Line(line); });
    s = DecodeTextFile(file, stats, [&](std::string_view text) -> Status {
      if (sink.StopRequested()) {
        return Status::Cancelled("stopping: " + file.path + " not read to its end");
      }
      return lines.Feed(text);
    });
    if (!s.ok()) return s;
    s = lines.Finish();
    if (!s.ok()) return s;
    return state.Finish();
  }
};

}  // namespace

std::unique_ptr<Parser> MakeMarkdownParser() { return std::make_unique<MarkdownParser>(); }

}  // namespace sluice::sources_internal
