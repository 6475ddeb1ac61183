"""REST CRUD benchmark: calipso vs a bare FastAPI + PyMongo baseline on one embedded database.

    python bench/rest_crud.py [--creates 1500] [--reads 4000] [--connections 32] [--rounds 2]

Starts the embedded database, calipso (`calipso serve`) and the baseline (bench/baseline_app.py)
as child processes, then drives creates of a ~1 KB Patient and reads by id from this process,
alternating baseline and calipso round by round. Prints req/s, client-side p50/p99, and the
CPU each server process and the database used per request, then the ratios.
Targets (issue 2): read >= 0.9x baseline throughput, create >= 0.7x.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import sys
import tempfile
from pathlib import Path

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.harness import HEADER, Figures, ServerProcess, drive, free_port, python  # noqa: E402
from fhir_server.storage.embedded import EmbeddedDatabase  # noqa: E402

HEADERS = {"Content-Type": "application/fhir+json"}


def patient_1kb(n: int) -> bytes:
    """A realistic French patient of about 1 KB (fictitious)."""
    patient = {
        "resourceType": "Patient",
        "identifier": [
            {"type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0203", "code": "PI"}]},
             "system": "urn:oid:1.2.250.1.71.4.2.7", "value": f"IPP{n:08d}"},
            {"type": {"coding": [{"system": "http://interopsante.org/CodeSystem/v2-0203", "code": "INS-NIR"}]},
             "system": "urn:oid:1.2.250.1.213.1.4.8", "value": f"2480375{n:08d}"},
        ],
        "active": True,
        "name": [{"use": "official", "family": "Lefèvre", "given": ["Hélène", "Marie"]},
                 {"use": "maiden", "family": "Durand"}],
        "telecom": [{"system": "phone", "value": "+33 3 25 49 00 00", "use": "home"},
                    {"system": "email", "value": f"patient{n}@example.org"}],
        "gender": "female",
        "birthDate": "1948-03-12",
        "address": [{"use": "home", "line": ["12 rue de la Cité"], "city": "Troyes",
                     "postalCode": "10000", "country": "FR"}],
        "contact": [{"relationship": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0131", "code": "C"}]}],
                     "name": {"family": "Lefèvre", "given": ["Paul"]},
                     "telecom": [{"system": "phone", "value": "+33 6 00 00 00 00"}]}],
        "generalPractitioner": [{"reference": "Practitioner/gp-martin", "display": "Dr Martin"}],
        "managingOrganization": {"reference": "Organization/ch-troyes", "display": "CH de Troyes"},
    }
    return orjson.dumps(patient)


async def run(args: argparse.Namespace) -> None:
    data_dir = Path(tempfile.mkdtemp(prefix="calipso-bench-"))
    database = EmbeddedDatabase(data_dir)
    uri = database.start()
    assert database._process is not None
    db_pid = database._process.pid
    calipso_port, baseline_port = free_port(), free_port()
    calipso = ServerProcess(
        [python(), "-m", "fhir_server.cli", "serve", "--port", str(calipso_port), "--log-level", "warning"],
        f"http://127.0.0.1:{calipso_port}/fhir/metadata",
        env={"CALIPSO_MONGODB_URI": uri, "CALIPSO_DATABASE": "bench_calipso"},
    )
    baseline = ServerProcess(
        [python(), "bench/baseline_app.py", "--port", str(baseline_port), "--uri", uri],
        f"http://127.0.0.1:{baseline_port}/Patient/none",
    )
    targets = {
        "baseline": (baseline, f"http://127.0.0.1:{baseline_port}"),
        "calipso": (calipso, f"http://127.0.0.1:{calipso_port}/fhir"),
    }
    bodies = [patient_1kb(n) for n in range(args.creates * args.rounds)]
    ids: dict[str, list[str]] = {name: [] for name in targets}
    results: dict[tuple[str, str], Figures] = {}
    try:
        for round_number in range(args.rounds):
            for name, (server, base) in targets.items():
                offset = round_number * args.creates

                async def create(client, index, base=base, name=name, offset=offset):
                    response = await client.post(f"{base}/Patient", content=bodies[offset + index], headers=HEADERS)
                    if response.status_code == 201:
                        ids[name].append(response.headers["location"].split("/Patient/")[1].split("/")[0])
                    elif not ids[name]:
                        print(f"{name} create failed: {response.status_code} {response.text[:300]}", file=sys.stderr)
                    return response

                figures = await drive(f"create {name}", create, args.creates, args.connections, server.pid, db_pid, 201)
                key = ("create", name)
                results[key] = results[key].merge(figures) if key in results else figures
            for name, (server, base) in targets.items():
                chosen = [random.choice(ids[name]) for _ in range(args.reads)]

                async def read(client, index, base=base, chosen=chosen):
                    return await client.get(f"{base}/Patient/{chosen[index]}")

                figures = await drive(f"read {name}", read, args.reads, args.connections, server.pid, db_pid, 200)
                key = ("read", name)
                results[key] = results[key].merge(figures) if key in results else figures
    finally:
        calipso.stop()
        baseline.stop()
        database.stop()

    print(f"# rest_crud: {args.rounds} rounds x ({args.creates} creates + {args.reads} reads) per server, "
          f"{args.connections} connections, {os.cpu_count()} cores")
    print(HEADER)
    for key in (("create", "baseline"), ("create", "calipso"), ("read", "baseline"), ("read", "calipso")):
        print(results[key].row())
    for phase, target in (("read", 0.9), ("create", 0.7)):
        ours, base = results[(phase, "calipso")], results[(phase, "baseline")]
        ratio = ours.rate / base.rate
        print(f"{phase}: throughput ratio calipso/baseline = {ratio:.2f} (target >= {target}), "
              f"server CPU ratio = {ours.server_us / base.server_us:.2f}, "
              f"p99 ratio = {ours.percentile(0.99) / base.percentile(0.99):.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--creates", type=int, default=1500)
    parser.add_argument("--reads", type=int, default=4000)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=2)
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
