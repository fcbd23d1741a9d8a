// The "html" parser: one file, one document. See html_extract.h for what is
// kept and dropped.
#include <string>

#include "common/json_writer.h"
#include "sources/formats/document_parsers.h"
#include "sources/formats/format_util.h"
#include "sources/formats/html_extract.h"

namespace sluice::formats {
namespace {

class HtmlParser final : public Parser {
 public:
  std::string_view Name() const override { return "html"; }
  std::vector<std::string> Extensions() const override { return {"html", "htm", "xhtml"}; }

  bool Sniff(std::string_view head) const override {
    if (head.size() >= 3 && head.substr(0, 3) == "\xEF\xBB\xBF") head.remove_prefix(3);
    head = TrimAscii(head);
    if (StartsWithNoCase(head, "<!doctype html") || StartsWithNoCase(head, "<html")) return true;
    // XHTML: an XML declaration (and maybe comments) before the root element.
    if (StartsWithNoCase(head, "<?xml")) {
      const size_t root = head.find("<html");
      return root != std::string_view::npos && root < 1024;
    }
    return false;
  }

  Status Parse(const SourceFile& file, const ParseLimits& limits, DocumentSink& sink,
               RecordErrorSink& /*errors*/, ParseStats& stats) const override {
    const uint64_t cap = limits.max_file_bytes != 0 ? limits.max_file_bytes : kDefaultHtmlMaxBytes;
    Result<std::string> data = ReadFileBounded(file.path, cap);
    if (!data.ok()) return data.status();
    std::unique_ptr<HtmlDocument> doc;
    try {
      doc = HtmlDocument::Parse(*data, &stats.invalid_utf8_replaced);
    } catch (const std::bad_alloc&) {
      return Status::InvalidArgument(file.path + ": out of memory parsing HTML");
    }
    std::string().swap(*data);  // gumbo holds its own copy now

    SourceInfo info = BaseSourceInfo(file);
    info.title = doc->title();
    info.author = doc->author();
    info.metadata_json.clear();
    JsonWriter w(info.metadata_json);
    w.BeginObject().Key("format").String("html");
    if (!doc->language().empty()) w.Key("language").String(doc->language());
    w.EndObject();

    Status st = sink.BeginDocument(info);
    if (!st.ok()) return st;
    st = doc->EmitBlocks([&sink](TextBlock&& block) { return sink.AddBlock(block); });
    if (!st.ok()) return st;
    return sink.EndDocument();
  }
};

}  // namespace

std::unique_ptr<Parser> NewHtmlParser() { return std::make_unique<HtmlParser>(); }

}  // namespace sluice::formats
