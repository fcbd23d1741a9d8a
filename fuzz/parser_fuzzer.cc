// libFuzzer target for one parser, chosen at compile time:
// SLUICE_FUZZ_PARSER is "html", "pdf", "epub", "docx" (src/sources/formats)
// or "text", "markdown", "jsonl" (src/sources, through the registry).
// SLUICE_FUZZ_EXT is the scratch file's extension.
#include <zip.h>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "fuzz_util.h"
#include "sluice/parser.h"
#include "sources/formats/document_parsers.h"

#ifndef SLUICE_FUZZ_PARSER
#error "define SLUICE_FUZZ_PARSER"
#endif

namespace {

const sluice::Parser& TheParser() {
#ifdef SLUICE_FUZZ_TEXT_PARSERS
  static sluice::ParserRegistry* registry = [] {
    auto* r = new sluice::ParserRegistry();
    sluice::RegisterTextParsers(*r);
    return r;
  }();
  const sluice::Parser* parser = registry->FindByName(SLUICE_FUZZ_PARSER);
#else
  static const sluice::Parser* parser = [] {
    const std::string_view name = SLUICE_FUZZ_PARSER;
    if (name == "html") return sluice::formats::NewHtmlParser().release();
    if (name == "pdf") return sluice::formats::NewPdfParser().release();
    if (name == "epub") return sluice::formats::NewEpubParser().release();
    if (name == "docx") return sluice::formats::NewDocxParser().release();
    return static_cast<sluice::Parser*>(nullptr);
  }();
#endif
  if (parser == nullptr) std::abort();
  return *parser;
}

// Builds a zip in memory; returns "" on failure.
std::string MakeZip(const std::vector<std::pair<std::string, std::string>>& members) {
  zip_error_t error;
  zip_error_init(&error);
  zip_source_t* src = zip_source_buffer_create(nullptr, 0, 0, &error);
  if (src == nullptr) return "";
  zip_source_keep(src);
  zip_t* za = zip_open_from_source(src, ZIP_TRUNCATE, &error);
  std::string out;
  if (za != nullptr) {
    for (const auto& [name, data] : members) {
      zip_source_t* member = zip_source_buffer(za, data.data(), data.size(), 0);
      if (member == nullptr || zip_file_add(za, name.c_str(), member, 0) < 0) {
        zip_source_free(member);
      }
    }
    zip_stat_t st;
    if (zip_close(za) == 0 && zip_source_stat(src, &st) == 0 && zip_source_open(src) == 0) {
      out.resize(st.size);
      if (zip_source_read(src, out.data(), out.size()) < 0) out.clear();
      zip_source_close(src);
    } else if (za != nullptr) {
      zip_discard(za);
    }
  }
  zip_source_free(src);
  return out;
}

// EPUB and DOCX inputs whose first byte is odd are not archives but the XML
// inside one: the fuzzer then reaches the XML and HTML code instead of
// spending its time on zip headers. DOCX: the rest is word/document.xml.
// EPUB: the rest is "<opf>\0<chapter xhtml>".
std::string WrapInArchive(std::string_view name, std::string_view rest) {
  if (name == "docx") {
    return MakeZip({{"[Content_Types].xml", "<Types/>"}, {"word/document.xml", std::string(rest)}});
  }
  const size_t nul = rest.find('\0');
  const std::string opf(rest.substr(0, nul));
  const std::string chapter(nul == std::string_view::npos ? "" : rest.substr(nul + 1));
  return MakeZip(
      {{"mimetype", "application/epub+zip"},
       {"META-INF/container.xml",
        "<container><rootfiles><rootfile full-path=\"o/c.opf\"/></rootfiles></container>"},
       {"o/c.opf", opf},
       {"o/a.xhtml", chapter},
       {"o/n.xhtml", chapter}});
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const std::string path = sluice::fuzz::ScratchPath(SLUICE_FUZZ_EXT);
  const sluice::Parser& parser = TheParser();
  (void)parser.Sniff(
      std::string_view(reinterpret_cast<const char*>(data), size < 4096 ? size : 4096));
  const std::string_view name = SLUICE_FUZZ_PARSER;
  if ((name == "docx" || name == "epub") && size > 0 && (data[0] & 1) != 0) {
    const std::string zip =
        WrapInArchive(name, std::string_view(reinterpret_cast<const char*>(data + 1), size - 1));
    sluice::fuzz::WriteScratch(path, reinterpret_cast<const uint8_t*>(zip.data()), zip.size());
  } else {
    sluice::fuzz::WriteScratch(path, data, size);
  }
  sluice::SourceFile file;
  file.path = path;
  file.relative_path = std::string("fuzz.") + SLUICE_FUZZ_EXT;
  file.size_bytes = size;
  sluice::ParseLimits limits;
  // Small limits so a fuzzed zip bomb is stopped quickly and RSS stays low.
  limits.max_decompressed_bytes = 16u << 20;
  sluice::fuzz::CheckingSink sink;
  sluice::fuzz::IgnoringErrors errors;
  sluice::ParseStats stats;
  (void)parser.Parse(file, limits, sink, errors, stats);
  return 0;
}
