"""REST CRUD benchmark: calipso vs a bare FastAPI + PyMongo baseline on one embedded database.

    python bench/rest_crud.py [--seconds 10] [--connections 32] [--rounds 2] [--subscribed]

Starts the embedded database, calipso (`calipso serve`) and the baseline (bench/baseline_app.py)
as child processes, then drives creates of a ~1 KB Patient and reads by random id with wrk
(a separate process), alternating baseline and calipso in ABBA order round by round. Prints req/s, client-side p50/p99, and the
CPU each server process and the database used per request, then the ratios.
Targets (issue 2): read >= 0.9x baseline throughput, create >= 0.7x.
`--subscribed`: calipso has one topic subscription (notebook entries, to a receiver in this
process), so its dispatcher drains every write's event: what subscriptions cost the writes.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

import httpx
import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pymongo import MongoClient  # noqa: E402

from bench.harness import HEADER, Figures, ServerProcess, calipso_server, free_port, python, require_wrk, run_wrk  # noqa: E402
from bench.subscriptions import subscription  # noqa: E402
from fhir_server.storage.embedded import EmbeddedDatabase  # noqa: E402
from fhir_server.subscriptions.receiver import Receiver  # noqa: E402

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


def run(args: argparse.Namespace) -> None:
    require_wrk()
    work = Path(tempfile.mkdtemp(prefix="calipso-bench-"))
    database = EmbeddedDatabase(work / "data")
    uri = database.start()
    db_pid = database.pid
    calipso_port, baseline_port = free_port(), free_port()
    receiver = Receiver("bench-subscription-secret").start() if args.subscribed else None
    env = {"CALIPSO_SUBSCRIPTION_ENDPOINTS": receiver.url} if receiver else None
    calipso = calipso_server(uri, "bench_calipso", calipso_port, env)
    if receiver is not None:
        created = httpx.post(f"http://127.0.0.1:{calipso_port}/fhir/Subscription", json=subscription(receiver.url))
        assert created.status_code == 201, created.text
    try:
        baseline = ServerProcess(
            [python(), "bench/baseline_app.py", "--port", str(baseline_port), "--uri", uri, "--database", "bench_baseline"],
            f"http://127.0.0.1:{baseline_port}/Patient/none",
        )
    except RuntimeError:
        calipso.stop()
        database.stop()
        raise
    targets = {
        # name: (server, base URL, database and collection holding the current versions)
        "baseline": (baseline, f"http://127.0.0.1:{baseline_port}", ("bench_baseline", "current")),
        "calipso": (calipso, f"http://127.0.0.1:{calipso_port}/fhir", ("bench_calipso", "resources")),
    }
    body_file = work / "patient.json"
    body_file.write_bytes(patient_1kb(1))
    results: dict[tuple[str, str], Figures] = {}

    def note(key: tuple[str, str], figures: Figures) -> None:
        results[key] = results[key].merge(figures) if key in results else figures

    client: MongoClient = MongoClient(uri)
    try:
        for round_number in range(args.rounds):
            # ABBA order: the database slows as it fills, so neither side always goes second
            order = list(targets.items()) if round_number % 2 == 0 else list(reversed(targets.items()))
            for name, (server, base, _where) in order:
                note(("create", name), run_wrk(f"create {name}", f"{base}/Patient", "create.lua", [str(body_file)],
                                               args.seconds, args.connections, server.pid, db_pid))
            for name, (server, base, (db_name, collection)) in order:
                ids = [doc["_id"].removeprefix("Patient/")  # calipso's collection holds its AuditEvents too
                       for doc in client[db_name][collection].find({"type": "Patient"} if name == "calipso" else {}, {"_id": 1})]
                ids_file = work / f"ids-{name}.txt"
                ids_file.write_text("\n".join(ids) + "\n")
                prefix = base.removeprefix(f"http://127.0.0.1:{server_port(base)}") + "/Patient/"
                note(("read", name), run_wrk(f"read {name}", base, "read.lua", [str(ids_file), prefix],
                                             args.seconds, args.connections, server.pid, db_pid))
    finally:
        client.close()
        if receiver is not None:
            receiver.stop()
        calipso.stop()
        baseline.stop()
        database.stop()

    print(f"# rest_crud: {args.rounds} rounds x ({args.seconds} s creates + {args.seconds} s reads) per server, "
          f"wrk -c{args.connections}, {os.cpu_count()} cores, 1 KB Patient{', one subscription' if args.subscribed else ''}")
    print(HEADER)
    for key in (("create", "baseline"), ("create", "calipso"), ("read", "baseline"), ("read", "calipso")):
        print(results[key].row())
    for phase, target in (("read", 0.9), ("create", 0.7)):
        ours, base = results[(phase, "calipso")], results[(phase, "baseline")]
        print(f"{phase}: throughput ratio calipso/baseline = {ours.rate / base.rate:.2f} (target >= {target}), "
              f"server CPU ratio = {ours.server_us / base.server_us:.2f}, p99 ratio = {ours.p99_ms / base.p99_ms:.2f}")


def server_port(base: str) -> int:
    return int(base.split(":")[2].split("/")[0])


def wrk_arguments(doc: str | None) -> argparse.ArgumentParser:
    """The options of the wrk-driven benches: run length, connections, rounds."""
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=int, default=10, help="length of each wrk run")
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=2)
    return parser


def main() -> None:
    parser = wrk_arguments(__doc__)
    parser.add_argument("--subscribed", action="store_true", help="calipso with one topic subscription (its dispatcher at work)")
    run(parser.parse_args())


if __name__ == "__main__":
    main()
