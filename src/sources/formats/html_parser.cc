// The "html" parser: one file, one document. See html_extract.h for what is
// kept and dropped, and for how large files are parsed in segments.
#include <sys/stat.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <limits>
#include <memory>
#include <string>
#include <vector>

#include <fmt/format.h>

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
    try {
      return ParseImpl(file, limits, sink, stats);
    } catch (const std::bad_alloc&) {
      return Status::InvalidArgument(file.path + ": out of memory parsing HTML");
    }
  }

 private:
  // Reads the file in segments (the whole file when it is small, see
  // html_extract.h) and parses each with gumbo; the first segment's <head>
  // gives the title and author.
  Status ParseImpl(const SourceFile& file, const ParseLimits& limits, DocumentSink& sink,
                   ParseStats& stats) const {
    const uint64_t cap = limits.max_file_bytes != 0 ? limits.max_file_bytes : kDefaultHtmlMaxBytes;
    uint64_t size = 0;
    if (file.contents) {  // the reader has the whole file: nothing to open
      size = file.contents->size();
    } else {
      struct stat st_buf;
      if (::stat(file.path.c_str(), &st_buf) != 0) {
        if (errno == ENOENT) return Status::NotFound(file.path + ": no such file");
        return Status::IOError(fmt::format("{}: {}", file.path, std::strerror(errno)));
      }
      size = static_cast<uint64_t>(st_buf.st_size);
    }
    if (size > cap) {
      return Status::InvalidArgument(
          fmt::format("{}: HTML file of {} bytes exceeds the {} byte limit", file.path, size, cap));
    }
    std::unique_ptr<FILE, int (*)(FILE*)> f(nullptr, &std::fclose);
    if (!file.contents) {
      f.reset(std::fopen(file.path.c_str(), "rb"));
      if (!f) return Status::IOError(fmt::format("{}: {}", file.path, std::strerror(errno)));
    }
    const size_t segment_bytes =
        size <= kHtmlWholeParseBytes ? std::numeric_limits<size_t>::max() : kHtmlSegmentBytes;

    std::string buf;
    uint64_t total = 0;
    bool eof = false;
    if (file.contents) {
      buf.assign(*file.contents);
      total = size;
      eof = true;
    }
    bool begun = false;
    std::vector<char> chunk(64 * 1024);
    Status status;
    while (true) {
      // Read past the segment size so a cut point can be chosen before it.
      while (!eof && buf.size() <= segment_bytes) {
        const size_t n = std::fread(chunk.data(), 1, chunk.size(), f.get());
        total += n;
        if (total > cap) {
          return Status::InvalidArgument(
              fmt::format("{}: HTML file exceeds the {} byte limit", file.path, cap));
        }
        buf.append(chunk.data(), n);
        if (n < chunk.size()) {
          if (std::ferror(f.get())) return Status::IOError(file.path + ": read error");
          eof = true;
        }
      }
      if (buf.empty() && begun) break;
      const size_t cut =
          buf.size() <= segment_bytes ? buf.size() : FindHtmlSegmentCut(buf, segment_bytes);
      Result<std::unique_ptr<HtmlDocument>> parsed =
          HtmlDocument::Parse(std::string_view(buf).substr(0, cut), &stats.invalid_utf8_replaced);
      if (!parsed.ok()) return parsed.status().WithContext(file.path);
      std::unique_ptr<HtmlDocument> doc = std::move(*parsed);
      buf.erase(0, cut);
      if (!begun) {
        begun = true;
        status = sink.BeginDocument(MakeInfo(file, *doc));
        if (!status.ok()) return status;
      }
      status = doc->EmitBlocks([&sink](TextBlock&& block) { return sink.AddBlock(block); });
      if (!status.ok()) return status;
      if (eof && buf.empty()) break;
    }
    return sink.EndDocument();
  }

  static SourceInfo MakeInfo(const SourceFile& file, const HtmlDocument& doc) {
    SourceInfo info = BaseSourceInfo(file);
    info.title = doc.title();
    info.author = doc.author();
    info.metadata_json.clear();
    JsonWriter w(info.metadata_json);
    w.BeginObject().Key("format").String("html");
    if (!doc.language().empty()) w.Key("language").String(doc.language());
    w.EndObject();
    return info;
  }
};

}  // namespace

std::unique_ptr<Parser> NewHtmlParser() { return std::make_unique<HtmlParser>(); }

}  // namespace sluice::formats
