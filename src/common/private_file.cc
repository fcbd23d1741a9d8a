#include "common/private_file.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>

namespace sluice {

namespace {

Status ErrnoStatus(const std::string& what, int err) {
  std::string message = what + ": " + std::strerror(err);
  if (err == EACCES || err == EPERM || err == EROFS) return Status::PermissionDenied(message);
  return Status::IOError(message);
}

}  // namespace

bool CreatePrivateDirectories(const std::string& dir, std::error_code& ec) {
  namespace fs = std::filesystem;
  ec.clear();
  fs::path so_far;
  for (const fs::path& part : fs::path(dir)) {
    so_far /= part;
    if (part.empty() || part == "/" || part == "." || part == "..") continue;
    if (::mkdir(so_far.c_str(), kPrivateDirMode) == 0) continue;
    int err = errno;
    struct stat st {};
    if (err == EEXIST) {
      if (::stat(so_far.c_str(), &st) == 0 && S_ISDIR(st.st_mode)) continue;
      err = ENOTDIR;
    }
    ec.assign(err, std::generic_category());
    return false;
  }
  return true;
}

Result<int> OpenPrivateFileForAppend(const std::string& path) {
  const int fd = ::open(path.c_str(), O_WRONLY | O_APPEND | O_CREAT | O_NOFOLLOW | O_CLOEXEC,
                        kPrivateFileMode);
  if (fd < 0) return ErrnoStatus("cannot open '" + path + "'", errno);
  return fd;
}

Result<std::unique_ptr<AtomicFileWriter>> AtomicFileWriter::Create(const std::string& path) {
  if (path.empty()) return Status::InvalidArgument("output file name is empty");
  // An existing regular file keeps the mode its owner chose (narrowed or
  // widened); anything else gets the private default mkstemp gives.
  mode_t mode = kPrivateFileMode;
  struct stat st {};
  if (::lstat(path.c_str(), &st) == 0) {
    if (S_ISDIR(st.st_mode)) return Status::InvalidArgument("'" + path + "' is a folder");
    if (S_ISREG(st.st_mode)) mode = st.st_mode & 07777;
  }
  std::string temp = path + ".tmp." + std::to_string(::getpid()) + ".XXXXXX";
  const int fd = ::mkostemp(temp.data(), O_CLOEXEC);
  if (fd < 0) return ErrnoStatus("cannot create a temp file beside '" + path + "'", errno);
  if (mode != kPrivateFileMode && ::fchmod(fd, mode) != 0) {
    const int err = errno;
    ::close(fd);
    ::unlink(temp.c_str());
    return ErrnoStatus("cannot set the mode of '" + temp + "'", err);
  }
  return std::unique_ptr<AtomicFileWriter>(new AtomicFileWriter(path, std::move(temp), fd));
}

AtomicFileWriter::~AtomicFileWriter() {
  if (fd_ >= 0) ::close(fd_);
  if (!committed_) ::unlink(temp_path_.c_str());
}

Status AtomicFileWriter::Append(std::string_view data) {
  if (fd_ < 0) return Status::Internal("AtomicFileWriter::Append after Commit");
  while (!data.empty()) {
    const ssize_t n = ::write(fd_, data.data(), data.size());
    if (n < 0) {
      if (errno == EINTR) continue;
      return ErrnoStatus("cannot write '" + temp_path_ + "'", errno);
    }
    data.remove_prefix(static_cast<size_t>(n));
  }
  return Status::OK();
}

void AtomicFileWriter::StartWriteback() {
#ifdef __linux__
  // Offset 0, length 0: the whole file; pages already being written are
  // skipped. A failure here is not one for the file: Commit's fsync reports it.
  if (fd_ >= 0) (void)::sync_file_range(fd_, 0, 0, SYNC_FILE_RANGE_WRITE);
#endif
}

Status AtomicFileWriter::Commit() {
  if (fd_ < 0) return Status::Internal("AtomicFileWriter::Commit twice");
  const int fd = fd_;
  fd_ = -1;
  if (::fsync(fd) != 0) {
    const int err = errno;
    ::close(fd);
    return ErrnoStatus("cannot write '" + temp_path_ + "'", err);
  }
  if (::close(fd) != 0) return ErrnoStatus("cannot write '" + temp_path_ + "'", errno);
  if (::rename(temp_path_.c_str(), path_.c_str()) != 0) {
    return ErrnoStatus("cannot rename '" + temp_path_ + "' to '" + path_ + "'", errno);
  }
  committed_ = true;
  const std::filesystem::path parent = std::filesystem::path(path_).parent_path();
  SyncDirectory(parent.empty() ? "." : parent.string());
  return Status::OK();
}

Status WriteFileAtomically(const std::string& path, std::string_view content) {
  auto writer = AtomicFileWriter::Create(path);
  if (!writer.ok()) return writer.status();
  if (Status s = (*writer)->Append(content); !s.ok()) return s;
  return (*writer)->Commit();
}

void SyncDirectory(const std::string& dir) {
  const int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd >= 0) {
    ::fsync(fd);
    ::close(fd);
  }
}

}  // namespace sluice
