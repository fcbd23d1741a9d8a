#include "sources/text_input.h"

#include <fcntl.h>
#include <poll.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <memory>

#include "common/utf8.h"

namespace sluice::sources_internal {

bool IsSpace(char c) {
  return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v';
}

std::string_view Trim(std::string_view s) {
  while (!s.empty() && IsSpace(s.front())) s.remove_prefix(1);
  while (!s.empty() && IsSpace(s.back())) s.remove_suffix(1);
  return s;
}

// ---------------------------------------------------------------- InputFile

Result<InputFile> InputFile::Open(const std::string& path) {
  if (path == "-") return InputFile(STDIN_FILENO, false, "<stdin>");
  const int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    const int err = errno;
    std::string msg = "cannot open " + path + ": " + std::strerror(err);
    if (err == ENOENT) return Status::NotFound(std::move(msg));
    if (err == EACCES) return Status::PermissionDenied(std::move(msg));
    return Status::IOError(std::move(msg));
  }
  return InputFile(fd, true, path);
}

Result<InputFile> InputFile::Open(const SourceFile& file) {
  if (!file.contents) return Open(file.path);
  InputFile in(-1, false, file.path);
  in.memory_ = *file.contents;
  in.in_memory_ = true;
  return in;
}

InputFile::~InputFile() {
  if (owned_ && fd_ >= 0) close(fd_);
}

Result<size_t> InputFile::Read(std::string& out, size_t max_bytes) {
  if (in_memory_) {
    const size_t n = std::min(max_bytes, memory_.size() - memory_at_);
    out.append(memory_.data() + memory_at_, n);
    memory_at_ += n;
    return n;
  }
  // Through a scratch buffer, appending what came: growing `out` by
  // max_bytes first zero-filled a whole block (1 MiB) for every file however
  // small, 4% of an ingest's CPU in memset (docs/PERFORMANCE.md).
  constexpr size_t kScratchBytes = 64 * 1024;
  thread_local const std::unique_ptr<char[]> scratch(new char[kScratchBytes]);
  size_t got = 0;
  while (got < max_bytes) {
    const ssize_t n = read(fd_, scratch.get(), std::min(max_bytes - got, kScratchBytes));
    if (n < 0) {
      if (errno == EINTR) continue;
      const int err = errno;
      return Status::IOError("read " + path_ + ": " + std::strerror(err));
    }
    if (n == 0) break;
    out.append(scratch.get(), static_cast<size_t>(n));
    got += static_cast<size_t>(n);
  }
  return got;
}

Status InputFile::Seek(uint64_t offset) {
  if (in_memory_) {
    memory_at_ = static_cast<size_t>(std::min<uint64_t>(offset, memory_.size()));
    return Status::OK();
  }
  if (lseek(fd_, static_cast<off_t>(offset), SEEK_SET) < 0) {
    return Status::IOError("seek " + path_ + ": " + std::strerror(errno));
  }
  return Status::OK();
}

Result<InputFile::Available> InputFile::ReadAvailable(std::string& out, size_t max_bytes,
                                                      std::chrono::milliseconds wait) {
  Available result;
  if (in_memory_) {
    Result<size_t> got = Read(out, max_bytes);
    if (!got.ok()) return got.status();
    result.bytes = *got;
    result.ended = *got == 0;
    return result;
  }
  struct pollfd pfd = {fd_, POLLIN, 0};
  const int ready = poll(&pfd, 1, static_cast<int>(wait.count()));
  if (ready < 0) {
    if (errno == EINTR) return result;
    return Status::IOError("poll " + path_ + ": " + std::strerror(errno));
  }
  if (ready == 0) return result;
  const size_t old = out.size();
  out.resize(old + max_bytes);
  ssize_t n;
  do {
    n = read(fd_, out.data() + old, max_bytes);
  } while (n < 0 && errno == EINTR);
  if (n < 0) {
    const int err = errno;
    out.resize(old);
    return Status::IOError("read " + path_ + ": " + std::strerror(err));
  }
  out.resize(old + static_cast<size_t>(n));
  result.bytes = static_cast<size_t>(n);
  result.ended = n == 0;
  return result;
}

