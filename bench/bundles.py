"""Transaction Bundle benchmark (issue 4): calipso against raw database transactions.

    python bench/bundles.py [--bundles 200] [--entries 50] [--concurrency 4] [--rounds 2]

Generates Synthea-like transaction Bundles: one Patient, then Encounters, Observations and
Conditions whose `subject` / `encounter` are `urn:uuid:` references (about 1 Encounter : 3
Observations : 2 Conditions). calipso (`calipso serve` in a child process) receives them
with `POST /fhir` (`Prefer: return=minimal`), `--concurrency` at a time. The baseline writes
the same documents calipso stores (current version with its search index entries, plus the
history entry), prepared in advance, with one client `bulkWrite` inside one database
transaction per Bundle, the same concurrency, on the same database server. ABBA order over
`--rounds`. Target: calipso resources/s >= 0.5x baseline. Reports resources/s, p50/p99 per
Bundle, and the CPU of the server and database processes.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import sys
import tempfile
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import httpx
import orjson
from pymongo import AsyncMongoClient, InsertOne

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.harness import Figures, calipso_server, cpu_seconds, free_port  # noqa: E402
from fhir_server.engine.interactions import fhir_instant  # noqa: E402
from fhir_server.search.index import build_index  # noqa: E402
from fhir_server.search.parameters import parameters_for  # noqa: E402
from fhir_server.spec import load_spec  # noqa: E402
from fhir_server.storage.embedded import EmbeddedDatabase  # noqa: E402
from fhir_server.storage.store import ResourceStore  # noqa: E402

LOINC = [("8867-4", "Heart rate", "/min", 60, 100), ("8480-6", "Systolic blood pressure", "mm[Hg]", 100, 160),
         ("29463-7", "Body weight", "kg", 45, 110), ("8310-5", "Body temperature", "Cel", 36, 39)]
SNOMED = [("44054006", "Diabetes mellitus type 2"), ("38341003", "Hypertensive disorder"),
          ("195967001", "Asthma"), ("53741008", "Coronary arteriosclerosis")]


def synthea_like(entries: int, rng: random.Random) -> dict[str, Any]:
    """One patient's transaction Bundle of `entries` resources with urn:uuid references."""
    patient_urn = f"urn:uuid:{uuid.uuid4()}"
    bundle_entries = [_entry(patient_urn, {
        "resourceType": "Patient",
        "identifier": [{"system": "urn:oid:1.2.250.1.71.4.2.7", "value": f"IPP{rng.randrange(10**8):08d}"}],
        "name": [{"family": rng.choice(["Martin", "Bernard", "Lefèvre", "Dubois"]), "given": [rng.choice(["Hélène", "Jean", "Zoé"])]}],
        "gender": rng.choice(["female", "male"]),
        "birthDate": f"19{rng.randrange(30, 99)}-0{rng.randrange(1, 9)}-1{rng.randrange(0, 9)}",
    })]
    encounter_urn = None
    while len(bundle_entries) < entries:
        slot = len(bundle_entries) % 6
        day = f"2026-{rng.randrange(1, 12):02d}-{rng.randrange(1, 28):02d}"
        if slot == 1 or encounter_urn is None:
            encounter_urn = f"urn:uuid:{uuid.uuid4()}"
            bundle_entries.append(_entry(encounter_urn, {
                "resourceType": "Encounter", "status": "finished",
                "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "AMB"},
                "subject": {"reference": patient_urn}, "period": {"start": f"{day}T09:00:00Z", "end": f"{day}T09:30:00Z"},
            }))
        elif slot in (2, 3, 4):
            code, display, unit, low, high = rng.choice(LOINC)
            bundle_entries.append(_entry(f"urn:uuid:{uuid.uuid4()}", {
                "resourceType": "Observation", "status": "final",
                "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/observation-category", "code": "vital-signs"}]}],
                "code": {"coding": [{"system": "http://loinc.org", "code": code, "display": display}]},
                "subject": {"reference": patient_urn}, "encounter": {"reference": encounter_urn},
                "effectiveDateTime": f"{day}T09:10:00Z",
                "valueQuantity": {"value": rng.randrange(low, high), "unit": unit, "system": "http://unitsofmeasure.org", "code": unit},
            }))
        else:
            code, display = rng.choice(SNOMED)
            bundle_entries.append(_entry(f"urn:uuid:{uuid.uuid4()}", {
                "resourceType": "Condition",
                "clinicalStatus": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/condition-clinical", "code": "active"}]},
                "code": {"coding": [{"system": "http://snomed.info/sct", "code": code, "display": display}]},
                "subject": {"reference": patient_urn}, "encounter": {"reference": encounter_urn}, "onsetDateTime": day,
            }))
    return {"resourceType": "Bundle", "type": "transaction", "entry": bundle_entries}


def _entry(full_url: str, resource: dict[str, Any]) -> dict[str, Any]:
    return {"fullUrl": full_url, "resource": resource, "request": {"method": "POST", "url": resource["resourceType"]}}


