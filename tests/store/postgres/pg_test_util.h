// Helpers for the PostgreSQL store's service tests: DSNs from the environment
// (set by scripts/test-services.sh), deterministic chunks, a raw libpq
// connection for checking what landed, and a private throwaway cluster for
// tests that stop and start the server.
// Thread safety: RawPg is one connection, one thread.
#pragma once

#include <gtest/gtest.h>
#include <libpq-fe.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <cstdlib>
#include <random>
#include <string>
#include <vector>

#include "common/hashing.h"
#include "sluice/store.h"

namespace sluice::pgtest {

// Returns the DSN in `env`; empty when absent (the caller skips, or fails when
// SLUICE_TEST_SERVICES=1 says the services were supposed to be there).
inline std::string DsnFromEnv(const char* env) {
  const char* v = std::getenv(env);
  return v ? v : "";
}
inline bool ServicesRequired() {
  const char* v = std::getenv("SLUICE_TEST_SERVICES");
  return v && std::string(v) == "1";
}

#define SLUICE_REQUIRE_DSN(var, env)                                       \
  const std::string var = ::sluice::pgtest::DsnFromEnv(env);               \
  if (var.empty()) {                                                       \
    if (::sluice::pgtest::ServicesRequired()) FAIL() << env " is not set"; \
    GTEST_SKIP() << env " not set; run under scripts/test-services.sh";    \
  }

// Unique across processes and runs against one cluster: tests leave their
// tables behind, and pids repeat (pid_max is 32768 here), so a random part
// keeps a later process from finding an earlier one's rows.
inline std::string UniqueTable(const std::string& base) {
  static std::atomic<int> counter{0};
  static const std::string run = [] {
    std::random_device entropy;
    return Hex64((uint64_t{entropy()} << 32) ^ entropy()).substr(0, 8);
  }();
  return base + "_" + std::to_string(getpid()) + "_" + run + "_" + std::to_string(++counter);
}

// A deterministic vector for `seed` (values in [-1, 1)).
inline std::vector<float> TestVector(uint64_t seed, int dims) {
  std::vector<float> v(dims);
  uint64_t state = seed * 7919 + 1;
  for (auto& f : v) f = static_cast<float>((SplitMix64(state) >> 40) / double(1 << 23) - 1.0);
  return v;
}

inline EmbeddedChunk TestChunk(uint64_t n, int dims, const std::string& source = "") {
  EmbeddedChunk e;
  e.chunk.id = Hash128Hex("chunk-" + std::to_string(n));
  e.chunk.source_id = source.empty() ? "doc-" + std::to_string(n / 10) + ".md" : source;
  e.chunk.ordinal = static_cast<uint32_t>(n % 10);
  e.chunk.byte_begin = n * 100;
  e.chunk.byte_end = n * 100 + 99;
  e.chunk.text = "chunk number " + std::to_string(n) + " with \"quotes\", ünïcödé and \\ ";
  e.chunk.domain = "manuals";
  e.chunk.category = "pumps";
  e.chunk.metadata_json = "{\"n\":" + std::to_string(n) + ",\"title\":\"T\"}";
  e.chunk.token_estimate = 17;
  e.embedding = TestVector(n, dims);
  e.model = "test-model";
  return e;
}

inline std::vector<EmbeddedChunk> TestChunks(uint64_t first, size_t count, int dims) {
  std::vector<EmbeddedChunk> out;
  for (size_t i = 0; i < count; ++i) out.push_back(TestChunk(first + i, dims));
  return out;
}

// A plain libpq connection for assertions.
class RawPg {
 public:
  explicit RawPg(const std::string& dsn) : pg_(PQconnectdb(dsn.c_str())) {}
  ~RawPg() { PQfinish(pg_); }
  RawPg(const RawPg&) = delete;
  RawPg& operator=(const RawPg&) = delete;
  bool ok() const { return PQstatus(pg_) == CONNECTION_OK; }
  PGconn* get() { return pg_; }
  // First column of every row, as text; ADD_FAILURE on error.
  std::vector<std::string> Column(const std::string& sql) {
    std::vector<std::string> out;
    PGresult* r = PQexec(pg_, sql.c_str());
    if (PQresultStatus(r) != PGRES_TUPLES_OK) {
      ADD_FAILURE() << sql << ": " << PQresultErrorMessage(r);
    } else {
      for (int i = 0; i < PQntuples(r); ++i) out.emplace_back(PQgetvalue(r, i, 0));
    }
    PQclear(r);
    return out;
  }
  std::string Scalar(const std::string& sql) {
    auto c = Column(sql);
    return c.empty() ? "" : c[0];
  }
  bool Command(const std::string& sql) {
    PGresult* r = PQexec(pg_, sql.c_str());
    const bool ok = PQresultStatus(r) == PGRES_COMMAND_OK || PQresultStatus(r) == PGRES_TUPLES_OK;
    if (!ok) ADD_FAILURE() << sql << ": " << PQresultErrorMessage(r);
    PQclear(r);
    return ok;
  }

 private:
  PGconn* pg_;
};

inline int FreeLoopbackPort() {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = 0;
  bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr);
  socklen_t len = sizeof addr;
  getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len);
  close(fd);
  return ntohs(addr.sin_port);
}

}  // namespace sluice::pgtest
