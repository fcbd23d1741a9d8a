// The offline embedder: deterministic feature-hashed LEXICAL vectors, for
// runs without an embedding service and for tests. It captures shared words,
// not meaning.
//
// Formula (model "sluice-hash-v1"):
//   tokens   = maximal runs of ASCII letters/digits and non-ASCII bytes,
//              ASCII lower-cased ("Pump-Seal" -> "pump", "seal")
//   features = every unigram t_i, and every bigram t_i + " " + t_{i+1}
//   for each distinct feature f with count tf(f):
//     h      = Hash64(f, kUnigramSeed or kBigramSeed)
//     bucket = h mod dimensions,  sign = (h >> 63) ? -1 : +1
//     v[bucket] += sign * w(f) * (1 + ln tf(f)),  w = 1.0 unigram, 0.5 bigram
//   v = v / ||v||   (all zeros when the text has no token)
//
// Thread safety: HashEmbed is a pure function. A transport from
// MakeHashTransport is driven by one thread, like every EmbeddingTransport.
#include <algorithm>
#include <cmath>
#include <deque>
#include <string>
#include <vector>

#include "common/hashing.h"
#include "sluice/embed.h"

namespace sluice {
namespace {

constexpr uint64_t kUnigramSeed = 0x51C3'0001;
constexpr uint64_t kBigramSeed = 0x51C3'0002;
constexpr double kBigramWeight = 0.5;

// ASCII letters and digits by comparison, as the "C" locale's isalnum and
// tolower define them, without a libc call per byte (those two calls were
// 7% of an offline run's CPU).
bool IsWordByte(unsigned char c) {
  return c >= 0x80 || (c >= '0' && c <= '9') || ((c | 0x20) >= 'a' && (c | 0x20) <= 'z');
}
char LowerAscii(unsigned char c) { return static_cast<char>(c >= 'A' && c <= 'Z' ? c | 0x20 : c); }

class HashTransport final : public EmbeddingTransport {
 public:
  explicit HashTransport(const HashEmbedderOptions& options)
      : dimensions_(options.dimensions > 0 ? options.dimensions : 384) {}

  void Submit(EmbedRequest request) override { pending_.push_back(std::move(request)); }

  void Poll(Duration, std::vector<EmbedResponse>& out) override {
    while (!pending_.empty()) {
      EmbedRequest request = std::move(pending_.front());
      pending_.pop_front();
      const TimePoint start = SteadyClock::now();
      EmbedResponse response;
      response.request_id = request.request_id;
      response.http_status = 200;
      response.vectors.reserve(request.inputs.size());
      for (const std::string& input : request.inputs) {
        response.vectors.push_back(HashEmbed(input, dimensions_));
        // Same estimate as the mock API: ceil(bytes / 4).
        response.prompt_tokens += std::max<int64_t>(1, (input.size() + 3) / 4);
      }
      response.latency = SteadyClock::now() - start;
      out.push_back(std::move(response));
    }
  }

  size_t InFlight() const override { return pending_.size(); }
  std::string ModelName() const override { return "sluice-hash-v1"; }
  int Dimensions() const override { return dimensions_; }

 private:
  const int dimensions_;
  std::deque<EmbedRequest> pending_;
};

}  // namespace

std::vector<float> HashEmbed(std::string_view text, int dimensions) {
  if (dimensions <= 0) return {};
  // Feature hashes collected in flat vectors and counted by sorting: a hash
  // map per text cost two node allocations per distinct word and was 40% of
  // the offline embedder's time (docs/PERFORMANCE.md).
  thread_local std::vector<uint64_t> unigrams, bigrams;
  thread_local std::string word, previous, bigram;
  unigrams.clear();
  bigrams.clear();
  word.clear();
  previous.clear();
  auto end_word = [&] {
    if (word.empty()) return;
    unigrams.push_back(Hash64(word, kUnigramSeed));
    if (!previous.empty()) {
      bigram.assign(previous).append(" ").append(word);
      bigrams.push_back(Hash64(bigram, kBigramSeed));
    }
    previous.swap(word);
    word.clear();
  };
  for (char ch : text) {
    const unsigned char c = static_cast<unsigned char>(ch);
    if (IsWordByte(c)) {
      word.push_back(c < 0x80 ? LowerAscii(c) : ch);
    } else {
      end_word();
    }
  }
  end_word();

  std::vector<double> acc(dimensions, 0.0);
  // Sublinear term frequency: each distinct feature adds weight * (1 + ln tf).
  auto add = [&](std::vector<uint64_t>& features, double weight) {
    std::sort(features.begin(), features.end());
    for (size_t i = 0; i < features.size();) {
      const uint64_t h = features[i];
      size_t j = i + 1;
      while (j < features.size() && features[j] == h) ++j;
      const double tf = static_cast<double>(j - i);
      const double sign = (h >> 63) ? -1.0 : 1.0;
      acc[h % static_cast<uint64_t>(dimensions)] += sign * weight * (1.0 + std::log(tf));
      i = j;
    }
  };
  add(unigrams, 1.0);
  add(bigrams, kBigramWeight);
  double norm = 0;
  for (double x : acc) norm += x * x;
  norm = std::sqrt(norm);
  std::vector<float> v(dimensions, 0.0f);
  if (norm > 0) {
    for (int i = 0; i < dimensions; ++i) v[i] = static_cast<float>(acc[i] / norm);
  }
  return v;
}

std::unique_ptr<EmbeddingTransport> MakeHashTransport(const HashEmbedderOptions& options) {
  return std::make_unique<HashTransport>(options);
}

}  // namespace sluice
