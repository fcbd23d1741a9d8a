// The "jsonl" parser: one document per line (see jsonl_records.h), from a
// file or from stdin ("-"). Lines are bounded (64 MiB); a longer line is
// dead-lettered and skipped without being held in memory.
#include <simdjson.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstring>
#include <string>

#include "common/hashing.h"
#include "common/json_writer.h"
#include "common/utf8.h"
#include "sources/jsonl_records.h"
#include "sources/text_input.h"
#include "sources/text_parsers.h"

namespace sluice::sources_internal {

static_assert(kJsonlLinePadding >= simdjson::SIMDJSON_PADDING);

namespace {

// After a record this large, the JSON parser's buffers (which grew to its
// size) are given back instead of being kept for the rest of the input.
constexpr size_t kKeepParserBuffersUpTo = 4 << 20;

}  // namespace

struct JsonlRecordReader::Json {
  simdjson::dom::parser parser;
};

JsonlRecordReader::JsonlRecordReader(const SourceFile& file, DocumentSink& sink,
                                     RecordErrorSink& errors, ParseStats& stats)
    : file_(file), sink_(sink), errors_(errors), stats_(stats), json_(std::make_unique<Json>()) {
  // Stdin has no file to name; its records keep their own ids.
  if (file_.path != "-") {
    id_prefix_ = (file_.relative_path.empty() ? file_.path : file_.relative_path) + "#";
  }
}

JsonlRecordReader::~JsonlRecordReader() = default;

std::string JsonlRecordReader::LineRef(uint64_t line_number) const {
  const std::string& name = file_.relative_path.empty() ? file_.path : file_.relative_path;
  return (name == "-" ? std::string("<stdin>") : name) + ":" + std::to_string(line_number);
}

void JsonlRecordReader::Skip(const std::string& ref, uint64_t line_number, const std::string& why) {
  ++stats_.records_skipped;
  errors_.RecordFailed(ref, Status::Corrupt("line " + std::to_string(line_number) + ": " + why));
}

Status JsonlRecordReader::HandleLine(std::string_view line, uint64_t line_number, bool too_long,
                                     const std::function<void()>& release_line) {
  if (too_long) {
    Skip(LineRef(line_number), line_number,
         "line longer than " + std::to_string(kMaxJsonlLineBytes) + " bytes");
    return Status::OK();
  }
  if (line_number == 1 && line.starts_with("\xEF\xBB\xBF")) line.remove_prefix(3);
  if (Trim(line).empty()) return Status::OK();
  if (!simdjson::validate_utf8(line.data(), line.size())) {
    // Repaired like the text parser repairs a file, not refused whole.
    repaired_.clear();
    stats_.invalid_utf8_replaced += AppendRepairedUtf8(line, repaired_);
    const size_t size = repaired_.size();
    repaired_.append(kJsonlLinePadding, '\0');
    line = std::string_view(repaired_.data(), size);
  }
  const size_t line_bytes = line.size();
  // A huge line's bytes go as soon as simdjson has parsed it (its strings
  // are in the parser's own buffer): emitting the record waits on the
  // pipeline's full queues for most of its time, and the line was a third
  // of the peak memory meanwhile (a 63 MB line: 232-234 -> 168-175 MB peak
  // RSS, BENCHMARKS.md "Memory").
  std::function<void()> release;
  if (line_bytes > kKeepParserBuffersUpTo) {
    release = [&] {
      if (release_line) release_line();
      std::string().swap(repaired_);  // the line itself when it was repaired
    };
  }
  Status s = HandleRecord(line, line_number, release);
  if (line_bytes > kKeepParserBuffersUpTo) {
    json_->parser = simdjson::dom::parser();
    std::string().swap(repaired_);
  }
  return s;
}

Status JsonlRecordReader::HandleRecord(std::string_view line, uint64_t line_number,
                                       const std::function<void()>& release) {
  simdjson::dom::element root;
  // In place: the caller guarantees kJsonlLinePadding bytes after the line.
  if (auto err = json_->parser
                     .parse(reinterpret_cast<const uint8_t*>(line.data()), line.size(),
                            /*realloc_if_needed=*/false)
                     .get(root)) {
    Skip(LineRef(line_number), line_number,
         std::string("invalid JSON: ") + simdjson::error_message(err));
    return Status::OK();
  }
  simdjson::dom::object obj;
  if (root.get(obj)) {
    Skip(LineRef(line_number), line_number, "record is not a JSON object");
    return Status::OK();
  }

  SourceInfo info = FileSourceInfo(file_);
  // id: string or number.
  simdjson::dom::element id_el;
  if (obj["id"].get(id_el)) {
    Skip(LineRef(line_number), line_number, "missing \"id\"");
    return Status::OK();
  }
  std::string id;
  if (id_el.is_string()) {
    id = std::string(id_el.get_string().value_unsafe());
  } else if (id_el.is_number()) {
    id = simdjson::minify(id_el);
  } else {
    Skip(LineRef(line_number), line_number, "\"id\" must be a string or a number");
    return Status::OK();
  }
  if (id.empty()) {
    Skip(LineRef(line_number), line_number, "\"id\" is empty");
    return Status::OK();
  }
  info.source_id = id_prefix_ + id;
  const std::string& ref = info.source_id;

  std::string_view text;
  simdjson::dom::element text_el;
  if (obj["text"].get(text_el)) {
    Skip(ref, line_number, "missing \"text\"");
    return Status::OK();
  }
  if (text_el.get_string().get(text)) {
    Skip(ref, line_number, "\"text\" must be a string");
    return Status::OK();
  }
  struct Field {
    const char* key;
    std::string* into;
  };
  const Field fields[] = {{"domain", &info.domain},
                          {"category", &info.category},
                          {"title", &info.title},
                          {"author", &info.author}};
  for (const Field& f : fields) {
    simdjson::dom::element el;
    if (obj[f.key].get(el)) continue;  // absent: keep the default
    if (el.is_null()) continue;
    std::string_view v;
    if (el.get_string().get(v)) {
      Skip(ref, line_number, std::string("\"") + f.key + "\" must be a string");
      return Status::OK();
    }
    if (!v.empty()) *f.into = std::string(v);
  }
  simdjson::dom::element meta_el;
  if (!obj["metadata"].get(meta_el) && !meta_el.is_null()) {
    if (!meta_el.is_object()) {
      Skip(ref, line_number, "\"metadata\" must be an object");
      return Status::OK();
    }
    info.metadata_json = simdjson::minify(meta_el);
  }

  // Only an accepted record claims its id: a later valid record with the id
  // of an earlier refused one is not a duplicate.
  const auto [seen, inserted] = first_line_of_id_.try_emplace(Hash64(id), line_number);
  if (!inserted) {
    std::string quoted;
    AppendJsonString(id, quoted);
    Skip(LineRef(line_number), line_number,
         "duplicate id " + quoted + " (first on line " + std::to_string(seen->second) +
             "); ids must be unique within a file, this record was not ingested");
    return Status::OK();
  }
  if (release) release();  // `line` is not read from here on
  return EmitRecord(info, text);
}

Status JsonlRecordReader::EmitRecord(const SourceInfo& info, std::string_view text) {
  ++records_;
  Status s = sink_.BeginDocument(info);
  if (!s.ok()) return s;
  ParagraphAssembler paragraphs([this](std::string&& t) {
    TextBlock block;
    block.text = std::move(t);
    return sink_.AddBlock(block);
  });
  s = paragraphs.Feed(text);
  if (s.ok()) s = paragraphs.Finish();
  if (!s.ok()) return s;
  return sink_.EndDocument();
}

namespace {

// How long a read of stdin waits before looking at StopRequested again.
constexpr std::chrono::milliseconds kStreamPollSlice{100};

std::string LineSource(const SourceFile& file) { return file.path == "-" ? "<stdin>" : file.path; }

class JsonlParser final : public Parser {
 public:
  std::string_view Name() const override { return "jsonl"; }
  std::vector<std::string> Extensions() const override { return {"jsonl", "ndjson", "-"}; }
  bool Sniff(std::string_view) const override { return false; }

