// The "docx" parser: word/document.xml paragraphs in body order; headings from
// paragraph styles (styles.xml names "heading N"/"Title", or the style ids
// Heading1..Heading9/Title, or an outline level); list paragraphs as
// kListItem; each table row as one kListItem with cells joined by " | ";
// docProps/core.xml gives title and author. Members are read through
// ZipReader, so decompression is bounded.
#include <cctype>
#include <map>
#include <string>
#include <vector>

#include <fmt/format.h>

#include "common/json_writer.h"
#include "common/utf8.h"
#include "sources/formats/document_parsers.h"
#include "sources/formats/format_util.h"
#include "sources/formats/xml_util.h"
#include "sources/formats/zip_reader.h"

namespace sluice::formats {
namespace {

constexpr const char* kDocumentXml = "word/document.xml";

std::string Lower(std::string_view s) {
  std::string out(s);
  for (char& c : out) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return out;
}

// "heading 3" / "Heading3" -> 3, "title" -> 1, else 0.
int LevelFromStyleName(std::string_view name) {
  const std::string lower = Lower(name);
  if (lower == "title") return 1;
  std::string_view rest(lower);
  if (rest.substr(0, 7) != "heading") return 0;
  rest.remove_prefix(7);
  if (!rest.empty() && rest.front() == ' ') rest.remove_prefix(1);
  if (rest.size() == 1 && rest[0] >= '1' && rest[0] <= '9') return rest[0] - '0';
  return 0;
}

struct StyleInfo {
  int heading_level = 0;
  bool list = false;
};

std::map<std::string, StyleInfo> ReadStyles(ZipReader& zip, const std::string& archive,
                                            Status& status) {
  std::map<std::string, StyleInfo> styles;
  Result<std::string> data = zip.Read("word/styles.xml");
  if (!data.ok()) {
    if (data.status().code() != StatusCode::kNotFound) status = data.status();
    return styles;
  }
  pugi::xml_document doc;
  // A broken styles part only costs heading detection by name.
  if (!ParseXml(*data, pugi::parse_default, archive, "word/styles.xml", doc).ok()) return styles;
  for (pugi::xml_node style : doc.document_element().children()) {
    if (LocalName(style.name()) != "style") continue;
    const std::string id = AttributeByLocalName(style, "styleId").value();
    const std::string name = AttributeByLocalName(ChildByLocalName(style, "name"), "val").value();
    StyleInfo info;
    info.heading_level = LevelFromStyleName(name);
    pugi::xml_node outline = ChildByLocalName(ChildByLocalName(style, "pPr"), "outlineLvl");
    if (info.heading_level == 0 && outline) {
      const int level = AttributeByLocalName(outline, "val").as_int(9);
      if (level >= 0 && level < 9) info.heading_level = level + 1;
    }
    info.list = Lower(name) == "list paragraph" ||
                static_cast<bool>(ChildByLocalName(ChildByLocalName(style, "pPr"), "numPr"));
    if (!id.empty()) styles[id] = info;
  }
  return styles;
}

// The text of a paragraph (or of everything under a table cell): w:t text,
// w:tab as a tab, w:br/w:cr as a newline; deleted text, field codes and the
// fallback copy of alternate content are skipped.
std::string RunText(pugi::xml_node root) {
  std::string out;
  std::vector<pugi::xml_node> stack;
  for (pugi::xml_node c = root.last_child(); c; c = c.previous_sibling()) stack.push_back(c);
  while (!stack.empty()) {
    pugi::xml_node node = stack.back();
    stack.pop_back();
    if (node.type() != pugi::node_element) continue;
    const std::string_view name = LocalName(node.name());
    if (name == "t") {
      out += node.child_value();
      continue;
    }
    if (name == "tab") {
      out.push_back('\t');
      continue;
    }
    if (name == "br" || name == "cr") {
      out.push_back('\n');
      continue;
    }
    if (name == "noBreakHyphen") {
      out.push_back('-');
      continue;
    }
    if (name == "p" && !out.empty() && out.back() != '\n') {
      out.push_back('\n');  // nested paragraphs (table cells, text boxes) stay apart
    }
    if (name == "del" || name == "delText" || name == "instrText" || name == "pPr" ||
        name == "rPr" || name == "Fallback" || name == "footnoteReference" ||
        name == "endnoteReference" || name == "commentReference") {
      continue;
    }
    for (pugi::xml_node c = node.last_child(); c; c = c.previous_sibling()) stack.push_back(c);
  }
  return out;
}

std::string CleanText(std::string_view raw, bool single_line) {
  std::string repaired;
  AppendRepairedUtf8(raw, repaired);
  if (single_line) {
    std::string collapsed;
    AppendCollapsed(repaired, collapsed);
    return std::string(TrimAscii(collapsed));
  }
  return std::string(TrimAscii(repaired));
}

class DocxWalker {
 public:
  DocxWalker(const std::map<std::string, StyleInfo>& styles, DocumentSink& sink)
      : styles_(styles), sink_(sink) {}

  // Walks the block-level content of w:body in order.
  Status Walk(pugi::xml_node body) {
    std::vector<pugi::xml_node> stack;
    for (pugi::xml_node c = body.last_child(); c; c = c.previous_sibling()) stack.push_back(c);
    while (!stack.empty()) {
      pugi::xml_node node = stack.back();
      stack.pop_back();
      if (node.type() != pugi::node_element) continue;
      const std::string_view name = LocalName(node.name());
      Status st;
      if (name == "p") {
        st = Paragraph(node);
      } else if (name == "tbl") {
        st = Table(node);
      } else if (name == "sdt" || name == "sdtContent" || name == "customXml" || name == "ins" ||
                 name == "smartTag") {
        for (pugi::xml_node c = node.last_child(); c; c = c.previous_sibling()) {
          stack.push_back(c);
        }
      }
      if (!st.ok()) return st;
    }
    return Status::OK();
  }

