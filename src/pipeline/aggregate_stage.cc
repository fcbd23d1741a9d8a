#include "pipeline/aggregate_stage.h"

#include <vector>

namespace sluice {

AggregateStage::AggregateStage(RunContext& run, Aggregator& aggregator,
                               BoundedQueue<EmbeddedChunk>& in, SharedReadStore& read_store,
                               bool replay)
    : run_(run), aggregator_(aggregator), in_(in), read_store_(read_store), replay_(replay) {}

void AggregateStage::Run() {
  StageMetrics& metrics = run_.metrics().aggregator;
  bool failed = false;
  while (auto item = in_.Pop()) {
    if (failed) continue;  // keep draining so the store stage never blocks
    Add(metrics.items_in);
    BusyTimer busy(run_.clock(), metrics);
    if (Status s = aggregator_.Add(*item); !s.ok()) {
      failed = true;
      failed_ = true;
      Add(metrics.errors);
      run_.Fail(s.WithContext("aggregator"));
      continue;
    }
    Add(metrics.items_out);
  }
  if (!failed) {
    BusyTimer busy(run_.clock(), metrics);
    if (Status s = aggregator_.Finish(); !s.ok()) {
      failed_ = true;
      Add(metrics.errors);
      run_.Fail(s.WithContext("aggregator"));
    }
  }
  Add(run_.metrics().aggregate_files_written, aggregator_.FilesWritten());
}

void AggregateStage::ReplayFile(const std::string& file_id) {
  if (!replay_) return;
  Result<std::vector<EmbeddedChunk>> chunks = read_store_.With(
      [&](Store& store) -> Result<std::vector<EmbeddedChunk>> {
        auto ids = store.FileChunkIds(file_id);
        if (!ids.ok()) return ids.status();
        return store.ReadChunks(*ids);
      },
      Result<std::vector<EmbeddedChunk>>(std::vector<EmbeddedChunk>{}));
  if (!chunks.ok()) {
    run_.Fail(chunks.status().WithContext("aggregate replay"));
    return;
  }
  for (EmbeddedChunk& c : *chunks) in_.Push(std::move(c));
}

}  // namespace sluice