SourceInfo FileSourceInfo(const SourceFile& file) {
  SourceInfo info;
  info.source_id = file.relative_path.empty() ? file.path : file.relative_path;
  info.path = file.path == "-" ? "" : file.path;
  info.domain = file.domain;
  info.category = file.category;
  info.size_bytes = file.size_bytes;
  info.mtime_ns = file.mtime_ns;
  return info;
}

// ------------------------------------------------------------ DecodeTextFile

namespace {

enum class Encoding { kUtf8, kUtf16Le, kUtf16Be, kLatin1 };

// Decodes UTF-16 code units, carrying an odd byte and a high surrogate
// between blocks.
class Utf16Decoder {
 public:
  explicit Utf16Decoder(bool little_endian) : le_(little_endian) {}
  uint64_t Decode(std::string_view in, std::string& out) {
    uint64_t replaced = 0;
    size_t i = 0;
    if (has_odd_ && !in.empty()) {
      const char pair[2] = {odd_, in[0]};
      replaced += Unit(Load(pair), out);
      has_odd_ = false;
      i = 1;
    }
    for (; i + 1 < in.size(); i += 2) replaced += Unit(Load(in.data() + i), out);
    if (i < in.size()) {
      odd_ = in[i];
      has_odd_ = true;
    }
    return replaced;
  }
  uint64_t Finish(std::string& out) {
    uint64_t replaced = 0;
    if (high_ != 0) {
      AppendUtf8(0xFFFD, out);
      high_ = 0;
      ++replaced;
    }
    if (has_odd_) {
      AppendUtf8(0xFFFD, out);
      has_odd_ = false;
      ++replaced;
    }
    return replaced;
  }

 private:
  uint16_t Load(const char* p) const {
    const auto b0 = static_cast<uint8_t>(p[0]);
    const auto b1 = static_cast<uint8_t>(p[1]);
    return le_ ? static_cast<uint16_t>(b0 | (b1 << 8)) : static_cast<uint16_t>((b0 << 8) | b1);
  }
  uint64_t Unit(uint16_t u, std::string& out) {
    uint64_t replaced = 0;
    if (u >= 0xD800 && u <= 0xDBFF) {
      if (high_ != 0) {
        AppendUtf8(0xFFFD, out);
        ++replaced;
      }
      high_ = u;
      return replaced;
    }
    if (u >= 0xDC00 && u <= 0xDFFF) {
      if (high_ == 0) {
        AppendUtf8(0xFFFD, out);
        return 1;
      }
      AppendUtf8(0x10000 + ((static_cast<uint32_t>(high_) - 0xD800) << 10) + (u - 0xDC00), out);
      high_ = 0;
      return 0;
    }
    if (high_ != 0) {
      AppendUtf8(0xFFFD, out);
      high_ = 0;
      ++replaced;
    }
    AppendUtf8(u, out);
    return replaced;
  }
  bool le_;
  uint16_t high_ = 0;
  char odd_ = 0;
  bool has_odd_ = false;
};

bool MostlyInvalidUtf8(std::string_view block) {
  uint64_t high = 0;
  for (char c : block) high += static_cast<unsigned char>(c) >= 0x80 ? 1 : 0;
  if (high == 0) return false;
  std::string scratch;
  scratch.reserve(block.size() + 64);
  const uint64_t invalid = AppendRepairedUtf8(block, scratch);
  return invalid * 2 > high;
}

}  // namespace

