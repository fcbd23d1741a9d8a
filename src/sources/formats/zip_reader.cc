#include "sources/formats/zip_reader.h"

#include <zip.h>

#include <fmt/format.h>

namespace sluice::formats {

namespace {

// The Status for an archive libzip could not open, from its error code.
Status OpenError(const std::string& path, int error_code) {
  zip_error_t error;
  zip_error_init_with_code(&error, error_code);
  const std::string reason = zip_error_strerror(&error);
  zip_error_fini(&error);
  if (error_code == ZIP_ER_NOENT) return Status::NotFound(path + ": no such file");
  if (error_code == ZIP_ER_OPEN || error_code == ZIP_ER_READ) {
    return Status::IOError(fmt::format("{}: {}", path, reason));
  }
  return Status::Corrupt(fmt::format("{}: not a readable zip archive: {}", path, reason));
}

}  // namespace

Result<std::unique_ptr<ZipReader>> ZipReader::Opened(const std::string& path,
                                                     const ParseLimits& limits, zip_t* archive) {
  // libzip opens a 0-byte file as an empty archive; for a document that is
  // as broken as a truncated one.
  if (zip_get_num_entries(archive, 0) <= 0) {
    zip_discard(archive);
    return Status::Corrupt(path + ": empty zip archive");
  }
  return std::unique_ptr<ZipReader>(new ZipReader(path, limits, archive));
}

Result<std::unique_ptr<ZipReader>> ZipReader::Open(const std::string& path,
                                                   const ParseLimits& limits) {
  int error_code = 0;
  zip_t* archive = zip_open(path.c_str(), ZIP_RDONLY, &error_code);
  if (archive == nullptr) return OpenError(path, error_code);
  return Opened(path, limits, archive);
}

Result<std::unique_ptr<ZipReader>> ZipReader::Open(const SourceFile& file,
                                                   const ParseLimits& limits) {
  if (!file.contents) return Open(file.path, limits);
  if (file.contents->empty()) return Status::Corrupt(file.path + ": empty zip archive");
  zip_error_t error;
  zip_error_init(&error);
  zip_source_t* source =
      zip_source_buffer_create(file.contents->data(), file.contents->size(), 0, &error);
  zip_t* archive = source == nullptr ? nullptr : zip_open_from_source(source, ZIP_RDONLY, &error);
  const int error_code = zip_error_code_zip(&error);
  zip_error_fini(&error);
  if (archive == nullptr) {
    if (source != nullptr) zip_source_free(source);  // not taken by a failed open
    return OpenError(file.path, error_code);
  }
  return Opened(file.path, limits, archive);
}

ZipReader::~ZipReader() { zip_discard(archive_); }

bool ZipReader::Has(const std::string& name) const {
  return zip_name_locate(archive_, name.c_str(), 0) >= 0;
}

std::string ZipReader::FirstMemberName() const {
  if (zip_get_num_entries(archive_, 0) <= 0) return std::string();
  const char* name = zip_get_name(archive_, 0, 0);
  return name == nullptr ? std::string() : std::string(name);
}

Result<std::string> ZipReader::Read(const std::string& name) {
  const zip_int64_t index = zip_name_locate(archive_, name.c_str(), 0);
  if (index < 0) return Status::NotFound(fmt::format("{}: no member {}", path_, name));
  zip_stat_t st;
  zip_stat_init(&st);
  if (zip_stat_index(archive_, static_cast<zip_uint64_t>(index), 0, &st) != 0 ||
      (st.valid & ZIP_STAT_SIZE) == 0) {
    return Status::Corrupt(fmt::format("{}: cannot stat member {}", path_, name));
  }
  const uint64_t declared = st.size;
  const uint64_t remaining = limits_.max_decompressed_bytes - decompressed_bytes_;
  if (declared > remaining) {
    return Status::InvalidArgument(fmt::format(
        "{}: member {} declares {} bytes, beyond max_decompressed_bytes ({}; {} already read)",
        path_, name, declared, limits_.max_decompressed_bytes, decompressed_bytes_));
  }
  if (declared > kRatioCheckFloorBytes && (st.valid & ZIP_STAT_COMP_SIZE) != 0) {
    const double ratio = st.comp_size == 0
                             ? 1e300
                             : static_cast<double>(declared) / static_cast<double>(st.comp_size);
    if (ratio > limits_.max_compression_ratio) {
      return Status::InvalidArgument(
          fmt::format("{}: member {} expands {:.0f}x, beyond max_compression_ratio ({:.0f})", path_,
                      name, ratio, limits_.max_compression_ratio));
    }
  }
  zip_file_t* member = zip_fopen_index(archive_, static_cast<zip_uint64_t>(index), 0);
  if (member == nullptr) {
    return Status::Corrupt(
        fmt::format("{}: cannot open member {}: {}", path_, name, zip_strerror(archive_)));
  }
  std::string data;
  data.reserve(static_cast<size_t>(declared));
  char buf[64 * 1024];
  Status status;
  for (;;) {
    const zip_int64_t n = zip_fread(member, buf, sizeof(buf));
    if (n < 0) {
      status = Status::Corrupt(fmt::format("{}: member {}: {}", path_, name,
                                           zip_error_strerror(zip_file_get_error(member))));
      break;
    }
    if (n == 0) break;
    data.append(buf, static_cast<size_t>(n));
    if (data.size() > declared || data.size() > remaining) {
      status = Status::Corrupt(fmt::format(
          "{}: member {} inflates past its declared size of {} bytes", path_, name, declared));
      break;
    }
  }
  zip_fclose(member);
  decompressed_bytes_ += data.size();
  if (!status.ok()) return status;
  return data;
}

}  // namespace sluice::formats
