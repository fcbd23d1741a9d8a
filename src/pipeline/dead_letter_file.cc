#include "pipeline/dead_letter_file.h"

#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <fstream>

#include <simdjson.h>

#include "common/json_writer.h"
#include "common/private_file.h"
#include "common/utc_time.h"

namespace sluice {

void AppendChunkJson(const Chunk& c, std::string& out) {
  JsonWriter w(out);
  w.BeginObject();
  w.Key("id").String(c.id);
  w.Key("source_id").String(c.source_id);
  if (!c.file_id.empty()) w.Key("file_id").String(c.file_id);
  w.Key("ordinal").Uint(c.ordinal);
  w.Key("byte_begin").Uint(c.byte_begin);
  w.Key("byte_end").Uint(c.byte_end);
  w.Key("domain").String(c.domain);
  w.Key("category").String(c.category);
  w.Key("metadata").Raw(c.metadata_json.empty() ? "{}" : c.metadata_json);
  w.Key("token_estimate").Uint(c.token_estimate);
  w.Key("text").String(c.text);
  w.EndObject();
}

Result<std::unique_ptr<DeadLetterFile>> DeadLetterFile::Open(const std::string& path,
                                                             Metrics& metrics) {
  if (path.empty()) return Status::InvalidArgument("--dead-letter path is empty");
  // Nothing is created here (a clean run leaves no file and no folder); the
  // file or, when missing, its nearest existing folder must be writable.
  namespace fs = std::filesystem;
  struct stat st {};
  uint64_t earlier_bytes = 0;  // what earlier runs left in the file
  if (::stat(path.c_str(), &st) == 0) {
    if (S_ISDIR(st.st_mode)) {
      return Status::InvalidArgument("dead-letter path '" + path +
                                     "' is a folder: give a file name with --dead-letter");
    }
    if (::access(path.c_str(), W_OK) != 0) {
      return Status::PermissionDenied("cannot write dead-letter file '" + path +
                                      "': " + std::strerror(errno));
    }
    if (st.st_size == 0) ::unlink(path.c_str());
    earlier_bytes = static_cast<uint64_t>(st.st_size);
  } else {
    fs::path folder = fs::path(path).parent_path();
    while (!folder.empty() && ::stat(folder.c_str(), &st) != 0) folder = folder.parent_path();
    const std::string existing = folder.empty() ? "." : folder.string();
    if (::stat(existing.c_str(), &st) != 0 || !S_ISDIR(st.st_mode)) {
      return Status::InvalidArgument("cannot create dead-letter file '" + path + "': '" + existing +
                                     "' is not a folder");
    }
    if (::access(existing.c_str(), W_OK | X_OK) != 0) {
      return Status::PermissionDenied("cannot create dead-letter file '" + path + "': '" +
                                      existing + "' is not writable");
    }
  }
  return std::unique_ptr<DeadLetterFile>(new DeadLetterFile(path, metrics, earlier_bytes));
}

DeadLetterFile::~DeadLetterFile() { Close(); }

void DeadLetterFile::AppendLine(const std::string& line, const Status& why) {
  MutexLock lock(mu_);
  ++count_;
  ++reasons_[StatusCodeName(why.code())];
  if (file_ == nullptr && write_error_.ok()) {
    // Created on the first item, private (it holds document text).
    const std::filesystem::path parent = std::filesystem::path(path_).parent_path();
    std::error_code ec;
    Result<int> fd = CreatePrivateDirectories(parent.string(), ec)
                         ? OpenPrivateFileForAppend(path_)
                         : Result<int>(Status::IOError("cannot create folder '" + parent.string() +
                                                       "': " + ec.message()));
    if (fd.ok()) file_ = ::fdopen(*fd, "a");
    if (!fd.ok()) {
      write_error_ = fd.status().WithContext("dead-letter file");
    } else if (file_ == nullptr) {
      ::close(*fd);
      write_error_ =
          Status::IOError("cannot open dead-letter file '" + path_ + "': " + std::strerror(errno));
    }
  }
  // Flushed per line (dead letters are rare): the file may be fingerprinted
  // right after, and a kill -9 must not lose the line (docs/RESUME.md).
  if (file_ != nullptr &&
      (std::fwrite(line.data(), 1, line.size(), file_) != line.size() || std::fflush(file_) != 0)) {
    write_error_ = Status::IOError("write to dead-letter file '" + path_ +
                                   "' failed: " + std::strerror(errno));
  }
}

void DeadLetterFile::ChunkFailed(const Chunk& chunk, const Status& why) {
  std::string line;
  JsonWriter w(line);
  w.BeginObject();
  w.Key("kind").String("chunk");
  w.Key("reason").String(StatusCodeName(why.code()));
  w.Key("message").String(why.message());
  w.Key("source_id").String(chunk.source_id);
  w.Key("time").String(UtcNowIso8601());
  w.Key("chunk");
  AppendChunkJson(chunk, line);
  w.EndObject();
  line.push_back('\n');
  Add(metrics_.chunks_dead_lettered);
  AppendLine(line, why);
}

void DeadLetterFile::SourceFailed(const std::string& source_id, const std::string& path,
                                  const Status& why) {
  std::string line;
  JsonWriter w(line);
  w.BeginObject();
  w.Key("kind").String("source");
  w.Key("reason").String(StatusCodeName(why.code()));
  w.Key("message").String(why.message());
  w.Key("source_id").String(source_id);
  w.Key("path").String(path);
  w.Key("time").String(UtcNowIso8601());
  w.EndObject();
  line.push_back('\n');
  Add(metrics_.sources_failed);
  AppendLine(line, why);
}

Status DeadLetterFile::Close() {
  MutexLock lock(mu_);
  if (file_ != nullptr) {
    if (std::fflush(file_) != 0 || ::fsync(fileno(file_)) != 0) {
      if (write_error_.ok()) {
        write_error_ = Status::IOError("flush of dead-letter file '" + path_ + "' failed");
      }
    }
    std::fclose(file_);
    file_ = nullptr;
  }
  return write_error_;
}

Result<uint64_t> DeadLetterFile::DropEarlierEntriesOf(
    const std::unordered_set<std::string>& completed) {
  if (earlier_bytes_ == 0 || completed.empty()) return uint64_t{0};
  std::ifstream in(path_, std::ios::binary);
  if (!in) return uint64_t{0};  // removed meanwhile: nothing to drop
  const std::string tmp = path_ + ".tmp";
  std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
  if (!out) return Status::IOError("cannot write '" + tmp + "'");
  simdjson::dom::parser parser;
  std::string line;
  uint64_t offset = 0, dropped = 0, kept = 0;
  while (std::getline(in, line)) {
    const bool earlier = offset < earlier_bytes_;
    offset += line.size() + 1;
    bool drop = false;
    simdjson::dom::element entry;
    if (earlier && !parser.parse(line).get(entry)) {
      // An absent field stays empty (and matches nothing).
      const auto field = [](simdjson::simdjson_result<simdjson::dom::element> value) {
        std::string_view text;
        if (value.get_string().get(text) != simdjson::SUCCESS) return std::string_view();
        return text;
      };
      const std::string_view kind = field(entry["kind"]);
      const std::string_view source_id = field(entry["source_id"]);
      const std::string_view path = field(entry["path"]);
      const std::string_view file_id = field(entry["chunk"]["file_id"]);
      if (kind == "chunk") {
        drop = !file_id.empty() && completed.count(std::string(file_id)) > 0;
      } else if (kind == "source") {
        // A whole-file failure (source id = file id) or a bad record of it.
        drop = completed.count(std::string(source_id)) > 0 ||
               (!path.empty() && completed.count(std::string(path)) > 0);
      }
    }
    if (drop) {
      ++dropped;
      continue;
    }
    out << line << '\n';
    ++kept;
  }
  out.close();
  std::error_code ec;
  if (dropped == 0) {
    std::filesystem::remove(tmp, ec);
    return uint64_t{0};
  }
  if (!out.good()) return Status::IOError("write to '" + tmp + "' failed");
  if (kept == 0) {
    std::filesystem::remove(path_, ec);
    std::filesystem::remove(tmp, ec);
  } else {
    std::filesystem::rename(tmp, path_, ec);
    if (ec) return Status::IOError("cannot replace '" + path_ + "': " + ec.message());
  }
  return dropped;
}

std::map<std::string, uint64_t> DeadLetterFile::ReasonCounts() const {
  MutexLock lock(mu_);
  return reasons_;
}

uint64_t DeadLetterFile::Count() const {
  MutexLock lock(mu_);
  return count_;
}

}  // namespace sluice