Status DecodeTextFile(const SourceFile& file, ParseStats& stats,
                      const std::function<Status(std::string_view)>& on_text) {
  Result<InputFile> in = InputFile::Open(file);
  if (!in.ok()) return in.status();
  std::string raw;
  Result<size_t> got = in->Read(raw, kReadBlockBytes);
  if (!got.ok()) return got.status();
  if (raw.empty()) return Status::OK();

  Encoding enc = Encoding::kUtf8;
  size_t skip = 0;
  if (raw.size() >= 3 && raw.compare(0, 3, "\xEF\xBB\xBF") == 0) {
    skip = 3;
  } else if (raw.size() >= 2 && raw[0] == '\xFF' && raw[1] == '\xFE') {
    enc = Encoding::kUtf16Le;
    skip = 2;
  } else if (raw.size() >= 2 && raw[0] == '\xFE' && raw[1] == '\xFF') {
    enc = Encoding::kUtf16Be;
    skip = 2;
  }
  if (enc == Encoding::kUtf8) {
    const std::string_view head = std::string_view(raw).substr(0, kSniffBytes);
    if (head.find('\0') != std::string_view::npos) return Status::InvalidArgument("binary file");
    std::string_view body = std::string_view(raw).substr(skip);
    body.remove_suffix(Utf8IncompleteTail(body));
    if (MostlyInvalidUtf8(body)) {
      enc = Encoding::kLatin1;
      stats.latin1_fallback = true;
    }
  }

  Utf16Decoder utf16(enc == Encoding::kUtf16Le);
  std::string carry;  // UTF-8: an incomplete sequence at the end of the last block
  std::string out;
  out.reserve(kReadBlockBytes + 16);
  bool first = true;
  for (;;) {
    if (!first) {
      raw.clear();
      got = in->Read(raw, kReadBlockBytes);
      if (!got.ok()) return got.status();
    }
    const bool eof = raw.empty();
    std::string_view block = std::string_view(raw).substr(first ? skip : 0);
    first = false;
    out.clear();
    switch (enc) {
      case Encoding::kUtf16Le:
      case Encoding::kUtf16Be:
        stats.invalid_utf8_replaced += eof ? utf16.Finish(out) : utf16.Decode(block, out);
        break;
      case Encoding::kLatin1:
        for (char c : block) AppendUtf8(static_cast<unsigned char>(c), out);
        break;
      case Encoding::kUtf8: {
        std::string joined;
        std::string_view data = block;
        if (!carry.empty()) {  // an incomplete sequence left by the last block
          joined = carry;
          joined.append(block);
          data = joined;
        }
        const size_t tail = eof ? 0 : Utf8IncompleteTail(data);
        stats.invalid_utf8_replaced += AppendRepairedUtf8(data.substr(0, data.size() - tail), out);
        carry.assign(data.substr(data.size() - tail));
        break;
      }
    }
    if (!out.empty()) {
      Status s = on_text(out);
      if (!s.ok()) return s;
    }
    if (eof) return Status::OK();
  }
}

// --------------------------------------------------------- ParagraphAssembler

Status ParagraphAssembler::Feed(std::string_view text) {
  size_t pos = 0;
  while (pos < text.size()) {
    const size_t nl = text.find('\n', pos);
    const size_t end = nl == std::string_view::npos ? text.size() : nl;
    std::string_view seg = text.substr(pos, end - pos);
    if (!line_has_content_) {
      for (char c : seg) {
        if (!IsSpace(c)) {
          line_has_content_ = true;
          break;
        }
      }
    }
    // In slices, so para_ never holds more than about 2 x max_piece_. A piece
    // is cut only while more follows it (para_ longer than max_piece_), so a
    // slice ending inside a character never ends a piece.
    while (seg.size() > max_piece_) {
      para_.append(seg.substr(0, max_piece_));
      seg.remove_prefix(max_piece_);
      while (para_.size() > max_piece_) {
        Status s = EmitPiece();
        if (!s.ok()) return s;
      }
    }
    para_.append(seg);
    if (nl != std::string_view::npos) {
      if (!para_.empty() && para_.back() == '\r') para_.pop_back();
      if (!line_has_content_) {
        para_.resize(std::min(line_start_, para_.size()));
        Status s = EmitParagraph();
        if (!s.ok()) return s;
      } else {
        para_.push_back('\n');
        line_start_ = para_.size();
        line_has_content_ = false;
      }
      pos = nl + 1;
    } else {
      pos = text.size();
    }
    while (para_.size() >= max_piece_) {
      Status s = EmitPiece();
      if (!s.ok()) return s;
    }
  }
  return Status::OK();
}

