// libpq helpers of the PostgreSQL store (pg_conn.h).
#include "store/postgres/pg_conn.h"

#include <bit>
#include <vector>

namespace sluice::pg {
std::string QuoteIdent(std::string_view name) {
  std::string out = "\"";
  for (char c : name) {
    if (c == '"') out += '"';
    out += c;
  }
  out += '"';
  return out;
}

std::string QuoteLiteral(std::string_view s) {
  std::string out = "'";
  for (char c : s) {
    if (c == '\'') out += '\'';
    out += c;
  }
  out += '\'';
  return out;
}

std::string Trim(std::string s) {
  while (!s.empty() && (s.back() == '\n' || s.back() == ' ' || s.back() == '\t')) s.pop_back();
  return s;
}

PgError Classify(PGconn* conn, const PGresult* res) {
  PgError e;
  const char* state = res ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : nullptr;
  const char* primary = res ? PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY) : nullptr;
  e.sqlstate = state ? state : "";
  if (primary) {
    e.message = primary;
    if (const char* detail = PQresultErrorField(res, PG_DIAG_MESSAGE_DETAIL)) {
      e.message += std::string(" (") + detail + ")";
    }
  } else {
    e.message = Trim(PQerrorMessage(conn));
    if (e.message.empty()) e.message = "unknown libpq error";
  }
  const std::string& s = e.sqlstate;
  if (PQstatus(conn) != CONNECTION_OK || s.starts_with("08") || s == "57P01" || s == "57P02" ||
      s == "57P03" || (s.empty() && !res)) {
    e.fault = Fault::kConnection;
  } else if (s.starts_with("40") || s.starts_with("53") || s == "57014" || s == "55P03" ||
             s == "25P02") {
    // 25P02 (in failed transaction): on PGlite, whose connections share one
    // backend, another connection's failed statement can abort ours: replay.
    e.fault = Fault::kTransient;
  } else if (s.starts_with("22") || s.starts_with("23") || s.starts_with("54")) {
    e.fault = Fault::kData;
  } else if (s.empty()) {
    e.fault = Fault::kConnection;  // no SQLSTATE: a libpq-side (I/O) failure
  } else {
    e.fault = Fault::kFatal;
  }
  return e;
}

// Runs one statement (text format, no parameters) and drains every result so
// the connection is ready for the next command.
PgResult ExecDrain(PGconn* c, const std::string& sql) {
  PgResult first(PQexec(c, sql.c_str()));
  // PQexec already consumes all results; nothing more to drain.
  return first;
}

// PQexecParams with every parameter in binary format (arrays from
// pg_binary; a text value's binary form is its bytes). Results in
// `result_format` (0 text, 1 binary).
PgResult ExecParams(PGconn* pg, const std::string& sql, std::span<const std::string> params,
                    int result_format) {
  std::vector<const char*> values;
  std::vector<int> lengths;
  for (const std::string& p : params) {
    values.push_back(p.data());
    lengths.push_back(static_cast<int>(p.size()));
  }
  const std::vector<int> binary(params.size(), 1);
  return PgResult(PQexecParams(pg, sql.c_str(), static_cast<int>(params.size()), nullptr,
                               values.data(), lengths.data(), binary.data(), result_format));
}

bool ResultOk(const PGresult* r) {
  if (!r) return false;
  const auto st = PQresultStatus(r);
  return st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK || st == PGRES_COPY_IN;
}
std::string ColumnList(std::string_view prefix) {
  std::string out;
  for (int i = 0; i < kNumColumns; ++i) {
    if (i) out += ", ";
    out += prefix;
    out += kColumns[i];
  }
  return out;
}

std::string EscapeLiteral(PGconn* pg, std::string_view s) {
  char* q = PQescapeLiteral(pg, s.data(), s.size());
  if (!q) return "NULL";  // invalid encoding: the statement fails as a data error
  std::string out(q);
  PQfreemem(q);
  return out;
}

// A run is alive while a session holds the advisory lock (run_id's high 32
// bits, its low 32 bits) in this database: the two-key form, which pg_locks
// shows as classid, objid and objsubid 2 (the table-creation lock uses the
// one-key form, objsubid 1). A process that dies loses its session and so
// the lock: its run records can then go. (PGlite serves every connection
// from one backend that never ends, so there every run looks alive and the
// dead runs' records just stay: they are never read by another run.)
std::string RunIsDeadSql(const std::string& run_id) {
  return "NOT EXISTS (SELECT 1 FROM pg_locks l WHERE l.locktype = 'advisory' AND l.objsubid = 2 "
         "AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database()) "
         "AND l.classid = ((" +
         run_id + " >> 32) & 4294967295)::oid AND l.objid = (" + run_id + " & 4294967295)::oid)";
}

// Vectors in the embedding cache are little-endian float32 bytes, as in the
// SQLite store's cache, whatever the chunks table's vector type.
void AppendFloatsLE(std::string& out, std::span<const float> values) {
  for (float f : values) {
    const uint32_t u = std::bit_cast<uint32_t>(f);
    const char b[4] = {static_cast<char>(u), static_cast<char>(u >> 8), static_cast<char>(u >> 16),
                       static_cast<char>(u >> 24)};
    out.append(b, 4);
  }
}

std::vector<float> FloatsFromLE(std::string_view bytes) {
  std::vector<float> out(bytes.size() / 4);
  const auto* p = reinterpret_cast<const unsigned char*>(bytes.data());
  for (size_t i = 0; i < out.size(); ++i, p += 4) {
    out[i] = std::bit_cast<float>(uint32_t{p[0]} | (uint32_t{p[1]} << 8) | (uint32_t{p[2]} << 16) |
                                  (uint32_t{p[3]} << 24));
  }
  return out;
}

std::string_view Value(const PGresult* r, int row, int col) {
  return {PQgetvalue(r, row, col), static_cast<size_t>(PQgetlength(r, row, col))};
}

}  // namespace sluice::pg
