// The "epub" parser: one document per book. META-INF/container.xml names the
// OPF package; its metadata gives title/author/language, its spine the reading
// order. Each XHTML part goes through the HTML extraction; when a part does
// not open with a heading, its table-of-contents label (EPUB 3 nav or EPUB 2
// NCX) is emitted as a level-1 heading so every chunk has a chapter title.
// All members are read through ZipReader, so decompression is bounded. A book
// whose spine parts are listed in META-INF/encryption.xml (DRM) fails with
// InvalidArgument("encrypted EPUB (DRM)"); obfuscated fonts alone are fine.
#include <map>
#include <set>
#include <string>
#include <vector>

#include <fmt/format.h>

#include "common/json_writer.h"
#include "sources/formats/document_parsers.h"
#include "sources/formats/format_util.h"
#include "sources/formats/html_extract.h"
#include "sources/formats/xml_util.h"
#include "sources/formats/zip_reader.h"

namespace sluice::formats {
namespace {

struct ManifestItem {
  std::string path;  // resolved inside the archive
  std::string media_type;
  std::string properties;
};

bool IsHtmlMediaType(std::string_view type) {
  return type == "application/xhtml+xml" || type == "text/html" || type == "application/xml";
}

// Collects href -> label from an EPUB 3 nav document or an EPUB 2 NCX. Errors
// are ignored: a broken table of contents only costs the fallback titles.
void ReadTocLabels(ZipReader& zip, const std::string& toc_path, bool is_ncx,
                   std::map<std::string, std::string>& labels) {
  Result<std::string> data = zip.Read(toc_path);
  if (!data.ok()) return;
  pugi::xml_document doc;
  if (!ParseXml(*data, pugi::parse_default, "", toc_path, doc).ok()) return;
  const std::string dir(ArchiveDirName(toc_path));
  std::vector<pugi::xml_node> stack{doc.document_element()};
  while (!stack.empty()) {
    pugi::xml_node node = stack.back();
    stack.pop_back();
    if (!node) continue;
    const std::string_view name = LocalName(node.name());
    if (!is_ncx && name == "a") {
      const std::string path = ResolveArchivePath(dir, node.attribute("href").value());
      std::string label = CollapsedXmlText(node);
      if (!path.empty() && !label.empty()) labels.emplace(path, std::move(label));
    } else if (is_ncx && name == "navPoint") {
      pugi::xml_node content = ChildByLocalName(node, "content");
      pugi::xml_node text = ChildByLocalName(ChildByLocalName(node, "navLabel"), "text");
      const std::string path = ResolveArchivePath(dir, content.attribute("src").value());
      std::string label = CollapsedXmlText(text);
      if (!path.empty() && !label.empty()) labels.emplace(path, std::move(label));
    }
    for (pugi::xml_node child = node.last_child(); child; child = child.previous_sibling()) {
      if (child.type() == pugi::node_element) stack.push_back(child);
    }
  }
}

class EpubParser final : public Parser {
 public:
  std::string_view Name() const override { return "epub"; }
  std::vector<std::string> Extensions() const override { return {"epub"}; }

  bool Sniff(std::string_view head) const override {
    // OCF: the first local header is the stored member "mimetype".
    if (head.size() < 58 || head.substr(0, 4) != std::string_view("PK\x03\x04", 4)) return false;
    if (head.substr(30, 8) != "mimetype") return false;
    return head.substr(38, 100).find("application/epub+zip") != std::string_view::npos;
  }

  Status Parse(const SourceFile& file, const ParseLimits& limits, DocumentSink& sink,
               RecordErrorSink& errors, ParseStats& stats) const override {
    try {
      return ParseImpl(file, limits, sink, errors, stats);
    } catch (const std::bad_alloc&) {
      return Status::InvalidArgument(file.path + ": out of memory parsing EPUB");
    } catch (const std::exception& e) {
      return Status::Corrupt(fmt::format("{}: EPUB error: {}", file.path, e.what()));
    }
  }

