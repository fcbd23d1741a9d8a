// The vector(N) path against real pgvector code: PostgreSQL compiled to
// WebAssembly (PGlite) with the pgvector extension, behind a wire-protocol
// server started by scripts/test-services.sh. PGlite's connections share one
// backend, so these tests run one at a time (ctest RESOURCE_LOCK pglite) and
// start with DEALLOCATE ALL.
#include <gtest/gtest.h>

#include <bit>
#include <cmath>
#include <limits>

#include "pg_test_util.h"
#include "store/postgres/pg_binary.h"
#include "store/postgres/postgres_store.h"

namespace sluice {
namespace {

using pgtest::RawPg;
using pgtest::TestChunks;
using pgtest::UniqueTable;

constexpr int kDims = 8;

class PgvectorStoreTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dsn_ = pgtest::DsnFromEnv("SLUICE_TEST_PGVECTOR_DSN");
    if (dsn_.empty()) {
      if (pgtest::ServicesRequired()) FAIL() << "SLUICE_TEST_PGVECTOR_DSN is not set";
      GTEST_SKIP() << "SLUICE_TEST_PGVECTOR_DSN not set; run under scripts/test-services.sh";
    }
    raw_ = std::make_unique<RawPg>(dsn_);
    ASSERT_TRUE(raw_->ok()) << PQerrorMessage(raw_->get());
    raw_->Command("DEALLOCATE ALL");
  }
  std::unique_ptr<Store> Open(const std::string& table, const std::string& index = "") {
    StoreOptions o;
    o.table = table;
    o.create_index = index;
    auto s = OpenPostgresStore(dsn_, o);
    EXPECT_TRUE(s.ok()) << s.status().ToString();
    return s.ok() ? std::move(*s) : nullptr;
  }
  std::string dsn_;
  std::unique_ptr<RawPg> raw_;
};

TEST_F(PgvectorStoreTest, SchemaProbePicksVectorN) {
  const std::string table = UniqueTable("vprobe");
  auto store = Open(table);
  ASSERT_TRUE(store);
  ASSERT_TRUE(store->Write(TestChunks(0, 20, kDims)).status.ok());
  const PostgresSchemaInfo info = GetPostgresSchemaInfo(*store);
  EXPECT_TRUE(info.pgvector);
  EXPECT_FALSE(info.copy_path);  // PGlite: prepared INSERTs, never COPY
  EXPECT_EQ(info.dimensions, kDims);
  EXPECT_EQ(
      raw_->Scalar("SELECT format_type(atttypid, atttypmod) FROM pg_attribute WHERE attrelid='\"" +
                   table + "\"'::regclass AND attname='embedding'"),
      "vector(8)");
  EXPECT_EQ(raw_->Scalar("SELECT count(*) FROM \"" + table + "\""), "20");
  EXPECT_EQ(raw_->Scalar("SELECT sum(chunk_count) FROM \"" + table + "_sources\""), "20");
  ASSERT_TRUE(store->Close().ok());
  // Reopened: the existing vector(8) column is read back.
  auto again = Open(table);
  ASSERT_TRUE(again);
  EXPECT_TRUE(GetPostgresSchemaInfo(*again).pgvector);
  EXPECT_EQ(GetPostgresSchemaInfo(*again).dimensions, kDims);
}

TEST_F(PgvectorStoreTest, BinaryVectorRoundTripsByteExactly) {
  const std::string table = UniqueTable("vbytes");
  auto store = Open(table);
  ASSERT_TRUE(store);
  auto batch = TestChunks(0, 3, kDims);
  batch[0].embedding = {0.0f,
                        -0.0f,
                        std::numeric_limits<float>::denorm_min(),
                        std::numeric_limits<float>::max(),
                        -std::numeric_limits<float>::min(),
                        0.1f,
                        -1e-30f,
                        3.14159274f};
  ASSERT_TRUE(store->Write(batch).status.ok());
  for (const auto& e : batch) {
    const std::string sql = "SELECT embedding FROM \"" + table + "\" WHERE id='" + e.chunk.id + "'";
    PGresult* r = PQexecParams(raw_->get(), sql.c_str(), 0, nullptr, nullptr, nullptr, nullptr, 1);
    ASSERT_EQ(PQresultStatus(r), PGRES_TUPLES_OK) << PQresultErrorMessage(r);
    ASSERT_EQ(PQntuples(r), 1);
    const std::string bytes(PQgetvalue(r, 0, 0), PQgetlength(r, 0, 0));
    PQclear(r);
    EXPECT_EQ(bytes, pg::EncodeVectorBinary(e.embedding));
    auto decoded = pg::DecodeVectorBinary(bytes);
    ASSERT_TRUE(decoded.has_value());
    ASSERT_EQ(decoded->size(), e.embedding.size());
    for (size_t i = 0; i < e.embedding.size(); ++i) {
      EXPECT_EQ(std::bit_cast<uint32_t>((*decoded)[i]), std::bit_cast<uint32_t>(e.embedding[i]));
    }
  }
  // pgvector's text form agrees with what we sent.
  EXPECT_EQ(raw_->Scalar("SELECT (embedding::real[])[6]::text FROM \"" + table + "\" WHERE id='" +
                         batch[0].chunk.id + "'"),
            "0.1");
}

