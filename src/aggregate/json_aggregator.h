// The file aggregator behind OpenAggregator: one consolidated JSON document
// per (domain, category) under out_dir, with memory independent of the
// number of chunks (rendered chunks spool to disk; their index -- id, source,
// ordinal, spool offset -- lives in a scratch SQLite database beside the
// spool, behind a bounded page cache) and atomic rewrites (temp file, fsync,
// rename). Format, flush cadence and memory: docs/AGGREGATE_FORMAT.md.
//
// Exposed beyond include/sluice/aggregator.h for tests and diagnostics.
//
// Thread safety: one thread at a time (a cadence rewrite of a large group
// runs on a thread of its own that reads a snapshot of the index through a
// second connection; see AggregatorLimits::background_rewrite_bytes). Two aggregators must not
// share an out_dir at the same time (each has its own spool, but both would rewrite the same group
// files).
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <thread>
#include <unordered_map>
#include <vector>

#include "sluice/aggregator.h"

struct sqlite3;
struct sqlite3_stmt;

namespace simdjson::dom {
class element;
class parser;
}  // namespace simdjson::dom

namespace sluice {

struct AggregatorLimits {
  // Rendered chunk lines buffered for one group before they are appended to
  // its spool file. Default: 64 KiB.
  size_t group_buffer_bytes = 64 * 1024;
  // Rendered chunk lines buffered over all groups; past it every group's
  // buffer is appended to its spool. Default: 4 MiB.
  size_t total_buffer_bytes = 4 * 1024 * 1024;
  // Page cache of the chunk index (SQLite cache_size). The index itself is
  // on disk; this caps what of it stays in RAM. Default: 16 MiB (its
  // (group, id) index takes random keys; at 4 MiB a 132k-chunk run spent
  // most of the aggregator's time re-reading evicted leaves).
  size_t index_cache_bytes = 16 * 1024 * 1024;
  // Index rows per SQLite transaction (one per Add would cost an fsync-free
  // but still expensive commit each). Default: 4096.
  size_t index_batch_rows = 4096;
  // A cadence rewrite of a group whose spool holds at least this many bytes
  // runs on a background thread while Add goes on; smaller ones (a few ms)
  // run in Add. Streaming a large group file stopped the aggregator for up
  // to a second, long enough to fill every queue before it and leave the
  // embedding service idle. Finish's rewrites always run in Finish.
  // Default: 4 MiB.
  size_t background_rewrite_bytes = 4 * 1024 * 1024;
};

class JsonAggregator final : public Aggregator {
 public:
  // Creates out_dir (and parents), proves it writable with a probe file, and
  // creates this instance's spool folder out_dir/.spool/<pid>-<n>/ and its
  // index out_dir/.spool/<pid>-<n>.index (IOError when it cannot). Removes
  // what processes that no longer run left behind: probes, spools, indexes
  // and rewrite temp files (<group>.json.tmp.<pid>); those of running
  // processes, this one included, are left alone.
  static Result<std::unique_ptr<JsonAggregator>> Open(const AggregatorOptions& options,
                                                      const AggregatorLimits& limits = {});
  ~JsonAggregator() override;
  JsonAggregator(const JsonAggregator&) = delete;
  JsonAggregator& operator=(const JsonAggregator&) = delete;

  // Rejected (nothing added) when the chunk has no id or its metadata is not
  // a JSON object; IOError when the spool, the index or a group file cannot
  // be written; Corrupt when the group's existing file from an earlier run
  // cannot be parsed; InvalidArgument after Finish.
  Status Add(const EmbeddedChunk& chunk) override;
  // Rewrites every group file touched by this run, then removes the spool.
  Status Finish() override;
  // Distinct group files written at least once by this aggregator.
  size_t FilesWritten() const override { return files_written_; }
  // See Aggregator::Retain. Recreates the spool and index for its duration.
  Result<RetainStats> Retain(const RetentionPolicy& policy) override;

