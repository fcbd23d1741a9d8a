// `sluice verify` and `sluice dead-letter list|retry` (docs/RESUME.md).
#include "cli/resume_commands.h"

#include <pthread.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
// GCC 12 reports -Wmaybe-uninitialized inside libstdc++'s std::regex
// compiler at -O1 (the sanitizer builds): a false positive in the library's
// std::function state, not in this file, so it is silenced for this file only.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif
#include <regex>
#include <set>
#include <unordered_map>
#include <unordered_set>

#include <fmt/format.h>
#include <simdjson.h>
#include <spdlog/spdlog.h>

#include "cli/commands.h"
#include "common/json_canonical.h"
#include "common/private_file.h"
#include "pipeline/rebuild_aggregates.h"
#include "sluice/sources.h"

namespace sluice::cli {

namespace {

// The file a "source" dead letter names, as its path relative to its root: a
// file's source_id is that path; a JSONL record's is "<path>#<id>" or
// "<path>:<line>". The longest such prefix that `path` ends with wins, so a
// '#' or ':' in a file name is kept.
std::string FileIdOfFailedSource(const std::string& source_id, const std::string& path) {
  for (size_t end = source_id.size(); end > 0; --end) {
    if (end < source_id.size() && source_id[end] != '#' && source_id[end] != ':') continue;
    const std::string_view rel(source_id.data(), end);
    if (path == rel || (path.size() > rel.size() && path.ends_with(rel) &&
                        path[path.size() - rel.size() - 1] == '/')) {
      return std::string(rel);
    }
  }
  return source_id;
}

}  // namespace

Result<std::vector<DeadLetterEntry>> ReadDeadLetterFile(const std::string& path) {
  std::vector<DeadLetterEntry> entries;
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    struct stat st {};
    if (::stat(path.c_str(), &st) != 0) return entries;  // no file: nothing dead-lettered
    return Status::IOError("cannot read dead-letter file '" + path + "'");
  }
  simdjson::dom::parser parser;
  std::string line;
  size_t line_number = 0;
  while (std::getline(in, line)) {
    ++line_number;
    if (line.empty()) continue;
    DeadLetterEntry e;
    e.line = line;
    simdjson::dom::element doc;
    if (parser.parse(line).get(doc)) {
      return Status::Corrupt(fmt::format("{}:{}: not a JSON object", path, line_number));
    }
    std::string_view v;
    if (!doc["kind"].get_string().get(v)) e.kind = v;
    if (!doc["reason"].get_string().get(v)) e.reason = v;
    if (!doc["message"].get_string().get(v)) e.message = v;
    if (!doc["source_id"].get_string().get(v)) e.source_id = v;
    if (!doc["path"].get_string().get(v)) e.path = v;
    if (e.kind == "chunk") {
      simdjson::dom::element c;
      if (doc["chunk"].get(c)) {
        return Status::Corrupt(
            fmt::format("{}:{}: chunk entry without \"chunk\"", path, line_number));
      }
      uint64_t n = 0;
      if (!c["id"].get_string().get(v)) e.chunk.id = v;
      if (!c["source_id"].get_string().get(v)) e.chunk.source_id = v;
      if (!c["file_id"].get_string().get(v)) e.chunk.file_id = v;
      if (!c["ordinal"].get_uint64().get(n)) e.chunk.ordinal = static_cast<uint32_t>(n);
      if (!c["byte_begin"].get_uint64().get(n)) e.chunk.byte_begin = n;
      if (!c["byte_end"].get_uint64().get(n)) e.chunk.byte_end = n;
      if (!c["domain"].get_string().get(v)) e.chunk.domain = v;
      if (!c["category"].get_string().get(v)) e.chunk.category = v;
      if (!c["token_estimate"].get_uint64().get(n))
        e.chunk.token_estimate = static_cast<uint32_t>(n);
      if (!c["text"].get_string().get(v)) e.chunk.text = v;
      simdjson::dom::element meta;
      if (!c["metadata"].get(meta)) {
        e.chunk.metadata_json = simdjson::minify(meta);
        if (auto canonical = CanonicalJson(e.chunk.metadata_json); canonical.ok()) {
          e.chunk.metadata_json = std::move(*canonical);
        }
      }
      if (e.chunk.id.empty()) {
        return Status::Corrupt(fmt::format("{}:{}: chunk without an id", path, line_number));
      }
    }
    entries.push_back(std::move(e));
  }
  return entries;
}