TEST_F(PgvectorStoreTest, CosineOperatorOrdersSearchResults) {
  auto store = Open(UniqueTable("vsearch"));
  ASSERT_TRUE(store);
  // Unit vectors at growing angles from e0: cosine 1, cos 0.3, cos 0.6, ...
  std::vector<EmbeddedChunk> batch = TestChunks(0, 5, kDims);
  for (size_t i = 0; i < batch.size(); ++i) {
    std::vector<float> v(kDims, 0.0f);
    v[0] = std::cos(0.3f * i);
    v[1] = std::sin(0.3f * i);
    batch[i].embedding = v;
  }
  ASSERT_TRUE(store->Write(batch).status.ok());
  std::vector<float> query(kDims, 0.0f);
  query[0] = 2.0f;  // not normalized: cosine ignores length
  auto hits = store->Search(query, 3);
  ASSERT_TRUE(hits.ok()) << hits.status().ToString();
  ASSERT_EQ(hits->size(), 3u);
  for (size_t i = 0; i < 3; ++i) {
    EXPECT_EQ((*hits)[i].chunk_id, batch[i].chunk.id) << i;
    EXPECT_NEAR((*hits)[i].score, std::cos(0.3 * i), 1e-5);
  }
  EXPECT_EQ((*hits)[0].text, batch[0].chunk.text);
}

TEST_F(PgvectorStoreTest, WrongDimensionIsRejectedWithPgvectorsMessage) {
  const std::string table = UniqueTable("vbad");
  auto store = Open(table);
  ASSERT_TRUE(store);
  ASSERT_TRUE(store->Write(TestChunks(0, 2, kDims)).status.ok());
  auto batch = TestChunks(10, 6, kDims);
  batch[4].embedding.resize(kDims - 1);
  WriteResult w = store->Write(batch);
  ASSERT_TRUE(w.status.ok()) << w.status.ToString();
  ASSERT_EQ(w.rejected.size(), 1u);
  EXPECT_EQ(w.rejected[0].index, 4u);
  EXPECT_NE(w.rejected[0].why.message().find("expected 8 dimensions, not 7"), std::string::npos)
      << w.rejected[0].why.message();
  EXPECT_EQ(raw_->Scalar("SELECT count(*) FROM \"" + table + "\""), "7");
}

TEST_F(PgvectorStoreTest, RerunRewritesNothing) {
  const std::string table = UniqueTable("vrerun");
  auto store = Open(table);
  ASSERT_TRUE(store);
  auto batch = TestChunks(0, 70, kDims);  // > 64: two INSERT statements
  ASSERT_TRUE(store->Write(batch).status.ok());
  const std::string q = "SELECT string_agg(xmin::text, ',' ORDER BY id) FROM \"" + table + "\"";
  const std::string before = raw_->Scalar(q);
  ASSERT_TRUE(store->Write(batch).status.ok());
  EXPECT_EQ(raw_->Scalar("SELECT count(*) FROM \"" + table + "\""), "70");
  EXPECT_EQ(raw_->Scalar(q), before);
}

TEST_F(PgvectorStoreTest, CreateIndexHnswAfterTheLoad) {
  const std::string table = UniqueTable("vhnsw");
  auto store = Open(table, "hnsw");
  ASSERT_TRUE(store);
  ASSERT_TRUE(store->Write(TestChunks(0, 50, kDims)).status.ok());
  ASSERT_TRUE(store->Flush().ok());
  const std::string def = raw_->Scalar("SELECT indexdef FROM pg_indexes WHERE tablename='" + table +
                                       "' AND indexdef LIKE '%USING hnsw%'");
  EXPECT_NE(def.find("USING hnsw (embedding vector_cosine_ops)"), std::string::npos) << def;
  std::vector<float> query = TestChunks(7, 1, kDims)[0].embedding;
  auto hits = store->Search(query, 1);
  ASSERT_TRUE(hits.ok()) << hits.status().ToString();
  ASSERT_EQ(hits->size(), 1u);
  EXPECT_NEAR((*hits)[0].score, 1.0, 1e-5);
}

}  // namespace
}  // namespace sluice
