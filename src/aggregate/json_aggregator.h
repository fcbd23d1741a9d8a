// The file aggregator behind OpenAggregator: one consolidated JSON document
// per (domain, category) under out_dir, with bounded memory (chunks spool to
// disk; only a small index entry per chunk stays in RAM) and atomic rewrites
// (temp file, fsync, rename). Format and flush cadence:
// docs/AGGREGATE_FORMAT.md.
//
// Exposed beyond include/sluice/aggregator.h for tests and diagnostics.
//
// Thread safety: one thread at a time. Two aggregators must not share an
// out_dir at the same time (each has its own spool, but both would rewrite
// the same group files).
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "sluice/aggregator.h"

namespace simdjson::dom {
class parser;
}

namespace sluice {

struct AggregatorLimits {
  // Rendered chunk lines buffered for one group before they are appended to
  // its spool file. Default: 64 KiB.
  size_t group_buffer_bytes = 64 * 1024;
  // Rendered chunk lines buffered over all groups; past it every group's
  // buffer is appended to its spool. Default: 4 MiB.
  size_t total_buffer_bytes = 4 * 1024 * 1024;
};

class JsonAggregator final : public Aggregator {
 public:
  // Creates out_dir (and parents), proves it writable with a probe file, and
  // creates this instance's spool folder out_dir/.spool/<pid>-<n>/.
  static Result<std::unique_ptr<JsonAggregator>> Open(const AggregatorOptions& options,
                                                      const AggregatorLimits& limits = {});
  ~JsonAggregator() override;
  JsonAggregator(const JsonAggregator&) = delete;
  JsonAggregator& operator=(const JsonAggregator&) = delete;

  // Rejected (nothing added) when the chunk has no id or its metadata is not
  // a JSON object; IOError when the spool or a group file cannot be written;
  // Corrupt when the group's existing file from an earlier run cannot be
  // parsed; InvalidArgument after Finish.
  Status Add(const EmbeddedChunk& chunk) override;
  // Rewrites every group file touched by this run, then removes the spool.
  Status Finish() override;
  // Distinct group files written at least once by this aggregator.
  size_t FilesWritten() const override { return files_written_; }

  // Diagnostics for tests.
  size_t BufferedBytes() const { return buffered_bytes_; }
  uint64_t Rewrites() const { return rewrites_; }  // consolidated files written, in total
  const std::string& SpoolDir() const { return spool_dir_; }
  // out_dir/<SafeFileComponent(domain)>/<SafeFileComponent(category)>.json
  std::string GroupFilePath(std::string_view domain, std::string_view category) const;

 private:
  struct Entry {
    const std::string* id = nullptr;  // key in Group::by_id (stable)
    uint32_t source = 0;              // index in Group::sources
    uint32_t ordinal = 0;
    uint64_t offset = 0;    // in the spool (file bytes, then the buffer)
    uint32_t length = 0;    // of the rendered object, without the newline
    bool imported = false;  // from the group file of an earlier run
  };
  struct Source {
    std::string id;
    bool seen_this_run = false;  // its imported chunks are superseded
  };
  struct Group {
    std::string domain, category;
    std::string file_path, spool_path;
    std::string buffer;        // rendered lines not yet in the spool file
    uint64_t spool_bytes = 0;  // bytes already in the spool file
    std::vector<Entry> entries;
    std::unordered_map<std::string, size_t> by_id;  // chunk id -> entries index
    std::vector<Source> sources;
    std::unordered_map<std::string, uint32_t> source_index;
    uint64_t added = 0;       // Add calls for this group in this run
    uint64_t next_flush = 0;  // rewrite when added reaches this
    bool dirty = false;
    bool written = false;
  };

  JsonAggregator(AggregatorOptions options, AggregatorLimits limits);
  Result<Group*> GetGroup(const Chunk& chunk);
  Status ImportExisting(Group& g);
  void AddLine(Group& g, std::string_view id, std::string_view source_id, uint32_t ordinal,
               std::string_view line, bool imported);
  Status Spill(Group& g);
  Status SpillAll();
  Status WriteGroup(Group& g);
  void RemoveSpool();

  AggregatorOptions options_;
  AggregatorLimits limits_;
  std::string spool_dir_;
  std::unordered_map<std::string, std::unique_ptr<Group>> groups_;
  std::unique_ptr<simdjson::dom::parser> parser_;
  size_t buffered_bytes_ = 0;
  size_t files_written_ = 0;
  uint64_t rewrites_ = 0;
  bool finished_ = false;
  std::string line_;  // scratch
};

}  // namespace sluice
