// Helpers shared by the document parsers: bounded file reads, the SourceInfo
// a parser reports for a file, whitespace collapsing and path arithmetic for
// archive members.
//
// Thread safety: pure functions.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "sluice/parser.h"
#include "sluice/status.h"
#include "sluice/types.h"

namespace sluice::formats {

// Reads the whole file at `path`. Fails with InvalidArgument when the file is
// larger than `max_bytes` (checked before reading, and again while reading in
// case the file grows), NotFound/IOError when it cannot be read.
Result<std::string> ReadFileBounded(const std::string& path, uint64_t max_bytes);

// The SourceInfo every format starts from: ids, path, routing, size, mtime.
SourceInfo BaseSourceInfo(const SourceFile& file);

// Appends `text` to `out` with each run of ASCII whitespace and U+00A0
// (no-break space) collapsed to one space; no space is added at the start of
// `out` or after a newline already in `out`.
void AppendCollapsed(std::string_view text, std::string& out);

// Removes leading and trailing ASCII whitespace.
std::string_view TrimAscii(std::string_view s);

// True when `head` starts with `prefix` ignoring ASCII case.
bool StartsWithNoCase(std::string_view head, std::string_view prefix);

// Resolves `href` (percent-encoded, relative, may carry a #fragment) against
// the directory `base_dir` ("OEBPS/" or "") inside an archive; ".." and "."
// segments are folded. Returns "" when the result would leave the archive.
std::string ResolveArchivePath(std::string_view base_dir, std::string_view href);

// The directory part of an archive path including its trailing '/', or "".
std::string_view ArchiveDirName(std::string_view path);

}  // namespace sluice::formats
