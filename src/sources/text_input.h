// Internal building blocks of the text-family parsers: reading an input in
// blocks, decoding it to UTF-8 (BOM, UTF-16, Latin-1 fallback, repair),
// splitting it into paragraphs or lines with bounded memory.
//
// Thread safety: each object is used by one thread; functions are reentrant.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <string>
#include <string_view>

#include "sluice/parser.h"
#include "sluice/status.h"

namespace sluice::sources_internal {

inline constexpr size_t kReadBlockBytes = 1 << 20;  // one read() from an input
inline constexpr size_t kMaxPieceBytes = 1 << 20;   // longest block a paragraph is emitted in
inline constexpr size_t kSniffBytes = 8 << 10;      // NUL bytes here mean "binary"

// A file or stdin ("-") read in blocks. Move-only; closes what it opened.
class InputFile {
 public:
  static Result<InputFile> Open(const std::string& path);
  // The file's bytes from SourceFile::contents when the reader has them
  // (nothing opened), else Open(file.path).
  static Result<InputFile> Open(const SourceFile& file);
  InputFile(InputFile&& other) noexcept
      : fd_(other.fd_),
        owned_(other.owned_),
        path_(std::move(other.path_)),
        memory_(other.memory_),
        memory_at_(other.memory_at_),
        in_memory_(other.in_memory_) {
    other.fd_ = -1;
  }
  InputFile& operator=(InputFile&&) = delete;
  ~InputFile();
  // Appends up to `max_bytes` to `out`; returns the count, 0 at end of input.
  // Blocks until `max_bytes` came or the input ended.
  Result<size_t> Read(std::string& out, size_t max_bytes);
  // Moves the read position to byte `offset` of a file (not a stream).
  Status Seek(uint64_t offset);

  struct Available {
    size_t bytes = 0;  // appended to `out`; 0 and !ended: nothing came within the wait
    bool ended = false;
  };
  // For a stream (stdin, a pipe): waits up to `wait` (poll) for input, then
  // appends what one read() gives, at most `max_bytes`. Records are then
  // handed on as they arrive, and the caller can notice a stop while the
  // writer is silent.
  Result<Available> ReadAvailable(std::string& out, size_t max_bytes,
                                  std::chrono::milliseconds wait);

 private:
  InputFile(int fd, bool owned, std::string path)
      : fd_(fd), owned_(owned), path_(std::move(path)) {}
  int fd_;
  bool owned_;
  std::string path_;
  // In memory: SourceFile::contents, read up to memory_at_.
  std::string_view memory_;
  size_t memory_at_ = 0;
  bool in_memory_ = false;
};

// Builds the SourceInfo of a file from what the walker and routing found.
SourceInfo FileSourceInfo(const SourceFile& file);

// Streams the file as UTF-8 to `on_text` in pieces of about kReadBlockBytes:
// UTF-8 (BOM stripped; invalid bytes repaired to U+FFFD and counted),
// UTF-16 LE/BE with a BOM (unpaired surrogates count as replaced), or Latin-1
// when the first block's non-ASCII bytes are mostly invalid UTF-8.
// Returns InvalidArgument("binary file") when the first 8 KiB hold a NUL byte
// and there is no UTF-16 BOM. A piece never ends inside a UTF-8 sequence.
// `file.contents` when the reader has them, else the file at `file.path`.
Status DecodeTextFile(const SourceFile& file, ParseStats& stats,
                      const std::function<Status(std::string_view)>& on_text);

// Turns a UTF-8 stream into paragraphs: runs of lines separated by blank
// (whitespace-only) lines, lines joined by '\n' (a '\r' before '\n' dropped),
// trimmed. A paragraph longer than `max_piece` is emitted in pieces of at
// most `max_piece` bytes cut at whitespace when there is some in the second
// half, else at a UTF-8 boundary, so memory stays bounded on a 1 GB line
// (text is taken in slices of at most `max_piece` bytes: a huge line fed at
// once is never copied whole).
class ParagraphAssembler {
 public:
  using EmitFn = std::function<Status(std::string&&)>;
  explicit ParagraphAssembler(EmitFn emit, size_t max_piece = kMaxPieceBytes)
      : emit_(std::move(emit)), max_piece_(max_piece) {}
  // REQUIRES: text is valid UTF-8 when all pieces are concatenated.
  Status Feed(std::string_view text);
  Status Finish();

 private:
  Status EmitParagraph();
  Status EmitPiece();
  EmitFn emit_;
  size_t max_piece_;
  std::string para_;
  size_t line_start_ = 0;
  bool line_has_content_ = false;
};

// Splits a byte stream into lines ('\n'; a '\r' before it is dropped).
// A line longer than `max_line` is either handed out in pieces of at most
// max_line bytes (kSplit, cut at a UTF-8 boundary) or dropped up to its end
// and reported once with too_long = true and an empty line (kDiscard).
// Every line (or piece) handed out is followed in memory by `tail_padding`
// zero bytes, so a parser that reads past the end (simdjson) can parse it in
// place instead of copying it. The line buffer is given back after a line
// longer than kReadBlockBytes, so one huge line does not pin its memory.
class LineSplitter {
 public:
  enum class Overflow { kSplit, kDiscard };
  using LineFn = std::function<Status(std::string_view line, uint64_t line_number, bool too_long)>;
  LineSplitter(size_t max_line, Overflow overflow, LineFn fn, size_t tail_padding = 0)
      : max_line_(max_line), overflow_(overflow), fn_(std::move(fn)), tail_padding_(tail_padding) {}
  // The first line fed is line `first_line` (a byte range of a file that
  // starts after first_line - 1 newlines). REQUIRES: before any Feed.
  void StartAtLine(uint64_t first_line) { line_number_ = first_line > 0 ? first_line - 1 : 0; }
  Status Feed(std::string_view bytes);
  // Hands out a last line without '\n', if any.
  Status Finish();
  // Called from inside the line callback: frees the buffer of the line being
  // handed out now rather than after the callback returns. The callback's
  // view is invalid from then on. For a consumer that has copied out what it
  // needs from a huge line (the JSONL reader once simdjson has parsed it) and
  // still has long work ahead (emitting the record while the pipeline's
  // queues are full).
  void ReleaseLine();

 private:
  Status EndLine();
  // Hands line_ out (padded, then unpadded again).
  Status HandOut(uint64_t line_number);
  size_t max_line_;
  Overflow overflow_;
  LineFn fn_;
  size_t tail_padding_;
  std::string line_;
  uint64_t line_number_ = 0;  // of the line being assembled, minus one
  bool discarding_ = false;
  bool released_ = false;  // ReleaseLine() was called during the current callback
};

bool IsSpace(char c);
std::string_view Trim(std::string_view s);

}  // namespace sluice::sources_internal
