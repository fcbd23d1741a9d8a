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
#include <array>
#include <cmath>
#include <deque>
#include <string>
#include <vector>

// XXH64 compiled into this file (the system header's inline build of the
// same function, so the same hashes as common/hashing's Hash64): through a
// call into libxxhash per word and bigram, on 5-15 bytes each, hashing took
// 7.1M of HashEmbed's 22.5M instructions in BM_HashEmbed; inlined, HashEmbed
// takes 19.9M (callgrind).
#define XXH_INLINE_ALL
#include <xxhash.h>

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

// x % divisor without a division instruction per call (Lemire, Kaser and
// Kurz, "Faster remainder by direct computation", 2019): with
// m = floor((2^128 - 1) / divisor) + 1, x mod divisor is the top 64 bits of
// the 192-bit product (m * x mod 2^128) * divisor, exact for every 64-bit x
// and divisor (for divisor 1, m wraps to 0 and so does the remainder). Two
// 64-bit divisions per feature cost ~14% of this embedder's time
// (BM_HashEmbed 50.7k -> 58.8k chunks/s with one multiply instead).
class RemainderBy {
 public:
  explicit RemainderBy(uint64_t divisor)
      : divisor_(divisor), m_(~static_cast<Uint128>(0) / divisor + 1) {}
  uint64_t operator()(uint64_t x) const {
    const Uint128 low = m_ * x;
    // (low * divisor) >> 128, from the halves of `low`: the sum cannot
    // overflow (hi * divisor <= (2^64 - 1)^2, plus less than 2^64).
    const Uint128 from_low = static_cast<Uint128>(static_cast<uint64_t>(low)) * divisor_;
    const Uint128 from_high = (low >> 64) * divisor_;
    return static_cast<uint64_t>((from_high + (from_low >> 64)) >> 64);
  }

 private:
  __extension__ using Uint128 = unsigned __int128;
  uint64_t divisor_;
  Uint128 m_;
};

// 1 + ln tf, from a table for the counts a chunk's words usually have (the
// same std::log values, so the same bits; a log call per repeated feature
// was 7% of this embedder's time).
double TfTerm(uint32_t tf) {
  static const auto table = [] {
    std::array<double, 256> t{};
    for (uint32_t n = 1; n < t.size(); ++n) t[n] = 1.0 + std::log(static_cast<double>(n));
    return t;
  }();
  return tf < table.size() ? table[tf] : 1.0 + std::log(static_cast<double>(tf));
}

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
  // One pass copies the words, lower-cased, into `words` with one space
  // between neighbours, so every unigram and every bigram is a slice of it
  // and nothing is copied per feature (assembling each word and bigram in
  // strings of their own cost 15% of this function). Features are counted
  // in flat vectors: a hash map per text cost two node allocations per
  // distinct word and was 40% of the offline embedder's time
  // (docs/PERFORMANCE.md).
  thread_local std::string words;
  thread_local std::vector<uint64_t> unigrams, bigrams;
  unigrams.clear();
  bigrams.clear();
  // Each space written stands for at least one separator byte of the text.
  words.resize(text.size());
  char* const out_begin = words.data();
  char* out = out_begin;
  const char* previous = nullptr;  // the previous word's start in `words`
  const char* in = text.data();
  const char* const in_end = in + text.size();
  while (in < in_end) {
    if (!IsWordByte(static_cast<unsigned char>(*in))) {
      ++in;
      continue;
    }
    if (out != out_begin) *out++ = ' ';
    char* const start = out;
    do {
      *out++ = LowerAscii(static_cast<unsigned char>(*in++));
    } while (in < in_end && IsWordByte(static_cast<unsigned char>(*in)));
    unigrams.push_back(XXH64(start, static_cast<size_t>(out - start), kUnigramSeed));
    if (previous != nullptr) {
      bigrams.push_back(XXH64(previous, static_cast<size_t>(out - previous), kBigramSeed));
    }
    previous = start;
  }

  thread_local std::vector<double> acc;
  acc.assign(dimensions, 0.0);
  thread_local std::vector<uint32_t> bucket_end;
  thread_local std::vector<uint64_t> by_bucket;
  thread_local std::vector<uint32_t> buckets;  // of each feature, in feature order
  const RemainderBy bucket_of(static_cast<uint64_t>(dimensions));
  // Sublinear term frequency: each distinct feature adds weight * (1 + ln tf).
  // The sum in a bucket depends on the order of its terms (floating point),
  // and the model's output is pinned: terms are added in ascending hash
  // order, as when the whole list was sorted. Sorting each bucket's few
  // features instead of all of them (a counting sort by bucket first) gives
  // the same order per bucket; the full sort was 44% of this function.
  auto add = [&](const std::vector<uint64_t>& features, double weight) {
    buckets.resize(features.size());
    bucket_end.assign(dimensions + 1, 0);
    for (size_t i = 0; i < features.size(); ++i) {
      buckets[i] = static_cast<uint32_t>(bucket_of(features[i]));
      ++bucket_end[buckets[i] + 1];
    }
    for (int b = 0; b < dimensions; ++b) bucket_end[b + 1] += bucket_end[b];
    by_bucket.resize(features.size());
    // bucket_end[b] is bucket b's start until its features are placed.
    for (size_t i = 0; i < features.size(); ++i) by_bucket[bucket_end[buckets[i]]++] = features[i];
    // Now bucket_end[b] is bucket b's end, and bucket b starts at b - 1's.
    uint32_t begin = 0;
    for (int b = 0; b < dimensions; ++b) {
      const uint32_t end = bucket_end[b];
      if (end - begin > 1) std::sort(by_bucket.begin() + begin, by_bucket.begin() + end);
      for (uint32_t i = begin; i < end;) {
        const uint64_t h = by_bucket[i];
        uint32_t j = i + 1;
        while (j < end && by_bucket[j] == h) ++j;
        const double sign = (h >> 63) ? -1.0 : 1.0;
        const double tf_term = TfTerm(j - i);
        acc[b] += sign * weight * tf_term;
        i = j;
      }
      begin = end;
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
