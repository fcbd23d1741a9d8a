// Chunker: cuts a document's blocks into chunks of a token budget with
// overlap, in one pass and bounded memory. See include/sluice/chunker.h.
//
// Offsets. The document's "extracted text" is the concatenation of its
// non-empty blocks, each followed by "\n\n" (empty blocks are ignored). Every
// chunk's text is exactly extracted_text[byte_begin, byte_end): chunks start
// and end on non-whitespace, so the "\n\n" between blocks appears inside a
// chunk only between two blocks.
//
// Buffer. Text is appended to a buffer of at most 2 x budget bytes (a big
// block is fed in slices). Whenever the buffer holds more than the budget, one
// chunk is cut from its front: at the last paragraph break ("\n\n") in the
// second half of the budget, else the last sentence end (. ! ? then a space or
// newline, or CJK 。！？) in the second half, else the last whitespace, else
// a UTF-8 boundary. The next chunk then starts ~overlap bytes before the cut,
// at the start of a word (at most half the chunk is repeated).
//
// Structure. A heading ends the current section: the buffer is flushed (no
// overlap across sections) unless it holds only headings, and the heading
// text starts the next chunk; the heading path ("Part I > Chapter 3 > Rates")
// is kept from heading levels. A kCode/kTable block that fits the budget but
// not the space left starts a new chunk and is never cut.
#include "sluice/chunker.h"

#include <simdjson.h>

#include <algorithm>
#include <cmath>
#include <deque>
#include <utility>
#include <vector>

#include "common/hashing.h"
#include "common/json_canonical.h"
#include "common/json_writer.h"
#include "common/utf8.h"

namespace sluice {
namespace {

bool IsSpace(char c) {
  return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v';
}

bool IsReservedKey(std::string_view k) {
  return k == "heading_path" || k == "page_start" || k == "page_end" || k == "title" ||
         k == "author";
}

// True when s[0, p) ends a sentence.
bool SentenceEndsAt(std::string_view s, size_t p) {
  if (p == 0) return false;
  const char c = s[p - 1];
  if ((c == '.' || c == '!' || c == '?') && (p == s.size() || IsSpace(s[p]))) return true;
  if (p >= 3) {
    const std::string_view tail = s.substr(p - 3, 3);
    return tail == "\xE3\x80\x82" || tail == "\xEF\xBC\x81" || tail == "\xEF\xBC\x9F";
  }
  return false;
}

}  // namespace

uint32_t EstimateTokens(std::string_view text, double chars_per_token) {
  if (text.empty()) return 0;
  if (!(chars_per_token > 0)) chars_per_token = 4.0;
  const double t = std::ceil(static_cast<double>(text.size()) / chars_per_token);
  return std::max<uint32_t>(1, static_cast<uint32_t>(t));
}

std::string MakeChunkId(std::string_view source_id, uint32_t ordinal, std::string_view text) {
  std::string key;
  key.reserve(source_id.size() + text.size() + 16);
  key.append(source_id);
  key.push_back('\0');
  key.append(std::to_string(ordinal));
  key.push_back('\0');
  key.append(text);
  return Hash128Hex(key);
}

struct Chunker::Impl {
  struct PageSpan {
    uint64_t begin;
    uint64_t end;
    int page;
  };

  Impl(ChunkerOptions o, EmitFn e) : options(o), emit(std::move(e)) {
    if (!(options.chars_per_token > 0)) options.chars_per_token = 4.0;
    budget = std::max<size_t>(
        8, static_cast<size_t>(std::floor(options.chunk_tokens * options.chars_per_token)));
    const uint32_t ov =
        std::min(options.overlap_tokens, options.chunk_tokens ? options.chunk_tokens - 1 : 0);
    overlap = static_cast<size_t>(std::floor(ov * options.chars_per_token));
  }

  ChunkerOptions options;
  EmitFn emit;
  size_t budget = 0;   // bytes per chunk
  size_t overlap = 0;  // bytes repeated at the start of the next chunk

  // Per document.
  bool in_document = false;
  SourceInfo info;
  std::vector<std::pair<std::string, std::string>> base_metadata;  // key, raw JSON value
  uint32_t ordinal = 0;
  std::string buf;              // extracted text from buf_begin to the end so far
  uint64_t buf_begin = 0;       // absolute offset of buf[0]
  uint64_t fresh_from = 0;      // text before this offset was already emitted
  uint64_t keep_whole_end = 0;  // a code/table block ending here must not be cut
  bool has_body = false;        // buf holds more than headings
  std::vector<std::pair<int, std::string>> headings;
  std::string heading_path;
  std::deque<PageSpan> pages;
  simdjson::dom::parser json;

  uint64_t End() const { return buf_begin + buf.size(); }

