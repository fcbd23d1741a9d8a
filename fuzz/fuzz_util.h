// Shared pieces of the libFuzzer targets: a scratch file in /dev/shm (the
// parsers read paths, not buffers) and a DocumentSink that checks the parser
// contract on every call and aborts (a finding) when it is broken.
//
// Thread safety: libFuzzer runs one input at a time per process.
#pragma once

#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <string>

#include "common/utf8.h"
#include "sluice/parser.h"

namespace sluice::fuzz {

// The path of this process's scratch file with extension `ext`.
inline std::string ScratchPath(const char* ext) {
  const char* dir = std::getenv("SLUICE_FUZZ_TMPDIR");
  if (dir == nullptr || *dir == '\0') dir = access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp";
  return std::string(dir) + "/sluice-fuzz-" + std::to_string(getpid()) + "." + ext;
}

inline void WriteScratch(const std::string& path, const uint8_t* data, size_t size) {
  FILE* f = std::fopen(path.c_str(), "wb");
  if (f == nullptr) std::abort();
  if (size > 0 && std::fwrite(data, 1, size, f) != size) std::abort();
  std::fclose(f);
}

[[noreturn]] inline void ContractBroken(const char* what) {
  std::fprintf(stderr, "parser contract broken: %s\n", what);
  std::abort();
}

class CheckingSink final : public DocumentSink {
 public:
  Status BeginDocument(const SourceInfo& info) override {
    if (open_) ContractBroken("BeginDocument twice without EndDocument");
    if (!IsValidUtf8(info.title) || !IsValidUtf8(info.author)) ContractBroken("title/author UTF-8");
    if (info.metadata_json.empty() || info.metadata_json.front() != '{') {
      ContractBroken("metadata_json is not an object");
    }
    open_ = true;
    return Status::OK();
  }
  Status AddBlock(const TextBlock& block) override {
    if (!open_) ContractBroken("AddBlock outside a document");
    if (!IsValidUtf8(block.text)) ContractBroken("block text is not valid UTF-8");
    if (block.text.empty()) ContractBroken("empty block");
    if (block.kind == BlockKind::kHeading && (block.heading_level < 1 || block.heading_level > 9)) {
      ContractBroken("heading level out of range");
    }
    if (block.kind != BlockKind::kHeading && block.heading_level != 0) {
      ContractBroken("heading level on a non-heading");
    }
    if (block.page < 0) ContractBroken("negative page");
    return Status::OK();
  }
  Status EndDocument() override {
    if (!open_) ContractBroken("EndDocument without BeginDocument");
    open_ = false;
    return Status::OK();
  }

 private:
  bool open_ = false;
};

class IgnoringErrors final : public RecordErrorSink {
 public:
  void RecordFailed(const std::string&, const Status&) override {}
};

}  // namespace sluice::fuzz
