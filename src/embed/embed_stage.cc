// The embed stage's single-threaded event loop (see include/sluice/embed_stage.h).
//
// Work moves through four holding areas, every chunk in exactly one of them:
//   pending_  chunks taken from `in`, not yet cut into a batch (linger applies)
//   ready_    batches waiting for a concurrency slot or the pacer
//   waiting_  batches waiting for a retry timer
//   in_flight_ batches submitted to the transport
// and leaves either through `out` or the DeadLetterSink, exactly once.
#include <algorithm>
#include <cmath>
#include <deque>
#include <map>
#include <optional>
#include <string>
#include <unordered_map>
#include <utility>

#include "common/hashing.h"
#include "common/json_canonical.h"
#include "common/utf8.h"
#include "sluice/control.h"
#include "sluice/embed_stage.h"

namespace sluice {
namespace {

// Upper bounds on a single wait so RequestStop and new input are noticed promptly.
constexpr Duration kIdleSlice = std::chrono::milliseconds(100);
constexpr Duration kPollSlice = std::chrono::milliseconds(50);
// While a slot is free and input may still come, look at the input this often.
constexpr Duration kIntakeSlice = std::chrono::milliseconds(2);

// Same formula as MakeChunkId (include/sluice/chunker.h): XXH3-128 over
// source_id, '\0', ordinal (decimal), '\0', text. Kept local so sluice_embed
// does not depend on the chunking library.
std::string PieceChunkId(std::string_view source_id, uint32_t ordinal, std::string_view text) {
  std::string key;
  key.reserve(source_id.size() + text.size() + 12);
  key.append(source_id).push_back('\0');
  key.append(std::to_string(ordinal)).push_back('\0');
  key.append(text);
  return Hash128Hex(key);
}

// Adds "key":value to a JSON object text ("{}" or "{...}"), keeping it in
// canonical form (common/json_canonical.h).
void AddMetadataField(std::string& object_json, std::string_view key, std::string_view raw_value) {
  size_t close = object_json.find_last_of('}');
  if (close == std::string::npos) {
    object_json = "{}";
    close = 1;
  }
  const size_t open = object_json.find('{');
  bool empty = true;
  for (size_t i = open + 1; i < close; ++i) {
    if (!std::isspace(static_cast<unsigned char>(object_json[i]))) empty = false;
  }
  std::string field = empty ? "\"" : ",\"";
  field.append(key).append("\":").append(raw_value);
  object_json.insert(close, field);
  if (auto canonical = CanonicalJson(object_json); canonical.ok()) object_json = *canonical;
}

bool IsSpace(char c) { return c == ' ' || c == '\n' || c == '\t' || c == '\r'; }

// A cut position in (0, max_bytes] of `text` that is a UTF-8 boundary and, when
// one exists in the second half, just after whitespace. REQUIRES: text.size() > max_bytes.
size_t CutPosition(std::string_view text, size_t max_bytes) {
  size_t cut = Utf8BoundaryAtOrBefore(text, std::max<size_t>(max_bytes, 1));
  for (size_t i = cut; i > cut / 2; --i) {
    if (IsSpace(text[i - 1])) return i;
  }
  if (cut == 0) {  // one sequence longer than max_bytes: take it whole to make progress
    cut = std::max<size_t>(1, Utf8SequenceLength(text, 0));
  }
  return cut;
}

}  // namespace

struct EmbedStage::Impl {
  struct Batch {
    std::vector<Chunk> chunks;
    uint32_t tokens = 0;
    uint64_t bytes = 0;
    int attempts = 0;               // requests made for this batch so far (429s not counted)
    int rate_limited = 0;           // 429s answered for this batch
    Duration rate_limited_wait{0};  // waited in all after them
    bool fresh = true;              // never sent, not a bisected half
    // Set at the first failed attempt, with the successful requests seen then.
    bool failed = false;
    uint64_t successes_at_first_failure = 0;
  };
  struct Sent {
    Batch batch;
    TimePoint start;
  };

