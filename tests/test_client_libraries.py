"""Popular FHIR client libraries, unchanged, against a real `calipso serve`: a transaction, a
batch, paging and a count, the way their users write them (fhirpy and fhirclient in Python,
fhir-kit-client in Node: conformance/clients/)."""

from __future__ import annotations

import json
import shutil
import subprocess
import uuid
from pathlib import Path


from conformance.server import Served
from tests.conftest import notebook_patient, project_root

CLIENTS_DIR = project_root() / "conformance" / "clients"


def transaction(family: str) -> dict:
    """A Patient and a notebook entry about her, linked by a urn:uuid placeholder."""
    placeholder = f"urn:uuid:{uuid.uuid4()}"
    entry = {"resourceType": "Communication", "status": "completed", "subject": {"reference": placeholder},
             "payload": [{"contentString": "Pansement refait, plaie propre."}]}
    return {"resourceType": "Bundle", "type": "transaction", "entry": [
        {"fullUrl": placeholder, "resource": notebook_patient(name=[{"family": family}]), "request": {"method": "POST", "url": "Patient"}},
        {"resource": entry, "request": {"method": "POST", "url": "Communication"}},
    ]}


def batch(family: str) -> dict:
    return {"resourceType": "Bundle", "type": "batch", "entry": [
        {"resource": notebook_patient(name=[{"family": family}]), "request": {"method": "POST", "url": "Patient"}},
        {"request": {"method": "GET", "url": f"Patient?family={family}"}},
    ]}


async def test_fhirpy(served: Served) -> None:
    from fhirpy import AsyncFHIRClient

    client = AsyncFHIRClient(served.base)
    answered = await client.execute("", method="post", data=transaction("Tx-Fhirpy"))
    assert answered["type"] == "transaction-response"
    assert [e["response"]["status"][:3] for e in answered["entry"]] == ["201", "201"]
    batched = await client.execute("", method="post", data=batch("Batch-Fhirpy"))
    assert [e["response"]["status"][:3] for e in batched["entry"]] == ["201", "200"]
    for n in range(5):
        await client.resource("Patient", **notebook_patient(name=[{"family": "Paged-Fhirpy", "given": [str(n)]}])).save()
    patients = client.resources("Patient").search(family="Paged-Fhirpy")
    assert await patients.count() == 5
    paged = await patients.limit(2).fetch_all()  # follows `next` links, 2 a page
    assert sorted(p["name"][0]["given"][0] for p in paged) == ["0", "1", "2", "3", "4"]
    assert await client.resources("Patient").search(family="Tx-Fhirpy").count() == 1


def test_fhirclient(served: Served) -> None:
    from fhirclient import client as smart_client
    from fhirclient.models.patient import Patient

    smart = smart_client.FHIRClient(settings={"app_id": "calipso-tests", "api_base": served.base})
    answered = smart.server.post_json("", transaction("Tx-Fhirclient")).json()
    assert answered["type"] == "transaction-response"
    batched = smart.server.post_json("", batch("Batch-Fhirclient")).json()
    assert [e["response"]["status"][:3] for e in batched["entry"]] == ["201", "200"]
    for n in range(5):
        Patient(notebook_patient(name=[{"family": "Paged-Fhirclient", "given": [str(n)]}])).create(smart.server)
    search = Patient.where(struct={"family": "Paged-Fhirclient", "_count": "2"})
    found = list(search.perform_resources_iter(smart.server))  # follows `next` links
    assert sorted(p.name[0].given[0] for p in found) == ["0", "1", "2", "3", "4"]


def test_fhir_kit_client(served: Served, tmp_path: Path) -> None:
    """fhir-kit-client (npm, version pinned by conformance/clients/package-lock.json)."""
    npm = shutil.which("npm")
    assert npm is not None, "Node and npm are needed (Node 20)"
    if not (CLIENTS_DIR / "node_modules" / "fhir-kit-client").exists():
        subprocess.run([npm, "ci", "--no-audit", "--no-fund"], cwd=CLIENTS_DIR, check=True, capture_output=True, timeout=600)
    bodies = tmp_path / "bodies.json"
    bodies.write_text(json.dumps({"transaction": transaction("Tx-Kit"), "batch": batch("Batch-Kit")}))
    done = subprocess.run(["node", str(CLIENTS_DIR / "fhir_kit_client.mjs"), served.base, str(bodies)],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    said = json.loads(done.stdout)
    assert said["transaction"] == ["201", "201"]
    assert said["batch"] == ["201", "200"]
    assert said["paged"] == ["0", "1", "2", "3", "4"]
    assert said["count"] == 5
