#include "pipeline/source_enumerator.h"

namespace sluice {

Result<std::unique_ptr<SourceEnumerator>> SourceEnumerator::Open(const IngestOptions& options) {
  auto e = std::make_unique<SourceEnumerator>();
  e->walk_options_.include_globs = options.include_globs;
  e->walk_options_.exclude_globs = options.exclude_globs;
  int stdin_inputs = 0;
  for (const std::string& input : options.inputs) {
    if (input == kStdinPath) {
      if (++stdin_inputs > 1) return Status::InvalidArgument("'-' (stdin) given more than once");
      e->inputs_.push_back({true, input});
      continue;
    }
    // Before anything runs: a missing root, a FIFO or a device fails the run
    // (a root the user named is never skipped silently).
    if (Status s = CheckInputRoot(input); !s.ok()) return s;
    e->inputs_.push_back({false, input});
  }
  return e;
}

Status SourceEnumerator::Run(BoundedQueue<SourceFile>& out, const std::atomic<bool>& stopping,
                             const WalkErrorFn& on_error) {
  for (const Input& input : inputs_) {
    if (stopping) return Status::OK();
    if (input.is_stdin) {
      SourceFile file;
      file.path = kStdinPath;
      file.relative_path = "stdin";
      file.root_name = "stdin";
      if (!out.Push(std::move(file))) return Status::OK();
      continue;
    }
    auto walker = SourceWalker::Open({input.root}, walk_options_, on_error);
    if (!walker.ok()) return walker.status();
    while (auto file = walker->Next()) {
      if (stopping || !out.Push(std::move(*file))) return Status::OK();
    }
  }
  return Status::OK();
}

bool SourceEnumerator::Scan(const std::atomic<bool>& stopping, uint64_t& files,
                            uint64_t& bytes) const {
  files = 0;
  bytes = 0;
  for (const Input& input : inputs_) {
    if (input.is_stdin) return false;
  }
  for (const Input& input : inputs_) {
    auto walker = SourceWalker::Open({input.root}, walk_options_);
    if (!walker.ok()) return false;
    while (auto file = walker->Next()) {
      if (stopping) return false;
      ++files;
      bytes += file->size_bytes;
    }
  }
  return true;
}

}  // namespace sluice
