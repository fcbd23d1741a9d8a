// Bounded reading of zip members for the EPUB and DOCX parsers.
//
// Every member read is checked BEFORE inflating against what the central
// directory declares: the cumulative decompressed bytes of the archive must
// stay within ParseLimits::max_decompressed_bytes, and a member larger than
// kRatioCheckFloorBytes must not expand more than max_compression_ratio times.
// While inflating, the bytes actually produced are counted too, so a header
// that lies about the size cannot get past the limits.
//
// Thread safety: one ZipReader per thread.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

#include "sluice/parser.h"
#include "sluice/status.h"

struct zip;

namespace sluice::formats {

// Members up to this size skip the ratio check: small, highly repetitive
// parts (a mimetype, an empty stylesheet) are harmless at any ratio.
inline constexpr uint64_t kRatioCheckFloorBytes = 64 * 1024;

class ZipReader {
 public:
  // Opens the archive at `path`. Corrupt when it is not a zip (including a
  // 0-byte file), IOError/NotFound when it cannot be opened.
  static Result<std::unique_ptr<ZipReader>> Open(const std::string& path,
                                                 const ParseLimits& limits);
  // The archive in `file.contents` when the reader has the file's bytes
  // (nothing opened; the bytes must outlive the reader), else Open(file.path).
  static Result<std::unique_ptr<ZipReader>> Open(const SourceFile& file, const ParseLimits& limits);
  ~ZipReader();
  ZipReader(const ZipReader&) = delete;
  ZipReader& operator=(const ZipReader&) = delete;

  bool Has(const std::string& name) const;
  // Name of the first member in the central directory ("" when empty).
  std::string FirstMemberName() const;

  // Reads member `name` whole. NotFound when absent; InvalidArgument when a
  // limit would be exceeded; Corrupt when the data cannot be inflated or is
  // longer than declared.
  Result<std::string> Read(const std::string& name);

  uint64_t decompressed_bytes() const { return decompressed_bytes_; }

 private:
  // Takes `archive` (just opened); Corrupt, and the archive discarded, when
  // it has no member.
  static Result<std::unique_ptr<ZipReader>> Opened(const std::string& path,
                                                   const ParseLimits& limits, struct zip* archive);
  ZipReader(std::string path, const ParseLimits& limits, struct zip* archive)
      : path_(std::move(path)), limits_(limits), archive_(archive) {}

  std::string path_;
  ParseLimits limits_;
  struct zip* archive_;
  uint64_t decompressed_bytes_ = 0;
};

}  // namespace sluice::formats
