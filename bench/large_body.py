"""What a large transaction Bundle does to the other clients: a reader's latency while idle,
then while curl (another process) posts a Bundle near the body limit.

    python bench/large_body.py [--megabytes 50] [--seconds 5] [--refused]

Starts the embedded database and `calipso serve`, creates one Patient, reads it back in a
loop for `--seconds` (idle), then reads it again while the Bundle is posted, until the post
is answered. Prints p50/p99/max of the reads in each phase, their ratio (target: loaded p99
within 3x idle, issue 18), the Bundle's status and time, and the server's peak RSS.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import httpx
import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.harness import calipso_server, free_port  # noqa: E402
from bench.rest_crud import patient_1kb  # noqa: E402
from fhir_server.storage.embedded import EmbeddedDatabase  # noqa: E402


def bundle_of(megabytes: float, refused: bool = False) -> bytes:
    """A transaction of 1 KB Patients, about `megabytes` in all; `refused`: its last Patient is
    invalid, so calipso does all its own work (parse, validate, index every entry) and the
    database commits nothing."""
    patient = orjson.loads(patient_1kb(0))
    entries = []
    size, target = 0, int(megabytes * 1024 * 1024)
    while size < target:
        entry = {"fullUrl": f"urn:uuid:{uuid.uuid4()}", "resource": patient, "request": {"method": "POST", "url": "Patient"}}
        entries.append(entry)
        size += len(orjson.dumps(entry))
    if refused:
        entries[-1] = {**entries[-1], "resource": {**patient, "gender": "not-a-gender"}}
    return orjson.dumps({"resourceType": "Bundle", "type": "transaction", "entry": entries})


async def reads(url: str, until: "asyncio.Future[None] | float") -> list[float]:
    """Read `url` one request at a time until `until` (a deadline, or a future done); latencies in ms."""
    latencies = []
    async with httpx.AsyncClient(timeout=120) as client:
        while (time.monotonic() < until) if isinstance(until, float) else not until.done():
            started = time.perf_counter()
            assert (await client.get(url)).status_code == 200
            latencies.append((time.perf_counter() - started) * 1000)
    return latencies


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


def summary(label: str, latencies: list[float]) -> str:
    ordered = sorted(latencies)
    p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
    return f"{label:<10} reads {len(ordered):>5}  p50 {statistics.median(ordered):8.1f} ms  p99 {p99:8.1f} ms  max {ordered[-1]:8.1f} ms"


async def measure(base: str, body_file: Path, seconds: float) -> None:
    async with httpx.AsyncClient() as client:
        created = await client.post(f"{base}/Patient", content=patient_1kb(1), headers={"Content-Type": "application/fhir+json"})
    url = f"{base}/Patient/{created.json()['id']}"
    idle = await reads(url, time.monotonic() + seconds)
    loop = asyncio.get_running_loop()
    started = time.perf_counter()
    posting = loop.run_in_executor(None, lambda: subprocess.run(
        ["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "-X", "POST", "-H", "Content-Type: application/fhir+json",
         "--data-binary", f"@{body_file}", base], capture_output=True, text=True))
    loaded = await reads(url, posting)
    status = (await posting).stdout
    print(summary("idle", idle))
    print(summary("loaded", loaded))
    p99 = lambda values: sorted(values)[min(len(values) - 1, int(len(values) * 0.99))]  # noqa: E731
    print(f"bundle: HTTP {status} after {time.perf_counter() - started:.1f} s; "
          f"reader p99 loaded/idle = {p99(loaded) / p99(idle):.1f} (target <= 3)")


def run(args: argparse.Namespace) -> None:
    work = Path(tempfile.mkdtemp(prefix="calipso-large-body-"))
    body_file = work / "bundle.json"
    body_file.write_bytes(bundle_of(args.megabytes, args.refused))
    database = EmbeddedDatabase(work / "data")
    uri = database.start()
    port = free_port()
    server = calipso_server(uri, "bench", port, {"CALIPSO_AUDIT": "off"})
    try:
        print(f"# large_body: a {body_file.stat().st_size / 1024 / 1024:.1f} MB transaction Bundle against one reader, 2 cores")
        asyncio.run(measure(f"http://127.0.0.1:{port}/fhir", body_file, args.seconds))
        print(f"server peak RSS {rss_mb(server.pid):.0f} MB")
    finally:
        server.stop()
        database.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--megabytes", type=float, default=50)
    parser.add_argument("--seconds", type=float, default=5)
    parser.add_argument("--refused", action="store_true",
                        help="make the last entry invalid: calipso's own work on the Bundle, no database commit")
    run(parser.parse_args())


if __name__ == "__main__":
    main()
