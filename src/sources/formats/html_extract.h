// HTML to TextBlocks with gumbo, shared by the HTML parser and the EPUB
// parser (each XHTML part of a book goes through here).
//
// What is kept: headings (h1-h6 -> kHeading with level), paragraphs and other
// block text (kParagraph, inline text merged, whitespace collapsed, <br> as a
// newline), list items (kListItem), table rows (one kListItem per row, cells
// joined by " | "), <pre> (kCode, whitespace kept). What is dropped: script,
// style, nav, noscript, template, svg, math, head (except <title> and
// <meta name="author">, which become metadata).
//
// Gumbo builds the whole tree in memory (about 20 bytes of tree per byte of
// HTML), so large files are cut into segments of about kHtmlSegmentBytes at
// the start of a block element (FindHtmlSegmentCut) and each segment is parsed
// on its own; memory is then bounded by the segment, not the file. The tree
// walk is iterative, so deep nesting cannot overflow the stack here.
//
// Thread safety: HtmlDocument is used by one thread; different documents may
// be parsed concurrently.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>

#include "sluice/status.h"
#include "sluice/types.h"

struct GumboInternalOutput;

namespace sluice::formats {

// Default cap on an HTML file (gumbo needs it whole): 64 MiB. A non-zero
// ParseLimits::max_file_bytes replaces it.
inline constexpr uint64_t kDefaultHtmlMaxBytes = 64ull << 20;
// Files up to this size are parsed whole (exact structure everywhere).
inline constexpr uint64_t kHtmlWholeParseBytes = 4ull << 20;
// Larger files are parsed in segments of about this size.
inline constexpr size_t kHtmlSegmentBytes = 1u << 20;

// Deepest element nesting accepted (real documents stay under ~100).
inline constexpr size_t kMaxHtmlNesting = 1000;

// The deepest stack of open elements an HTML5 tree builder reaches on
// `html`, from one linear scan that tokenizes as HTML5 does and models the
// builder's stack where it decides the depth ("<div/>" opens a div, a stray
// end tag pops nothing, "<!-->" is a whole comment, implied end tags,
// reopened formatting elements; html_nesting.cc lists the rules and where the
// estimate errs, always deeper or within a factor of two). Stops early and
// returns a value > `stop_above` once the depth passes it. Linear time.
size_t HtmlNestingDepth(std::string_view html, size_t stop_above);

// Where to cut `html` so that the first part is at most `limit` bytes and the
// cut falls just before a block-level start tag (<p, <h1..<h6, <div, <li,
// <table, <section, ...) that is not inside <script>, <style>, <pre>,
// <textarea>, a comment or a table (a cut there would lose the row structure). Falls back to the
// last '>' and then the last ASCII whitespace before `limit`, then `limit` itself. Returns a value
// in [1, limit]. REQUIRES: 0 < limit <= html.size().
size_t FindHtmlSegmentCut(std::string_view html, size_t limit);

class HtmlDocument {
 public:
  using EmitFn = std::function<Status(TextBlock&&)>;

  // Parses `html` (assumed UTF-8; invalid bytes are replaced by U+FFFD and
  // counted in *invalid_bytes_replaced when not null; a UTF-8 BOM is skipped).
  // Fails with InvalidArgument when elements nest deeper than kMaxHtmlNesting
  // (gumbo's tree building is quadratic in the depth: 700k nested <div> would
  // take half an hour); any other byte sequence parses.
  static Result<std::unique_ptr<HtmlDocument>> Parse(std::string_view html,
                                                     uint64_t* invalid_bytes_replaced = nullptr);
  ~HtmlDocument();
  HtmlDocument(const HtmlDocument&) = delete;
  HtmlDocument& operator=(const HtmlDocument&) = delete;

  // <title> text (collapsed) and <meta name="author" content>; "" when absent.
  const std::string& title() const { return title_; }
  const std::string& author() const { return author_; }
  const std::string& language() const { return language_; }

  // Emits the body's blocks in reading order. `page` is copied into every
  // block. Stops at and returns the first non-OK status from `emit`.
  Status EmitBlocks(const EmitFn& emit, int page = 0) const;

 private:
  HtmlDocument() = default;
  void ReadHeadMetadata();

  std::string source_;  // repaired UTF-8 that gumbo's tree points into
  GumboInternalOutput* output_ = nullptr;
  std::string title_;
  std::string author_;
  std::string language_;
};

}  // namespace sluice::formats