int RunDeadLetterListCommand(const DeadLetterArgs& args) {
  auto entries = ReadDeadLetterFile(args.dead_letter_path);
  if (!entries.ok()) {
    spdlog::error("{}", entries.status().message());
    return 1;
  }
  if (entries->empty()) {
    std::printf("no dead letters in %s\n", args.dead_letter_path.c_str());
    return 0;
  }
  // reason -> kind -> (count, one example message)
  std::map<std::string, std::map<std::string, std::pair<uint64_t, std::string>>> groups;
  for (const DeadLetterEntry& e : *entries) {
    auto& g = groups[e.reason][e.kind];
    if (g.first++ == 0) g.second = e.message;
  }
  std::printf("%zu dead letters in %s\n", entries->size(), args.dead_letter_path.c_str());
  for (const auto& [reason, kinds] : groups) {
    for (const auto& [kind, g] : kinds) {
      std::string example = g.second.substr(0, 160);
      std::printf("  %-20s %6llu %s%s  e.g. %s\n", reason.c_str(),
                  static_cast<unsigned long long>(g.first), kind.c_str(), g.first == 1 ? "" : "s",
                  example.c_str());
    }
  }
  std::printf(
      "retry with: sluice dead-letter retry --dead-letter %s [--reason PATTERN] "
      "[the ingest's embedder, store and chunking flags]\n",
      args.dead_letter_path.c_str());
  return 0;
}

int RunDeadLetterRetryCommand(const DeadLetterArgs& args, IngestOptions options) {
  const std::string path = options.dead_letter_path;
  auto entries = ReadDeadLetterFile(path);
  if (!entries.ok()) {
    spdlog::error("{}", entries.status().message());
    return 1;
  }
  std::optional<std::regex> pattern;
  if (!args.reason_pattern.empty()) {
    try {
      pattern.emplace(args.reason_pattern, std::regex::ECMAScript | std::regex::icase);
    } catch (const std::regex_error& e) {
      spdlog::error("--reason '{}' is not a valid regular expression: {}", args.reason_pattern,
                    e.what());
      return 2;
    }
  }
  auto selected = [&](const DeadLetterEntry& e) {
    return !pattern || std::regex_search(e.reason, *pattern) ||
           std::regex_search(e.message, *pattern);
  };
  options.inputs.clear();
  options.replay_chunks.clear();
  options.replay_files.clear();
  std::set<std::string> chunk_ids, file_ids;
  for (const DeadLetterEntry& e : *entries) {
    if (!selected(e)) continue;
    if (e.kind == "chunk") {
      if (chunk_ids.insert(e.chunk.id).second) options.replay_chunks.push_back(e.chunk);
    } else if (e.kind == "source" && !e.path.empty() && e.path != "-") {
      struct stat st {};
      if (::stat(e.path.c_str(), &st) != 0 || !S_ISREG(st.st_mode)) continue;  // kept as is
      const std::string file_id = FileIdOfFailedSource(e.source_id, e.path);
      if (!file_ids.insert(file_id).second) continue;
      SourceFile f;
      f.path = e.path;
      f.relative_path = file_id;
      const auto slash = file_id.find('/');
      f.root_name = slash == std::string::npos ? "" : file_id.substr(0, slash);
      f.size_bytes = static_cast<uint64_t>(st.st_size);
      f.mtime_ns = static_cast<int64_t>(st.st_mtim.tv_sec) * 1000000000 + st.st_mtim.tv_nsec;
      options.replay_files.push_back(std::move(f));
    }
  }
  if (options.replay_chunks.empty() && options.replay_files.empty()) {
    std::printf("nothing to retry in %s%s\n", path.c_str(),
                pattern ? (" matching '" + args.reason_pattern + "'").c_str() : "");
    return 0;
  }
  std::printf("retrying %zu chunks and %zu sources from %s\n", options.replay_chunks.size(),
              options.replay_files.size(), path.c_str());
  std::fflush(stdout);
  // The retry's own failures go to a side file; the original is rewritten
  // (atomically) only after the run, without what got stored.
  const std::string retry_path = path + ".retry";
  std::error_code ec;
  std::filesystem::remove(retry_path, ec);
  options.dead_letter_path = retry_path;
  options.cleanup = CleanupMode::kIncremental;
  options.skip_unchanged = false;  // a dead-lettered source must be read again

  IngestOptions run_options = options;
  const std::vector<std::string> retried_chunk_ids(chunk_ids.begin(), chunk_ids.end());
  const int status = RunIngestCommand(std::move(run_options));

  auto again = ReadDeadLetterFile(retry_path);
  if (!again.ok()) {
    spdlog::error("{}", again.status().message());
    return 1;
  }
  std::unordered_map<std::string, const DeadLetterEntry*> failed_chunks;
  std::unordered_set<std::string> failed_sources;
  // An oversize chunk is stored as pieces with ids of their own (same source
  // and ordinal): it failed again if one of its pieces did.
  const auto piece_key = [](const Chunk& c) {
    return c.source_id + '\0' + std::to_string(c.ordinal);
  };
  std::unordered_map<std::string, const DeadLetterEntry*> failed_pieces;
  for (const DeadLetterEntry& e : *again) {
    if (e.kind == "chunk") {
      failed_chunks.emplace(e.chunk.id, &e);
      failed_pieces.emplace(piece_key(e.chunk), &e);
    }
    if (e.kind == "source") failed_sources.insert(e.source_id);
  }
  // A run that ended (0, or 3: something failed) stored or dead-lettered
  // every chunk it was given; one stopped or failed may have abandoned some.
  const bool run_completed = status == 0 || status == 3;
  // Which retried chunks are in the store now.
  std::unordered_set<std::string> stored;
  {
    StoreOptions read_only = options.store;
    read_only.read_only = true;
    read_only.reembed = false;
    auto store = OpenStore(options.store_uri, read_only);
    if (!store.ok()) {
      spdlog::error("{}", store.status().message());
      return 1;
    }
    auto found = (*store)->ReadChunks(retried_chunk_ids);
    if (!found.ok()) {
      spdlog::error("{}", found.status().message());
      return 1;
    }
    for (const EmbeddedChunk& c : *found) stored.insert(c.chunk.id);
  }
  std::string rewritten;
  uint64_t removed = 0, kept = 0, still_failing = 0;
  std::unordered_set<std::string> written;
  for (const DeadLetterEntry& e : *entries) {
    bool keep = true;
    const std::string* line = &e.line;
    if (selected(e) && e.kind == "chunk") {
      const DeadLetterEntry* failed_again = nullptr;
      if (auto it = failed_chunks.find(e.chunk.id); it != failed_chunks.end()) {
        failed_again = it->second;
      } else if (auto piece = failed_pieces.find(piece_key(e.chunk));
                 piece != failed_pieces.end()) {
        failed_again = piece->second;
      }
      if (stored.count(e.chunk.id) || !written.insert(e.chunk.id).second) {
        keep = false;
      } else if (failed_again != nullptr) {
        line = &failed_again->line;  // failed again: the new reason
      } else if (run_completed) {
        keep = false;  // stored under other ids: split into pieces that all were
      }
    } else if (selected(e) && e.kind == "source" &&
               file_ids.count(FileIdOfFailedSource(e.source_id, e.path))) {
      // After a stop the source may have been abandoned, not read: kept.
      keep = !run_completed || failed_sources.count(e.source_id) > 0;
    }
    if (keep && selected(e)) ++still_failing;
    if (keep) {
      rewritten += *line;
      rewritten += '\n';
      ++kept;
    } else {
      ++removed;
    }
  }
  if (kept == 0) {
    std::filesystem::remove(path, ec);
  } else if (Status written = WriteFileAtomically(path, rewritten); !written.ok()) {
    spdlog::error("cannot replace {}: {}", path, written.message());
    return 1;
  }
  std::filesystem::remove(retry_path, ec);
  std::printf("dead-letter retry: %llu entries removed (stored), %llu kept in %s\n",
              static_cast<unsigned long long>(removed), static_cast<unsigned long long>(kept),
              path.c_str());
  if (status != 0) return status;
  return still_failing > 0 ? 3 : 0;
}

