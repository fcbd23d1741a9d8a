// `sluice aggregate --store URI --out DIR`: the files rebuilt from a store are
// byte for byte the files an ingest of the same corpus wrote, also after the
// corpus changed (chunks the store dropped leave the files), on SQLite and on
// PostgreSQL; a missing store is a clear error that writes nothing.
#include <gtest/gtest.h>

#include <filesystem>
#include <map>
#include <string>

#include "store/postgres/pg_test_util.h"
#include "testing/test_util.h"

namespace sluice {
namespace {

namespace fs = std::filesystem;
using testing::ReadFile;
using testing::RunCommand;
using testing::TempDir;
using testing::WriteFile;

const std::string kSluice = SLUICE_BINARY;

// Every aggregate file under `dir` (sluice's own dot-files left out), by
// relative path, with its bytes.
std::map<std::string, std::string> AggregateFiles(const std::string& dir) {
  std::map<std::string, std::string> files;
  for (const auto& e : fs::recursive_directory_iterator(dir)) {
    const std::string rel = fs::relative(e.path(), dir).string();
    if (!e.is_regular_file() || rel.front() == '.') continue;
    files.emplace(rel, ReadFile(e.path().string()));
  }
  return files;
}

void WriteCorpus(const TempDir& dir) {
  WriteFile(dir / "corpus/ops/gates.md",
            "# Gates\n\nOpen the gate slowly. Check the seal before the flood season.\n\n"
            "## Seals\n\nA worn seal leaks. Replace it with the spare from the store room.\n");
  WriteFile(dir / "corpus/ops/pumps.txt", "Pumps are started in sequence.\n\nNever run dry.\n");
  WriteFile(dir / "corpus/faq/records.jsonl",
            "{\"id\":\"q1\",\"text\":\"How often is the seal replaced? Every spring.\"}\n"
            "{\"id\":\"q2\",\"text\":\"Who opens the gate? The duty engineer.\"}\n");
  WriteFile(dir / "routes.toml",
            "[[route]]\nglob = \"ops/*\"\ndomain = \"plant\"\ncategory = \"operations\"\n"
            "[[route]]\nglob = \"faq/*\"\ndomain = \"plant\"\ncategory = \"questions\"\n");
}

// Ingests the corpus (offline embedder) into `store_args`, then rebuilds a
// second folder from the store and compares; then changes the corpus and
// does it again into the same second folder, which still holds the old chunks.
void ExpectRebuildMatchesIngest(const TempDir& dir, const std::string& store_args) {
  WriteCorpus(dir);
  const std::string ingest = kSluice + " ingest " + (dir / "corpus") + store_args + " --routes " +
                             (dir / "routes.toml") + " --chunk-tokens 16 --chunk-overlap 2" +
                             " --cleanup full --no-progress --out " + (dir / "ingested");
  auto r = RunCommand(ingest);
  ASSERT_EQ(r.exit_code, 0) << r.output;
  const std::string aggregate = kSluice + " aggregate" + store_args + " --out " + (dir / "rebuilt");
  r = RunCommand(aggregate);
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("of 3 files in 2 group files"), std::string::npos) << r.output;
  const auto ingested = AggregateFiles(dir / "ingested");
  ASSERT_EQ(ingested.size(), 2u);
  EXPECT_EQ(AggregateFiles(dir / "rebuilt"), ingested);

  // The corpus changes: one file shrinks, one goes. The ingest updates its
  // folder; the rebuild of the other folder drops what the store dropped.
  WriteFile(dir / "corpus/ops/gates.md", "# Gates\n\nOpen the gate slowly.\n");
  fs::remove(dir / "corpus/faq/records.jsonl");
  r = RunCommand(ingest);
  ASSERT_EQ(r.exit_code, 0) << r.output;
  r = RunCommand(aggregate);
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("dropped"), std::string::npos) << r.output;
  const auto changed = AggregateFiles(dir / "ingested");
  EXPECT_NE(changed, ingested);
  EXPECT_EQ(AggregateFiles(dir / "rebuilt"), changed);
  EXPECT_EQ(changed.count("plant/questions.json"), 0u);
}

TEST(AggregateCommandTest, RebuildFromSqliteEqualsWhatTheIngestWrote) {
  TempDir dir;
  ExpectRebuildMatchesIngest(dir, " --store sqlite:" + (dir / "s.db"));
}

TEST(AggregateCommandTest, RebuildFromPostgresEqualsWhatTheIngestWrote) {
  SLUICE_REQUIRE_DSN(dsn, "SLUICE_TEST_PG_DSN");
  TempDir dir;
  ExpectRebuildMatchesIngest(
      dir, " --store '" + dsn + "' --table " + pgtest::UniqueTable("aggregate_cmd"));
}

TEST(AggregateCommandTest, AMissingStoreIsAnErrorThatWritesNothing) {
  TempDir dir;
  auto r = RunCommand(kSluice + " aggregate --store sqlite:" + (dir / "none.db") + " --out " +
                      (dir / "out"));
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_NE(r.output.find("none.db"), std::string::npos) << r.output;
  EXPECT_FALSE(fs::exists(dir / "out"));
  EXPECT_FALSE(fs::exists(dir / "none.db"));
}

}  // namespace
}  // namespace sluice
