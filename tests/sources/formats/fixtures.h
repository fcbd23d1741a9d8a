// Fixture builders for the format tests: PDFs written byte by byte (with xref
// offsets computed here), zip archives (EPUB, DOCX) assembled with libzip in
// memory, and files in a per-test temp directory. Nothing is downloaded.
//
// Thread safety: pure functions, except TempDir which owns one directory.
#pragma once

#include <string>
#include <vector>

namespace sluice::formats::testing {

// One page of a PDF: lines of text drawn top to bottom in Helvetica 12 pt,
// 16 pt apart. An empty string leaves a blank line (a paragraph gap); a line
// "@@24 Title" is drawn at 24 pt.
struct PdfPage {
  std::vector<std::string> lines;
};

struct PdfSpec {
  std::vector<PdfPage> pages;
  std::string title;
  std::string author;
  // Adds a standard-security /Encrypt dictionary whose user password is not
  // empty, so a reader without the password sees a locked document.
  bool encrypted = false;
};

// A valid PDF 1.4 file (ASCII text in the content streams; '(' ')' '\' are escaped).
std::string MakePdf(const PdfSpec& spec);

struct ZipMember {
  std::string name;
  std::string data;
  bool store = false;  // stored instead of deflated (the EPUB mimetype member)
};

// A zip archive holding `members` in order, built with libzip in memory.
std::string MakeZip(const std::vector<ZipMember>& members);

// A directory under /tmp removed with its files at destruction.
class TempDir {
 public:
  TempDir();
  ~TempDir();
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  const std::string& path() const { return path_; }
  // Writes `data` to path()/name and returns the full path.
  std::string Write(const std::string& name, const std::string& data) const;

 private:
  std::string path_;
};

}  // namespace sluice::formats::testing