  Impl(EmbedStageOptions o, EmbeddingTransport& t, ConcurrencyLimiter& l, RatePacer& p,
       const Clock& c, Metrics& m, DeadLetterSink& d)
      : options(std::move(o)),
        transport(t),
        limiter(l),
        pacer(p),
        clock(c),
        metrics(m),
        dead_letters(d),
        retry(options.retry),
        rng(options.seed != 0 ? options.seed : std::random_device{}()) {
    const size_t hard_max = std::max<size_t>(1, options.max_inputs_per_request);
    max_inputs = std::clamp<size_t>(options.batch_size, 1, hard_max);
    if (options.adaptive_batch) {
      // batch_size is where the sizer starts; the service's limit is its ceiling.
      BatchSizerOptions sizing;
      sizing.min_inputs = 1;
      sizing.max_inputs = hard_max;
      sizing.max_tokens_per_request = options.max_tokens_per_request;
      sizing.initial_inputs = max_inputs;
      sizing.in_flight_budget = options.in_flight_chunk_budget;
      sizer.emplace(sizing);
    }
  }

  Status Run(BoundedQueue<Chunk>& in, BoundedQueue<EmbeddedChunk>& out);

  uint32_t EstimateTokens(size_t bytes) const {
    const double per_token = std::max(0.1, bytes_per_token);
    return static_cast<uint32_t>(std::max(1.0, std::ceil(static_cast<double>(bytes) / per_token)));
  }
  bool Idle() const {
    return pending.empty() && ready.empty() && waiting.empty() && in_flight.empty();
  }
  size_t FreeSlots() const {
    const size_t limit = limiter.Limit();
    const size_t busy = transport.InFlight();
    return limit > busy ? limit - busy : 0;
  }
  // Takes input only while the unsent backlog is below what the free slots
  // (plus one batch ahead) can carry, so backpressure reaches upstream.
  bool WantMoreInput() const {
    size_t unsent = pending.size();
    for (const Batch& batch : ready) unsent += batch.chunks.size();
    return unsent < max_inputs * (FreeSlots() + 1);
  }

  void Accept(Chunk&& chunk, TimePoint now);
  void FitToInputLimit(Chunk&& chunk, TimePoint now);
  // Cuts the next batch from `pending` when `ready` is empty: batches are
  // formed just in time, so each is sized with the current batch size and
  // token cap (a backlog formed ahead would carry a halved limit's old size
  // for as long as it lasts).
  void FormBatches(TimePoint now, bool flush);
  void StartRequests(TimePoint now, bool flush);
  Status HandleResponse(EmbedResponse& response, BoundedQueue<EmbeddedChunk>& out);
  void DeadLetter(std::vector<Chunk>& chunks, size_t from, const Status& why);
  void DeadLetterUnsent(const Status& why);
  void DeadLetterEverything(const Status& why);
  // Hands `chunks` back as abandoned (kCancelled): the run stops for `why`,
  // a failure that says nothing about them, and the next run redoes them.
  void Abandon(std::vector<Chunk>& chunks, const Status& why);
  // The stop path: everything not in flight (pending, ready, waiting for a
  // retry) is handed back as `why` (kCancelled: abandoned). Returns how many chunks.
  size_t AbandonNotInFlight(const Status& why);
  // The longest wait a stop skips: a retry's timer or the pacer's shared
  // Retry-After cooldown.
  Duration LongestSkippedWait(TimePoint now) const;
  // One line for stderr: what the stop waits for and what it gave up.
  std::string DescribeStop(size_t abandoned, Duration skipped) const;
  Duration ComputeWait(TimePoint now, bool flush, bool input_open) const;
  void PublishGauges() {
    metrics.in_flight.store(static_cast<int64_t>(in_flight.size()), std::memory_order_relaxed);
    metrics.concurrency_limit.store(static_cast<int64_t>(limiter.Limit()),
                                    std::memory_order_relaxed);
    const RateBudget budget = pacer.Budget(clock.Now());
    metrics.rate_limit_requests_per_minute.store(budget.requests_per_minute,
                                                 std::memory_order_relaxed);
    metrics.rate_limit_tokens_per_minute.store(budget.tokens_per_minute, std::memory_order_relaxed);
    metrics.rate_requests_remaining.store(budget.requests_remaining, std::memory_order_relaxed);
    metrics.rate_tokens_remaining.store(budget.tokens_remaining, std::memory_order_relaxed);
  }