 private:
  Status ParseImpl(const SourceFile& file, const ParseLimits& limits, DocumentSink& sink,
                   RecordErrorSink& errors, ParseStats& stats) const {
    Result<std::unique_ptr<ZipReader>> opened = ZipReader::Open(file, limits);
    if (!opened.ok()) return opened.status();
    ZipReader& zip = **opened;

    Result<std::string> container = zip.Read("META-INF/container.xml");
    if (!container.ok()) {
      if (container.status().code() == StatusCode::kNotFound) {
        return Status::Corrupt(file.path + ": not an EPUB: no META-INF/container.xml");
      }
      return container.status();
    }
    pugi::xml_document container_doc;
    Status st = ParseXml(*container, pugi::parse_default, file.path, "META-INF/container.xml",
                         container_doc);
    if (!st.ok()) return st;
    const std::string opf_path = ResolveArchivePath(
        "", DescendantByLocalName(container_doc, "rootfile").attribute("full-path").value());
    if (opf_path.empty()) return Status::Corrupt(file.path + ": container.xml names no package");

    Result<std::string> opf = zip.Read(opf_path);
    if (!opf.ok()) {
      if (opf.status().code() == StatusCode::kNotFound) {
        return Status::Corrupt(fmt::format("{}: package {} is missing", file.path, opf_path));
      }
      return opf.status();
    }
    pugi::xml_document opf_doc;
    st = ParseXml(*opf, pugi::parse_default, file.path, opf_path, opf_doc);
    if (!st.ok()) return st;
    std::string().swap(*opf);
    const pugi::xml_node package = opf_doc.document_element();
    const pugi::xml_node metadata = ChildByLocalName(package, "metadata");
    const std::string opf_dir(ArchiveDirName(opf_path));

    std::map<std::string, ManifestItem> manifest;
    for (pugi::xml_node item : ChildByLocalName(package, "manifest").children()) {
      if (LocalName(item.name()) != "item") continue;
      ManifestItem entry{ResolveArchivePath(opf_dir, item.attribute("href").value()),
                         item.attribute("media-type").value(),
                         item.attribute("properties").value()};
      manifest.emplace(item.attribute("id").value(), std::move(entry));
    }
    const pugi::xml_node spine = ChildByLocalName(package, "spine");

    // DRM: META-INF/encryption.xml lists encrypted members. Fonts are often
    // obfuscated (harmless); an encrypted spine part cannot be read.
    if (zip.Has("META-INF/encryption.xml")) {
      Result<std::string> encryption = zip.Read("META-INF/encryption.xml");
      if (!encryption.ok()) return encryption.status();
      pugi::xml_document enc_doc;
      st =
          ParseXml(*encryption, pugi::parse_default, file.path, "META-INF/encryption.xml", enc_doc);
      if (!st.ok()) return st;
      std::set<std::string> encrypted;
      std::vector<pugi::xml_node> stack{enc_doc.document_element()};
      while (!stack.empty()) {
        pugi::xml_node node = stack.back();
        stack.pop_back();
        if (LocalName(node.name()) == "CipherReference") {
          encrypted.insert(ResolveArchivePath("", node.attribute("URI").value()));
        }
        for (pugi::xml_node c = node.first_child(); c; c = c.next_sibling()) {
          if (c.type() == pugi::node_element) stack.push_back(c);
        }
      }
      for (pugi::xml_node itemref : spine.children()) {
        auto it = manifest.find(itemref.attribute("idref").value());
        if (it != manifest.end() && encrypted.count(it->second.path) != 0) {
          return Status::InvalidArgument("encrypted EPUB (DRM)");
        }
      }
    }

    std::map<std::string, std::string> toc_labels;
    for (const auto& [id, item] : manifest) {
      if (item.properties.find("nav") != std::string::npos) {
        ReadTocLabels(zip, item.path, false, toc_labels);
      }
    }
    if (toc_labels.empty()) {
      auto ncx = manifest.find(spine.attribute("toc").value());
      if (ncx != manifest.end()) ReadTocLabels(zip, ncx->second.path, true, toc_labels);
    }

    SourceInfo info = BaseSourceInfo(file);
    info.title = CollapsedXmlText(ChildByLocalName(metadata, "title"));
    info.author = CollapsedXmlText(ChildByLocalName(metadata, "creator"));
    info.metadata_json.clear();
    JsonWriter w(info.metadata_json);
    w.BeginObject().Key("format").String("epub");
    const std::string language = CollapsedXmlText(ChildByLocalName(metadata, "language"));
    if (!language.empty()) w.Key("language").String(language);
    const std::string publisher = CollapsedXmlText(ChildByLocalName(metadata, "publisher"));
    if (!publisher.empty()) w.Key("publisher").String(publisher);
    w.EndObject();

    st = sink.BeginDocument(info);
    if (!st.ok()) return st;
    int part_number = 0;
    for (pugi::xml_node itemref : spine.children()) {
      if (LocalName(itemref.name()) != "itemref") continue;
      auto it = manifest.find(itemref.attribute("idref").value());
      if (it == manifest.end() || !IsHtmlMediaType(it->second.media_type)) continue;
      ++part_number;
      Result<std::string> part = zip.Read(it->second.path);
      if (!part.ok()) {
        if (part.status().code() != StatusCode::kNotFound) return part.status();
        // A spine entry without its file: report it, keep the rest of the book.
        ++stats.records_skipped;
        errors.RecordFailed(fmt::format("{}#{}", info.source_id, it->second.path), part.status());
        continue;
      }
      Result<std::unique_ptr<HtmlDocument>> parsed =
          HtmlDocument::Parse(*part, &stats.invalid_utf8_replaced);
      if (!parsed.ok()) {
        return parsed.status().WithContext(fmt::format("{}: {}", file.path, it->second.path));
      }
      std::unique_ptr<HtmlDocument> html = std::move(*parsed);
      std::string().swap(*part);
      auto label = toc_labels.find(it->second.path);
      bool first = true;
      st = html->EmitBlocks([&](TextBlock&& block) -> Status {
        if (first) {
          first = false;
          if (block.kind != BlockKind::kHeading && label != toc_labels.end()) {
            TextBlock title;
            title.kind = BlockKind::kHeading;
            title.heading_level = 1;
            title.text = label->second;
            Status s = sink.AddBlock(title);
            if (!s.ok()) return s;
          }
        }
        return sink.AddBlock(block);
      });
      if (!st.ok()) return st;
    }
    return sink.EndDocument();
  }
};

}  // namespace

std::unique_ptr<Parser> NewEpubParser() { return std::make_unique<EpubParser>(); }

}  // namespace sluice::formats