int RunAggregateCommand(const AggregateArgs& args) {
  StoreOptions store_options;
  store_options.table = args.table;
  store_options.read_only = true;  // a missing store is an error, never a new empty one
  auto store_or = OpenStore(args.store_uri, store_options);
  if (!store_or.ok()) {
    spdlog::error("{}", store_or.status().message());
    return 1;
  }
  Store& store = **store_or;
  Result<RebuildStats> stats = RebuildAggregates(store, args.aggregate);
  if (!stats.ok()) {
    spdlog::error("aggregate {} -> {}: {}", store.Describe(), args.aggregate.out_dir,
                  stats.status().message());
    return 1;
  }
  std::printf("aggregate %s -> %s: %llu chunks of %llu files in %llu group files",
              store.Describe().c_str(), args.aggregate.out_dir.c_str(),
              static_cast<unsigned long long>(stats->chunks),
              static_cast<unsigned long long>(stats->files),
              static_cast<unsigned long long>(stats->files_written));
  if (stats->chunks_dropped > 0) {
    std::printf("; %llu chunks the store no longer holds dropped",
                static_cast<unsigned long long>(stats->chunks_dropped));
  }
  std::printf("\n");
  if (stats->chunks_without_file > 0) {
    spdlog::warn(
        "{} stored chunks belong to no recorded file (records read from stdin, or files whose "
        "ingest has not completed) and are not in the files",
        stats->chunks_without_file);
  }
  return 0;
}