  EmbedStageOptions options;
  EmbeddingTransport& transport;
  ConcurrencyLimiter& limiter;
  RatePacer& pacer;
  const Clock& clock;
  Metrics& metrics;
  DeadLetterSink& dead_letters;
  RetryPolicy retry;
  std::mt19937_64 rng;
  RequestObserver observer;
  std::function<void(const std::string&)> stop_notice;
  std::function<void(const std::string&, const std::vector<std::string>&)> replacement_hook;
  std::atomic<bool> stop_requested{false};

  size_t max_inputs = 1;  // inputs per batch now: batch_size, or the sizer's suggestion
  std::optional<BatchSizer> sizer;
  double bytes_per_token = 4.0;  // refreshed from the pacer once per loop
  // Token budget per batch: the service's limit, or less when the pacer can
  // only pace smaller requests smoothly (a second of a TPM limit); read from
  // the pacer whenever a batch is cut.
  uint32_t max_batch_tokens = 0;
  std::deque<Chunk> pending;
  std::deque<TimePoint> pending_arrival;  // parallel to pending_, for linger
  uint32_t pending_tokens = 0;
  std::deque<Batch> ready;
  std::multimap<TimePoint, Batch> waiting;
  std::unordered_map<uint64_t, Sent> in_flight;
  uint64_t next_request_id = 1;
  // Requests answered with vectors so far: a batch that keeps failing while
  // this does not move is failing because the service is, not its inputs.
  uint64_t successes_seen = 0;
};

void EmbedStage::Impl::Accept(Chunk&& chunk, TimePoint now) {
  Add(metrics.embedder.items_in);
  Add(metrics.embedder.bytes, chunk.text.size());
  if (chunk.text.empty()) {
    // The API rejects empty inputs; never send one.
    Add(metrics.embedder.dead_lettered);
    dead_letters.ChunkFailed(chunk, Status::Rejected("empty chunk text cannot be embedded"));
    return;
  }
  if (EstimateTokens(chunk.text.size()) > options.max_tokens_per_input) {
    FitToInputLimit(std::move(chunk), now);
    return;
  }
  pending_tokens += EstimateTokens(chunk.text.size());
  pending.push_back(std::move(chunk));
  pending_arrival.push_back(now);
}

void EmbedStage::Impl::FitToInputLimit(Chunk&& chunk, TimePoint now) {
  Add(metrics.oversize_inputs);
  // The byte budget that the current bytes-per-token estimate says fits.
  const size_t max_bytes = std::max<size_t>(
      4, static_cast<size_t>(std::floor(options.max_tokens_per_input * bytes_per_token)));
  std::string_view text = chunk.text;
  if (options.oversize == OversizeInputPolicy::kTruncate) {
    const std::string original_id = chunk.id;
    Chunk cut = std::move(chunk);
    const size_t keep = CutPosition(cut.text, max_bytes);
    cut.text.resize(keep);
    while (cut.text.size() > 1 && IsSpace(cut.text.back())) cut.text.pop_back();
    cut.byte_end = cut.byte_begin + cut.text.size();
    cut.id = PieceChunkId(cut.source_id, cut.ordinal, cut.text);
    cut.token_estimate = EstimateTokens(cut.text.size());
    AddMetadataField(cut.metadata_json, "truncated", "true");
    if (replacement_hook) replacement_hook(original_id, {cut.id});
    pending_tokens += cut.token_estimate;
    pending.push_back(std::move(cut));
    pending_arrival.push_back(now);
    return;
  }
  // Split: cut pieces off the front until the rest fits.
  std::vector<std::pair<size_t, size_t>> pieces;  // (offset, length) into chunk.text
  size_t offset = 0;
  while (offset < text.size()) {
    while (offset < text.size() && IsSpace(text[offset])) ++offset;
    if (offset >= text.size()) break;
    std::string_view rest = text.substr(offset);
    size_t length = rest.size() <= max_bytes ? rest.size() : CutPosition(rest, max_bytes);
    size_t trimmed = length;
    while (trimmed > 1 && IsSpace(rest[trimmed - 1])) --trimmed;
    pieces.emplace_back(offset, trimmed);
    offset += length;
  }
  if (pieces.size() > 1) Add(metrics.chunks_produced, pieces.size() - 1);
  const std::string parts = std::to_string(pieces.size());
  std::vector<std::string> piece_ids;
  piece_ids.reserve(pieces.size());
  for (size_t i = 0; i < pieces.size(); ++i) {
    Chunk piece;
    piece.source_id = chunk.source_id;
    piece.file_id = chunk.file_id;
    piece.record_run = chunk.record_run;
    piece.ordinal = chunk.ordinal;
    piece.byte_begin = chunk.byte_begin + pieces[i].first;
    piece.byte_end = piece.byte_begin + pieces[i].second;
    piece.text.assign(text.substr(pieces[i].first, pieces[i].second));
    piece.domain = chunk.domain;
    piece.category = chunk.category;
    piece.metadata_json = chunk.metadata_json;
    AddMetadataField(piece.metadata_json, "split_part", std::to_string(i + 1));
    AddMetadataField(piece.metadata_json, "split_parts", parts);
    piece.id = PieceChunkId(piece.source_id, piece.ordinal, piece.text);
    piece.token_estimate = EstimateTokens(piece.text.size());
    piece_ids.push_back(piece.id);
    pending_tokens += piece.token_estimate;
    pending.push_back(std::move(piece));
    pending_arrival.push_back(now);
  }
  // Before any piece can be embedded, stored and resolved: they leave this
  // thread only in a later batch.
  if (replacement_hook) replacement_hook(chunk.id, piece_ids);
}

void EmbedStage::Impl::FormBatches(TimePoint now, bool flush) {
  max_batch_tokens = std::max<uint32_t>(1, options.max_tokens_per_request);
  if (const double cap = pacer.TokensPerRequestCap(); cap >= 1) {
    // A request costing much of a minute's tokens stalls the pacer and,
    // with a limit that halves, is most of the new budget in one piece.
    max_batch_tokens = std::min<uint32_t>(max_batch_tokens, static_cast<uint32_t>(cap));
  }
  while (!pending.empty() && ready.empty()) {
    size_t take = 0;
    uint32_t tokens = 0;
    uint64_t bytes = 0;
    for (const Chunk& chunk : pending) {
      const uint32_t t = EstimateTokens(chunk.text.size());
      if (take > 0 && (take == max_inputs || tokens + t > max_batch_tokens)) break;
      ++take;
      tokens += t;
      bytes += chunk.text.size();
    }
    const bool full = take < pending.size() || take == max_inputs;
    if (!full && !flush && now - pending_arrival.front() < options.linger) return;
    Batch batch;
    batch.chunks.reserve(take);
    for (size_t i = 0; i < take; ++i) {
      batch.chunks.push_back(std::move(pending.front()));
      pending.pop_front();
      pending_arrival.pop_front();
    }
    batch.tokens = tokens;
    batch.bytes = bytes;
    pending_tokens -= std::min(pending_tokens, tokens);
    ready.push_back(std::move(batch));
  }
}

void EmbedStage::Impl::StartRequests(TimePoint now, bool flush) {
  while (transport.InFlight() < limiter.Limit()) {
    if (ready.empty()) FormBatches(now, flush);
    if (ready.empty()) break;
    Batch& front = ready.front();
    if (pacer.DelayFor(now, front.tokens) > Duration(0)) break;
    EmbedRequest request;
    request.request_id = next_request_id++;
    request.inputs.reserve(front.chunks.size());
    for (const Chunk& chunk : front.chunks) request.inputs.push_back(chunk.text);
    request.estimated_tokens = front.tokens;
    request.input_bytes = front.bytes;
    limiter.OnStart(now);
    pacer.OnStart(now, front.tokens);
    Add(metrics.requests);
    if (front.attempts > 0 || front.rate_limited > 0) Add(metrics.retries);
    ++front.attempts;
    front.fresh = false;
    in_flight.emplace(request.request_id, Sent{std::move(front), now});
    ready.pop_front();
    transport.Submit(std::move(request));
  }
  PublishGauges();
}

void EmbedStage::Impl::DeadLetter(std::vector<Chunk>& chunks, size_t from, const Status& why) {
  for (size_t i = from; i < chunks.size(); ++i) dead_letters.ChunkFailed(chunks[i], why);
  if (chunks.size() > from) Add(metrics.embedder.dead_lettered, chunks.size() - from);
}

void EmbedStage::Impl::Abandon(std::vector<Chunk>& chunks, const Status& why) {
  DeadLetter(chunks, 0, Status::Cancelled("abandoned, the run stopped: " + why.ToString()));
}

void EmbedStage::Impl::DeadLetterUnsent(const Status& why) {
  for (Chunk& chunk : pending) dead_letters.ChunkFailed(chunk, why);
  Add(metrics.embedder.dead_lettered, pending.size());
  pending.clear();
  pending_arrival.clear();
  pending_tokens = 0;
  std::deque<Batch> keep;
  for (Batch& batch : ready) {
    if (batch.fresh) {
      DeadLetter(batch.chunks, 0, why);
    } else {
      keep.push_back(std::move(batch));
    }
  }
  ready.swap(keep);
}

void EmbedStage::Impl::DeadLetterEverything(const Status& why) {
  for (Batch& batch : ready) batch.fresh = true;
  DeadLetterUnsent(why);
  for (auto& [when, batch] : waiting) DeadLetter(batch.chunks, 0, why);
  waiting.clear();
  // The transport may still complete these; their responses are never polled.
  for (auto& [id, sent] : in_flight) DeadLetter(sent.batch.chunks, 0, why);
  in_flight.clear();
  PublishGauges();
}

size_t EmbedStage::Impl::AbandonNotInFlight(const Status& why) {
  size_t abandoned = pending.size();
  for (const Batch& batch : ready) abandoned += batch.chunks.size();
  for (auto& [when, batch] : waiting) {
    abandoned += batch.chunks.size();
    DeadLetter(batch.chunks, 0, why);
  }
  waiting.clear();
  for (Batch& batch : ready) batch.fresh = true;  // retries and bisected halves too
  DeadLetterUnsent(why);
  return abandoned;
}

Duration EmbedStage::Impl::LongestSkippedWait(TimePoint now) const {
  Duration skipped = pacer.DelayFor(now, 1);
  for (const auto& [when, batch] : waiting) skipped = std::max(skipped, when - now);
  return skipped;
}

std::string EmbedStage::Impl::DescribeStop(size_t abandoned, Duration skipped) const {
  std::string line = "stopping: ";
  if (in_flight.empty()) {
    line += "no request in flight";
  } else {
    const auto grace_ms =
        std::chrono::duration_cast<std::chrono::milliseconds>(options.stop_grace).count();
    line += "waiting up to " + std::to_string(grace_ms) + " ms for " +
            std::to_string(in_flight.size()) + (in_flight.size() == 1 ? " request" : " requests") +
            " in flight";
  }
  line += ", " + std::to_string(abandoned) + " queued chunks abandoned";
  if (skipped >= std::chrono::seconds(1)) {
    line += " (Retry-After " +
            std::to_string(std::chrono::duration_cast<std::chrono::seconds>(skipped).count()) +
            " s ignored)";
  }
  return line;
}

namespace {

RequestOutcome Classify(const EmbedResponse& response) {
  const Status& s = response.status;
  if (s.ok()) return RequestOutcome::kSuccess;
  switch (s.code()) {
    case StatusCode::kRateLimited:
    case StatusCode::kTimeout:
      return RequestOutcome::kBackpressure;
    case StatusCode::kPermissionDenied:
    case StatusCode::kNotFound:
    case StatusCode::kRejected:
    case StatusCode::kInvalidArgument:
      return RequestOutcome::kPermanent;
    case StatusCode::kUnavailable:
      if (response.http_status == 503) return RequestOutcome::kOverCapacity;
      if (response.http_status == 0 && s.message().find("refused") != std::string::npos) {
        return RequestOutcome::kOverCapacity;
      }
      return RequestOutcome::kFailure;
    default:
      return RequestOutcome::kFailure;
  }
}

}  // namespace

Status EmbedStage::Impl::HandleResponse(EmbedResponse& response, BoundedQueue<EmbeddedChunk>& out) {
  auto it = in_flight.find(response.request_id);
  if (it == in_flight.end()) return Status::OK();  // not ours (after a fatal error)
  Batch batch = std::move(it->second.batch);
  const TimePoint start = it->second.start;
  in_flight.erase(it);

  const TimePoint now = clock.Now();
  const Duration rtt = now - start;
  Status status = std::move(response.status);
  if (status.ok() && response.vectors.size() != batch.chunks.size()) {
    status = Status::Corrupt("transport returned " + std::to_string(response.vectors.size()) +
                             " vectors for " + std::to_string(batch.chunks.size()) + " inputs");
  }
  response.status = status;
  const RequestOutcome outcome = Classify(response);
  limiter.OnFinish(now, rtt, outcome);
  pacer.OnResponseTo(start, now, response.rate, response.http_status, batch.bytes,
                     response.prompt_tokens);
  metrics.embed_latency.Record(rtt);
  if (status.code() == StatusCode::kRateLimited) Add(metrics.rate_limited);
  if (response.http_status >= 500) Add(metrics.server_errors);
  if (!status.ok() && response.http_status == 0 && status.code() != StatusCode::kCorrupt) {
    Add(metrics.transport_errors);
  }
  if (status.code() == StatusCode::kCorrupt) Add(metrics.malformed_responses);
  if (!status.ok()) Add(metrics.embedder.errors);
  if (observer) {
    RequestEvent event;
    event.start = start;
    event.end = now;
    event.inputs = batch.chunks.size();
    event.tokens = batch.tokens;
    event.http_status = response.http_status;
    event.outcome = outcome;
    event.retry = batch.attempts > 1 || batch.rate_limited > 0;
    observer(event);
  }
  PublishGauges();

  if (status.ok()) {
    Add(metrics.requests_ok);
    ++successes_seen;
    if (sizer) {
      const size_t before = sizer->SuggestedInputs();
      sizer->Observe(batch.chunks.size(), rtt);
      // Batches shrink as the limit grows, so the chunks in flight stay
      // within the budget and every slot the limiter opens can be filled.
      sizer->ObserveConcurrencyLimit(limiter.Limit());
      const size_t after = sizer->SuggestedInputs();
      // A new batch size moves latency for reasons other than load: tell the
      // limiter so it does not read the change as queueing (or its absence).
      if (after != before) limiter.OnBatchSizeChanged(now, sizer->LatencyRatio(before, after));
      max_inputs = std::clamp<size_t>(sizer->SuggestedInputs(), 1,
                                      std::max<size_t>(1, options.max_inputs_per_request));
    }
    if (response.prompt_tokens > 0) {
      Add(metrics.prompt_tokens, static_cast<uint64_t>(response.prompt_tokens));
    }
    const std::string model = transport.ModelName();
    std::vector<EmbeddedChunk> embedded;
    embedded.reserve(batch.chunks.size());
    for (size_t i = 0; i < batch.chunks.size(); ++i) {
      embedded.push_back({std::move(batch.chunks[i]), std::move(response.vectors[i]), model});
    }
    // One hand-off for the whole response (see BoundedQueue::PushAll).
    const size_t pushed = out.PushAll(embedded);
    if (pushed < embedded.size()) {
      // PushAll leaves what it did not push untouched: hand those chunks back.
      for (size_t i = pushed; i < embedded.size(); ++i) {
        batch.chunks[i] = std::move(embedded[i].chunk);
      }
      Add(metrics.chunks_embedded, pushed);
      Add(metrics.embedder.items_out, pushed);
      const Status cancelled = Status::Cancelled("embed output queue was cancelled");
      DeadLetter(batch.chunks, pushed, cancelled);
      return cancelled;
    }
    Add(metrics.chunks_embedded, batch.chunks.size());
    Add(metrics.embedder.items_out, batch.chunks.size());
    return Status::OK();
  }
  // A wrong key (401/403) or endpoint (404/405) fails every request alike:
  // stop the run; the batch is abandoned, never dead-lettered, so its files
  // are not fingerprinted and the corrected rerun redoes them.
  if (status.code() == StatusCode::kPermissionDenied || status.code() == StatusCode::kNotFound) {
    Abandon(batch.chunks, status);
    return status;
  }
  if (!batch.failed) {
    batch.failed = true;
    batch.successes_at_first_failure = successes_seen;
  }
  if (status.code() == StatusCode::kRejected && batch.chunks.size() > 1) {
    // The service refused the batch as a whole: send each half on its own until
    // the bad input is alone. Halves go first so the bisection finishes quickly.
    const size_t half = batch.chunks.size() / 2;
    Batch second;
    second.fresh = false;
    second.chunks.reserve(batch.chunks.size() - half);
    for (size_t i = half; i < batch.chunks.size(); ++i) {
      second.chunks.push_back(std::move(batch.chunks[i]));
    }
    batch.chunks.resize(half);
    Batch first;
    first.fresh = false;
    first.chunks = std::move(batch.chunks);
    for (Batch* part : {&first, &second}) {
      for (const Chunk& chunk : part->chunks) {
        part->tokens += EstimateTokens(chunk.text.size());
        part->bytes += chunk.text.size();
      }
    }
    ready.push_front(std::move(second));
    ready.push_front(std::move(first));
    return Status::OK();
  }
  if (status.code() == StatusCode::kRateLimited) {
    // Never a dead letter (it says nothing about the input), and not an
    // attempt: the batch waits as the service asks, within a total bound.
    batch.attempts = std::max(0, batch.attempts - 1);
    const Duration delay = retry.Backoff(++batch.rate_limited, response.rate.retry_after, rng);
    if (batch.rate_limited_wait + delay <= options.max_rate_limited_wait) {
      batch.rate_limited_wait += delay;
      waiting.emplace(now + delay, std::move(batch));
      return Status::OK();
    }
    const Status gave_up = Status::Unavailable(
        "still rate-limited after waiting " +
        std::to_string(
            std::chrono::duration_cast<std::chrono::seconds>(batch.rate_limited_wait).count()) +
        " s for one batch (" + status.message() + "); rerun later: nothing was dead-lettered");
    Abandon(batch.chunks, gave_up);
    return gave_up;
  }
  if (retry.ShouldRetry(status, batch.attempts)) {
    const Duration delay = retry.Backoff(batch.attempts, response.rate.retry_after, rng);
    waiting.emplace(now + delay, std::move(batch));
    return Status::OK();
  }
  const bool retried = status.IsRetryable() || status.code() == StatusCode::kCorrupt;
  const Status final_status =
      retried ? status.WithContext("gave up after " + std::to_string(batch.attempts) + " attempts")
              : status;
  // Dead letters are for failures that lie in the input. One that follows
  // this batch while the service answers other requests may (a 500 or a
  // malformed answer for one text); one that comes with every request (no
  // success since this batch first failed), or from a service that could not
  // even be reached, says nothing about it: stop the run instead.
  const bool service_failing =
      response.connect_failed || (retried && successes_seen == batch.successes_at_first_failure);
  if (service_failing) {
    Abandon(batch.chunks, final_status);
    return final_status;
  }
  DeadLetter(batch.chunks, 0, final_status);
  return Status::OK();
}

Duration EmbedStage::Impl::ComputeWait(TimePoint now, bool flush, bool input_open) const {
  TimePoint deadline = now + (in_flight.empty() ? kIdleSlice : kPollSlice);
  if (!waiting.empty()) deadline = std::min(deadline, waiting.begin()->first);
  const bool slot_free = transport.InFlight() < limiter.Limit();
  if (!pending.empty() && !flush && ready.empty() && slot_free) {
    // A partial batch waiting for more chunks (batches are cut just in time,
    // so pending chunks behind a formed batch are no reason to wake).
    deadline = std::min(deadline, pending_arrival.front() + options.linger);
  }
  if (!ready.empty() && slot_free) {
    deadline = std::min(deadline, now + pacer.DelayFor(now, ready.front().tokens));
  }
  if (input_open && slot_free && ready.empty()) deadline = std::min(deadline, now + kIntakeSlice);
  return std::max(Duration(0), deadline - now);
}

Status EmbedStage::Impl::Run(BoundedQueue<Chunk>& in, BoundedQueue<EmbeddedChunk>& out) {
  bool input_done = false;
  bool stop_handled = false;
  std::vector<EmbedResponse> responses;
  PublishGauges();
  const Status stopped = Status::Cancelled("stop requested before the chunk was embedded");
  TimePoint stop_deadline{};
  while (true) {
    const bool stopping = stop_requested.load(std::memory_order_acquire);
    if (stopping && !stop_handled) {
      stop_handled = true;
      const TimePoint now = clock.Now();
      stop_deadline = now + options.stop_grace;
      // Measured before abandoning: the retry timers go with their batches.
      const Duration skipped = LongestSkippedWait(now);
      const size_t abandoned = AbandonNotInFlight(stopped);
      if (stop_notice) stop_notice(DescribeStop(abandoned, skipped));
    }
    if (stopping && !in_flight.empty() && clock.Now() >= stop_deadline) {
      // The grace is over: what is still in flight is abandoned (the
      // transport's late answers are ignored; the rerun redoes the chunks).
      for (auto& [id, sent] : in_flight) DeadLetter(sent.batch.chunks, 0, stopped);
      in_flight.clear();
      PublishGauges();
      break;
    }
    bytes_per_token = pacer.BytesPerToken();
    const bool input_open = !input_done && !stopping;
    if (input_open) {
      if (Idle()) {
        // Nothing to do but wait for input: block (in slices, to notice RequestStop).
        std::optional<Chunk> chunk = in.PopFor(kIdleSlice);
        if (chunk) {
          Accept(std::move(*chunk), clock.Now());
        } else if (in.Ended()) {
          input_done = true;
        }
      }
      while (!input_done && WantMoreInput()) {
        std::optional<Chunk> chunk = in.TryPop();
        if (!chunk) {
          input_done = in.Ended();
          break;
        }
        Accept(std::move(*chunk), clock.Now());
      }
    }
    const bool flush = input_done || stopping;
    TimePoint now = clock.Now();
    while (!waiting.empty() && waiting.begin()->first <= now) {
      ready.push_back(std::move(waiting.begin()->second));
      waiting.erase(waiting.begin());
    }
    if (stopping) {
      // Retries and bisected halves of answers that came back after the stop.
      AbandonNotInFlight(stopped);
    } else {
      FormBatches(now, flush);
      StartRequests(now, flush);
    }
    if (flush && Idle()) break;

    Duration wait = ComputeWait(now, flush, !input_done && !stopping);
    if (stopping) wait = std::max(Duration(0), std::min(wait, stop_deadline - now));
    responses.clear();
    if (transport.InFlight() > 0) {
      // The stage's busy time is the time the service works for it (what
      // names the embed stage the bottleneck, BottleneckStage).
      const TimePoint poll_start = clock.Now();
      transport.Poll(wait, responses);
      Add(metrics.embedder.busy_ns, static_cast<uint64_t>((clock.Now() - poll_start).count()));
    } else if (!input_done && !stopping && wait > Duration(0) && WantMoreInput()) {
      // Nothing in flight (e.g. every batch waits out a Retry-After): take
      // input only within the backlog bound, or a cooldown would pull the
      // whole corpus into memory (the soak benchmark saw 318 MB).
      std::optional<Chunk> chunk = in.PopFor(wait);
      if (chunk) {
        Accept(std::move(*chunk), clock.Now());
      } else if (in.Ended()) {
        input_done = true;
      }
    } else if (wait > Duration(0)) {
      // On the injected clock: a test's ManualClock steps over a retry timer
      // or the pacer's delay at once instead of sleeping it out.
      clock.SleepFor(wait);
    }
    for (EmbedResponse& response : responses) {
      Status status = HandleResponse(response, out);
      if (!status.ok()) {
        DeadLetterEverything(Status::Cancelled("embed stage stopped: " + status.ToString()));
        return status;
      }
    }
  }
  PublishGauges();
  return Status::OK();
}

EmbedStage::EmbedStage(EmbedStageOptions options, EmbeddingTransport& transport,
                       ConcurrencyLimiter& limiter, RatePacer& pacer, const Clock& clock,
                       Metrics& metrics, DeadLetterSink& dead_letters)
    : impl_(std::make_unique<Impl>(std::move(options), transport, limiter, pacer, clock, metrics,
                                   dead_letters)) {}

EmbedStage::~EmbedStage() = default;

void EmbedStage::SetObserver(RequestObserver observer) { impl_->observer = std::move(observer); }

void EmbedStage::SetStopNotice(std::function<void(const std::string&)> notice) {
  impl_->stop_notice = std::move(notice);
}

void EmbedStage::SetReplacementHook(
    std::function<void(const std::string& original_id, const std::vector<std::string>& ids)> hook) {
  impl_->replacement_hook = std::move(hook);
}

Status EmbedStage::Run(BoundedQueue<Chunk>& in, BoundedQueue<EmbeddedChunk>& out) {
  return impl_->Run(in, out);
}

void EmbedStage::RequestStop() { impl_->stop_requested.store(true, std::memory_order_release); }

}  // namespace sluice
