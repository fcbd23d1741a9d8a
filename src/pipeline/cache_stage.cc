#include "pipeline/cache_stage.h"

#include <algorithm>
#include <chrono>
#include <optional>
#include <vector>

#include <spdlog/spdlog.h>

#include "common/hashing.h"
#include "pipeline/seen_texts.h"

namespace sluice {

CacheStage::CacheStage(CacheStageOptions options, RunContext& run, SharedReadStore& read_store)
    : options_(std::move(options)), run_(run), read_store_(read_store) {}

void CacheStage::Run(BoundedQueue<Chunk>& in, BoundedQueue<Chunk>& to_embed,
                     BoundedQueue<EmbeddedChunk>& out) {
  StageMetrics& metrics = run_.metrics().cache;
  const size_t lookup_batch = std::max<size_t>(1, options_.lookup_batch);
  std::vector<Chunk> batch;
  std::vector<Hash128Value> hashes;  // of batch[i].text, when the cache is on
  std::vector<std::string_view> texts;
  std::vector<size_t> looked_up;  // the batch index of texts[k]
  std::vector<CachedEmbedding> found, answers;
  bool cache_ok = read_store_.available() && !options_.cache_namespace.empty();
  // A store that held no cached vector when the run began can only answer
  // texts this run sent on: the others are not looked up (seen_texts.h).
  std::optional<SeenTexts> seen;
  if (cache_ok) {
    Result<bool> may_hold = read_store_.With(
        [](Store& store) { return store.MayHoldCachedEmbeddings(); }, Result<bool>(true));
    if (may_hold.ok() && !*may_hold) {
      seen.emplace();
      spdlog::debug(
          "embedding cache: the store holds no vectors yet; looking up repeated texts only");
    }
  }
  while (auto first = in.Pop()) {
    batch.clear();
    batch.push_back(std::move(*first));
    while (batch.size() < lookup_batch) {
      auto more = in.TryPop();
      if (!more) break;
      batch.push_back(std::move(*more));
    }
    Add(metrics.items_in, batch.size());
    if (run_.stopping()) {
      for (const Chunk& c : batch) run_.Abandon(c);
      continue;
    }
    std::chrono::nanoseconds push_waited{0};
    BusyTimer busy(run_.clock(), metrics, &push_waited);
    answers.clear();
    hashes.clear();
    if (cache_ok) {
      texts.clear();
      looked_up.clear();
      for (size_t i = 0; i < batch.size(); ++i) {
        hashes.push_back(Hash128(batch[i].text));
        if (!seen || seen->MayContain(hashes[i])) {
          texts.push_back(batch[i].text);
          looked_up.push_back(i);
        }
      }
      found.clear();
      Status s = texts.empty()
                     ? Status::OK()
                     : read_store_.With(
                           [&](Store& store) {
                             return store.LookupEmbeddings(options_.cache_namespace, texts, found);
                           },
                           Status::OK());
      if (!s.ok()) {
        spdlog::warn("embedding cache lookup failed, embedding without it: {}", s.ToString());
        Add(metrics.errors);
        found.clear();
        if (!s.IsRetryable()) {
          cache_ok = false;
          seen.reset();  // nothing is looked up any more
        }
      }
      answers.resize(batch.size());
      for (size_t k = 0; k < found.size() && k < looked_up.size(); ++k) {
        answers[looked_up[k]] = std::move(found[k]);
      }
    }
    for (size_t i = 0; i < batch.size(); ++i) {
      if (i < answers.size() && !answers[i].embedding.empty()) {
        cache_hits_.fetch_add(1, std::memory_order_relaxed);
        tokens_saved_.fetch_add(batch[i].token_estimate, std::memory_order_relaxed);
        const std::string id = batch[i].id;
        EmbeddedChunk e{std::move(batch[i]), std::move(answers[i].embedding),
                        std::move(answers[i].model)};
        if (out.Push(std::move(e), &push_waited)) {
          Add(metrics.items_out);
        } else {
          run_.AbandonId(id);
        }
        continue;
      }
      Chunk& c = batch[i];
      // A text already on its way to the API waits for that answer instead.
      // Only texts that cannot be over the per-input limit (a token is at
      // least a byte): a piece the embed stage splits never answers for the
      // whole text.
      const uint32_t tokens = c.token_estimate;
      if (cache_ok && c.text.size() <= options_.max_tokens_per_input &&
          run_.inflight().ParkOrOwn(c, hashes[i])) {
        cache_hits_.fetch_add(1, std::memory_order_relaxed);
        tokens_saved_.fetch_add(tokens, std::memory_order_relaxed);
        continue;
      }
      // From now on the store may hold this text: look it up next time.
      if (seen) seen->Add(hashes[i]);
      const std::string id = c.id;
      if (to_embed.Push(std::move(c), &push_waited)) {
        Add(metrics.items_out);
      } else {
        run_.AbandonId(id);
      }
    }
  }
  to_embed.Close();
}

}  // namespace sluice
