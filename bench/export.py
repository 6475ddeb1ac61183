"""Bulk export throughput, memory and the API's reads meanwhile (issue 24).

    python bench/export.py [--patients 100] [--entries 100] [--grow 4]

`calipso serve` (auth off, audit on) on an embedded database, loaded with `patients` patients of
`entries` notebook entries each and a Group of them. Figures:
- resources/s of a system export of the entries (`_type=Communication`) and of the Group export,
  from the job's own start and finish times, against a raw cursor dump of the same documents
  (pymongo in this process, the stored bytes written to a file): ratio target >= 0.5;
- the server's RSS growth during each export (sampled every 10 ms), at the loaded size and
  again after loading `grow` times as many entries: bounded, whatever the export's size;
- the latency of reads (GET one entry, one client in a loop) idle, then while Group exports run:
  p99 target within 2x of idle.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import httpx  # noqa: E402
from pymongo import MongoClient  # noqa: E402

from bench.harness import calipso_server, free_port  # noqa: E402
from fhir_server.storage.embedded import EmbeddedDatabase  # noqa: E402
from tests.test_bulk_export_process import group, load, notebook  # noqa: E402

ASYNC = {"Prefer": "respond-async", "Accept": "application/fhir+json"}
DATABASE = "bench_export"


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def export(base: str, path: str, db: Any, pid: int | None = None, runs: list[tuple[float, float]] | None = None
           ) -> tuple[int, float, tuple[int, int]]:
    """(resources exported, server-side seconds, (RSS before, peak RSS during) in KiB) of one
    export; the RSS is sampled (every 50 ms, in a thread of this process) only when `pid` is
    given; the job's (start, finish) wall-clock times go to `runs`."""
    before = rss_kib(pid) if pid else 0
    peak = [before]
    done = threading.Event()

    def sample() -> None:
        while pid and not done.is_set():
            peak[0] = max(peak[0], rss_kib(pid))
            time.sleep(0.05)

    sampler = threading.Thread(target=sample)
    sampler.start()
    answer = httpx.get(f"{base}{path}", headers=ASYNC)
    assert answer.status_code == 202, answer.text
    status_url = answer.headers["content-location"]
    while (poll := httpx.get(status_url)).status_code == 202:
        time.sleep(0.25)
    done.set()
    sampler.join()
    assert poll.status_code == 200, poll.text
    job = db["export_jobs"].find_one({"_id": status_url.rsplit("/", 1)[1]})
    seconds = (job["finished"] - job["started"]).total_seconds()
    if runs is not None:
        runs.append((job["started"].timestamp(), job["finished"].timestamp()))
    httpx.delete(status_url)
    return job["exported"], seconds, (before, peak[0])


def mib(rss: tuple[int, int]) -> str:
    return f"server RSS {rss[0] / 1024:.0f} MiB before, peak {rss[1] / 1024:.0f} MiB during"


def raw_dump(db: Any, query: dict[str, Any]) -> tuple[int, float]:
    """The same documents read with one cursor and their stored bytes written to a file."""
    start = time.perf_counter()
    count = 0
    with tempfile.TemporaryFile() as out:
        for doc in db["resources"].find(query, {"raw": 1}).sort([("_id", 1)]).batch_size(500):
            out.write(bytes(doc["raw"]) + b"\n")
            count += 1
    return count, time.perf_counter() - start


def raw_per_key(db: Any, patients: int) -> tuple[int, float]:
    """The Group's entries read raw the way calipso reads them on the embedded database: one
    indexed equality per compartment key, each result written to a file."""
    start = time.perf_counter()
    count = 0
    with tempfile.TemporaryFile() as out:
        for p in range(patients):
            for code in ("subject", "sender", "recipient"):
                for doc in db["resources"].find({"type": "Communication", "ix.rf": f"{code}\x1fPatient/pat-{p:03}"}, {"raw": 1}).sort([("_id", 1)]):
                    out.write(bytes(doc["raw"]) + b"\n")
                    count += 1
    return count, time.perf_counter() - start


def group_query(patients: int) -> dict[str, Any]:
    keys = [f"{code}\x1fPatient/pat-{p:03}" for code in ("subject", "sender", "recipient") for p in range(patients)]
    return {"type": "Communication", "ix.rf": {"$in": keys}, "deleted": False}


def reads(base: str, seconds: float | None, stop: threading.Event | None = None, timed: list[tuple[float, float]] | None = None) -> list[float]:
    """Latencies (ms) of one client reading in a loop; with `timed`, each read's (wall-clock
    start, end) is kept there too."""
    latencies = []
    with httpx.Client(base_url=base) as client:
        end = time.monotonic() + (seconds or 1e9)
        while time.monotonic() < end and not (stop and stop.is_set()):
            start, wall = time.perf_counter(), time.time()
            assert client.get("/Communication/pat-042-0042").status_code == 200
            latencies.append((time.perf_counter() - start) * 1000)
            if timed is not None:
                timed.append((wall, time.time()))
    return sorted(latencies)


