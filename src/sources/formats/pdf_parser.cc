// The "pdf" parser (poppler-cpp): one document per file, one kParagraph block
// per paragraph with its 1-based page number; pages are loaded and released
// one at a time so memory stays bounded by the largest page.
#include <poppler-document.h>
#include <poppler-global.h>
#include <poppler-page.h>

#include <memory>
#include <mutex>
#include <string>

#include <fmt/format.h>

#include "common/json_writer.h"
#include "common/utf8.h"
#include "sources/formats/document_parsers.h"
#include "sources/formats/format_util.h"
#include "sources/formats/pdf_text.h"

namespace sluice::formats {
namespace {

// poppler reports recoverable syntax problems on stderr; they are noise in a
// run log (the outcome is in the returned Status).
void SilencePoppler() {
  static std::once_flag once;
  std::call_once(
      once, [] { poppler::set_debug_error_function([](const std::string&, void*) {}, nullptr); });
}

std::string ToUtf8(const poppler::ustring& s) {
  const poppler::byte_array bytes = s.to_utf8();
  std::string out;
  AppendRepairedUtf8(std::string_view(bytes.data(), bytes.size()), out);
  return out;
}

std::string CleanMetadata(const poppler::ustring& s) {
  std::string raw = ToUtf8(s);
  std::string out;
  AppendCollapsed(raw, out);
  return std::string(TrimAscii(out));
}

class PdfParser final : public Parser {
 public:
  std::string_view Name() const override { return "pdf"; }
  std::vector<std::string> Extensions() const override { return {"pdf"}; }

  bool Sniff(std::string_view head) const override {
    // Readers accept the header anywhere in the first 1024 bytes.
    const size_t pos = head.substr(0, 1024).find("%PDF-");
    return pos != std::string_view::npos;
  }

  Status Parse(const SourceFile& file, const ParseLimits& limits, DocumentSink& sink,
               RecordErrorSink& /*errors*/, ParseStats& stats) const override {
    SilencePoppler();
    try {
      return ParseImpl(file, limits, sink, stats);
    } catch (const std::exception& e) {
      return Status::Corrupt(fmt::format("{}: PDF error: {}", file.path, e.what()));
    } catch (...) {
      return Status::Corrupt(file.path + ": PDF error");
    }
  }

 private:
  Status ParseImpl(const SourceFile& file, const ParseLimits& limits, DocumentSink& sink,
                   ParseStats& /*stats*/) const {
    if (limits.max_file_bytes != 0 && file.size_bytes > limits.max_file_bytes) {
      return Status::InvalidArgument(fmt::format("{}: PDF of {} bytes exceeds the {} byte limit",
                                                 file.path, file.size_bytes,
                                                 limits.max_file_bytes));
    }
    std::unique_ptr<poppler::document> doc(poppler::document::load_from_file(file.path));
    if (!doc) return Status::Corrupt(file.path + ": not a readable PDF");
    if (doc->is_locked()) return Status::InvalidArgument("encrypted PDF");

    const int pages = doc->pages();
    SourceInfo info = BaseSourceInfo(file);
    info.title = CleanMetadata(doc->get_title());
    info.author = CleanMetadata(doc->get_author());
    info.metadata_json.clear();
    JsonWriter w(info.metadata_json);
    w.BeginObject().Key("format").String("pdf").Key("pages").Int(pages);
    if (doc->is_encrypted()) w.Key("encrypted").Bool(true);
    w.EndObject();

    Status st = sink.BeginDocument(info);
    if (!st.ok()) return st;
    for (int i = 0; i < pages; ++i) {
      std::unique_ptr<poppler::page> page(doc->create_page(i));
      if (!page) continue;  // a broken page object; the rest of the book still reads
      const std::string text =
          ToUtf8(page->text(poppler::rectf(), poppler::page::non_raw_non_physical_layout));
      page.reset();
      for (std::string& paragraph : PdfPageParagraphs(text)) {
        TextBlock block;
        block.kind = BlockKind::kParagraph;
        block.page = i + 1;
        block.text = std::move(paragraph);
        st = sink.AddBlock(block);
        if (!st.ok()) return st;
      }
    }
    return sink.EndDocument();
  }
};

// True for a letter (ASCII, or any non-ASCII code point: accented letters).
bool IsWordByte(unsigned char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c >= 0x80;
}

bool StartsLower(std::string_view s) { return !s.empty() && s[0] >= 'a' && s[0] <= 'z'; }

// Spells out ligatures, drops soft hyphens and control characters.
std::string NormalizeLine(std::string_view line) {
  std::string out;
  out.reserve(line.size());
  for (size_t i = 0; i < line.size();) {
    const size_t len = Utf8SequenceLength(line, i);
    if (len == 0) {  // ToUtf8 already repaired, but be safe
      out.append("\xEF\xBF\xBD");
      ++i;
      continue;
    }
    const std::string_view seq = line.substr(i, len);
    i += len;
    if (len == 1) {
      const unsigned char c = static_cast<unsigned char>(seq[0]);
      if (c == '\t' || c == '\f' || c == '\v' || c == '\r') {
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

}  // namespace

std::vector<std::string> PdfPageParagraphs(std::string_view page_text) {
  std::vector<std::string> paragraphs;
  std::string current;
  auto finish = [&] {
    std::string collapsed;
    AppendCollapsed(current, collapsed);
    std::string_view trimmed = TrimAscii(collapsed);
    if (!trimmed.empty()) paragraphs.emplace_back(trimmed);
    current.clear();
  };
  size_t pos = 0;
  while (pos <= page_text.size()) {
    size_t nl = page_text.find('\n', pos);
    if (nl == std::string_view::npos) nl = page_text.size();
    std::string line = NormalizeLine(page_text.substr(pos, nl - pos));
    pos = nl + 1;
    std::string_view trimmed = TrimAscii(line);
    if (trimmed.empty()) {
      finish();
      continue;
    }
    if (!current.empty()) {
      // A previous line that ends in "letter-" followed by a lower-case
      // start is a word split across lines: join without the hyphen.
      const size_t n = current.size();
      if (n >= 2 && current[n - 1] == '-' &&
          IsWordByte(static_cast<unsigned char>(current[n - 2])) && StartsLower(trimmed)) {
        current.pop_back();
        current.append(trimmed);
        continue;
      }
      // Otherwise each line from poppler's reading-order text is one block.
      finish();
    }
    current.assign(trimmed);
  }
  finish();
  return paragraphs;
}

std::unique_ptr<Parser> NewPdfParser() { return std::make_unique<PdfParser>(); }

}  // namespace sluice::formats
