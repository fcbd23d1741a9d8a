"""The Python module end to end (run by ctest, no pytest): ingest the demo
corpus with the offline hash embedder into a temp SQLite store, check the
report against the store, the progress callback, search by text and by
vector, and that bad options and failed runs raise clear errors."""
import os
import sqlite3
import sys
import tempfile
import threading

import sluice

CORPUS = os.path.join(os.path.dirname(__file__), "..", "..", "examples", "corpus")
failures = []


def check(condition, what):
    if not condition:
        failures.append(what)
        print("FAIL:", what, file=sys.stderr)


def expect_raises(exception, needle, fn, *args, **kwargs):
    try:
        fn(*args, **kwargs)
    except exception as e:
        check(needle in str(e), f"{exception.__name__} message {str(e)!r} names {needle!r}")
        return
    except Exception as e:  # the wrong kind
        check(False, f"expected {exception.__name__}, got {type(e).__name__}: {e}")
        return
    check(False, f"expected {exception.__name__} ({needle})")


with tempfile.TemporaryDirectory() as tmp:
    store = f"sqlite:{tmp}/store.db"
    progress = []
    progress_threads = set()

    def on_progress(p):
        progress.append(p)
        progress_threads.add(threading.get_ident())

    report = sluice.ingest(CORPUS, store=store, embedder="hash", out=f"{tmp}/out",
                           on_progress=on_progress, progress_interval=0.05)
    check(report["status"] == "ok", f"status ok: {report['status']}")
    check(report["reconciled"], "the report reconciles")
    stored = report["chunks_stored"]
    check(stored > 0 and stored == report["chunks_produced"], f"stored {stored} of produced")
    with sqlite3.connect(f"{tmp}/store.db") as db:
        rows = db.execute("SELECT count(*) FROM chunks").fetchone()[0]
    check(rows == stored, f"the store holds {rows} chunks, the report says {stored}")
    check(os.path.isdir(f"{tmp}/out"), "the aggregate folder was written")

    # The callback ran on the pipeline's progress thread (the GIL was released
    # while ingest() ran, else that thread could not have taken it), and its
    # last call has the final counts.
    check(len(progress) >= 1, "on_progress was called")
    check(progress and progress[-1]["final"], "the last progress call is final")
    check(progress and progress[-1]["chunks_stored"] == stored, "final progress has the counts")
    check(threading.get_ident() not in progress_threads, "on_progress ran on a pipeline thread")

    # Search by text (the hash embedder, as the store was built) and by vector.
    hits = sluice.search(store, "worn gate seal replacement", k=3)
    check(len(hits) == 3, f"three hits, got {len(hits)}")
    check(all(hits[i]["score"] >= hits[i + 1]["score"] for i in range(len(hits) - 1)),
          "hits come best first")
    check("seal" in hits[0]["source_id"], f"top hit is the seal procedure: {hits[0]['source_id']}")
    check(set(hits[0]) >= {"score", "chunk_id", "source_id", "text", "domain", "metadata"},
          "a hit has its fields")
    by_vector = sluice.search(store, [0.5] * 384, k=2)
    check(len(by_vector) == 2, "search by vector")

    # A rerun skips every unchanged file.
    again = sluice.ingest([CORPUS], store=store, embedder="hash", out=f"{tmp}/out")
    check(again["sources_unchanged"] > 0 and again["chunks_produced"] == 0,
          f"rerun skips unchanged files: {again['sources_unchanged']}")

    # Bad options: named, before any work.
    expect_raises(ValueError, "chunk_tokenz", sluice.ingest, CORPUS, store=store,
                  embedder="hash", chunk_tokenz=5)
    expect_raises(ValueError, "'chunk_tokens' must be int", sluice.ingest, CORPUS, store=store,
                  embedder="hash", chunk_tokens="many")
    expect_raises(ValueError, "embedder must be", sluice.ingest, CORPUS, store=store,
                  embedder="magic")
    expect_raises(ValueError, "chunk-overlap", sluice.ingest, CORPUS, store=store,
                  embedder="hash", chunk_tokens=32, chunk_overlap=40)
    expect_raises(ValueError, "k must be", sluice.search, store, "seal", k=0)
    expect_raises(ValueError, "str or a sequence", sluice.search, store, {"not": "a query"})

    # A run that fails (an embedding service that is not there) raises, or
    # with check=False returns its report.
    refused = dict(store=f"sqlite:{tmp}/refused.db", embedder="http",
                   endpoint="http://127.0.0.1:9/v1", model="m", max_attempts=1,
                   out=f"{tmp}/refused-out")
    expect_raises(RuntimeError, "unavailable", sluice.ingest, CORPUS, **refused)
    failed = sluice.ingest(CORPUS, check=False, **refused)
    check(failed["status"] == "unavailable", f"failed status: {failed['status']}")

    # An exception in on_progress stops the run and comes back to the caller.
    def broken(_):
        raise ZeroDivisionError("from the callback")

    expect_raises(ZeroDivisionError, "from the callback", sluice.ingest, CORPUS,
                  store=f"sqlite:{tmp}/broken.db", embedder="hash", out=f"{tmp}/broken-out",
                  on_progress=broken)

if failures:
    print(f"{len(failures)} check(s) failed", file=sys.stderr)
    sys.exit(1)
print("python_module_test: ok")
