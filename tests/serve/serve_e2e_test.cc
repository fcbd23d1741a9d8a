// `sluice serve` end to end: the real binary, real HTTP over loopback
// (cpp-httplib's client), the simulated API as its own process (`sluice
// mock-api` with latency, so a job is observably mid-run). Every step waits
// on something it can see (an event, an exit, a line on stdout), never on a
// sleep.
#include <httplib.h>
#include <poll.h>
#include <signal.h>
#include <simdjson.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <chrono>
#include <filesystem>
#include <functional>
#include <optional>
#include <thread>

#include "serve/serve_process.h"
#include "testing/child_process.h"
#include "testing/sqlite_query.h"
#include "testing/test_util.h"

namespace sluice {
namespace {

using namespace servetest;  // NOLINT: the shared serve test helpers
using std::chrono::seconds;
using testing::ReadFile;
using testing::RunCommand;
using testing::TempDir;
using testing::WriteFile;

class ServeTest : public ::testing::Test {
 protected:
  std::string root() const { return dir_ / "root"; }
  std::string state() const { return dir_ / "state"; }
  std::string log() const { return dir_ / "serve.log"; }
  void SetUp() override { std::filesystem::create_directories(root()); }

  TempDir dir_;
};

constexpr int kRecordsA = 40;
constexpr int kFilesB = 30;

TEST_F(ServeTest, TwoJobsOneCancelledMidRunTheOtherSurvivesARestart) {
  Child mock({kSluice, "mock-api", "--port", "0", "--dimensions", "16", "--latency-ms", "150"},
             dir_ / "mock.log");
  const std::string api = UrlIn(mock.WaitForLine("listening on"));
  ASSERT_FALSE(api.empty()) << ReadFile(dir_ / "mock.log");

  // Job A: inline records; job B: a folder under the allowed root. One chunk
  // per record or file, two per request, one request at a time, committed
  // two at a time: each job takes seconds against a 150 ms API.
  std::string records;
  for (int i = 0; i < kRecordsA; ++i) {
    records += "{\"id\":" + std::to_string(i) + ",\"text\":\"record " + std::to_string(i) +
               " about the sluice gate\"}\n";
  }
  for (int i = 0; i < kFilesB; ++i) {
    WriteFile(root() + "/corpus/doc" + std::to_string(i) + ".txt",
              "Document " + std::to_string(i) + " on the spillway.\n");
  }
  const std::string common =
      ",\"endpoint\":" + JsonString(api) +
      ",\"model\":\"mock-model\",\"batch-size\":2,\"concurrency\":1,\"store-batch\":2";
  const std::string store_a = root() + "/a.db", store_b = root() + "/b.db";

  std::string id_a, id_b;
  {
    ServeProcess serve(state(), {"--allow-root", root()}, log());
    ASSERT_FALSE(serve.url().empty()) << ReadFile(log());
    httplib::Client client = serve.Client();
    auto a = client.Post("/v1/jobs",
                         "{\"jsonl\":" + JsonString(records) +
                             ",\"store\":" + JsonString("sqlite:" + store_a) + common + "}",
                         "application/json");
    ASSERT_TRUE(a) << httplib::to_string(a.error());
    ASSERT_EQ(a->status, 201) << a->body;
    auto b = client.Post("/v1/jobs",
                         "{\"paths\":[" + JsonString(root() + "/corpus") +
                             "],\"store\":" + JsonString("sqlite:" + store_b) + common + "}",
                         "application/json");
    ASSERT_EQ(b->status, 201) << b->body;
    id_a = Json(a->body).Str("/id");
    id_b = Json(b->body).Str("/id");
    EXPECT_EQ(Json(b->body).Str("/state"), "queued");  // --max-jobs 1: A runs first
    EXPECT_EQ(a->get_header_value("Location"), "/v1/jobs/" + id_a);

    // A third job, queued behind A (seconds of work against the mock) and B,
    // is cancelled at once and never runs.
    auto c = client.Post("/v1/jobs",
                         "{\"jsonl\":" + JsonString(records) + ",\"store\":" +
                             JsonString("sqlite:" + root() + "/c.db") + common + "}",
                         "application/json");
    ASSERT_EQ(c->status, 201) << c->body;
    const std::string id_c = Json(c->body).Str("/id");
    auto cancelled_c = client.Delete("/v1/jobs/" + id_c);
    ASSERT_EQ(cancelled_c->status, 200) << cancelled_c->body;
    EXPECT_EQ(Json(cancelled_c->body).Str("/state"), "cancelled");
    EXPECT_EQ(client.Delete("/v1/jobs/" + id_c)->status, 409);
    EXPECT_EQ(client.Get("/v1/jobs/j999999")->status, 404);
    EXPECT_EQ(client.Delete("/v1/jobs/j999999")->status, 404);
    EXPECT_EQ(client.Get("/v1/nothing")->status, 404);

    auto list = client.Get("/v1/jobs");
    ASSERT_EQ(list->status, 200);
    Json listed(list->body);
    EXPECT_EQ(listed.Str("/jobs/0/id"), id_a);
    EXPECT_EQ(listed.Str("/jobs/1/id"), id_b);

    // Cancel A once its events show chunks stored.
    bool cancel_sent = false;
    std::string final_a;
    httplib::Client watcher = serve.Client();
    const std::string last =
        WatchEvents(watcher, id_a, [&](const std::string& name, const std::string& data) {
          Json event(data);
          if (name == "final") {
            final_a = data;
            return false;
          }
          if (!cancel_sent && event.Int("/progress/chunks_stored") > 0) {
            httplib::Client canceller = serve.Client();
            auto cancelled = canceller.Delete("/v1/jobs/" + id_a);
            EXPECT_TRUE(cancelled && (cancelled->status == 202 || cancelled->status == 200));
            cancel_sent = true;
          }
          return true;
        });
    ASSERT_EQ(last, "final") << ReadFile(log());
    ASSERT_TRUE(cancel_sent);
    Json a_done(final_a);
    EXPECT_EQ(a_done.Str("/state"), "cancelled") << final_a;
    const int64_t a_stored = a_done.Int("/report/chunks_stored");
    EXPECT_GT(a_stored, 0);
    EXPECT_LT(a_stored, kRecordsA) << "the cancel came too late to stop anything";
    EXPECT_EQ(a_done.Int("/report/chunks_abandoned") + a_stored,
              a_done.Int("/report/chunks_produced"))
        << final_a;
    // The report's count is the store's.
    EXPECT_EQ(testing::StoredChunkCount(store_a), a_stored);

    // B runs next; stop the server once B has stored something.
    bool b_started = false;
    WatchEvents(watcher, id_b, [&](const std::string&, const std::string& data) {
      b_started = Json(data).Int("/progress/chunks_stored") > 0;
      return !b_started;
    });
    ASSERT_TRUE(b_started) << ReadFile(log());
    serve.child().Signal(SIGTERM);
    EXPECT_EQ(serve.child().WaitExit(), 0) << ReadFile(log());
  }
  const std::string saved = ReadFile(state() + "/jobs/" + id_b + "/job.json");
  EXPECT_NE(saved.find("\"state\":\"queued\""), std::string::npos) << saved;
  const int64_t b_before_restart = testing::StoredChunkCount(store_b);
  EXPECT_GT(b_before_restart, 0);
  EXPECT_LT(b_before_restart, kFilesB) << "B finished before the server was stopped";

  // The same state folder: B resumes and completes; A stays cancelled.
  ServeProcess serve(state(), {"--allow-root", root()}, log());
  ASSERT_FALSE(serve.url().empty()) << ReadFile(log());
  httplib::Client client = serve.Client();
  std::string final_b;
  WatchEvents(client, id_b, [&](const std::string& name, const std::string& data) {
    if (name == "final") final_b = data;
    return name != "final";
  });
  Json b_done(final_b);
  ASSERT_EQ(b_done.Str("/state"), "succeeded") << final_b << ReadFile(log());
  EXPECT_EQ(b_done.Int("/attempts"), 2);
  // The rerun skipped the files the first run committed.
  const int64_t unchanged = b_done.Int("/report/sources_unchanged");
  EXPECT_GT(unchanged, 0) << final_b;
  EXPECT_EQ(unchanged + b_done.Int("/report/sources_completed"), kFilesB) << final_b;
  EXPECT_EQ(testing::StoredChunkCount(store_b), kFilesB);
  EXPECT_EQ(b_done.Int("/report/chunks_stored") + unchanged, kFilesB) << final_b;

  EXPECT_FALSE(std::filesystem::exists(root() + "/c.db"));  // the cancelled C never ran
  auto a = client.Get("/v1/jobs/" + id_a);
  ASSERT_EQ(a->status, 200);
  EXPECT_EQ(Json(a->body).Str("/state"), "cancelled");
  EXPECT_EQ(testing::StoredChunkCount(store_a), Json(a->body).Int("/report/chunks_stored"));
}

TEST_F(ServeTest, ABadOptionIsRefusedWith400NamingIt) {
  ServeProcess serve(state(), {}, log());
  ASSERT_FALSE(serve.url().empty()) << ReadFile(log());
  httplib::Client client = serve.Client();
  const std::string records = JsonString("{\"id\":1,\"text\":\"t\"}\n");
  struct Case {
    std::string option;  // a JSON member
    std::string named;   // what the error must name
  };
  for (const Case& c :
       {Case{"\"chunk-tokenz\":64", "chunk-tokenz"}, Case{"\"chunk-tokens\":3", "--chunk-tokens"},
        Case{"\"parser-cmd\":\"cat\"", "parser-cmd"},
        Case{"\"api-key-env\":\"HOME\"", "api-key-env"},
        Case{"\"on-complete\":\"touch /tmp/owned\"", "on-complete"},
        Case{"\"on-complete-url\":\"http://127.0.0.1:1/\"", "on-complete-url"},
        Case{"\"embedder\":\"telepathy\"", "--embedder"},
        Case{"\"route\":[{\"glob\":\"*\",\"colour\":\"red\"}]", "colour"}}) {
    auto r =
        client.Post("/v1/jobs", "{\"jsonl\":" + records + "," + c.option + "}", "application/json");
    ASSERT_TRUE(r);
    EXPECT_EQ(r->status, 400) << c.option << ": " << r->body;
    EXPECT_NE(r->body.find(c.named), std::string::npos) << r->body;
  }
  for (const std::string& body :
       {std::string("not json"), std::string("{}"), std::string("{\"paths\":[]}"),
        "{\"paths\":[\"x\"],\"jsonl\":" + records + "}"}) {
    auto r = client.Post("/v1/jobs", body, "application/json");
    EXPECT_EQ(r->status, 400) << body << ": " << r->body;
  }
  // Nothing refused was queued.
  auto list = client.Get("/v1/jobs");
  EXPECT_EQ(list->body, "{\"jobs\":[]}");
  // A body that is not declared JSON (what a cross-site form could send).
  auto form = client.Post("/v1/jobs", "{\"jsonl\":" + records + "}", "text/plain");
  EXPECT_EQ(form->status, 415);
}

TEST_F(ServeTest, PathsOutsideTheAllowedRootsAre403) {
  const std::string outside = dir_ / "outside";
  WriteFile(outside + "/secret.txt", "not for the API\n");
  std::filesystem::create_symlink(outside, root() + "/link");
  WriteFile(root() + "/inside.txt", "fine\n");
  ServeProcess serve(state(), {"--allow-root", root()}, log());
  ASSERT_FALSE(serve.url().empty()) << ReadFile(log());
  httplib::Client client = serve.Client();
  for (const std::string& path : {outside + "/secret.txt", root() + "/../outside/secret.txt",
                                  root() + "/link/secret.txt", std::string("/etc/passwd")}) {
    auto r = client.Post("/v1/jobs", "{\"paths\":[" + JsonString(path) + "]}", "application/json");
    ASSERT_TRUE(r);
    EXPECT_EQ(r->status, 403) << path << ": " << r->body;
    EXPECT_NE(r->body.find(path), std::string::npos) << r->body;
  }
  // Outputs too: a store or a report outside both the roots and the state folder.
  const std::string inside = JsonString(root() + "/inside.txt");
  for (const std::string& option : {"\"store\":" + JsonString("sqlite:" + outside + "/s.db"),
                                    "\"report\":" + JsonString(root() + "/link/report.json"),
                                    "\"out\":" + JsonString(outside + "/out")}) {
    auto r =
        client.Post("/v1/jobs", "{\"paths\":[" + inside + "]," + option + "}", "application/json");
    EXPECT_EQ(r->status, 403) << option << ": " << r->body;
  }
  EXPECT_FALSE(std::filesystem::exists(outside + "/s.db"));
  // Without --allow-root no path is accepted at all.
  ServeProcess closed(dir_ / "state2", {}, dir_ / "serve2.log");
  httplib::Client closed_client = closed.Client();
  auto r = closed_client.Post("/v1/jobs", "{\"paths\":[" + inside + "]}", "application/json");
  EXPECT_EQ(r->status, 403) << r->body;
  EXPECT_NE(r->body.find("--allow-root"), std::string::npos) << r->body;
}

TEST_F(ServeTest, ATokenGuardsEveryRouteButHealthz) {
  ::setenv("SLUICE_SERVE_TEST_TOKEN", "s3cret-t0ken", 1);
  ServeProcess serve(state(), {"--token-env", "SLUICE_SERVE_TEST_TOKEN"}, log());
  ASSERT_FALSE(serve.url().empty()) << ReadFile(log());
  httplib::Client client = serve.Client();
  EXPECT_EQ(client.Get("/healthz")->status, 200);
  EXPECT_EQ(client.Get("/v1/jobs")->status, 401);
  client.set_bearer_token_auth("wrong");
  EXPECT_EQ(client.Get("/v1/jobs")->status, 401);
  auto refused = client.Post("/v1/jobs", "{\"jsonl\":\"x\"}", "application/json");
  EXPECT_EQ(refused->status, 401);
  EXPECT_EQ(refused->body.find("s3cret"), std::string::npos);
  client.set_bearer_token_auth("s3cret-t0ke");  // a prefix of the token
  EXPECT_EQ(client.Get("/v1/jobs")->status, 401);
  client.set_bearer_token_auth("s3cret-t0ken");
  EXPECT_EQ(client.Get("/v1/jobs")->status, 200);
  // The metrics too: the token guards them.
  auto metrics = client.Get("/metrics");
  EXPECT_EQ(metrics->status, 200);
  EXPECT_NE(metrics->body.find("sluice_serve_jobs{state=\"running\"} 0"), std::string::npos)
      << metrics->body;
  EXPECT_EQ(metrics->get_header_value("Content-Type").rfind("text/plain; version=0.0.4", 0), 0u);
  client.set_bearer_token_auth("wrong");
  EXPECT_EQ(client.Get("/metrics")->status, 401);
  EXPECT_EQ(ReadFile(log()).find("s3cret"), std::string::npos);
}

TEST_F(ServeTest, ABodyOverTheLimitIs413) {
  ServeProcess serve(state(), {"--max-body", "4096"}, log());
  ASSERT_FALSE(serve.url().empty()) << ReadFile(log());
  httplib::Client client = serve.Client();
  const std::string big = "{\"jsonl\":" + JsonString(std::string(5000, 'x')) + "}";
  auto r = client.Post("/v1/jobs", big, "application/json");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 413) << r->body;
  auto list = client.Get("/v1/jobs");
  EXPECT_EQ(list->body, "{\"jobs\":[]}");
}

TEST_F(ServeTest, ANonLoopbackAddressWithoutATokenRefusesToStart) {
  auto r = RunCommand("timeout 60 " + kSluice + " serve --listen 0.0.0.0:0 --state-dir " + state());
  EXPECT_EQ(r.exit_code, 2) << r.output;
  EXPECT_NE(r.output.find("refusing to start without a bearer token"), std::string::npos)
      << r.output;
  EXPECT_FALSE(std::filesystem::exists(state()));
  // A token variable that is not set is no token.
  r = RunCommand("timeout 60 env -u SLUICE_SERVE_UNSET " + kSluice +
                 " serve --listen 0.0.0.0:0 --token-env SLUICE_SERVE_UNSET --state-dir " + state());
  EXPECT_EQ(r.exit_code, 2) << r.output;
  EXPECT_NE(r.output.find("SLUICE_SERVE_UNSET"), std::string::npos) << r.output;
}

TEST_F(ServeTest, StartFailuresAreClearAndNonZero) {
  auto r = RunCommand("timeout 60 " + kSluice + " serve --listen 127.0.0.1 --state-dir " + state());
  EXPECT_EQ(r.exit_code, 2) << r.output;
  EXPECT_NE(r.output.find("HOST:PORT"), std::string::npos) << r.output;
  r = RunCommand("timeout 60 " + kSluice + " serve --listen 127.0.0.1:0 --allow-root " +
                 (dir_ / "missing") + " --state-dir " + state());
  EXPECT_EQ(r.exit_code, 2) << r.output;
  EXPECT_NE(r.output.find("missing"), std::string::npos) << r.output;
  WriteFile(dir_ / "a-file", "x");
  r = RunCommand("timeout 60 " + kSluice + " serve --listen 127.0.0.1:0 --state-dir " +
                 (dir_ / "a-file/state"));
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_NE(r.output.find("--state-dir"), std::string::npos) << r.output;
  // A port another server holds.
  ServeProcess first(state(), {}, log());
  ASSERT_FALSE(first.url().empty()) << ReadFile(log());
  r = RunCommand("timeout 60 " + kSluice + " serve --listen 127.0.0.1:" +
                 std::to_string(PortOf(first.url())) + " --state-dir " + (dir_ / "state2"));
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_NE(r.output.find("cannot listen"), std::string::npos) << r.output;
}

TEST_F(ServeTest, SecretsInAJobNeverComeBack) {
  ServeProcess serve(state(), {}, log());
  ASSERT_FALSE(serve.url().empty()) << ReadFile(log());
  httplib::Client client = serve.Client();
  // A PostgreSQL store nobody listens on: the job fails, its error and
  // everything else served or logged must still hold neither secret.
  auto r = client.Post("/v1/jobs",
                       "{\"jsonl\":" + JsonString("{\"id\":1,\"text\":\"t\"}\n") +
                           ",\"api-key\":\"sk-job-key-123\",\"embedder\":\"hash\",\"store\":"
                           "\"postgres://ingest:hunter2pw@127.0.0.1:1/db?connect_timeout=2\"}",
                       "application/json");
  ASSERT_EQ(r->status, 201) << r->body;
  const std::string id = Json(r->body).Str("/id");
  std::string everything = r->body, final_event;
  httplib::Client watcher = serve.Client();
  WatchEvents(watcher, id, [&](const std::string& name, const std::string& data) {
    everything += data;
    if (name == "final") final_event = data;
    return name != "final";
  });
  EXPECT_EQ(Json(final_event).Str("/state"), "failed") << final_event;
  everything += client.Get("/v1/jobs/" + id)->body + client.Get("/v1/jobs")->body;
  serve.child().Signal(SIGTERM);
  EXPECT_EQ(serve.child().WaitExit(), 0);
  everything += ReadFile(log());
  EXPECT_EQ(everything.find("sk-job-key-123"), std::string::npos) << everything;
  EXPECT_EQ(everything.find("hunter2pw"), std::string::npos) << everything;
  EXPECT_NE(everything.find("[redacted]"), std::string::npos);
}

// The server's --on-complete runs once after each job that ends, with the
// job's id and counts in its environment and no secret; its outcome is in
// the job's report. A failed job hands off too, with its failure status.
TEST_F(ServeTest, OnCompleteRunsAfterEveryJobWithItsIdAndCounts) {
  const std::string envs = dir_ / "hook";
  std::filesystem::create_directories(envs);
  ServeProcess serve(state(),
                     {"--on-complete", "env > " + envs + "/$SLUICE_JOB.env", "--on-complete-shell"},
                     log());
  ASSERT_FALSE(serve.url().empty()) << ReadFile(log());
  httplib::Client client = serve.Client();
  std::string records;
  for (int i = 0; i < 5; ++i)
    records += "{\"id\":" + std::to_string(i) + ",\"text\":\"t" + std::to_string(i) + "\"}\n";
  struct Submitted {
    std::string id, final_state;
  };
  std::vector<Submitted> jobs;
  for (const std::string& store :
       {std::string("sqlite:") + (state() + "/ok.db"),
        std::string("postgres://u:pw-in-dsn@127.0.0.1:1/db?connect_timeout=2")}) {
    auto r = client.Post("/v1/jobs",
                         "{\"jsonl\":" + JsonString(records) +
                             ",\"embedder\":\"hash\",\"api-key\":\"sk-hook-secret\",\"store\":" +
                             JsonString(store) + "}",
                         "application/json");
    ASSERT_EQ(r->status, 201) << r->body;
    Submitted job{Json(r->body).Str("/id"), ""};
    httplib::Client watcher = serve.Client();
    WatchEvents(watcher, job.id, [&](const std::string& name, const std::string& data) {
      if (name == "final") job.final_state = Json(data).Str("/state");
      return name != "final";
    });
    jobs.push_back(job);
  }
  ASSERT_EQ(jobs[0].final_state, "succeeded");
  ASSERT_EQ(jobs[1].final_state, "failed");
  const std::string ok_env = ReadFile(envs + "/" + jobs[0].id + ".env");
  EXPECT_NE(ok_env.find("SLUICE_JOB=" + jobs[0].id), std::string::npos) << ok_env;
  EXPECT_NE(ok_env.find("SLUICE_STATUS=ok"), std::string::npos) << ok_env;
  EXPECT_NE(ok_env.find("SLUICE_EXIT_STATUS=0"), std::string::npos) << ok_env;
  EXPECT_NE(ok_env.find("SLUICE_CHUNKS_STORED=5"), std::string::npos) << ok_env;
  const std::string failed_env = ReadFile(envs + "/" + jobs[1].id + ".env");
  EXPECT_NE(failed_env.find("SLUICE_EXIT_STATUS=1"), std::string::npos) << failed_env;
  EXPECT_EQ(failed_env.find("SLUICE_STATUS=ok"), std::string::npos) << failed_env;
  for (const std::string& env : {ok_env, failed_env}) {
    EXPECT_EQ(env.find("sk-hook-secret"), std::string::npos);
    EXPECT_EQ(env.find("pw-in-dsn"), std::string::npos);
  }
  EXPECT_EQ(testing::StoredChunkCount((state() + "/ok.db")), 5);
  // The job's report carries the hand-off's outcome.
  Json job(client.Get("/v1/jobs/" + jobs[0].id)->body);
  ASSERT_TRUE(job.ok);
  simdjson::dom::element exit_status;
  EXPECT_EQ(job.root.at_pointer("/report/handoff/command/exit_status").get(exit_status),
            simdjson::SUCCESS)
      << client.Get("/v1/jobs/" + jobs[0].id)->body;
  serve.child().Signal(SIGTERM);
  EXPECT_EQ(serve.child().WaitExit(), 0);
}

}  // namespace
}  // namespace sluice