  Status Parse(const SourceFile& file, const ParseLimits& limits, DocumentSink& sink,
               RecordErrorSink& errors, ParseStats& stats) const override {
    Status s = CheckFileSize(file, limits);
    if (!s.ok()) return s;
    Result<InputFile> in = InputFile::Open(file);
    if (!in.ok()) return in.status();
    JsonlRecordReader records(file, sink, errors, stats);
    LineSplitter* splitter = nullptr;  // the callback frees a huge line through it
    LineSplitter lines(
        kMaxJsonlLineBytes, LineSplitter::Overflow::kDiscard,
        [&records, &splitter](std::string_view line, uint64_t n, bool too_long) {
          return records.HandleLine(line, n, too_long, [&splitter] { splitter->ReleaseLine(); });
        },
        kJsonlLinePadding);
    splitter = &lines;
    // stdin is a stream: each read hands on the lines that have arrived
    // (not a 1 MiB block later), and a stalled writer does not hold a stop.
    const bool stream = file.path == "-";
    // A byte range (a distributed range task): its bytes only, numbered as
    // the file's own lines. The range was cut just after a '\n', so its
    // first byte starts a line and its last line ends at range_end.
    uint64_t left = UINT64_MAX;
    if (file.IsRange()) {
      if (stream || file.range_end < file.range_begin) {
        return Status::InvalidArgument("a byte range of " + LineSource(file) +
                                       " cannot be read (not a file, or an empty range)");
      }
      s = in->Seek(file.range_begin);
      if (!s.ok()) return s;
      left = file.range_end - file.range_begin;
      lines.StartAtLine(file.first_line);
    }
    std::string block;
    for (;;) {
      if (sink.StopRequested()) {
        return Status::Cancelled("stopping: " + LineSource(file) + " not read to its end");
      }
      block.clear();
      if (left == 0) break;
      if (stream) {
        Result<InputFile::Available> got =
            in->ReadAvailable(block, kReadBlockBytes, kStreamPollSlice);
        if (!got.ok()) return got.status();
        if (got->ended) break;
        if (got->bytes == 0) continue;
      } else {
        Result<size_t> got = in->Read(block, std::min<uint64_t>(kReadBlockBytes, left));
        if (!got.ok()) return got.status();
        if (*got == 0) break;
        if (left != UINT64_MAX) left -= *got;
      }
      s = lines.Feed(block);
      if (!s.ok()) return s;
    }
    return lines.Finish();
  }
};

}  // namespace

std::unique_ptr<Parser> MakeJsonlParser() { return std::make_unique<JsonlParser>(); }

}  // namespace sluice::sources_internal
