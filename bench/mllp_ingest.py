"""HL7 v2 ingest benchmark: A03 discharges over MLLP vs a raw split-and-insert baseline (issue 6).

    python bench/mllp_ingest.py [--messages 2000] [--parse-sample 200]

1. Parse-only, in this process, CPU per message: our path (ER7 decode + mapping to the
   transaction Bundle), hl7apy's full parse (`find_groups=False`), python-hl7's parse (when
   the `hl7` package is installed).
2. End to end: `calipso serve` (embedded database) receives N distinct-patient A03 messages over
   1 MLLP connection, then N others over 4 connections; msg/s and ACK p50/p99. The baseline,
   on the same database server and in the same run: split each message with `str.split`
   (segments, fields), then write in one transaction per message the documents calipso
   stores for it (current + history of each resource of the mapped Bundle, plus the inbox
   document with the raw bytes), prepared before the clock starts except the split.
Targets: parse + map <= 2 ms CPU per A03; end to end >= 0.8x the baseline.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pymongo import AsyncMongoClient, InsertOne  # noqa: E402

from bench.bundles import drive, raw_transaction, stored_documents  # noqa: E402
from bench.harness import Figures, ServerProcess, free_port, python  # noqa: E402
from fhir_server.storage.embedded import EmbeddedDatabase  # noqa: E402
from fhir_server.storage.store import ResourceStore  # noqa: E402
from hl7v2_bridge.client import MllpClient, ack_code  # noqa: E402
from hl7v2_bridge.er7 import decode  # noqa: E402
from hl7v2_bridge.mapping import load_mappings, to_bundle  # noqa: E402

SAMPLE = Path(__file__).resolve().parent.parent / "tests" / "data" / "hl7v2" / "fr" / "A03-discharge-home.hl7"


def discharge(n: int, series: str) -> bytes:
    raw = SAMPLE.read_bytes()
    for old, new in ((b"CHT20261120143000017", f"B{series}-{n:05d}"), (b"000123456", f"8{series}{n:07d}"),
                     (b"V2026-000123", f"V-B{series}-{n:05d}"), (b"MVT-1002", f"MVT-B{series}{n:05d}"),
                     (b"1450312123456", f"1450312{series}{n:05d}")):
        raw = raw.replace(old, new.encode())
    return raw


def parse_figures(messages: list[bytes]) -> list[tuple[str, float]]:
    """CPU µs per message for each parser."""
    mappings = load_mappings()
    mapping = mappings.for_event("A03")
    assert mapping is not None
    found = []

    def measure(label: str, work: Any) -> None:
        started = time.process_time()
        for raw in messages:
            work(raw)
        found.append((label, (time.process_time() - started) / len(messages) * 1e6))

    measure("calipso decode + map to Bundle", lambda raw: to_bundle(decode(raw), mapping, mappings.tables))
    measure("calipso decode only", decode)
    from hl7apy.parser import parse_message

    measure("hl7apy full parse", lambda raw: parse_message(raw.decode("latin-1"), find_groups=False))
    try:
        import hl7  # python-hl7

        measure("python-hl7 parse", lambda raw: hl7.parse(raw.decode("latin-1")))
    except ImportError:
        found.append(("python-hl7 parse (not installed)", float("nan")))
    return found


async def run_calipso(port: int, messages: list[bytes], connections: int, pids: tuple[int, int]) -> Figures:
    clients = [MllpClient("127.0.0.1", port, timeout=120) for _ in range(connections)]
    for client in clients:
        await client.__aenter__()
    free = asyncio.Queue[MllpClient]()
    for client in clients:
        free.put_nowait(client)

    async def send(raw: bytes) -> bool:
        client = await free.get()
        try:
            return ack_code(await client.send(raw)) == "AA"
        finally:
            free.put_nowait(client)

    try:
        return await drive(f"calipso MLLP x{connections}", messages, send, connections, 1, pids)
    finally:
        for client in clients:
            await client.__aexit__(None, None, None)


async def run_baseline(uri: str, prepared: list[tuple[bytes, list[tuple[str, dict[str, Any]]]]], connections: int,
                       pids: tuple[int, int]) -> Figures:
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(uri)
    database = f"bench_mllp_raw_{connections}"
    await ResourceStore(client, database).ensure_indexes()

    async def send(item: tuple[bytes, list[tuple[str, dict[str, Any]]]]) -> bool:
        raw, documents = item
        segments = [line.split("|") for line in raw.decode("latin-1").split("\r") if line]  # the split
        key = "|".join(segments[0][2:4] + segments[0][9:10])
        inbox = {"_id": key, "raw": raw, "received": datetime.now(timezone.utc), "status": "applied"}
        operations = [InsertOne(inbox, namespace=f"{database}.inbox")]
        operations += [InsertOne(dict(doc), namespace=f"{database}.{collection}") for collection, doc in documents]
        return await raw_transaction(client, operations)

    try:
        return await drive(f"raw split+insert x{connections}", prepared, send, connections, 1, pids)
    finally:
        await client.close()


def run(args: argparse.Namespace) -> None:
    parse_sample = [discharge(n, "P") for n in range(args.parse_sample)]
    parsing = parse_figures(parse_sample)
    work = Path(tempfile.mkdtemp(prefix="calipso-bench-"))
    database = EmbeddedDatabase(work / "data")
    uri = database.start()
    port, mllp_port = free_port(), free_port()
    calipso = ServerProcess(
        [python(), "-m", "fhir_server.cli", "serve", "--auth", "off", "--port", str(port), "--mllp-port", str(mllp_port), "--log-level", "warning"],
        f"http://127.0.0.1:{port}/fhir/metadata",
        env={"CALIPSO_MONGODB_URI": uri, "CALIPSO_DATABASE": "bench_mllp"},
    )
    mappings = load_mappings()
    mapping = mappings.for_event("A03")
    assert mapping is not None
    results: list[tuple[Figures, Figures]] = []
    try:
        for connections in (1, 4):
            series = str(connections)
            messages = [discharge(n, series) for n in range(args.messages)]
            baseline_messages = [discharge(n, f"R{series}") for n in range(args.messages)]
            prepared = [(raw, stored_documents(to_bundle(decode(raw), mapping, mappings.tables))) for raw in baseline_messages]
            pids = (calipso.pid, database.pid)
            print(f"{connections} connection(s): baseline ...", file=sys.stderr, flush=True)
            baseline = asyncio.run(run_baseline(uri, prepared, connections, (os.getpid(), database.pid)))
            print(f"{connections} connection(s): calipso ...", file=sys.stderr, flush=True)
            ours = asyncio.run(run_calipso(mllp_port, messages, connections, pids))
            results.append((baseline, ours))
    finally:
        calipso.stop()
        database.stop()

    print(f"# mllp ingest: {args.messages} A03 messages per phase, distinct patients, {os.cpu_count()} cores")
    print(f"{'parser':<36} {'CPU µs/msg':>10}")
    for label, micros in parsing:
        print(f"{label:<36} {micros:>10.0f}")
    print(f"{'phase':<26} {'msg/s':>7} {'ACK p50 ms':>11} {'ACK p99 ms':>11} {'server µs/msg':>14} {'db µs/msg':>10} {'errors':>6}")
    for baseline, ours in results:
        for f in (baseline, ours):
            print(f"{f.label:<26} {f.rate:>7.1f} {f.p50_ms:>11.1f} {f.p99_ms:>11.1f} {f.server_us:>14.0f} {f.db_us:>10.0f} {f.errors:>6}")
        print(f"ratio calipso/baseline ({ours.label.rsplit(' ', 1)[1]}) = {ours.rate / baseline.rate:.2f} (target >= 0.8)")
    print(f"parse + map = {parsing[0][1] / 1000:.2f} ms CPU per A03 (target <= 2 ms)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=2000)
    parser.add_argument("--parse-sample", type=int, default=200)
    run(parser.parse_args())


if __name__ == "__main__":
    main()
