// The "pdf" parser (poppler-cpp): one document per file; per page the words
// in reading order (page::text_list) become paragraphs (pdf_text.h), each a
// kParagraph, or a kHeading when its font is clearly larger than the page's
// body text, with its 1-based page number. Pages are loaded and released one
// at a time so memory stays bounded by the largest page.
#include <poppler-document.h>
#include <poppler-global.h>
#include <poppler-page.h>
#include <climits>

#include <memory>
#include <mutex>
#include <string>
#include <vector>

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
    // The reader's bytes when it has them (they outlive `doc`: both end
    // with this parse), so the fingerprint is the hash of what is parsed.
    std::unique_ptr<poppler::document> doc(
        file.contents && file.contents->size() <= static_cast<size_t>(INT_MAX)
            ? poppler::document::load_from_raw_data(file.contents->data(),
                                                    static_cast<int>(file.contents->size()))
            : poppler::document::load_from_file(file.path));
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
    std::vector<PdfWord> words;
    for (int i = 0; i < pages; ++i) {
      std::unique_ptr<poppler::page> page(doc->create_page(i));
      if (!page) continue;  // a broken page object; the rest of the book still reads
      words.clear();
      // The word box height stands in for the font size (it is proportional
      // to it within a font); asking poppler for font details would make it
      // look fonts up through fontconfig, which is slower and leaks.
      for (const poppler::text_box& box : page->text_list()) {
        const poppler::rectf r = box.bbox();
        words.push_back({ToUtf8(box.text()), r.left(), r.top(), r.right(), r.bottom(),
                         box.has_space_after(), r.height()});
      }
      page.reset();
      const double body_size = PdfBodyFontSize(words);
      for (PdfParagraph& paragraph : PdfPageParagraphs(words)) {
        TextBlock block;
        block.heading_level = PdfHeadingLevel(paragraph, body_size);
        block.kind = block.heading_level > 0 ? BlockKind::kHeading : BlockKind::kParagraph;
        block.page = i + 1;
        block.text = std::move(paragraph.text);
        st = sink.AddBlock(block);
        if (!st.ok()) return st;
      }
    }
    return sink.EndDocument();
  }
};

}  // namespace

std::unique_ptr<Parser> NewPdfParser() { return std::make_unique<PdfParser>(); }

}  // namespace sluice::formats
