#include "sources/formats/pdf_text.h"

#include <algorithm>
#include <cmath>
#include <map>

#include "common/utf8.h"
#include "sources/formats/format_util.h"

namespace sluice::formats {
namespace {

struct Line {
  std::string text;
  double left, top, right, bottom;
  double font_size;
};

bool IsWordByte(unsigned char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c >= 0x80;
}

bool StartsLower(std::string_view s) { return !s.empty() && s[0] >= 'a' && s[0] <= 'z'; }

double Height(double top, double bottom) { return std::max(bottom - top, 0.1); }

}  // namespace

std::string NormalizePdfText(std::string_view text) {
  std::string out;
  out.reserve(text.size());
  for (size_t i = 0; i < text.size();) {
    const size_t len = Utf8SequenceLength(text, i);
    if (len == 0) {
      out.append("\xEF\xBF\xBD");
      ++i;
      continue;
    }
    const std::string_view seq = text.substr(i, len);
    i += len;
    if (len == 1) {
      const unsigned char c = static_cast<unsigned char>(seq[0]);
      if (c == '\t' || c == '\n' || c == '\f' || c == '\v' || c == '\r') {
        out.push_back(' ');
      } else if (c >= 0x20 && c != 0x7F) {
        out.push_back(static_cast<char>(c));
      }
      continue;
    }
    if (seq == "\xC2\xAD") continue;  // U+00AD soft hyphen
    if (len == 3 && seq.substr(0, 2) == "\xEF\xAC") {
      static const char* const kLigatures[] = {"ff", "fi", "fl", "ffi", "ffl", "st", "st"};
      const unsigned char last = static_cast<unsigned char>(seq[2]);
      if (last >= 0x80 && last <= 0x86) {
        out.append(kLigatures[last - 0x80]);
        continue;
      }
    }
    out.append(seq);
  }
  return out;
}

std::vector<PdfParagraph> PdfPageParagraphs(const std::vector<PdfWord>& words) {
  // Words -> lines.
  std::vector<Line> lines;
  double prev_left = 0;
  for (const PdfWord& word : words) {
    const std::string text = NormalizePdfText(word.text);
    if (TrimAscii(text).empty()) continue;
    bool same_line = false;
    if (!lines.empty()) {
      Line& line = lines.back();
      const double overlap = std::min(line.bottom, word.bottom) - std::max(line.top, word.top);
      const double min_height =
          std::min(Height(line.top, line.bottom), Height(word.top, word.bottom));
      same_line = overlap > 0.5 * min_height && word.left >= prev_left;
    }
    if (!same_line) {
      lines.push_back({std::string(), word.left, word.top, word.right, word.bottom, 0});
    }
    Line& line = lines.back();
    line.text.append(TrimAscii(text));
    if (word.space_after) line.text.push_back(' ');
    line.left = std::min(line.left, word.left);
    line.right = std::max(line.right, word.right);
    line.top = std::min(line.top, word.top);
    line.bottom = std::max(line.bottom, word.bottom);
    line.font_size = std::max(line.font_size, word.font_size);
    prev_left = word.left;
  }

  // Lines -> paragraphs.
  std::vector<PdfParagraph> paragraphs;
  std::string current;
  double current_size = 0;
  auto finish = [&] {
    std::string collapsed;
    AppendCollapsed(current, collapsed);
    const std::string_view trimmed = TrimAscii(collapsed);
    if (!trimmed.empty()) paragraphs.push_back({std::string(trimmed), current_size});
    current.clear();
    current_size = 0;
  };
  for (size_t i = 0; i < lines.size(); ++i) {
    const Line& line = lines[i];
    const std::string_view text = TrimAscii(line.text);
    if (i > 0 && !current.empty()) {
      const Line& prev = lines[i - 1];
      const double height = std::min(Height(prev.top, prev.bottom), Height(line.top, line.bottom));
      const double gap = line.top - prev.bottom;
      const double size_ratio =
          prev.font_size > 0 && line.font_size > 0
              ? std::max(prev.font_size, line.font_size) / std::min(prev.font_size, line.font_size)
              : 1.0;
      const bool new_paragraph = gap > 0.7 * height || line.top < prev.top || size_ratio > 1.15;
      if (new_paragraph) {
        finish();
      } else {
        const size_t n = current.size();
        if (n >= 2 && current[n - 1] == '-' &&
            IsWordByte(static_cast<unsigned char>(current[n - 2])) && StartsLower(text)) {
          current.pop_back();  // "infor-" + "mation"
        } else {
          current.push_back(' ');
        }
      }
    }
    current.append(text);
    current_size = std::max(current_size, line.font_size);
  }
  finish();
  return paragraphs;
}

double PdfBodyFontSize(const std::vector<PdfWord>& words) {
  std::map<long, size_t> chars_by_size;  // size in tenths of a point
  for (const PdfWord& word : words) {
    if (word.font_size <= 0 || !std::isfinite(word.font_size)) continue;
    chars_by_size[std::lround(std::min(word.font_size, 10000.0) * 10)] += word.text.size();
  }
  long best = 0;
  size_t best_chars = 0;
  for (const auto& [size, chars] : chars_by_size) {
    if (chars > best_chars) {
      best = size;
      best_chars = chars;
    }
  }
  return static_cast<double>(best) / 10.0;
}

int PdfHeadingLevel(const PdfParagraph& paragraph, double body_font_size) {
  if (body_font_size <= 0 || paragraph.font_size <= 0) return 0;
  if (paragraph.text.size() > 150 || paragraph.text.back() == '.') return 0;
  const double ratio = paragraph.font_size / body_font_size;
  if (ratio >= 1.6) return 1;
  if (ratio >= 1.35) return 2;
  if (ratio >= 1.2) return 3;
  return 0;
}

}  // namespace sluice::formats