int RunVerifyCommand(const VerifyArgs& args) {
  StoreOptions store_options;
  store_options.table = args.table;
  store_options.read_only = true;  // a missing store is an error, never a new empty one
  auto store_or = OpenStore(args.store_uri, store_options);
  if (!store_or.ok()) {
    spdlog::error("{}", store_or.status().message());
    return 1;
  }
  Store& store = **store_or;
  constexpr size_t kLimit = 1000;
  std::vector<VerifyProblem> problems;
  if (Status s = store.Verify(problems, kLimit); !s.ok()) {
    spdlog::error("verify {}: {}", store.Describe(), s.message());
    return 1;
  }
  uint64_t files_checked = 0;
  if (!args.inputs.empty()) {
    auto fingerprints = store.LoadFingerprints();
    if (!fingerprints.ok()) {
      spdlog::error("{}", fingerprints.status().message());
      return 1;
    }
    std::unordered_map<std::string, const SourceFingerprint*> by_id;
    for (const SourceFingerprint& f : *fingerprints) by_id.emplace(f.file_id, &f);
    std::unordered_set<std::string> seen;
    for (const std::string& root : args.inputs) {
      auto walker =
          SourceWalker::Open({root}, WalkOptions{}, [&](const std::string& p, const Status& why) {
            problems.push_back({"unreadable", p, why.message()});
          });
      if (!walker.ok()) {
        spdlog::error("{}", walker.status().message());
        return 1;
      }
      while (auto file = walker->Next()) {
        ++files_checked;
        const std::string id = file->relative_path.empty() ? file->path : file->relative_path;
        seen.insert(id);
        auto it = by_id.find(id);
        if (it == by_id.end()) {
          problems.push_back({"not_ingested", id,
                              "no fingerprint: never ingested, interrupted, failed or "
                              "unsupported"});
          continue;
        }
        const SourceFingerprint& f = *it->second;
        if (f.size_bytes == file->size_bytes && f.mtime_ns == file->mtime_ns) continue;
        auto hash = HashFileContents(file->path);
        if (!hash.ok()) {
          problems.push_back({"unreadable", id, hash.status().message()});
        } else if (*hash != f.content_hash) {
          problems.push_back({"changed", id, "content differs from the stored fingerprint"});
        }
      }
      for (const SourceFingerprint& f : *fingerprints) {
        if (seen.count(f.file_id)) continue;
        std::string r = root;
        while (r.size() > 1 && r.back() == '/') r.pop_back();
        if (f.path == r || f.path.rfind(r + "/", 0) == 0) {
          problems.push_back({"deleted", f.file_id,
                              "the file is gone; `ingest --cleanup full` removes its chunks"});
        }
      }
    }
  }
  auto stats = store.Stats();
  for (const VerifyProblem& p : problems) {
    std::printf("%-16s %s: %s\n", p.kind.c_str(), p.subject.c_str(), p.detail.c_str());
  }
  std::printf(
      "verify %s: %llu chunks, %llu sources%s: %s\n", store.Describe().c_str(),
      static_cast<unsigned long long>(stats.ok() ? stats->chunks : 0),
      static_cast<unsigned long long>(stats.ok() ? stats->sources : 0),
      args.inputs.empty() ? "" : fmt::format(", {} input files checked", files_checked).c_str(),
      problems.empty() ? "OK" : fmt::format("{} problems", problems.size()).c_str());
  // What to do about each kind found, once.
  std::set<std::string> kinds;
  for (const VerifyProblem& p : problems) kinds.insert(p.kind);
  static const std::pair<const char*, const char*> kFixes[] = {
      {"missing_chunk",
       "missing chunks: `sluice dead-letter retry` stores the dead-lettered ones; for rows lost "
       "otherwise, `sluice ingest --reprocess-all` (unchanged texts come from the cache)"},
      {"count_mismatch",
       "miscounts or stale chunks: `sluice ingest --reprocess-all` recommits every file"},
      {"orphan_chunk", "orphans: chunks of no source; delete them, or ingest their source again"},
      {"wrong_dimensions", "wrong dimensions: these rows were not written by sluice's store"},
      {"changed", "changed or new files: run `sluice ingest` again"},
      {"not_ingested", "changed or new files: run `sluice ingest` again"},
      {"deleted", "deleted files: `sluice ingest --cleanup full` removes their chunks"}};
  std::set<std::string> said;
  for (const auto& [kind, fix] : kFixes) {
    if (kinds.count(kind) && said.insert(fix).second) std::printf("  hint: %s\n", fix);
  }
  return problems.empty() ? 0 : 1;
}

}  // namespace sluice::cli