  void ParseSourceMetadata(const std::string& raw) {
    base_metadata.clear();
    simdjson::padded_string padded(raw);
    simdjson::dom::element root;
    simdjson::dom::object obj;
    if (json.parse(padded).get(root) || root.get(obj)) {
      if (!raw.empty() && raw != "{}") {
        std::string quoted;
        AppendJsonString(raw, quoted);
        base_metadata.emplace_back("source_metadata", std::move(quoted));
      }
      return;
    }
    for (auto field : obj) {
      if (IsReservedKey(field.key)) continue;
      std::string value = simdjson::minify(field.value);
      if (auto canonical = CanonicalJson(value); canonical.ok()) value = std::move(*canonical);
      base_metadata.emplace_back(std::string(field.key), std::move(value));
    }
  }

  // The chunk's metadata in canonical form (common/json_canonical.h: sorted
  // keys, no spaces), so every store reads it back byte-identical.
  std::string Metadata(int page_start, int page_end) const {
    std::vector<std::pair<std::string_view, std::string>> fields;
    for (const auto& [k, v] : base_metadata) fields.emplace_back(k, v);
    auto quoted = [](std::string_view s) {
      std::string out;
      AppendJsonString(s, out);
      return out;
    };
    if (!heading_path.empty()) fields.emplace_back("heading_path", quoted(heading_path));
    if (page_start > 0) {
      fields.emplace_back("page_start", std::to_string(page_start));
      fields.emplace_back("page_end", std::to_string(page_end));
    }
    if (!info.title.empty()) fields.emplace_back("title", quoted(info.title));
    if (!info.author.empty()) fields.emplace_back("author", quoted(info.author));
    std::stable_sort(fields.begin(), fields.end(),
                     [](const auto& a, const auto& b) { return a.first < b.first; });
    std::string out;
    JsonWriter w(out);
    w.BeginObject();
    for (const auto& [k, v] : fields) w.Key(k).Raw(v);
    w.EndObject();
    return out;
  }

  // Emits buf[0, end) minus trailing whitespace unless it holds nothing new.
  // Returns the trimmed end.
  Result<size_t> EmitFront(size_t end) {
    size_t te = end;
    while (te > 0 && IsSpace(buf[te - 1])) --te;
    if (te == 0 || buf_begin + te <= fresh_from) return te;
    Chunk c;
    c.source_id = info.source_id;
    c.ordinal = ordinal;
    c.byte_begin = buf_begin;
    c.byte_end = buf_begin + te;
    c.text = buf.substr(0, te);
    c.domain = info.domain;
    c.category = info.category;
    int page_start = 0, page_end = 0;
    for (const PageSpan& p : pages) {
      if (p.end <= c.byte_begin || p.begin >= c.byte_end) continue;
      page_start = page_start == 0 ? p.page : std::min(page_start, p.page);
      page_end = std::max(page_end, p.page);
    }
    c.metadata_json = Metadata(page_start, page_end);
    c.token_estimate = EstimateTokens(c.text, options.chars_per_token);
    c.id = MakeChunkId(c.source_id, c.ordinal, c.text);
    fresh_from = c.byte_end;
    ++ordinal;
    Status s = emit(std::move(c));
    if (!s.ok()) return s;
    return te;
  }

  void EraseFront(size_t n) {
    while (n < buf.size() && IsSpace(buf[n])) ++n;
    buf.erase(0, n);
    buf_begin += n;
    while (!pages.empty() && pages.front().end <= buf_begin) pages.pop_front();
  }

  size_t FindCut() const {
    size_t min_cut = 1;
    if (keep_whole_end > buf_begin && keep_whole_end - buf_begin <= budget) {
      min_cut = static_cast<size_t>(keep_whole_end - buf_begin);
    }
    const size_t lo = std::max(min_cut, budget / 2);
    const std::string_view s = buf;
    // Paragraph: the chunk ends where a "\n\n" starts.
    for (size_t p = std::min(budget, s.size() - 1); p >= lo && p > 0; --p) {
      if (s[p] == '\n' && p + 1 < s.size() && s[p + 1] == '\n') return p;
    }
    for (size_t p = budget; p >= lo && p > 0; --p) {
      if (SentenceEndsAt(s, p)) return p;
    }
    for (size_t p = budget; p >= min_cut && p > 0; --p) {
      if (IsSpace(s[p])) return p;
    }
    size_t cut = Utf8BoundaryAtOrBefore(s, budget);
    if (cut == 0) {  // budget smaller than one character
      cut = 1;
      while (cut < s.size() && (static_cast<unsigned char>(s[cut]) & 0xC0) == 0x80) ++cut;
    }
    return cut;
  }

