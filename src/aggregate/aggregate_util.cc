// Helpers of the JSON aggregator (aggregate_util.h).
#include "aggregate/aggregate_util.h"

#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include <fmt/format.h>

namespace sluice::aggregate {

namespace fs = std::filesystem;

std::string Errno() { return std::strerror(errno); }

Status WriteAll(int fd, std::string_view data) {
  while (!data.empty()) {
    const ssize_t n = ::write(fd, data.data(), data.size());
    if (n < 0) {
      if (errno == EINTR) continue;
      return Status::IOError(Errno());
    }
    data.remove_prefix(static_cast<size_t>(n));
  }
  return Status::OK();
}

Result<size_t> PreadUpTo(int fd, char* out, size_t length, uint64_t offset) {
  size_t have = 0;
  while (have < length) {
    const ssize_t n = ::pread(fd, out + have, length - have, static_cast<off_t>(offset + have));
    if (n < 0) {
      if (errno == EINTR) continue;
      return Status::IOError(Errno());
    }
    if (n == 0) break;  // the end of the file
    have += static_cast<size_t>(n);
  }
  return have;
}

Status PreadAll(int fd, char* out, size_t length, uint64_t offset) {
  Result<size_t> got = PreadUpTo(fd, out, length, offset);
  if (!got.ok()) return got.status();
  if (*got < length) return Status::IOError("spool file shorter than its index");
  return Status::OK();
}

Status SpoolReader::Read(char* out, size_t length, uint64_t offset) {
  if (length == 0) return Status::OK();
  if (offset >= block_offset_ && offset - block_offset_ <= block_.size() &&
      length <= block_.size() - (offset - block_offset_)) {
    std::memcpy(out, block_.data() + (offset - block_offset_), length);
    block_used_ += length;
    return Status::OK();
  }
  // A miss: judge the block being replaced by the share of it used.
  if (!block_.empty()) {
    if (block_used_ * 2 >= block_.size()) {
      read_ahead_ = std::min(kMaxReadAhead, std::max(read_ahead_ * 2, kMinReadAhead));
    } else if (block_used_ * 4 < block_.size()) {
      read_ahead_ = read_ahead_ / 2 < kMinReadAhead ? 0 : read_ahead_ / 2;
    }
  }
  if (read_ahead_ == 0) {
    block_.clear();
    block_used_ = 0;
    ++reads_;
    return PreadAll(fd_, out, length, offset);
  }
  block_.resize(length + read_ahead_);
  ++reads_;
  Result<size_t> got = PreadUpTo(fd_, block_.data(), block_.size(), offset);
  if (!got.ok()) {
    block_.clear();
    return got.status();
  }
  const size_t have = *got;  // shorter at the end of the spool
  block_.resize(have);
  block_offset_ = offset;
  block_used_ = 0;
  if (have < length) {
    block_.clear();
    return Status::IOError("spool file shorter than its index");
  }
  std::memcpy(out, block_.data(), length);
  block_used_ = length;
  return Status::OK();
}

Status DirError(const std::string& what, const std::string& dir, const std::error_code& ec) {
  const std::string msg = fmt::format("{} '{}': {}", what, dir, ec.message());
  if (ec == std::errc::permission_denied || ec == std::errc::read_only_file_system ||
      ec == std::errc::operation_not_permitted) {
    return Status::PermissionDenied(msg);
  }
  return Status::IOError(msg);
}

// Calls `each` for every entry of every domain folder of `out_dir` (group
// files are out_dir/<d>/<c>.json; folders whose names start with '.', such
// as the spool, are not domains). Returns the first listing error.
Status ForEachDomainFolderEntry(const std::string& out_dir,
                                const std::function<void(const fs::directory_entry&)>& each) {
  std::error_code ec;
  for (auto domain = fs::directory_iterator(out_dir, ec); !ec && domain != fs::directory_iterator();
       domain.increment(ec)) {
    const std::string domain_name = domain->path().filename().string();
    std::error_code dir_ec;
    if (domain_name.empty() || domain_name[0] == '.' || !domain->is_directory(dir_ec)) continue;
    for (auto file = fs::directory_iterator(domain->path(), dir_ec);
         !dir_ec && file != fs::directory_iterator(); file.increment(dir_ec)) {
      each(*file);
    }
    if (dir_ec) return DirError("cannot list aggregate directory", domain->path().string(), dir_ec);
  }
  if (ec) return DirError("cannot list output directory", out_dir, ec);
  return Status::OK();
}

// ("a", "bc") differ.
std::string GroupKey(std::string_view domain, std::string_view category) {
  return fmt::format("{}:{}{}", domain.size(), domain, category);
}

}  // namespace sluice::aggregate
