// The PostgreSQL store's reads for queries: nearest-neighbour search
// (pgvector, or an exact client-side scan of real[]) and row counts
// (pg_store.h).
#include "store/postgres/pg_store.h"

#include <algorithm>
#include <cmath>
#include <map>
#include <queue>

#include "store/postgres/pg_transaction.h"

namespace sluice::pg {

Result<std::vector<SearchHit>> PostgresStore::Search(std::span<const float> query, int k) {
  if (k <= 0) return std::vector<SearchHit>{};
  {
    std::lock_guard<std::mutex> lock(schema_mu_);
    if (!schema_ready_) return std::vector<SearchHit>{};
    if (static_cast<int>(query.size()) != dims_) {
      return Status::InvalidArgument("query has " + std::to_string(query.size()) +
                                     " dimensions, the table " + std::to_string(dims_));
    }
  }
  auto usable = CheckoutUsable();
  if (!usable.ok()) return usable.status();
  std::unique_ptr<PgConn> conn = std::move(*usable);
  auto hits = pgvector_ ? SearchVector(*conn, query, k) : SearchScan(*conn, query, k);
  Return(std::move(conn));
  return hits;
}

namespace {

SearchHit HitFromRow(const PGresult* r, int row) {
  SearchHit h;
  h.chunk_id = PQgetvalue(r, row, 0);
  h.source_id = PQgetvalue(r, row, 1);
  h.ordinal = static_cast<uint32_t>(std::strtoul(PQgetvalue(r, row, 2), nullptr, 10));
  h.text = PQgetvalue(r, row, 3);
  h.domain = PQgetvalue(r, row, 4);
  h.category = PQgetvalue(r, row, 5);
  h.metadata_json = PQgetvalue(r, row, 6);
  return h;
}

}  // namespace

Result<std::vector<SearchHit>> PostgresStore::SearchVector(PgConn& c, std::span<const float> query,
                                                           int k) {
  const std::string sql =
      "SELECT id, source_id, ordinal, text, domain, category, metadata::text, "
      "1 - (embedding <=> $1::vector) FROM " +
      q_chunks_ + " ORDER BY embedding <=> $1::vector LIMIT " + std::to_string(k);
  const std::string params[1] = {pg::EncodeVectorBinary(query)};
  PgResult r = ExecParams(c.pg, sql, params, 0);
  if (!ResultOk(r.get())) return Fail(Classify(c.pg, r.get()), "search");
  std::vector<SearchHit> hits;
  for (int i = 0; i < PQntuples(r.get()); ++i) {
    SearchHit h = HitFromRow(r.get(), i);
    h.score = std::strtod(PQgetvalue(r.get(), i, 7), nullptr);
    hits.push_back(std::move(h));
  }
  return hits;
}

// Exact cosine scan on the client for real[] tables: stream (id, embedding)
// through a cursor in binary, keep the k best, then fetch their rows.
Result<std::vector<SearchHit>> PostgresStore::SearchScan(PgConn& c, std::span<const float> query,
                                                         int k) {
  double qnorm = 0;
  for (float f : query) qnorm += double(f) * f;
  qnorm = std::sqrt(qnorm);
  using Scored = std::pair<double, std::string>;  // min-heap of the k best
  std::priority_queue<Scored, std::vector<Scored>, std::greater<>> best;
  PgTransaction tx(c);  // the cursor's
  PgError e;
  if ((e = tx.Begin()).fault != Fault::kNone) return Fail(e, "search");
  if ((e = Exec(c,
                "DECLARE sluice_scan NO SCROLL CURSOR FOR SELECT id, embedding FROM " + q_chunks_))
          .fault != Fault::kNone) {
    return Fail(e, "search");
  }
  for (;;) {
    PgResult r(PQexecParams(c.pg, "FETCH 2000 FROM sluice_scan", 0, nullptr, nullptr, nullptr,
                            nullptr, 1));
    if (!ResultOk(r.get())) return Fail(Classify(c.pg, r.get()), "search");
    const int n = PQntuples(r.get());
    if (n == 0) break;
    for (int i = 0; i < n; ++i) {
      auto v = pg::DecodeFloat4ArrayBinary(
          std::string_view(PQgetvalue(r.get(), i, 1), PQgetlength(r.get(), i, 1)));
      if (!v || v->size() != query.size()) continue;
      double dot = 0, norm = 0;
      for (size_t j = 0; j < query.size(); ++j) {
        dot += double(query[j]) * (*v)[j];
        norm += double((*v)[j]) * (*v)[j];
      }
      const double denom = qnorm * std::sqrt(norm);
      const double score = denom > 0 ? dot / denom : 0;
      if (static_cast<int>(best.size()) < k) {
        best.emplace(score, std::string(PQgetvalue(r.get(), i, 0), PQgetlength(r.get(), i, 0)));
      } else if (score > best.top().first) {
        best.pop();
        best.emplace(score, std::string(PQgetvalue(r.get(), i, 0), PQgetlength(r.get(), i, 0)));
      }
    }
  }
  Exec(c, "CLOSE sluice_scan");
  tx.Commit();  // read-only: a failed COMMIT loses nothing (as before the guard)
  std::vector<Scored> top;
  while (!best.empty()) {
    top.push_back(best.top());
    best.pop();
  }
  std::reverse(top.begin(), top.end());
  std::vector<SearchHit> hits;
  if (top.empty()) return hits;
  std::string sql = "SELECT id, source_id, ordinal, text, domain, category, metadata::text FROM " +
                    q_chunks_ + " WHERE id IN (";
  std::vector<const char*> values;
  for (size_t i = 0; i < top.size(); ++i) {
    sql += (i ? ",$" : "$") + std::to_string(i + 1);
    values.push_back(top[i].second.c_str());
  }
  sql += ")";
  PgResult r(PQexecParams(c.pg, sql.c_str(), static_cast<int>(values.size()), nullptr,
                          values.data(), nullptr, nullptr, 0));
  if (!ResultOk(r.get())) return Fail(Classify(c.pg, r.get()), "search");
  std::map<std::string, SearchHit> by_id;
  for (int i = 0; i < PQntuples(r.get()); ++i) {
    SearchHit h = HitFromRow(r.get(), i);
    by_id[h.chunk_id] = std::move(h);
  }
  for (const auto& [score, id] : top) {
    auto it = by_id.find(id);
    if (it == by_id.end()) continue;  // deleted meanwhile
    it->second.score = score;
    hits.push_back(std::move(it->second));
  }
  return hits;
}

Result<StoreStats> PostgresStore::Stats() {
  {
    std::lock_guard<std::mutex> lock(schema_mu_);
    if (!schema_ready_) return StoreStats{};
  }
  auto usable = CheckoutUsable();
  if (!usable.ok()) return usable.status();
  std::unique_ptr<PgConn> conn = std::move(*usable);
  const std::string sql =
      "SELECT (SELECT count(*) FROM " + q_chunks_ + "), (SELECT count(*) FROM " + q_sources_ + ")";
  PgResult r(PQexec(conn->pg, sql.c_str()));
  Result<StoreStats> out = StoreStats{};
  if (!ResultOk(r.get())) {
    out = Fail(Classify(conn->pg, r.get()), "stats");
  } else {
    out->chunks = std::strtoull(PQgetvalue(r.get(), 0, 0), nullptr, 10);
    out->sources = std::strtoull(PQgetvalue(r.get(), 0, 1), nullptr, 10);
  }
  Return(std::move(conn));
  return out;
}

}  // namespace sluice::pg
