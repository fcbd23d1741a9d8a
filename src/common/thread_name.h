// Names the calling thread ("sluice-store", ...), so `top -H`, `perf report
// --sort comm` and debuggers show which stage a thread runs
// (docs/PERFORMANCE.md). Linux keeps 15 characters; longer names are cut.
#pragma once

namespace sluice {

void SetThreadName(const char* name);

}  // namespace sluice
