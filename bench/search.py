"""Search benchmark: notebook queries at 10k and 100k Communications, against raw PyMongo.

    python bench/search.py [--entries 100000] [--small 10000] [--patients 1000] [--seconds 10] [--warm-up 3]

Starts the embedded database and calipso, loads patients, care teams, care plans and then
Communications through the API with wrk (load rate reported), and at `--small` and at
`--entries` entries measures with wrk (32 connections, a random patient or practitioner per
request): `Communication?subject=&_sort=-sent&_count=20`, `CareTeam?participant=&status=active`,
`Patient?name=` (prefix). The same subject query is run raw with PyMongo (32 concurrent tasks in
this process, the same filter, sort, hint and limit) on the same database. A page walk follows
`next` links through one patient's entries. Targets (issue 3): subject search >= 0.7x the raw
query; p99 at 100k within 2x of p99 at 10k.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import sys
import tempfile
import time
from pathlib import Path

import httpx
from pymongo import AsyncMongoClient, MongoClient

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.harness import HEADER, Figures, ServerProcess, cpu_seconds, free_port, python, require_wrk, run_wrk  # noqa: E402
from fhir_server.values import key  # noqa: E402
from fhir_server.storage.embedded import EmbeddedDatabase  # noqa: E402

DATABASE = "bench_search"


def load(base: str, count: int, offset: int, args: argparse.Namespace, server_pid: int, db_pid: int, uri: str) -> Figures:
    """Write `count` more resources through the API; stops when the database holds them all."""
    client: MongoClient = MongoClient(uri)
    resources = client[DATABASE]["resources"]
    target = offset + count

    def loaded() -> bool:
        return resources.estimated_document_count() >= target

    print(f"loading {count} resources ...", file=sys.stderr, flush=True)
    try:
        figures = run_wrk(f"load +{count}", base, "load.lua", [str(count), str(args.patients), str(args.practitioners), str(offset)],
                          3600, 32, server_pid, db_pid, until=loaded)
        # a checkpoint, so every measurement starts from a flushed database (it was not the
        # cause of the 100k tail, bench/RESULTS.md session 7, but keeps one out of the figures)
        client.admin.command("fsync")
        return figures
    finally:
        client.close()


async def raw_subject_query(uri: str, args: argparse.Namespace, db_pid: int) -> Figures:
    """The subject query done directly with PyMongo: what the database alone costs."""
    client: AsyncMongoClient = AsyncMongoClient(uri)
    collection = client[DATABASE]["resources"]
    latencies: list[float] = []
    deadline = time.perf_counter() + args.seconds
    count = 0

    async def worker() -> None:
        nonlocal count
        while time.perf_counter() < deadline:
            patient = random.randrange(args.patients)
            started = time.perf_counter()
            # the best plain PyMongo form of the same search: one flat indexed filter, sort, limit
            query = {"type": "Communication", "ix.rf": key("subject", f"Patient/pat-{patient}")}  # tombstones have no ix
            cursor = collection.find(query, {"raw": 1, "so.sent": 1}).sort([("so.sent", -1), ("_id", -1)]).limit(21)
            [doc async for doc in cursor]
            latencies.append((time.perf_counter() - started) * 1000)
            count += 1

    own_cpu, db_cpu, started = time.process_time(), cpu_seconds(db_pid), time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(32)))
    seconds = time.perf_counter() - started
    figures = Figures("subject raw pymongo", count, seconds, _pct(latencies, 0.5), _pct(latencies, 0.99),
                      time.process_time() - own_cpu, cpu_seconds(db_pid) - db_cpu, 0)
    await client.close()
    return figures


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def page_walk(base: str, patient: int, server_pid: int) -> tuple[int, float, float, int]:
    """Follow next links through one patient's entries: (pages, ms per page, p99, server RSS kB)."""
    url = f"{base}/Communication?subject=Patient/pat-{patient}&_sort=-sent&_count=20"
    pages, timings = 0, []
    with httpx.Client(timeout=60) as client:
        while url:
            started = time.perf_counter()
            bundle = client.get(url).json()
            timings.append((time.perf_counter() - started) * 1000)
            pages += 1
            url = next((link["url"] for link in bundle["link"] if link["relation"] == "next"), None)
    return pages, sum(timings) / len(timings), _pct(timings, 0.99), _rss_kb(server_pid)


def _rss_kb(pid: int) -> int:
    return int(next(line for line in Path(f"/proc/{pid}/status").read_text().splitlines() if line.startswith("VmRSS")).split()[1])


