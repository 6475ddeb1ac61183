"""Validation benchmark: what our profile layer costs per notebook entry (issue 5).

    python bench/validation.py [--entries 2000] [--creates 400]

1. In process, on 2,000 distinct NotebookEntries (the profile example with varied text,
   dates, references): µs per entry for the structural pass alone, for what a write of an
   entry claiming no profile runs (structural + core invariants, issue 19), and for what a
   write of an entry claiming our profile runs (structural + core FHIRPath invariants + profile).
2. Over HTTP, against `calipso serve` in a child process (the embedded database behind it),
   from this process: the create round trip of entries that claim the profile (validated by
   it) and of the same entries without the claim (structural only), interleaved one by one
   so both see the same machine. Prints p50/p99 per kind and the difference of the medians,
   and the server process's CPU per create.

Target: profile validation adds <= 2 ms median per notebook entry.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.harness import ServerProcess, cpu_seconds, free_port, python  # noqa: E402
from fhir_server.ig import load_guide  # noqa: E402
from fhir_server.spec import load_spec  # noqa: E402
from fhir_server.validation import Validator  # noqa: E402

EXAMPLE = Path(__file__).resolve().parent.parent / "profiles" / "examples" / "Communication-example-entry.json"
KINDS = [("transmission", "INTERV"), ("observation", "OBS"), ("instruction", "INST"), ("question", "DEM-AVIS"), ("alert", "GEN")]


def entries(count: int) -> list[dict[str, Any]]:
    """Distinct, valid NotebookEntries."""
    base = orjson.loads(EXAMPLE.read_bytes())
    base.pop("id")
    made = []
    for n in range(count):
        entry = copy.deepcopy(base)
        kind, note = KINDS[n % len(KINDS)]
        entry["category"][0]["coding"][0]["code"] = kind
        entry["category"][0]["coding"][0].pop("display")
        entry["category"][0]["coding"][1]["code"] = note
        entry["category"][0]["coding"][1].pop("display")
        entry["priority"] = "urgent" if n % 7 == 0 else "routine"
        entry["subject"]["reference"] = f"Patient/p{n % 500}"
        entry["sent"] = f"2026-11-{1 + n % 28:02d}T{8 + n % 12:02d}:{n % 60:02d}:00+01:00"
        entry["payload"][0]["contentString"] = f"Passage n°{n} : pansement refait, tension {110 + n % 40}/70."
        made.append(entry)
    return made


def in_process(batch: list[dict[str, Any]]) -> dict[str, list[float]]:
    validator = Validator(load_spec(), load_guide())
    for entry in batch[:50]:  # warm caches (compiled FHIRPath, value set expansions)
        validator.validate_write(entry, "Communication")
    timings: dict[str, list[float]] = {"structural only": [], "write, no claim": [], "structural + profile": []}
    for entry in batch:
        plain = {k: v for k, v in entry.items() if k != "meta"}
        started = time.perf_counter()
        issues = validator.structural.validate(entry, "Communication")
        timings["structural only"].append(time.perf_counter() - started)
        started = time.perf_counter()
        issues += validator.validate_write(plain, "Communication")
        timings["write, no claim"].append(time.perf_counter() - started)
        started = time.perf_counter()
        issues += validator.validate_write(entry, "Communication")
        timings["structural + profile"].append(time.perf_counter() - started)
        if issues:
            raise SystemExit(f"a benchmark entry is invalid: {issues[0]}")
    return timings


def round_trips(batch: list[dict[str, Any]]) -> dict[str, list[float]]:
    work = Path(tempfile.mkdtemp(prefix="calipso-bench-"))
    port = free_port()
    server = ServerProcess(
        [python(), "-m", "fhir_server.cli", "serve", "--auth", "off", "--port", str(port), "--mllp-port", "0", "--data-dir", str(work / "data"), "--log-level", "warning"],
        f"http://127.0.0.1:{port}/fhir/metadata",
    )
    timings: dict[str, list[float]] = {"create, profile claimed": [], "create, no claim": []}
    cpu_before = cpu_seconds(server.pid)
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}/fhir", headers={"Content-Type": "application/fhir+json", "Prefer": "return=minimal"}) as client:
            for index, entry in enumerate(batch):
                plain = {k: v for k, v in entry.items() if k != "meta"}
                pair = [("create, profile claimed", entry), ("create, no claim", plain)]
                for label, body in pair if index % 2 == 0 else reversed(pair):
                    payload = orjson.dumps(body)
                    started = time.perf_counter()
                    response = client.post("/Communication", content=payload)
                    timings[label].append(time.perf_counter() - started)
                    if response.status_code != 201:
                        raise SystemExit(f"create failed: {response.status_code} {response.text[:300]}")
        creates = 2 * len(batch)
        print(f"server CPU per create (both kinds): {(cpu_seconds(server.pid) - cpu_before) / creates * 1e6:.0f} µs over {creates} creates")
    finally:
        server.stop()
    return timings


def report(title: str, timings: dict[str, list[float]]) -> dict[str, float]:
    print(title)
    print(f"{'phase':<26} {'n':>6} {'p50 µs':>9} {'p99 µs':>9} {'mean µs':>9}")
    medians = {}
    for label, values in timings.items():
        ordered = sorted(values)
        p50, p99 = ordered[len(ordered) // 2] * 1e6, ordered[int(len(ordered) * 0.99)] * 1e6
        medians[label] = p50
        print(f"{label:<26} {len(values):>6} {p50:>9.0f} {p99:>9.0f} {statistics.fmean(values) * 1e6:>9.0f}")
    return medians


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--entries", type=int, default=2000)
    parser.add_argument("--creates", type=int, default=400)
    args = parser.parse_args()
    batch = entries(max(args.entries, args.creates))
    local = report(f"# validation in process: {args.entries} NotebookEntries", in_process(batch[: args.entries]))
    added_local = local["structural + profile"] - local["structural only"]
    remote = report(f"# create round trip over HTTP: {args.creates} of each, interleaved", round_trips(batch[: args.creates]))
    added_remote = remote["create, profile claimed"] - remote["create, no claim"]
    print(f"profile layer adds (in process, median) = {added_local / 1000:.2f} ms (target <= 2 ms)")
    print(f"profile layer adds (create round trip, difference of medians) = {added_remote / 1000:.2f} ms (target <= 2 ms)")


if __name__ == "__main__":
    main()
