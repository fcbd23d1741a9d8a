#include "sources/formats/fixtures.h"

#include <zip.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <stdexcept>

namespace sluice::formats::testing {
namespace {

std::string PdfEscape(const std::string& s) {
  std::string out;
  for (char c : s) {
    if (c == '(' || c == ')' || c == '\\') out.push_back('\\');
    out.push_back(c);
  }
  return out;
}

}  // namespace

std::string MakePdf(const PdfSpec& spec) {
  // Objects: 1 catalog, 2 pages, 3 font, 4 info, [5 encrypt], then per page
  // a page object and its content stream.
  std::vector<std::string> objects;
  const int first_page_obj = spec.encrypted ? 6 : 5;
  std::string kids;
  for (size_t i = 0; i < spec.pages.size(); ++i) {
    kids += std::to_string(first_page_obj + 2 * static_cast<int>(i)) + " 0 R ";
  }
  objects.push_back("<< /Type /Catalog /Pages 2 0 R >>");
  objects.push_back("<< /Type /Pages /Kids [" + kids + "] /Count " +
                    std::to_string(spec.pages.size()) + " >>");
  objects.push_back(
      "<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica /Encoding /WinAnsiEncoding >>");
  objects.push_back("<< /Title (" + PdfEscape(spec.title) + ") /Author (" + PdfEscape(spec.author) +
                    ") /Producer (sluice tests) >>");
  if (spec.encrypted) {
    // RC4 40-bit, revision 2. O and U are arbitrary: the empty user password
    // does not match U, so the document stays locked.
    objects.push_back(
        "<< /Filter /Standard /V 1 /R 2 /P -44 "
        "/O <0102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f20> "
        "/U <2122232425262728292a2b2c2d2e2f303132333435363738393a3b3c3d3e3f40> >>");
  }
  for (size_t i = 0; i < spec.pages.size(); ++i) {
    const int content_obj = first_page_obj + 2 * static_cast<int>(i) + 1;
    objects.push_back(
        "<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Resources << /Font << /F1 3 0 R "
        ">> >> /Contents " +
        std::to_string(content_obj) + " 0 R >>");
    std::string content = "BT /F1 12 Tf 16 TL 72 720 Td\n";
    bool first = true;
    for (const std::string& line : spec.pages[i].lines) {
      if (!first) content += "T*\n";
      first = false;
      if (line.rfind("@@", 0) == 0) {  // "@@24 text": this line at 24 pt
        const size_t space = line.find(' ');
        content += "/F1 " + line.substr(2, space - 2) + " Tf (" +
                   PdfEscape(line.substr(space + 1)) + ") Tj /F1 12 Tf\n";
      } else if (!line.empty()) {
        content += "(" + PdfEscape(line) + ") Tj\n";
      }
    }
    content += "ET\n";
    objects.push_back("<< /Length " + std::to_string(content.size()) + " >>\nstream\n" + content +
                      "endstream");
  }
  std::string pdf = "%PDF-1.4\n%\xE2\xE3\xCF\xD3\n";
  std::vector<size_t> offsets;
  for (size_t i = 0; i < objects.size(); ++i) {
    offsets.push_back(pdf.size());
    pdf += std::to_string(i + 1) + " 0 obj\n" + objects[i] + "\nendobj\n";
  }
  const size_t xref = pdf.size();
  pdf += "xref\n0 " + std::to_string(objects.size() + 1) + "\n0000000000 65535 f \n";
  for (size_t off : offsets) {
    char line[32];
    std::snprintf(line, sizeof(line), "%010zu 00000 n \n", off);
    pdf += line;
  }
  pdf += "trailer\n<< /Size " + std::to_string(objects.size() + 1) + " /Root 1 0 R /Info 4 0 R";
  if (spec.encrypted) {
    pdf +=
        " /Encrypt 5 0 R /ID [<00112233445566778899aabbccddeeff> "
        "<00112233445566778899aabbccddeeff>]";
  }
  pdf += " >>\nstartxref\n" + std::to_string(xref) + "\n%%EOF\n";
  return pdf;
}

std::string MakeZip(const std::vector<ZipMember>& members) {
  zip_error_t error;
  zip_error_init(&error);
  zip_source_t* src = zip_source_buffer_create(nullptr, 0, 0, &error);
  if (src == nullptr) throw std::runtime_error("zip_source_buffer_create failed");
  zip_source_keep(src);
  zip_t* za = zip_open_from_source(src, ZIP_TRUNCATE, &error);
  if (za == nullptr) throw std::runtime_error("zip_open_from_source failed");
  for (const ZipMember& m : members) {
    zip_source_t* data = zip_source_buffer(za, m.data.data(), m.data.size(), 0);
    const zip_int64_t index = zip_file_add(za, m.name.c_str(), data, ZIP_FL_ENC_UTF_8);
    if (index < 0) throw std::runtime_error("zip_file_add failed");
    zip_set_file_compression(za, static_cast<zip_uint64_t>(index),
                             m.store ? ZIP_CM_STORE : ZIP_CM_DEFLATE, 9);
  }
  if (zip_close(za) != 0) throw std::runtime_error("zip_close failed");
  std::string out;
  zip_stat_t st;
  if (zip_source_stat(src, &st) != 0 || zip_source_open(src) != 0) {
    throw std::runtime_error("reading the zip back failed");
  }
  out.resize(st.size);
  zip_source_read(src, out.data(), out.size());
  zip_source_close(src);
  zip_source_free(src);
  return out;
}

TempDir::TempDir() {
  char tmpl[] = "/tmp/sluice-formats-XXXXXX";
  if (::mkdtemp(tmpl) == nullptr) throw std::runtime_error("mkdtemp failed");
  path_ = tmpl;
}

TempDir::~TempDir() {
  std::error_code ec;
  std::filesystem::remove_all(path_, ec);
}

std::string TempDir::Write(const std::string& name, const std::string& data) const {
  const std::string full = path_ + "/" + name;
  std::ofstream out(full, std::ios::binary);
  out.write(data.data(), static_cast<std::streamsize>(data.size()));
  return full;
}

}  // namespace sluice::formats::testing
