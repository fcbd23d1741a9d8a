// Turning the words poppler finds on one PDF page into paragraphs. Separate
// from the parser so tests and fuzzers drive it without a PDF.
//
// Words come in poppler's reading order with their boxes. They are grouped
// into lines (vertical overlap, moving right), lines into paragraphs (a break
// at a vertical gap of more than ~0.7 line heights, a jump back up the page,
// or a change of font size), and lines are joined with a space, or with
// nothing when a line ends in "letter-" and the next starts in lower case
// ("infor-" + "mation"). Text is cleaned: ligatures (U+FB00..U+FB06) spelled
// out, soft hyphens and control characters removed, invalid UTF-8 repaired.
//
// Thread safety: pure functions.
#pragma once

#include <string>
#include <string_view>
#include <vector>

namespace sluice::formats {

struct PdfWord {
  std::string text;                                 // UTF-8 as poppler gave it
  double left = 0, top = 0, right = 0, bottom = 0;  // page points, y grows downwards
  bool space_after = false;
  double font_size = 0;  // or the box height, which is proportional to it within a font
};

struct PdfParagraph {
  std::string text;      // one line, non-empty, valid UTF-8
  double font_size = 0;  // the largest font size of its words
};

std::vector<PdfParagraph> PdfPageParagraphs(const std::vector<PdfWord>& words);

// The font size that carries most characters on a page (0 when none): the
// body text size that headings are compared with.
double PdfBodyFontSize(const std::vector<PdfWord>& words);

// Heading level (1..3) for a paragraph against the page's body size, or 0:
// short (at most 150 bytes), not ending in '.', and at least 1.2x the body
// size (1.6x -> 1, 1.35x -> 2, else 3).
int PdfHeadingLevel(const PdfParagraph& paragraph, double body_font_size);

// Ligatures spelled out, soft hyphens and control characters dropped, tabs
// and other ASCII spacing turned into spaces, invalid UTF-8 repaired.
std::string NormalizePdfText(std::string_view text);

}  // namespace sluice::formats
