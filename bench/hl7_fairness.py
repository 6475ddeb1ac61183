"""Is the HL7 feed served while the API is busy? One MLLP sender at a steady rate, alone and
then alongside HTTP clients reading and creating Patients (issue 18: >= 4.5 msg/s of 5 and
ACK p99 < 1 s with 20 HTTP clients, on the embedded database).

    python bench/hl7_fairness.py [--rate 5] [--seconds 20] [--readers 10] [--writers 10]

Starts the embedded database and `calipso serve` (defaults: audit on). The sender sends
distinct-patient A03 discharges on one connection, one at a time as MLLP's original mode
does, each at its scheduled time (or as soon as the previous ACK came, when late). wrk drives
the HTTP load from two other processes. Prints the messages per second achieved, ACK p50/p99
and max, and the HTTP throughput beside it.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.harness import HEADER, Figures, calipso_server, free_port, run_wrk  # noqa: E402
from bench.mllp_ingest import discharge  # noqa: E402
from bench.rest_crud import patient_1kb  # noqa: E402
from fhir_server.storage.embedded import EmbeddedDatabase  # noqa: E402
from hl7v2_bridge.client import MllpClient, ack_code  # noqa: E402


async def send_paced(port: int, series: str, rate: float, seconds: float) -> tuple[float, list[float], int]:
    """Messages per second achieved, ACK latencies (ms), and how many were not AA."""
    count = int(rate * seconds)
    latencies, refused = [], 0
    async with MllpClient("127.0.0.1", port, timeout=120) as client:
        started = time.monotonic()
        for n in range(count):
            delay = started + n / rate - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            sent = time.perf_counter()
            ack = await client.send(discharge(n, series))
            latencies.append((time.perf_counter() - sent) * 1000)
            refused += ack_code(ack) != "AA"
        elapsed = time.monotonic() - started
    return count / max(elapsed, count / rate), latencies, refused


def line(label: str, result: tuple[float, list[float], int]) -> str:
    rate, latencies, refused = result
    ordered = sorted(latencies)
    p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
    return (f"{label:<22} {rate:6.2f} msg/s  ACK p50 {statistics.median(ordered):7.1f} ms  p99 {p99:7.1f} ms  "
            f"max {ordered[-1]:7.1f} ms  not AA {refused}")


def run(args: argparse.Namespace) -> None:
    work = Path(tempfile.mkdtemp(prefix="calipso-fairness-"))
    database = EmbeddedDatabase(work / "data")
    uri = database.start()
    port, mllp_port = free_port(), free_port()
    server = calipso_server(uri, "bench", port, {"CALIPSO_HTTP_CONCURRENCY": str(args.http_concurrency)}, mllp_port=mllp_port)
    base = f"http://127.0.0.1:{port}/fhir"
    try:
        body_file = work / "patient.json"
        body_file.write_bytes(patient_1kb(1))
        ids = [httpx.post(f"{base}/Patient", content=patient_1kb(n), headers={"Content-Type": "application/fhir+json"}).json()["id"]
               for n in range(200)]
        ids_file = work / "ids.txt"
        ids_file.write_text("\n".join(ids) + "\n")
        alone = asyncio.run(send_paced(mllp_port, "1", args.rate, args.seconds))
        figures: dict[str, Figures] = {}

        def drive(name: str, script: str, script_args: list[str], connections: int) -> None:
            figures[name] = run_wrk(name, base if script == "read.lua" else f"{base}/Patient", script, script_args,
                                    int(args.seconds) + 4, connections, server.pid, database.pid)

        load = [threading.Thread(target=drive, args=("http reads", "read.lua", [str(ids_file), "/fhir/Patient/"], args.readers)),
                threading.Thread(target=drive, args=("http creates", "create.lua", [str(body_file)], args.writers))]
        for thread in load:
            thread.start()
        time.sleep(2)  # the HTTP load is at full speed before the first message
        loaded = asyncio.run(send_paced(mllp_port, "2", args.rate, args.seconds))
        for thread in load:
            thread.join()
    finally:
        server.stop()
        database.stop()
    print(f"# hl7_fairness: one MLLP sender at {args.rate:g} msg/s for {args.seconds:g} s, alone then beside "
          f"{args.readers} HTTP readers + {args.writers} HTTP creators (wrk), {os.cpu_count()} cores, audit on, "
          f"CALIPSO_HTTP_CONCURRENCY={args.http_concurrency}")
    print(line("mllp alone", alone))
    print(line("mllp beside HTTP", loaded))
    print(HEADER)
    for figure in figures.values():
        print(figure.row())
    print(f"target: >= {0.9 * args.rate:.1f} msg/s and ACK p99 < 1000 ms beside HTTP")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rate", type=float, default=5)
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--readers", type=int, default=10)
    parser.add_argument("--writers", type=int, default=10)
    parser.add_argument("--http-concurrency", type=int, default=8, help="CALIPSO_HTTP_CONCURRENCY of the server (0: no limit)")
    run(parser.parse_args())


if __name__ == "__main__":
    main()
