// MockEmbedding and MockTokenCount: the deterministic vectors and token counts
// the mock API serves, recomputable by tests (see docs/MOCK_API.md).
#include <cmath>

#include "common/hashing.h"
#include "sluice/mock_api.h"

namespace sluice {

namespace {
constexpr uint64_t kMockEmbeddingSeed = 0x5EED;
}  // namespace

std::vector<float> MockEmbedding(std::string_view text, int dimensions) {
  if (dimensions <= 0) return {};
  std::vector<double> u(static_cast<size_t>(dimensions));
  uint64_t state = Hash64(text, kMockEmbeddingSeed);
  double sum_squares = 0;
  for (double& value : u) {
    const uint64_t x = SplitMix64(state);
    value = static_cast<double>(x >> 11) * 0x1.0p-53 * 2.0 - 1.0;
    sum_squares += value * value;
  }
  std::vector<float> out(u.size());
  const double norm = std::sqrt(sum_squares);
  if (norm == 0) {  // all 2^53 draws at exactly 0.5: never in practice, but stay unit length
    out[0] = 1.0f;
    return out;
  }
  for (size_t i = 0; i < u.size(); ++i) out[i] = static_cast<float>(u[i] / norm);
  return out;
}

int64_t MockTokenCount(std::string_view text) {
  const int64_t tokens = static_cast<int64_t>((text.size() + 3) / 4);
  return tokens < 1 ? 1 : tokens;
}

}  // namespace sluice