Status ParagraphAssembler::Finish() { return EmitParagraph(); }

Status ParagraphAssembler::EmitParagraph() {
  const std::string_view t = Trim(para_);
  Status s;
  if (!t.empty()) s = emit_(std::string(t));
  para_.clear();
  line_start_ = 0;
  line_has_content_ = false;
  return s;
}

Status ParagraphAssembler::EmitPiece() {
  size_t cut = 0;
  for (size_t i = max_piece_; i > max_piece_ / 2; --i) {
    if (IsSpace(para_[i - 1])) {
      cut = i;
      break;
    }
  }
  if (cut == 0) cut = Utf8BoundaryAtOrBefore(para_, max_piece_);
  if (cut == 0) {  // max_piece smaller than one character
    cut = 1;
    while (cut < para_.size() && (static_cast<unsigned char>(para_[cut]) & 0xC0) == 0x80) ++cut;
  }
  const std::string_view t = Trim(std::string_view(para_).substr(0, cut));
  Status s;
  if (!t.empty()) s = emit_(std::string(t));
  para_.erase(0, cut);
  line_start_ = line_start_ > cut ? line_start_ - cut : 0;
  return s;
}

// --------------------------------------------------------------- LineSplitter

Status LineSplitter::Feed(std::string_view bytes) {
  size_t pos = 0;
  while (pos < bytes.size()) {
    const size_t nl = bytes.find('\n', pos);
    const size_t end = nl == std::string_view::npos ? bytes.size() : nl;
    std::string_view seg = bytes.substr(pos, end - pos);
    if (!discarding_) {
      while (line_.size() + seg.size() > max_line_) {
        if (overflow_ == Overflow::kDiscard) {
          line_.clear();
          discarding_ = true;
          break;
        }
        const size_t room = max_line_ - line_.size();
        line_.append(seg.substr(0, room));
        seg.remove_prefix(room);
        size_t cut = Utf8BoundaryAtOrBefore(line_, line_.size() - Utf8IncompleteTail(line_));
        if (cut == 0) cut = line_.size();
        const std::string rest = line_.substr(cut);
        line_.resize(cut);
        Status s = HandOut(line_number_ + 1);
        if (!s.ok()) return s;
        line_ = rest;
      }
      if (!discarding_) line_.append(seg);
    }
    if (nl == std::string_view::npos) break;
    Status s = EndLine();
    if (!s.ok()) return s;
    pos = nl + 1;
  }
  return Status::OK();
}

Status LineSplitter::EndLine() {
  ++line_number_;
  Status s;
  if (discarding_) {
    s = fn_({}, line_number_, true);
    discarding_ = false;
  } else {
    if (!line_.empty() && line_.back() == '\r') line_.pop_back();
    s = HandOut(line_number_);
  }
  if (line_.capacity() > 2 * kReadBlockBytes) {
    std::string().swap(line_);  // a huge line's buffer goes back now
  } else {
    line_.clear();
  }
  return s;
}

Status LineSplitter::HandOut(uint64_t line_number) {
  const size_t size = line_.size();
  line_.append(tail_padding_, '\0');
  released_ = false;
  Status s = fn_(std::string_view(line_.data(), size), line_number, false);
  if (released_) {
    released_ = false;  // line_ is already empty
  } else {
    line_.resize(size);
  }
  return s;
}

void LineSplitter::ReleaseLine() {
  std::string().swap(line_);
  released_ = true;
}

Status LineSplitter::Finish() {
  if (line_.empty() && !discarding_) return Status::OK();
  return EndLine();
}

}  // namespace sluice::sources_internal