def stored_documents(bundle: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """What calipso stores for a Bundle: (collection, document) pairs, references resolved."""
    spec = load_spec()
    parameters = parameters_for(spec)
    ids = {e["fullUrl"]: f"{e['resource']['resourceType']}/{uuid.uuid4()}" for e in bundle["entry"]}
    now = datetime.now(timezone.utc)
    documents = []
    for entry in bundle["entry"]:
        text = orjson.dumps(entry["resource"]).decode()
        for placeholder, target in ids.items():
            text = text.replace(placeholder, target)
        resource = orjson.loads(text)
        resource_type, resource_id = ids[entry["fullUrl"]].split("/")
        resource = {"resourceType": resource_type, "id": resource_id,
                    "meta": {"versionId": "1", "lastUpdated": fhir_instant(now)}, **resource}
        ix, so = build_index(resource, parameters.for_type(resource_type))
        current = {"_id": f"{resource_type}/{resource_id}", "type": resource_type, "id": resource_id, "version": 1,
                   "updated": now, "deleted": False, "raw": orjson.dumps(resource)}
        documents.append(("resources", {**current, "ix": ix, "so": so}))
        documents.append(("history", {**current, "_id": f"{current['_id']}/1", "method": "POST", "pending": True}))
    return documents


async def raw_transaction(client: AsyncMongoClient, operations: list[Any]) -> bool:
    """One bulkWrite in one transaction; SecantusDB's WriteConflicts are retried, as calipso does."""
    for _ in range(40):
        try:
            async with client.start_session() as session:
                async with await session.start_transaction():
                    await client.bulk_write(operations, session=session, ordered=True)
            return True
        except Exception as error:  # noqa: BLE001 - counted, retried
            if "WriteConflict" not in str(error) and "TransientTransactionError" not in str(getattr(error, "_error_labels", "")):
                return False
            await asyncio.sleep(random.uniform(0, 0.01))
    return False


async def drive(label: str, work: list[Any], send: Any, concurrency: int, entries: int, pids: tuple[int, int]) -> Figures:
    """Send every item with `concurrency` workers; latencies per item, CPU of server and database."""
    queue = list(reversed(work))
    latencies: list[float] = []
    errors = 0

    async def worker() -> None:
        nonlocal errors
        while queue:
            item = queue.pop()
            started = time.perf_counter()
            if not await send(item):
                errors += 1
            latencies.append((time.perf_counter() - started) * 1000)

    server_cpu, db_cpu = cpu_seconds(pids[0]), cpu_seconds(pids[1])
    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    seconds = time.perf_counter() - started
    latencies.sort()
    return Figures(label, len(work) * entries, seconds, latencies[len(latencies) // 2], latencies[int(len(latencies) * 0.99) - 1],
                   cpu_seconds(pids[0]) - server_cpu, cpu_seconds(pids[1]) - db_cpu, errors)


async def run_calipso(base: str, bundles: list[bytes], args: argparse.Namespace, pids: tuple[int, int]) -> Figures:
    async with httpx.AsyncClient(timeout=300) as client:
        async def send(body: bytes) -> bool:
            response = await client.post(base, content=body, headers={"Content-Type": "application/fhir+json", "Prefer": "return=minimal"})
            return response.status_code == 200

        return await drive("calipso transaction", bundles, send, args.concurrency, args.entries, pids)


async def run_baseline(uri: str, prepared: list[list[tuple[str, dict[str, Any]]]], args: argparse.Namespace, pids: tuple[int, int]) -> Figures:
    client: AsyncMongoClient = AsyncMongoClient(uri)
    database = "bench_bundles_raw"
    await ResourceStore(client, database).ensure_indexes()  # the same collections and indexes

    async def send(documents: list[tuple[str, dict[str, Any]]]) -> bool:
        operations = [InsertOne(doc, namespace=f"{database}.{collection}") for collection, doc in documents]
        return await raw_transaction(client, operations)

    try:
        return await drive("raw bulkWrite transaction", prepared, send, args.concurrency, args.entries, pids)
    finally:
        await client.close()


def run(args: argparse.Namespace) -> None:
    rng = random.Random(4)
    work = Path(tempfile.mkdtemp(prefix="calipso-bench-"))
    database = EmbeddedDatabase(work / "data")
    uri = database.start()
    port = free_port()
    calipso = calipso_server(uri, "bench_bundles", port)
    base = f"http://127.0.0.1:{port}/fhir"
    results: dict[str, Figures] = {}
    try:
        for round_number in range(args.rounds):
            bundles = [synthea_like(args.entries, rng) for _ in range(args.bundles)]
            bodies = [orjson.dumps(b) for b in bundles]
            prepared = [stored_documents(b) for b in bundles]
            order = ["baseline", "calipso"] if round_number % 2 == 0 else ["calipso", "baseline"]
            for name in order:
                print(f"round {round_number + 1}: {name} ...", file=sys.stderr, flush=True)
                if name == "calipso":
                    figures = asyncio.run(run_calipso(base, bodies, args, (calipso.pid, database.pid)))
                else:
                    figures = asyncio.run(run_baseline(uri, prepared, args, (os.getpid(), database.pid)))
                results[name] = results[name].merge(figures) if name in results else figures
    finally:
        calipso.stop()
        database.stop()

    print(f"# bundles: {args.rounds} rounds x {args.bundles} transaction Bundles of {args.entries} entries, "
          f"concurrency {args.concurrency}, {os.cpu_count()} cores")
    print(f"{'phase':<26} {'resources/s':>11} {'p50 ms/bundle':>14} {'p99 ms/bundle':>14} {'server µs/res':>14} {'db µs/res':>10} {'errors':>6}")
    for name in ("baseline", "calipso"):
        f = results[name]
        print(f"{f.label:<26} {f.rate:>11.0f} {f.p50_ms:>14.1f} {f.p99_ms:>14.1f} {f.server_us:>14.0f} {f.db_us:>10.0f} {f.errors:>6}")
    ratio = results["calipso"].rate / results["baseline"].rate
    print(f"throughput ratio calipso/baseline = {ratio:.2f} (target >= 0.5)")
    print("(baseline 'server' CPU is this bench process: it only sends prepared documents)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bundles", type=int, default=200)
    parser.add_argument("--entries", type=int, default=50)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=2)
    run(parser.parse_args())


if __name__ == "__main__":
    main()