  // Diagnostics for tests.
  size_t BufferedBytes() const { return buffered_bytes_; }
  // Heap held by the chunk index: SQLite page cache, schema and prepared
  // statements of this aggregator's connection. Bounded by
  // AggregatorLimits::index_cache_bytes plus a small constant.
  size_t IndexMemoryBytes() const;
  // Everything this aggregator holds that could grow with the corpus:
  // buffered lines, the index's heap and the JSON parser's buffers (sized by
  // the largest metadata object or imported line; a whole-file import of an
  // earlier file in another layout gives its parser back when done).
  // Independent of the number of chunks. Not counted (its connection belongs
  // to the rewrite's thread meanwhile): while a background rewrite runs, its
  // reader's page cache, at most index_cache_bytes more, and its 1 MiB
  // write buffer.
  size_t HeldBytes() const;
  uint64_t Rewrites() const { return rewrites_; }  // consolidated files written, in total
  // Rewrites that ran on the background thread, finished or not.
  uint64_t BackgroundRewrites() const { return background_rewrites_; }
  // Tests only: called on the background thread before a rewrite starts
  // streaming, so a test can hold it there while it adds more chunks.
  void SetBackgroundRewriteHookForTest(std::function<void()> hook) {
    background_hook_ = std::move(hook);
  }
  // Tests only: waits until a running background rewrite has finished; its
  // outcome is still reported by the next Add or Finish.
  void WaitForBackgroundRewriteForTest() {
    if (background_ != nullptr && background_->thread.joinable()) background_->thread.join();
  }
  const std::string& SpoolDir() const { return spool_dir_; }
  // out_dir/.spool/<pid>-<n>.index: the chunk index (a sibling of SpoolDir).
  const std::string& IndexPath() const { return index_path_; }
  // out_dir/<SafeFileComponent(domain)>/<SafeFileComponent(category)>.json
  std::string GroupFilePath(std::string_view domain, std::string_view category) const;

 private:
  struct Group {
    int64_t index_id = 0;  // group key in the index; never reused
    std::string domain, category;
    std::string file_path, spool_path;
    std::string buffer;        // rendered lines not yet in the spool file
    uint64_t spool_bytes = 0;  // bytes already in the spool file
    uint64_t added = 0;        // Add calls for this group in this run
    uint64_t next_flush = 0;   // rewrite when added reaches this
    TimePoint last_write{};    // of this group's file by this run (with `written`)
    bool has_imports = false;  // chunks came from an earlier run's file
    bool dirty = false;
    bool written = false;
  };

  JsonAggregator(AggregatorOptions options, AggregatorLimits limits);
  Status OpenIndex();
  Status IndexError(std::string_view what) const;
  TimePoint Now() const {
    return (options_.clock != nullptr ? *options_.clock : SystemClock::Instance()).Now();
  }
  Result<Group*> GetGroup(const Chunk& chunk);
  Status ImportExisting(Group& g);
  // Imports a file in the layout this aggregator writes (one chunk per line)
  // holding one line at a time. Returns false (and imports nothing) when the
  // file has another layout or does not parse that way.
  Result<bool> ImportLines(Group& g);
  Status ImportWhole(Group& g);  // any valid layout; the file is held in RAM
  Status ImportChunk(Group& g, simdjson::dom::element chunk);
  Status CorruptExisting(const Group& g, std::string_view why) const;
  Status ClearGroup(Group& g);  // drops the group's index rows and spool
  Status AddLine(Group& g, std::string_view id, std::string_view source_id, uint32_t ordinal,
                 std::string_view line, bool imported);
  Status MarkSourceSeen(std::string_view source_id);
  // Rewrites group files this run did not touch that hold a source this run
  // added (to another group): see Finish. REQUIRES: the index is open.
  Status DropMovedSources();
  Status CommitBatch();
  Status Spill(Group& g);
  Status SpillAll();
  // What a rewrite reads: an index connection and its three statements.
  struct IndexReader {
    sqlite3* db = nullptr;
    sqlite3_stmt* count = nullptr;    // chunks a group file will hold
    sqlite3_stmt* sources = nullptr;  // their distinct sources, ascending
    sqlite3_stmt* chunks = nullptr;   // their spool spans, in document order
  };
  // What a rewrite writes: a copy, so a background rewrite shares nothing
  // with the Group that Add goes on changing.
  struct GroupFileSpec {
    int64_t index_id = 0;
    std::string domain, category, file_path, spool_path;
    bool has_spool = false;
  };
  static GroupFileSpec SpecOf(const Group& g);
  // Streams a group file from the index and the spool into place (temp file,
  // fsync, rename). `cancel` (may be null) stops it between chunks.
  Status RenderGroupFile(const GroupFileSpec& spec, const IndexReader& reader,
                         const std::atomic<bool>* cancel) const;
  Status WriteGroup(Group& g);  // here and now, through the main connection
  void NoteWritten(Group& g);
  // Starts g's rewrite on the background thread (REQUIRES: none running).
  Status StartBackgroundRewrite(Group& g);
  // Joins a finished background rewrite (or waits for a running one when
  // `wait`) and reports its outcome; OK when none is running.
  Status ReapBackgroundRewrite(bool wait);
  // Switches the index to WAL and opens snapshot_ (REQUIRES: no open
  // transaction on db_).
  Status OpenSnapshotReader();
  // Closes snapshot_ and switches the index back to no journal and an
  // exclusive lock (commits the open batch first).
  Status LeaveWal();
  void CloseSnapshotReader();
  // Retain for one group file; `path` is out_dir/<d>/<c>.json.
  Status RetainFile(const std::string& path, const RetentionPolicy& policy, RetainStats& stats);
  // Drops the not-kept chunks of one kCheckChunks source; adds to `dropped`.
  Status RetainChunksOf(Group& g, std::string_view source_id, const RetentionPolicy& policy,
                        uint64_t& dropped);
  Status StepDelete(sqlite3_stmt* stmt, int64_t group, std::string_view key, uint64_t& dropped);
  void RemoveSpool();
  void CloseIndex();
  void CancelBackgroundRewrite();  // stops and joins one, its outcome dropped

