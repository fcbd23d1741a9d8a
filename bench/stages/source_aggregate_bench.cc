// The stage ceilings the other two files do not cover (issue 15, BENCHMARKS.md
// "Stage ceilings"), each alone on one core:
//   - walk + read: SourceWalker over a folder of 2,000 files of ~12 KB (the
//     shape of regime (d)'s corpus), each file read whole: MB/s, files/s;
//   - parse + chunk per format: the registered parser of each text format
//     (text, markdown, html, jsonl) into the default Chunker, on ~1 MB of the
//     format: MB/s of input, chunks/s;
//   - the aggregator: JsonAggregator::Add of 20,000 ~2 KB chunks in sources
//     of 12, then Finish (every group file written): rows/s.
// The files live in a temp folder made once per process.
//
//   build-rel/bench/stages/bench_stages --benchmark_filter='Walk|Parse|Aggregate'
#include <benchmark/benchmark.h>
#include <fcntl.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <random>
#include <string>
#include <vector>

#include <fmt/format.h>

#include "sluice/aggregator.h"
#include "sluice/chunker.h"
#include "sluice/parser.h"
#include "sluice/sources.h"
#include "sluice/types.h"

namespace sluice {
namespace {

namespace fs = std::filesystem;

constexpr int kDims = 256;

const char* const kWords[] = {"gate",    "flow",   "valve",    "seal",    "sensor",  "level",
                              "bearing", "torque", "channel",  "pump",    "turbine", "operator",
                              "the",     "of",     "pressure", "install", "replace", "check"};

// Sentences of words, paragraphs of ~`paragraph` bytes separated by blank lines.
std::string Paragraphs(size_t bytes, size_t paragraph, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::uniform_int_distribution<size_t> pick(0, std::size(kWords) - 1);
  std::string text;
  size_t in_paragraph = 0;
  while (text.size() < bytes) {
    for (int w = 0; w < 14; ++w) {
      text += kWords[pick(rng)];
      text += ' ';
    }
    text.back() = '.';
    text += ' ';
    in_paragraph += 14 * 6;
    if (in_paragraph >= paragraph) {
      text += "\n\n";
      in_paragraph = 0;
    }
  }
  return text;
}

fs::path BenchDir() {
  static const fs::path dir = [] {
    fs::path d = fs::temp_directory_path() / fmt::format("sluice-bench-sources-{}", ::getpid());
    fs::remove_all(d);
    fs::create_directories(d / "corpus");
    for (int f = 0; f < 2000; ++f) {
      std::ofstream(d / "corpus" / fmt::format("doc-{:05}.txt", f)) << Paragraphs(12000, 1100, f);
    }
    const std::string body = Paragraphs(1 << 20, 1100, 99);
    std::ofstream(d / "one.txt") << body;
    {
      std::ofstream md(d / "one.md");
      md << "---\ntitle: Pump manual\n---\n";
      size_t section = 0;
      for (size_t at = 0; at < body.size(); at += 4000, ++section) {
        md << "\n## Section " << section << "\n\n" << body.substr(at, 4000);
      }
    }
    {
      std::ofstream html(d / "one.html");
      html << "<!DOCTYPE html><html><head><title>Pump manual</title></head><body>\n";
      size_t section = 0;
      for (size_t at = 0; at < body.size(); at += 1100, ++section) {
        if (section % 4 == 0) html << "<h2>Section " << section << "</h2>\n";
        html << "<p>" << body.substr(at, 1100) << "</p>\n";
      }
      html << "</body></html>\n";
    }
    {
      std::ofstream jsonl(d / "one.jsonl");
      size_t record = 0;
      for (size_t at = 0; at < body.size(); at += 6000, ++record) {
        std::string text = body.substr(at, 6000);
        for (char& c : text) {
          if (c == '\n') c = ' ';  // one line per record; no escapes needed
        }
        jsonl << "{\"id\":\"r" << record << "\",\"text\":\"" << text << "\"}\n";
      }
    }
    return d;
  }();
  return dir;
}

void BM_WalkRead(benchmark::State& state) {
  const fs::path root = BenchDir() / "corpus";
  std::vector<char> buffer(256 * 1024);
  uint64_t bytes = 0, files = 0;
  for (auto _ : state) {
    Result<SourceWalker> walker = SourceWalker::Open({root.string()}, WalkOptions{});
    if (!walker.ok()) {
      state.SkipWithError(walker.status().ToString().c_str());
      return;
    }
    while (std::optional<SourceFile> f = walker->Next()) {
      const int fd = ::open(f->path.c_str(), O_RDONLY | O_CLOEXEC);
      if (fd < 0) {
        state.SkipWithError("open failed");
        return;
      }
      for (ssize_t n; (n = ::read(fd, buffer.data(), buffer.size())) > 0;) {
        bytes += static_cast<uint64_t>(n);
      }
      ::close(fd);
      ++files;
    }
  }
  state.SetBytesProcessed(static_cast<int64_t>(bytes));
  state.counters["files/s"] =
      benchmark::Counter(static_cast<double>(files), benchmark::Counter::kIsRate);
}
BENCHMARK(BM_WalkRead)->Unit(benchmark::kMillisecond);

class NoRecordErrors final : public RecordErrorSink {
 public:
  void RecordFailed(const std::string&, const Status&) override { ++failed; }
  uint64_t failed = 0;
};

// One format: state.range(0) indexes kFormats.
const char* const kFormats[][2] = {
    {"text", "one.txt"}, {"markdown", "one.md"}, {"html", "one.html"}, {"jsonl", "one.jsonl"}};

void BM_ParseChunk(benchmark::State& state) {
  const auto& [format, name] = kFormats[state.range(0)];
  state.SetLabel(format);
  ParserRegistry registry;
  RegisterTextParsers(registry);
  RegisterDocumentParsers(registry);
  const Parser* parser = registry.FindByName(format);
  if (parser == nullptr) {
    state.SkipWithError("no such parser");
    return;
  }
  SourceFile file;
  file.path = (BenchDir() / name).string();
  file.relative_path = name;
  file.root_name = "bench";
  file.size_bytes = fs::file_size(file.path);
  uint64_t chunks = 0;
  for (auto _ : state) {
    Chunker chunker(ChunkerOptions{}, [&](Chunk&& c) {
      benchmark::DoNotOptimize(c.id.data());
      ++chunks;
      return Status::OK();
    });
    NoRecordErrors errors;
    ParseStats stats;
    Status s = parser->Parse(file, ParseLimits{}, chunker, errors, stats);
    if (!s.ok() || errors.failed > 0) {
      state.SkipWithError(s.ok() ? "a record failed" : s.ToString().c_str());
      return;
    }
  }
  state.SetBytesProcessed(static_cast<int64_t>(file.size_bytes * state.iterations()));
  state.counters["chunks/s"] =
      benchmark::Counter(static_cast<double>(chunks), benchmark::Counter::kIsRate);
}
BENCHMARK(BM_ParseChunk)->DenseRange(0, std::size(kFormats) - 1)->Unit(benchmark::kMillisecond);

// 20,000 chunks as the store stage hands them on: ~2 KB texts, sources of 12,
// one (domain, category) group, no vectors in the JSON (the default).
std::vector<EmbeddedChunk> AggregateRows() {
  std::vector<EmbeddedChunk> rows(20000);
  std::mt19937_64 rng(7);
  for (size_t i = 0; i < rows.size(); ++i) {
    Chunk& c = rows[i].chunk;
    c.source_id = fmt::format("corpus/doc-{:05}.txt", i / 12);
    c.file_id = c.source_id;
    c.ordinal = static_cast<uint32_t>(i % 12);
    c.text = Paragraphs(2000, 4000, i);
    c.id = fmt::format("{:016x}{:016x}", rng(), rng());
    c.byte_begin = c.ordinal * 2000;
    c.byte_end = c.byte_begin + c.text.size();
    c.domain = "corpus";
    c.category = "general";
    c.token_estimate = 500;
    rows[i].embedding.assign(kDims, 0.5f);
    rows[i].model = "mock";
  }
  return rows;
}

void BM_Aggregate(benchmark::State& state) {
  static const std::vector<EmbeddedChunk> rows = AggregateRows();
  int run = 0;
  for (auto _ : state) {
    state.PauseTiming();
    AggregatorOptions options;
    options.out_dir = (BenchDir() / fmt::format("aggregate-{}", run++)).string();
    Result<std::unique_ptr<Aggregator>> aggregator = OpenAggregator(options);
    if (!aggregator.ok()) {
      state.SkipWithError(aggregator.status().ToString().c_str());
      return;
    }
    state.ResumeTiming();
    for (const EmbeddedChunk& row : rows) {
      if (Status s = (*aggregator)->Add(row); !s.ok()) {
        state.SkipWithError(s.ToString().c_str());
        return;
      }
    }
    if (Status s = (*aggregator)->Finish(); !s.ok()) {
      state.SkipWithError(s.ToString().c_str());
      return;
    }
    state.PauseTiming();
    aggregator->reset();
    fs::remove_all(options.out_dir);
    state.ResumeTiming();
  }
  state.counters["rows/s"] = benchmark::Counter(static_cast<double>(rows.size()),
                                                benchmark::Counter::kIsIterationInvariantRate);
}
BENCHMARK(BM_Aggregate)->Iterations(3)->UseRealTime()->Unit(benchmark::kMillisecond);

// The folder goes when the process ends (benchmark's main returns normally).
struct RemoveBenchDir {
  ~RemoveBenchDir() {
    std::error_code ignored;
    fs::remove_all(fs::temp_directory_path() / fmt::format("sluice-bench-sources-{}", ::getpid()),
                   ignored);
  }
} remove_bench_dir;

}  // namespace
}  // namespace sluice
