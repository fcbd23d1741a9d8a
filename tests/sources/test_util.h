// Helpers for the sources tests: a temp folder and sinks that record calls.
#pragma once

#include <gtest/gtest.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "testing/document_sink.h"

#include "sluice/parser.h"

namespace sluice::testing {

class TempDir {
 public:
  TempDir() {
    char tmpl[] = "/tmp/sluice_sources_XXXXXX";
    path_ = mkdtemp(tmpl);
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::permissions(path_, std::filesystem::perms::owner_all, ec);
    std::filesystem::remove_all(path_, ec);
  }
  const std::string& path() const { return path_; }
  // Writes `content` to path()/rel, creating folders.
  std::string Write(const std::string& rel, const std::string& content) const {
    const std::string full = path_ + "/" + rel;
    std::filesystem::create_directories(std::filesystem::path(full).parent_path());
    std::ofstream out(full, std::ios::binary);
    out << content;
    return full;
  }
  std::string Mkdir(const std::string& rel) const {
    const std::string full = path_ + "/" + rel;
    std::filesystem::create_directories(full);
    return full;
  }

 private:
  std::string path_;
};

inline SourceFile FileFor(const std::string& path, const std::string& rel) {
  SourceFile f;
  f.path = path;
  f.relative_path = rel;
  f.root_name = "root";
  f.domain = "dom";
  f.category = "cat";
  struct stat st;
  if (stat(path.c_str(), &st) == 0) f.size_bytes = static_cast<uint64_t>(st.st_size);
  return f;
}

}  // namespace sluice::testing
