// The "text" parser: plain text streamed in blocks, decoded to UTF-8 and cut
// into paragraphs (see text_input.h). Also the registration of the
// text-family parsers.
#include <string>

#include "sources/text_input.h"
#include "sources/text_parsers.h"

namespace sluice {
namespace sources_internal {
namespace {

class TextParser final : public Parser {
 public:
  std::string_view Name() const override { return "text"; }
  std::vector<std::string> Extensions() const override { return {"txt", "text", "log"}; }
  bool Sniff(std::string_view) const override { return false; }

  Status Parse(const SourceFile& file, const ParseLimits& limits, DocumentSink& sink,
               RecordErrorSink&, ParseStats& stats) const override {
    Status s = CheckFileSize(file, limits);
    if (!s.ok()) return s;
    const SourceInfo info = FileSourceInfo(file);
    bool begun = false;
    ParagraphAssembler paragraphs([&sink](std::string&& text) {
      TextBlock block;
      block.kind = BlockKind::kParagraph;
      block.text = std::move(text);
      return sink.AddBlock(block);
    });
    s = DecodeTextFile(file, stats, [&](std::string_view text) -> Status {
      // Between read blocks: a stop ends even a parse that emits nothing
      // (megabytes of blank lines).
      if (sink.StopRequested())
        return Status::Cancelled("stopping: " + file.path + " not read to its end");
      if (!begun) {
        begun = true;
        Status b = sink.BeginDocument(info);
        if (!b.ok()) return b;
      }
      return paragraphs.Feed(text);
    });
    if (!s.ok()) return s;
    if (!begun) {  // empty file: a document without blocks
      s = sink.BeginDocument(info);
      if (!s.ok()) return s;
    }
    s = paragraphs.Finish();
    if (!s.ok()) return s;
    return sink.EndDocument();
  }
};

}  // namespace

Status CheckFileSize(const SourceFile& file, const ParseLimits& limits) {
  if (limits.max_file_bytes > 0 && file.size_bytes > limits.max_file_bytes) {
    return Status::InvalidArgument("file too large: " + std::to_string(file.size_bytes) +
                                   " bytes > limit " + std::to_string(limits.max_file_bytes));
  }
  return Status::OK();
}

std::unique_ptr<Parser> MakeTextParser() { return std::make_unique<TextParser>(); }

}  // namespace sources_internal

void RegisterTextParsers(ParserRegistry& registry) {
  registry.Add(sources_internal::MakeTextParser());
  registry.Add(sources_internal::MakeMarkdownParser());
  registry.Add(sources_internal::MakeJsonlParser());
}

}  // namespace sluice