def settle(db_pid: int, limit_s: float = 120.0) -> float:
    """Wait until the database is idle after a load (its checkpoints written): seconds waited."""
    started = time.perf_counter()
    while time.perf_counter() - started < limit_s:
        before = cpu_seconds(db_pid)
        time.sleep(1.0)
        if cpu_seconds(db_pid) - before < 0.05:
            break
    return time.perf_counter() - started


def measure(label: str, base: str, args: argparse.Namespace, server_pid: int, db_pid: int, uri: str) -> list[Figures]:
    queries = [
        ("subject", "/fhir/Communication?subject=Patient/pat-%d&_sort=-sent&_count=20", args.patients),
        ("participant", "/fhir/CareTeam?participant=Practitioner/prac-%d&status=active", args.practitioners),
        ("name", "/fhir/Patient?name=famille%d", args.patients),
    ]
    rows = []
    print(f"measuring at {label} (database idle after {settle(db_pid):.0f} s) ...", file=sys.stderr, flush=True)
    for name, template, limit in queries:
        # steady state: a warm-up run, not recorded, lets the database settle after the load and
        # the server learn its search windows (docs/architecture.md, Search)
        run_wrk(f"{name} warm-up", base, "query.lua", [template, str(limit)], args.warm_up, 32, server_pid, db_pid)
        rows.append(run_wrk(f"{name} @{label}", base, "query.lua", [template, str(limit)], args.seconds, 32, server_pid, db_pid))
    raw = asyncio.run(raw_subject_query(uri, args, db_pid))
    raw.label = f"subject raw @{label}"
    rows.append(raw)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--entries", type=int, default=100_000)
    parser.add_argument("--small", type=int, default=10_000)
    parser.add_argument("--patients", type=int, default=1000)
    parser.add_argument("--practitioners", type=int, default=200)
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--warm-up", type=int, default=3, help="seconds of each query run before it is measured")
    args = parser.parse_args()
    require_wrk()
    database = EmbeddedDatabase(Path(tempfile.mkdtemp(prefix="calipso-search-")) / "data")
    uri = database.start()
    db_pid = database.pid
    port = free_port()
    server = ServerProcess(
        [python(), "-m", "fhir_server.cli", "serve", "--auth", "off", "--port", str(port), "--mllp-port", "0", "--log-level", "warning"],
        f"http://127.0.0.1:{port}/fhir/metadata",
        env={"CALIPSO_MONGODB_URI": uri, "CALIPSO_DATABASE": DATABASE, "CALIPSO_AUDIT": "off"},  # search alone: audit costs are auth_overhead's
    )
    base = f"http://127.0.0.1:{port}"
    results: list[Figures] = []
    try:
        setup = 3 * args.patients
        results.append(load(base, setup + args.small, 0, args, server.pid, db_pid, uri))
        results += measure(f"{args.small // 1000}k", base, args, server.pid, db_pid, uri)
        small_walk = page_walk(f"{base}/fhir", 7, server.pid)
        results.append(load(base, args.entries - args.small, setup + args.small, args, server.pid, db_pid, uri))
        results += measure(f"{args.entries // 1000}k", base, args, server.pid, db_pid, uri)
        big_walk = page_walk(f"{base}/fhir", 7, server.pid)
        database_rss = _rss_kb(db_pid)
    finally:
        server.stop()
        database.stop()

    print(f"# search: {args.patients} patients, {args.practitioners} practitioners, {args.small} then {args.entries} "
          f"Communications; wrk -c32 {args.seconds} s per query; {os.cpu_count()} cores")
    print(HEADER)
    for row in results:
        print(row.row())
    by_label = {row.label: row for row in results}
    small, big = f"{args.small // 1000}k", f"{args.entries // 1000}k"
    for size in (small, big):
        ours, raw = by_label[f"subject @{size}"], by_label[f"subject raw @{size}"]
        print(f"subject @{size}: calipso/raw throughput = {ours.rate / raw.rate:.2f} (target >= 0.7)")
    for name in ("subject", "participant", "name"):
        ratio = by_label[f"{name} @{big}"].p99_ms / by_label[f"{name} @{small}"].p99_ms
        print(f"{name}: p99 @{big} / p99 @{small} = {ratio:.2f} (target <= 2)")
    for label, (pages, mean_ms, p99_ms, rss) in ((small, small_walk), (big, big_walk)):
        print(f"page walk @{label}: {pages} pages of 20, {mean_ms:.1f} ms/page mean, p99 {p99_ms:.1f} ms, server RSS {rss // 1024} MB")
    print(f"database RSS at the end: {database_rss // 1024} MB")


if __name__ == "__main__":
    main()