  // Where the next chunk starts after a chunk ending at te (cut at `end`).
  size_t NextStart(size_t te, size_t end) const {
    const size_t ov = std::min(overlap, te / 2);
    if (ov == 0) return end;
    const size_t start = te - ov;
    for (size_t p = std::max<size_t>(start, 1); p < te; ++p) {
      if (IsSpace(buf[p - 1]) && !IsSpace(buf[p])) return p;
    }
    const size_t b = Utf8BoundaryAtOrBefore(buf, start);
    return b == 0 ? end : b;
  }

  // REQUIRES: buf.size() > budget.
  Status CutOne() {
    const size_t end = FindCut();
    Result<size_t> te = EmitFront(end);
    if (!te.ok()) return te.status();
    EraseFront(NextStart(*te, end));
    return Status::OK();
  }

  Status Drain() {
    EraseFront(0);
    while (!buf.empty()) {
      if (buf.size() <= budget) {
        Result<size_t> te = EmitFront(buf.size());
        if (!te.ok()) return te.status();
        EraseFront(buf.size());
        break;
      }
      Status s = CutOne();
      if (!s.ok()) return s;
    }
    has_body = false;
    pages.clear();
    return Status::OK();
  }

  Status AppendBytes(std::string_view text) {
    while (!text.empty()) {
      if (buf.size() >= 2 * budget) {
        Status s = CutOne();
        if (!s.ok()) return s;
        continue;
      }
      const size_t room = 2 * budget - buf.size();
      size_t n = text.size();
      if (n > room) {
        n = Utf8BoundaryAtOrBefore(text, room);
        if (n == 0) {  // room smaller than one character
          n = 1;
          while (n < text.size() && (static_cast<unsigned char>(text[n]) & 0xC0) == 0x80) ++n;
        }
      }
      const bool was_empty = buf.empty();
      buf.append(text.substr(0, n));
      text.remove_prefix(n);
      if (was_empty) EraseFront(0);  // chunks start on non-whitespace
      while (buf.size() > budget) {
        Status s = CutOne();
        if (!s.ok()) return s;
      }
    }
    return Status::OK();
  }

  Status AppendBlock(const TextBlock& block, bool keep_whole) {
    const uint64_t begin = End();
    const uint64_t end = begin + block.text.size();
    if (block.page > 0) pages.push_back({begin, end, block.page});
    if (keep_whole) keep_whole_end = end;
    Status s = AppendBytes(block.text);
    if (!s.ok()) return s;
    return AppendBytes("\n\n");
  }
};

Chunker::Chunker(ChunkerOptions options, EmitFn emit)
    : impl_(std::make_unique<Impl>(options, std::move(emit))) {}
Chunker::~Chunker() = default;

Status Chunker::BeginDocument(const SourceInfo& info) {
  Impl& d = *impl_;
  // A document left open (its parser failed) is dropped without more chunks.
  d.in_document = true;
  d.info = info;
  d.ParseSourceMetadata(info.metadata_json);
  d.ordinal = 0;
  d.buf.clear();
  d.buf_begin = 0;
  d.fresh_from = 0;
  d.keep_whole_end = 0;
  d.has_body = false;
  d.headings.clear();
  d.heading_path.clear();
  d.pages.clear();
  return Status::OK();
}

Status Chunker::AddBlock(const TextBlock& block) {
  Impl& d = *impl_;
  if (!d.in_document) return Status::Internal("chunker: AddBlock outside a document");
  if (block.text.empty()) return Status::OK();
  if (block.kind == BlockKind::kHeading) {
    if (d.has_body) {
      Status s = d.Drain();
      if (!s.ok()) return s;
    }
    const int level = std::clamp(block.heading_level, 1, 6);
    while (!d.headings.empty() && d.headings.back().first >= level) d.headings.pop_back();
    d.headings.emplace_back(level, block.text);
    d.heading_path.clear();
    for (const auto& [lvl, title] : d.headings) {
      if (!d.heading_path.empty()) d.heading_path += " > ";
      d.heading_path += title;
    }
    return d.AppendBlock(block, false);
  }
  const bool keep_whole = (block.kind == BlockKind::kCode || block.kind == BlockKind::kTable) &&
                          block.text.size() <= d.budget;
  if (keep_whole && !d.buf.empty() && d.buf.size() + block.text.size() > d.budget) {
    Status s = d.Drain();
    if (!s.ok()) return s;
  }
  d.has_body = true;
  return d.AppendBlock(block, keep_whole);
}

Status Chunker::EndDocument() {
  Impl& d = *impl_;
  if (!d.in_document) return Status::Internal("chunker: EndDocument outside a document");
  Status s = d.Drain();
  d.in_document = false;
  return s;
}

uint32_t Chunker::ChunksInDocument() const { return impl_->ordinal; }

}  // namespace sluice
