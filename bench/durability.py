"""What durable commits cost: creates through calipso on an embedded database that fsyncs its
log at every commit (the default) against one that does not.

    python bench/durability.py [--seconds 10] [--connections 32] [--rounds 2]

Starts two embedded databases (with and without `--sync-on-commit`) and one `calipso serve`
on each, then drives creates of a ~1 KB Patient with wrk, alternating the two in ABBA order
round by round. Prints req/s, p50/p99 and CPU per request for each, then the ratio.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.harness import HEADER, Figures, ServerProcess, calipso_server, free_port, run_wrk  # noqa: E402
from bench.rest_crud import patient_1kb, wrk_arguments  # noqa: E402
from fhir_server.storage.embedded import EmbeddedDatabase  # noqa: E402


def run(args: argparse.Namespace) -> None:
    work = Path(tempfile.mkdtemp(prefix="calipso-durability-"))
    body_file = work / "patient.json"
    body_file.write_bytes(patient_1kb(1))
    targets: dict[str, tuple[EmbeddedDatabase, ServerProcess, str]] = {}
    try:
        for name, sync in (("synced", True), ("unsynced", False)):
            database = EmbeddedDatabase(work / name, sync_on_commit=sync)
            uri = database.start()
            port = free_port()
            server = calipso_server(uri, "bench", port, {"CALIPSO_AUDIT": "off"})
            targets[name] = (database, server, f"http://127.0.0.1:{port}/fhir/Patient")
        results: dict[str, Figures] = {}
        for round_number in range(args.rounds):
            order = list(targets.items()) if round_number % 2 == 0 else list(reversed(targets.items()))
            for name, (database, server, url) in order:
                figures = run_wrk(f"create {name}", url, "create.lua", [str(body_file)], args.seconds, args.connections,
                                  server.pid, database.pid)
                results[name] = results[name].merge(figures) if name in results else figures
    finally:
        for database, server, _ in targets.values():
            server.stop()
            database.stop()
    print(f"# durability: {args.rounds} rounds x {args.seconds} s creates per database, wrk -c{args.connections}, "
          f"{os.cpu_count()} cores, 1 KB Patient, audit off")
    print(HEADER)
    for name in ("synced", "unsynced"):
        print(results[name].row())
    synced, unsynced = results["synced"], results["unsynced"]
    print(f"create: throughput synced/unsynced = {synced.rate / unsynced.rate:.2f}, "
          f"p99 ratio = {synced.p99_ms / unsynced.p99_ms:.2f}, database CPU ratio = {synced.db_us / unsynced.db_us:.2f}")


def main() -> None:
    run(wrk_arguments(__doc__).parse_args())


if __name__ == "__main__":
    main()