  AggregatorOptions options_;
  AggregatorLimits limits_;
  std::string spool_dir_;
  std::string index_path_;
  sqlite3* db_ = nullptr;
  sqlite3_stmt* insert_ = nullptr;       // INSERT OR REPLACE a chunk row (latest wins)
  sqlite3_stmt* seen_ = nullptr;         // record a source re-added in this run
  sqlite3_stmt* count_ = nullptr;        // chunks a group file will hold
  sqlite3_stmt* sources_ = nullptr;      // their distinct sources, ascending
  sqlite3_stmt* all_sources_ = nullptr;  // a group's sources, superseded ones too
  sqlite3_stmt* chunks_ = nullptr;       // their spool spans, in document order
  sqlite3_stmt* clear_chunks_ = nullptr;
  sqlite3_stmt* was_seen_ = nullptr;     // was a source added in this run
  sqlite3_stmt* drop_source_ = nullptr;  // Retain: every row of a source
  sqlite3_stmt* drop_chunk_ = nullptr;   // Retain: one chunk, by its whole key
  sqlite3_stmt* page_ids_ = nullptr;     // Retain: a source's ids after (ord, id), in order
  size_t batch_rows_ = 0;                // rows in the open transaction
  int64_t next_group_id_ = 0;
  std::unordered_map<std::string, std::unique_ptr<Group>> groups_;
  std::unique_ptr<simdjson::dom::parser> parser_;
  size_t buffered_bytes_ = 0;
  size_t files_written_ = 0;
  uint64_t rewrites_ = 0;
  bool finished_ = false;
  // A second, read-only connection to the index, open while a background
  // rewrite runs: it reads the snapshot taken when the rewrite started while
  // Add commits more rows through db_ (the index is in WAL mode meanwhile).
  IndexReader snapshot_;
  struct BackgroundRewrite {
    Group* group = nullptr;
    std::thread thread;
    std::atomic<bool> done{false};
    std::atomic<bool> cancel{false};
    Status status;  // written by the thread before `done`
  };
  std::unique_ptr<BackgroundRewrite> background_;
  uint64_t background_rewrites_ = 0;
  std::function<void()> background_hook_;
  std::string last_seen_source_;  // the source MarkSourceSeen recorded last
  bool any_seen_ = false;         // this run added a chunk
  std::string line_;              // scratch
};

}  // namespace sluice