 private:
  Status Paragraph(pugi::xml_node p) {
    pugi::xml_node ppr = ChildByLocalName(p, "pPr");
    const std::string style = AttributeByLocalName(ChildByLocalName(ppr, "pStyle"), "val").value();
    StyleInfo info;
    auto it = styles_.find(style);
    if (it != styles_.end()) {
      info = it->second;
    } else {
      info.heading_level = LevelFromStyleName(style);
    }
    if (pugi::xml_node outline = ChildByLocalName(ppr, "outlineLvl")) {
      const int level = AttributeByLocalName(outline, "val").as_int(9);
      if (level >= 0 && level < 9) info.heading_level = level + 1;
    }
    if (ChildByLocalName(ppr, "numPr")) info.list = true;

    TextBlock block;
    if (info.heading_level > 0) {
      block.kind = BlockKind::kHeading;
      block.heading_level = info.heading_level;
    } else if (info.list) {
      block.kind = BlockKind::kListItem;
    }
    block.text = CleanText(RunText(p), block.kind == BlockKind::kHeading);
    if (block.text.empty()) return Status::OK();
    return sink_.AddBlock(block);
  }

  Status Table(pugi::xml_node table) {
    for (pugi::xml_node row : table.children()) {
      if (LocalName(row.name()) != "tr") continue;
      TextBlock block;
      block.kind = BlockKind::kListItem;
      bool any = false;
      bool first = true;
      for (pugi::xml_node cell : row.children()) {
        if (LocalName(cell.name()) != "tc") continue;
        const std::string text = CleanText(RunText(cell), true);
        if (!first) block.text += " | ";
        first = false;
        block.text += text;
        any = any || !text.empty();
      }
      if (!any) continue;
      Status st = sink_.AddBlock(block);
      if (!st.ok()) return st;
    }
    return Status::OK();
  }

  const std::map<std::string, StyleInfo>& styles_;
  DocumentSink& sink_;
};

class DocxParser final : public Parser {
 public:
  std::string_view Name() const override { return "docx"; }
  std::vector<std::string> Extensions() const override { return {"docx"}; }

  bool Sniff(std::string_view head) const override {
    if (head.size() < 30 || head.substr(0, 4) != std::string_view("PK\x03\x04", 4)) return false;
    return head.find("word/") != std::string_view::npos;
  }

  Status Parse(const SourceFile& file, const ParseLimits& limits, DocumentSink& sink,
               RecordErrorSink& /*errors*/, ParseStats& /*stats*/) const override {
    try {
      return ParseImpl(file, limits, sink);
    } catch (const std::bad_alloc&) {
      return Status::InvalidArgument(file.path + ": out of memory parsing DOCX");
    } catch (const std::exception& e) {
      return Status::Corrupt(fmt::format("{}: DOCX error: {}", file.path, e.what()));
    }
  }

 private:
  Status ParseImpl(const SourceFile& file, const ParseLimits& limits, DocumentSink& sink) const {
    Result<std::unique_ptr<ZipReader>> opened = ZipReader::Open(file, limits);
    if (!opened.ok()) return opened.status();
    ZipReader& zip = **opened;
    if (!zip.Has(kDocumentXml)) {
      return Status::Corrupt(file.path + ": not a DOCX: no word/document.xml");
    }

    SourceInfo info = BaseSourceInfo(file);
    Result<std::string> core = zip.Read("docProps/core.xml");
    if (core.ok()) {
      pugi::xml_document core_doc;
      if (ParseXml(*core, pugi::parse_default, file.path, "docProps/core.xml", core_doc).ok()) {
        info.title = CollapsedXmlText(ChildByLocalName(core_doc.document_element(), "title"));
        info.author = CollapsedXmlText(ChildByLocalName(core_doc.document_element(), "creator"));
      }
    } else if (core.status().code() != StatusCode::kNotFound) {
      return core.status();
    }
    info.metadata_json = R"({"format":"docx"})";

    Status st;
    const std::map<std::string, StyleInfo> styles = ReadStyles(zip, file.path, st);
    if (!st.ok()) return st;

    Result<std::string> xml = zip.Read(kDocumentXml);
    if (!xml.ok()) return xml.status();
    pugi::xml_document doc;
    // parse_ws_pcdata keeps a w:t that holds only a space between two runs.
    st = ParseXml(*xml, pugi::parse_default | pugi::parse_ws_pcdata, file.path, kDocumentXml, doc);
    if (!st.ok()) return st;
    std::string().swap(*xml);
    const pugi::xml_node body = ChildByLocalName(doc.document_element(), "body");
    if (!body) return Status::Corrupt(file.path + ": word/document.xml has no w:body");

    st = sink.BeginDocument(info);
    if (!st.ok()) return st;
    DocxWalker walker(styles, sink);
    st = walker.Walk(body);
    if (!st.ok()) return st;
    return sink.EndDocument();
  }
};

}  // namespace

std::unique_ptr<Parser> NewDocxParser() { return std::make_unique<DocxParser>(); }

}  // namespace sluice::formats
