// Using sluice as a library: ingest a folder with the offline hash embedder
// into a SQLite store, with a progress and a completion callback, then
// search the store.
//
//   sluice_example CORPUS_DIR WORK_DIR [QUERY]
#include <cstdio>
#include <filesystem>
#include <string>
#include <vector>

#include "sluice/embed.h"
#include "sluice/pipeline.h"
#include "sluice/store.h"

int main(int argc, char** argv) {
  if (argc < 3) {
    std::fprintf(stderr, "usage: %s CORPUS_DIR WORK_DIR [QUERY]\n", argv[0]);
    return 2;
  }
  const std::string corpus = argv[1], work = argv[2];
  const std::string query = argc > 3 ? argv[3] : "how is a worn gate seal replaced";

  std::error_code ec;
  std::filesystem::create_directories(work, ec);  // the store's folder must exist

  sluice::IngestOptions options;
  options.inputs = {corpus};
  options.embedder = sluice::EmbedderKind::kHash;  // offline; no API key needed
  options.store_uri = "sqlite:" + work + "/example.db";
  options.aggregate.out_dir = work + "/out";
  options.progress = false;  // no line on stderr: the callback below reports
  options.progress_callback_interval = std::chrono::milliseconds(200);
  // Called on the pipeline's progress thread, and once more at the end.
  options.on_progress = [](const sluice::IngestProgress& p) {
    std::printf("progress: %llu sources, %llu chunks stored%s\n",
                static_cast<unsigned long long>(p.sources_done),
                static_cast<unsigned long long>(p.chunks_stored), p.final ? " (final)" : "");
  };
  // Called on this thread before Run() returns, failed run or not.
  options.on_complete = [](const sluice::IngestReport& report) {
    std::printf("complete: %s\n", report.status.ok() ? "ok" : report.status.ToString().c_str());
  };

  sluice::Pipeline pipeline(options);
  const sluice::IngestReport report = pipeline.Run();
  if (!report.status.ok()) {
    std::fprintf(stderr, "ingest failed: %s\n", report.status.ToString().c_str());
    return 1;
  }
  std::printf("stored %llu chunks\n",
              static_cast<unsigned long long>(sluice::Get(pipeline.metrics().chunks_stored)));

  sluice::StoreOptions store_options;
  store_options.read_only = true;
  auto store = sluice::OpenStore(options.store_uri, store_options);
  if (!store.ok()) {
    std::fprintf(stderr, "%s\n", store.status().ToString().c_str());
    return 1;
  }
  // The query is embedded the way the chunks were: the hash embedder.
  const std::vector<float> vector = sluice::HashEmbed(query, options.hash.dimensions);
  auto hits = (*store)->Search(vector, 3);
  if (!hits.ok()) {
    std::fprintf(stderr, "%s\n", hits.status().ToString().c_str());
    return 1;
  }
  for (const sluice::SearchHit& hit : *hits) {
    std::printf("hit %.3f %s #%u\n", hit.score, hit.source_id.c_str(), hit.ordinal);
  }
  return 0;
}