def beside_jobs(base: str, path: str, db: Any, seconds: float = 5.0) -> tuple[list[float], float]:
    """Latencies of the reads that overlapped an export job's run (from the job's start to its
    finish, as the job document says), exports run back to back for `seconds`; and the jobs'
    rate meanwhile (resources per second of their runs)."""
    stop = threading.Event()
    timed: list[tuple[float, float]] = []
    reader = threading.Thread(target=lambda: reads(base, None, stop, timed))
    reader.start()
    runs: list[tuple[float, float]] = []
    exported, busy = 0, 0.0
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        count, taken, _ = export(base, path, db, runs=runs)
        exported, busy = exported + count, busy + taken
    stop.set()
    reader.join()
    return sorted((finish - start) * 1000 for start, finish in timed if any(start < b and finish > a for a, b in runs)), exported / busy


def beside(base: str, work: Any, seconds: float = 5.0) -> list[float]:
    """Read latencies while `work` runs again and again for `seconds`."""
    stop = threading.Event()
    during: list[float] = []
    reader = threading.Thread(target=lambda: during.extend(reads(base, None, stop)))
    reader.start()
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        work()
    stop.set()
    reader.join()
    return sorted(during)


def percentile(values: list[float], share: float) -> float:
    return values[min(len(values) - 1, int(len(values) * share))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--patients", type=int, default=100)
    parser.add_argument("--entries", type=int, default=100, help="notebook entries per patient")
    parser.add_argument("--grow", type=int, default=4, help="then load this many times as many entries, and export again (1: no)")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="calipso-bench-export-"))
    database = EmbeddedDatabase(work / "data")
    uri = database.start()
    port = free_port()
    server = calipso_server(uri, DATABASE, port)
    base = f"http://127.0.0.1:{port}/fhir"
    try:
        with MongoClient(uri) as mongo:
            db = mongo[DATABASE]
            load(base, notebook(args.patients, args.entries))
            load(base, [group("cohort", [f"pat-{p:03}" for p in range(args.patients)])])
            print(f"# export: {args.patients} patients x {args.entries} entries, calipso serve (audit on), embedded database, 2 cores")
            for label, path, query in (("system _type=Communication", "/$export?_type=Communication", {"type": "Communication", "deleted": False}),
                                       ("Group/cohort _type=Communication", "/Group/cohort/$export?_type=Communication", group_query(args.patients))):
                raw_count, raw_seconds = raw_dump(db, query)
                count, seconds, rss = export(base, path, db, server.pid)
                assert count == raw_count, (count, raw_count)
                print(f"{label}: {count} resources, export {count / seconds:,.0f}/s, raw cursor dump {raw_count / raw_seconds:,.0f}/s, "
                      f"ratio {raw_seconds / seconds:.2f} (target >= 0.5); {mib(rss)}")
            keyed_count, keyed_seconds = raw_per_key(db, args.patients)
            print(f"(the Group's entries read raw one compartment key at a time, as calipso does on the embedded database: "
                  f"{keyed_count} rows, {keyed_count / keyed_seconds:,.0f}/s)")

            idle = reads(base, 5)
            print(f"reads idle: p50 {statistics.median(idle):.1f} ms, p99 {percentile(idle, 0.99):.1f} ms ({len(idle)} reads)")
            system_query = {"type": "Communication", "deleted": False}
            loads = (("raw cursor dumps (no calipso) of the entries", lambda: raw_dump(db, system_query)),
                     ("calipso system exports of the entries", lambda: export(base, "/$export?_type=Communication", db)),
                     ("raw cursor dumps (no calipso) of the Group's entries", lambda: raw_dump(db, group_query(args.patients))),
                     ("raw per-key reads (no calipso) of the Group's entries", lambda: raw_per_key(db, args.patients)),
                     ("calipso Group exports", lambda: export(base, "/Group/cohort/$export", db)))
            for label, work in loads:
                during = beside(base, work)
                print(f"reads during {label}: p50 {statistics.median(during):.1f} ms, p99 {percentile(during, 0.99):.1f} ms "
                      f"({len(during)} reads); p99 ratio to idle {percentile(during, 0.99) / percentile(idle, 0.99):.2f} (target <= 2)")
            running, rate = beside_jobs(base, "/Group/cohort/$export", db)
            print(f"reads while the Group export jobs ran (their start to their finish): p50 {statistics.median(running):.1f} ms, "
                  f"p99 {percentile(running, 0.99):.1f} ms ({len(running)} reads); p99 ratio to idle "
                  f"{percentile(running, 0.99) / percentile(idle, 0.99):.2f} (target <= 2); the jobs exported {rate:,.0f}/s meanwhile")

            if args.grow > 1:
                extra = [r for r in notebook(args.patients, args.entries * args.grow) if r["resourceType"] == "Communication"]
                load(base, [r for r in extra if int(r["id"].rsplit("-", 1)[1]) >= args.entries])
                count, seconds, rss = export(base, "/$export?_type=Communication", db, server.pid)
                print(f"after growing to {count} entries: system export {count / seconds:,.0f}/s, {mib(rss)}")
                count, seconds, rss = export(base, "/Group/cohort/$export?_type=Communication", db, server.pid)
                print(f"after growing to {count} entries: Group export {count / seconds:,.0f}/s, {mib(rss)}")
    finally:
        server.stop()
        database.stop()


if __name__ == "__main__":
    main()
