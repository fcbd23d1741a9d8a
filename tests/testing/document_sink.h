// A DocumentSink and a RecordErrorSink that keep every call, for assertions in
// parser tests (text family and document formats alike).
// Thread safety: single-threaded test helpers.
#pragma once

#include <string>
#include <utility>
#include <vector>

#include "sluice/parser.h"

namespace sluice::testing {

struct RecordedDocument {
  SourceInfo info;
  std::vector<TextBlock> blocks;
  bool ended = false;
};

class RecordingSink final : public DocumentSink {
 public:
  Status BeginDocument(const SourceInfo& info) override {
    docs.push_back({info, {}, false});
    return Status::OK();
  }
  Status AddBlock(const TextBlock& block) override {
    if (docs.empty()) return Status::Internal("block before BeginDocument");
    docs.back().blocks.push_back(block);
    return Status::OK();
  }
  Status EndDocument() override {
    if (docs.empty()) return Status::Internal("EndDocument before BeginDocument");
    docs.back().ended = true;
    return Status::OK();
  }

  // All block texts of the first document, each followed by '\n'.
  std::string AllText() const {
    std::string out;
    if (docs.empty()) return out;
    for (const TextBlock& b : docs.front().blocks) {
      out += b.text;
      out += '\n';
    }
    return out;
  }

  std::vector<RecordedDocument> docs;
};

class RecordingErrors final : public RecordErrorSink {
 public:
  void RecordFailed(const std::string& source_id, const Status& why) override {
    calls.emplace_back(source_id, why);
  }
  std::vector<std::pair<std::string, Status>> calls;
};

}  // namespace sluice::testing
