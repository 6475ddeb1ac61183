"""Transaction and batch Bundles over real HTTP and a real database."""

from __future__ import annotations

import asyncio
import base64
import uuid
from typing import Any

import httpx
import orjson
from fastapi import FastAPI

from fhir_server.app import create_app
from fhir_server.engine.bundle_entries import BundleLimits, BundleRequest, read_request
from fhir_server.engine.transaction import _Plan, run_transaction
from fhir_server.outcome import FhirError
from fhir_server.security.policy import ACCESS, SYSTEM
from fhir_server.settings import Settings
from tests.conftest import fhir_client, notebook_entry, notebook_patient, project_root, running

IPP = "urn:oid:1.2.250.1.71.4.2.7"


def urn() -> str:
    return f"urn:uuid:{uuid.uuid4()}"


def entry(method: str, url: str, resource: dict[str, Any] | None = None, full_url: str | None = None, **request: Any) -> dict[str, Any]:
    found: dict[str, Any] = {"request": {"method": method, "url": url, **request}}
    if resource is not None:
        found["resource"] = resource
    if full_url:
        found["fullUrl"] = full_url
    return found


def bundle(kind: str, *entries: dict[str, Any]) -> dict[str, Any]:
    return {"resourceType": "Bundle", "type": kind, "entry": list(entries)}


def stay_graph(ipp: str = "IPP-42") -> tuple[dict[str, Any], dict[str, str]]:
    """A discharge as the bridge sends it: Patient → Encounter → Communication → CarePlan → CareTeam."""
    ids = {name: urn() for name in ("patient", "stay", "entry", "plan", "team")}
    patient = notebook_patient(identifier=[{"system": IPP, "value": ipp}])
    stay = {"resourceType": "Encounter", "status": "finished", "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "IMP"},
            "subject": {"reference": ids["patient"]}}
    note = notebook_entry("x") | {"subject": {"reference": ids["patient"]}, "encounter": {"reference": ids["stay"]}}
    team = {"resourceType": "CareTeam", "status": "active", "subject": {"reference": ids["patient"]}, "encounter": {"reference": ids["stay"]}}
    plan = {"resourceType": "CarePlan", "status": "active", "intent": "plan", "subject": {"reference": ids["patient"]},
            "encounter": {"reference": ids["stay"]}, "careTeam": [{"reference": ids["team"]}],
            "text": {"status": "generated", "div": f'<div xmlns="http://www.w3.org/1999/xhtml"><a href="{ids["patient"]}">patient</a></div>'}}
    graph = bundle(
        "transaction",
        entry("POST", "Patient", patient, ids["patient"]),
        entry("POST", "Encounter", stay, ids["stay"]),
        entry("POST", "Communication", note, ids["entry"]),
        entry("POST", "CarePlan", plan, ids["plan"]),
        entry("POST", "CareTeam", team, ids["team"]),
    )
    return graph, ids


def locations(response: httpx.Response) -> list[str]:
    return [e["response"]["location"].split("/_history")[0] for e in response.json()["entry"]]


async def count(client: httpx.AsyncClient, url: str) -> int:
    return (await client.get(url, params={"_total": "accurate", "_summary": "count"})).json()["total"]


async def test_urn_uuid_graph_is_rewritten_and_searchable(client: httpx.AsyncClient) -> None:
    graph, _ = stay_graph()
    response = await client.post("/fhir", json=graph)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["type"] == "transaction-response"
    statuses = [e["response"]["status"] for e in body["entry"]]
    assert statuses == ["201 Created"] * 5
    patient, stay, note, plan, team = locations(response)
    assert patient.startswith("Patient/") and team.startswith("CareTeam/")
    for e in body["entry"]:
        assert e["response"]["etag"] == 'W/"1"' and e["response"]["lastModified"]
        assert e["resource"]["meta"]["versionId"] == "1"
    stored_plan = (await client.get(f"/fhir/{plan}")).json()
    assert stored_plan["subject"]["reference"] == patient
    assert stored_plan["encounter"]["reference"] == stay
    assert stored_plan["careTeam"][0]["reference"] == team
    assert f'href="{patient}"' in stored_plan["text"]["div"]
    assert "urn:uuid" not in orjson.dumps(body).decode()
    found = (await client.get("/fhir/Communication", params={"subject": patient, "encounter": stay})).json()
    assert [e["resource"]["id"] for e in found["entry"]] == [note.split("/")[1]]
    everything = (await client.get(f"/fhir/{patient}/$everything")).json()
    assert {e["resource"]["resourceType"] for e in everything["entry"]} == {"Patient", "Encounter", "Communication", "CarePlan", "CareTeam"}


async def test_one_invalid_entry_writes_nothing(client: httpx.AsyncClient, store: Any) -> None:
    graph, _ = stay_graph()
    del graph["entry"][2]["resource"]["status"]  # required (1..1)
    pending_before = len(await store.pending_events(limit=1000))
    response = await client.post("/fhir", json=graph)
    assert response.status_code == 422
    issue = response.json()["issue"][0]
    assert issue["diagnostics"].startswith("Bundle.entry[2]")
    assert issue["expression"][0].startswith("Bundle.entry[2].resource.status")
    for resource_type in ("Patient", "Encounter", "Communication", "CarePlan", "CareTeam"):
        assert await count(client, f"/fhir/{resource_type}") == 0
    assert (await client.get("/fhir/_history")).json().get("entry") is None
    assert len(await store.pending_events(limit=1000)) == pending_before


async def test_unknown_placeholder_is_refused(client: httpx.AsyncClient) -> None:
    note = notebook_entry("x") | {"subject": {"reference": urn()}}
    response = await client.post("/fhir", json=bundle("transaction", entry("POST", "Communication", note)))
    assert response.status_code == 400
    assert "not the fullUrl of any entry" in response.json()["issue"][0]["diagnostics"]
    assert await count(client, "/fhir/Communication") == 0


async def test_conditional_create_in_a_transaction_is_idempotent(client: httpx.AsyncClient) -> None:
    patient_urn = urn()
    replayable = bundle(
        "transaction",
        entry("POST", "Patient", notebook_patient(identifier=[{"system": IPP, "value": "IPP-7"}]), patient_urn,
              ifNoneExist=f"identifier={IPP}|IPP-7"),
        entry("PUT", "Communication/entry-7", notebook_entry("x") | {"id": "entry-7", "subject": {"reference": patient_urn}}),
    )
    first = await client.post("/fhir", json=replayable)
    second = await client.post("/fhir", json=replayable)
    assert [e["response"]["status"] for e in first.json()["entry"]] == ["201 Created", "201 Created"]
    assert [e["response"]["status"] for e in second.json()["entry"]] == ["200 OK", "200 OK"]
    assert locations(first)[0] == locations(second)[0]
    assert await count(client, "/fhir/Patient") == 1
    note = (await client.get("/fhir/Communication/entry-7")).json()
    assert note["subject"]["reference"] == locations(first)[0]


async def test_conditional_references(client: httpx.AsyncClient) -> None:
    created = await client.post("/fhir/Patient", json=notebook_patient(identifier=[{"system": IPP, "value": "IPP-9"}]))
    patient_id = created.json()["id"]
    note = notebook_entry("x") | {"subject": {"reference": f"Patient?identifier={IPP}|IPP-9"}}
    response = await client.post("/fhir", json=bundle("transaction", entry("POST", "Communication", note)))
    assert response.status_code == 200, response.text
    assert response.json()["entry"][0]["resource"]["subject"]["reference"] == f"Patient/{patient_id}"

    # a resource the same Bundle creates is found too
    team = {"resourceType": "CareTeam", "status": "active", "subject": {"reference": f"Patient?identifier={IPP}|IPP-10"}}
    both = bundle(
        "transaction",
        entry("POST", "CareTeam", team),
        entry("POST", "Patient", notebook_patient(identifier=[{"system": IPP, "value": "IPP-10"}]), urn()),
    )
    response = await client.post("/fhir", json=both)
    assert response.status_code == 200, response.text
    new_patient = locations(response)[1]
    assert response.json()["entry"][0]["resource"]["subject"]["reference"] == new_patient

    for criteria, status in ((f"identifier={IPP}|nobody", 412), ("gender=female", 412)):
        bad = notebook_entry("x") | {"subject": {"reference": f"Patient?{criteria}"}}
        refused = await client.post("/fhir", json=bundle("transaction", entry("POST", "Communication", bad)))
        assert refused.status_code == status, criteria
        assert "Bundle.entry[0]" in refused.json()["issue"][0]["diagnostics"]
    assert await count(client, "/fhir/Communication") == 1


async def test_processing_order_and_reads(client: httpx.AsyncClient) -> None:
    old = (await client.put("/fhir/Patient/old", json=notebook_patient(id="old"))).json()
    assert old["meta"]["versionId"] == "1"
    response = await client.post("/fhir", json=bundle(
        "transaction",
        entry("GET", "Patient/new"),  # reads run last: they see the writes
        entry("PUT", "Patient/new", notebook_patient(id="new")),
        entry("DELETE", "Patient/old"),
        entry("GET", "Patient?_id=new,old"),
        entry("GET", "Patient/old"),
    ))
    assert response.status_code == 200, response.text
    entries = response.json()["entry"]
    assert entries[0]["response"]["status"] == "200 OK" and entries[0]["resource"]["id"] == "new"
    assert entries[1]["response"]["status"] == "201 Created"
    assert entries[2]["response"]["status"] == "204 No Content" and entries[2]["response"]["etag"] == 'W/"2"'
    assert [e["resource"]["id"] for e in entries[3]["resource"]["entry"]] == ["new"]
    assert entries[4]["response"]["status"] == "410 Gone"
    assert entries[4]["response"]["outcome"]["resourceType"] == "OperationOutcome"
    # every write of the transaction carries the same time
    assert entries[1]["response"]["lastModified"] == entries[2]["response"]["lastModified"]


async def test_duplicate_target_is_refused(client: httpx.AsyncClient) -> None:
    response = await client.post("/fhir", json=bundle(
        "transaction",
        entry("PUT", "Patient/twice", notebook_patient(id="twice")),
        entry("DELETE", "Patient/twice"),
    ))
    assert response.status_code == 400
    assert "Bundle.entry[0] and Bundle.entry[1]" in response.json()["issue"][0]["diagnostics"]
    assert (await client.get("/fhir/Patient/twice")).status_code == 404


async def test_stale_if_match_fails_the_transaction(client: httpx.AsyncClient) -> None:
    await client.put("/fhir/Patient/p1", json=notebook_patient(id="p1"))
    await client.put("/fhir/Patient/p1", json=notebook_patient(id="p1", gender="male"))
    response = await client.post("/fhir", json=bundle(
        "transaction",
        entry("POST", "Communication", notebook_entry("p1")),
        entry("PUT", "Patient/p1", notebook_patient(id="p1"), ifMatch='W/"1"'),
    ))
    assert response.status_code == 412
    assert response.json()["issue"][0]["diagnostics"].startswith("Bundle.entry[1]")
    assert await count(client, "/fhir/Communication") == 0
    assert (await client.get("/fhir/Patient/p1")).json()["gender"] == "male"


async def test_patch_and_conditional_update_inside_a_transaction(client: httpx.AsyncClient) -> None:
    await client.put("/fhir/Patient/p2", json=notebook_patient(id="p2"))
    json_patch = [{"op": "replace", "path": "/gender", "value": "other"}]
    binary = {"resourceType": "Binary", "contentType": "application/json-patch+json",
              "data": base64.b64encode(orjson.dumps(json_patch)).decode()}
    response = await client.post("/fhir", json=bundle(
        "transaction",
        entry("PATCH", "Patient/p2", binary),
        entry("PUT", f"Patient?identifier={IPP}|IPP-new", notebook_patient(identifier=[{"system": IPP, "value": "IPP-new"}])),
    ))
    assert response.status_code == 200, response.text
    entries = response.json()["entry"]
    assert entries[0]["response"]["status"] == "200 OK" and entries[0]["resource"]["gender"] == "other"
    assert entries[1]["response"]["status"] == "201 Created"
    history = (await client.get("/fhir/Patient/p2/_history")).json()
    assert [e["request"]["method"] for e in history["entry"]] == ["PATCH", "PUT"]


async def test_batch_entries_succeed_or_fail_alone(client: httpx.AsyncClient) -> None:
    response = await client.post("/fhir", json=bundle(
        "batch",
        entry("POST", "Patient", notebook_patient()),
        entry("POST", "Patient", notebook_patient(birthDate="someday")),  # not a date
        entry("PUT", "Patient/b1", notebook_patient(id="b1")),
        entry("GET", "Patient/nobody"),
        {"resource": notebook_patient()},  # no request at all
        entry("DELETE", "Nonsense/1"),
    ))
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["type"] == "batch-response"
    statuses = [e["response"]["status"] for e in body["entry"]]
    assert statuses == ["201 Created", "422 Unprocessable Entity", "201 Created", "404 Not Found", "400 Bad Request", "404 Not Found"]
    assert body["entry"][1]["response"]["outcome"]["issue"][0]["expression"][0].startswith("Bundle.entry[1].resource.birthDate")
    assert await count(client, "/fhir/Patient") == 2


async def test_bundle_shape_and_limits(database_uri: str) -> None:
    settings = Settings(mongodb_uri=database_uri, database=f"test_{uuid.uuid4().hex[:16]}", max_bundle_entries=3, max_bundle_bytes=4096, auth=False, audit=False, mllp_port=None)
    async with running(create_app(settings)) as app, fhir_client(app) as client:
        too_many = bundle("batch", *[entry("GET", "Patient")] * 4)
        response = await client.post("/fhir", json=too_many)
        assert response.status_code == 413 and "limit is 3" in response.json()["issue"][0]["diagnostics"]
        too_big = bundle("transaction", entry("POST", "Patient", notebook_patient(name=[{"text": "x" * 5000}])))
        response = await client.post("/fhir", json=too_big)
        assert response.status_code == 413 and "4096 bytes" in response.json()["issue"][0]["diagnostics"]
        for wrong in ({"resourceType": "Patient"}, bundle("collection"), {"resourceType": "Bundle", "type": "batch", "entry": {}}):
            assert (await client.post("/fhir", json=wrong)).status_code == 400
        foreign = bundle("transaction", entry("PUT", "http://elsewhere.example/fhir/Patient/x", notebook_patient(id="x")))
        assert (await client.post("/fhir", json=foreign)).status_code == 400
        ours = bundle("transaction", entry("PUT", "http://calipso.test/fhir/Patient/x", notebook_patient(id="x")))
        assert (await client.post("/fhir", json=ours)).status_code == 200


async def test_prefer_minimal_leaves_resources_out(client: httpx.AsyncClient) -> None:
    graph, _ = stay_graph()
    response = await client.post("/fhir", json=graph, headers={"Prefer": "return=minimal"})
    assert response.status_code == 200
    assert all("resource" not in e and e["response"]["location"] for e in response.json()["entry"])


async def test_app_keeps_serving_after_hostile_bundles(app: FastAPI, client: httpx.AsyncClient) -> None:
    nested: dict[str, Any] = {"reference": "x"}
    for _ in range(200):
        nested = {"extension": [{"url": "http://x", "valueReference": nested}]}
    hostile = [
        bundle("transaction", entry("POST", "Patient", notebook_patient() | {"extension": [nested]})),
        bundle("transaction", entry("POST", "Patient?x=1", notebook_patient())),
        bundle("transaction", entry("PUT", "Patient/../../etc", notebook_patient())),
        bundle("transaction", entry("FROB", "Patient", notebook_patient())),
        bundle("transaction", entry("POST", "Communication", notebook_entry("x") | {"subject": {"reference": "Patient?_sort=name"}})),
    ]
    for body in hostile:
        response = await client.post("/fhir", json=body)
        assert 400 <= response.status_code < 500, (body, response.text)
    assert (await client.get("/fhir/metadata")).status_code == 200
    assert await count(client, "/fhir/Patient") == 0


async def test_parallel_identical_transactions_create_one_patient(client: httpx.AsyncClient) -> None:
    def replay() -> dict[str, Any]:
        patient_urn = urn()
        return bundle(
            "transaction",
            entry("POST", "Patient", notebook_patient(identifier=[{"system": IPP, "value": "IPP-RACE"}]), patient_urn,
                  ifNoneExist=f"identifier={IPP}|IPP-RACE"),
            entry("POST", "Communication", notebook_entry("x") | {"subject": {"reference": patient_urn}}),
        )

    responses = await asyncio.gather(*(client.post("/fhir", json=replay()) for _ in range(10)))
    assert [r.status_code for r in responses] == [200] * 10
    patients = {locations(r)[0] for r in responses}
    assert len(patients) == 1
    assert await count(client, "/fhir/Patient") == 1
    assert await count(client, f"/fhir/Communication?subject={patients.pop()}") == 10


async def test_urn_oid_placeholders_and_conditional_headers(client: httpx.AsyncClient) -> None:
    await client.put("/fhir/Patient/known", json=notebook_patient(id="known"))
    oid = "urn:oid:1.2.250.1.999.1"
    response = await client.post("/fhir", json=bundle(
        "transaction",
        entry("POST", "Patient", notebook_patient(), oid),
        entry("POST", "Communication", notebook_entry("x") | {"subject": {"reference": oid}}),
        entry("GET", "Patient/known", ifNoneMatch='W/"1"'),
        entry("GET", "Patient/known", ifModifiedSince="2999-01-01T00:00:00Z"),
        entry("GET", "Patient/known", ifNoneMatch='W/"7"'),
    ))
    assert response.status_code == 200, response.text
    entries = response.json()["entry"]
    assert entries[1]["resource"]["subject"]["reference"] == entries[0]["response"]["location"].split("/_history")[0]
    assert [e["response"]["status"] for e in entries[2:]] == ["304 Not Modified", "304 Not Modified", "200 OK"]
    refused = await client.post("/fhir", json=bundle(
        "transaction", entry("PUT", "Patient/known", notebook_patient(id="known", gender="male"), ifNoneMatch="*"),
    ))
    assert refused.status_code == 412 and "Bundle.entry[0]" in refused.json()["issue"][0]["diagnostics"]
    assert (await client.get("/fhir/Patient/known")).json()["meta"]["versionId"] == "1"


# -- validation while the lookups run ------------------------------------------------------

BASE = "http://testserver/fhir"
STAY_IDS = "urn:oid:1.2.250.1.71.4.2.7.1"
ENTRY_EXAMPLE = project_root() / "profiles" / "examples" / "Communication-example-entry.json"


def discharge_requests(engine: Any, ipp: str) -> list[BundleRequest]:
    """Two conditional updates (two lookups) and a profiled notebook entry referencing both."""
    patient_url, stay_url = urn(), urn()
    note = orjson.loads(ENTRY_EXAMPLE.read_bytes())
    note.pop("id")
    note |= {"subject": {"reference": patient_url}, "encounter": {"reference": stay_url}}
    stay = {"resourceType": "Encounter", "status": "finished", "identifier": [{"system": STAY_IDS, "value": f"V-{ipp}"}],
            "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "IMP"}, "subject": {"reference": patient_url}}
    entries = [
        entry("PUT", f"Encounter?identifier={STAY_IDS}|V-{ipp}", stay, stay_url),
        entry("PUT", f"Patient?identifier={IPP}|{ipp}", notebook_patient(identifier=[{"system": IPP, "value": ipp}]), patient_url),
        entry("POST", "Communication", note),
    ]
    return [read_request(i, e, engine, BASE) for i, e in enumerate(entries)]


async def test_resources_are_validated_while_the_lookups_run(app: FastAPI) -> None:
    engine = app.state.engine
    ACCESS.set(SYSTEM)  # the engine called directly, as the server's own work (this test's task only)
    plan = _Plan(engine, discharge_requests(engine, "IPP-77"), BASE, BundleLimits())
    await plan.prepare()
    assert 0 in plan.valid_early, "the first update is validated before the lookups answer"
    written = {w.type: orjson.loads(w.raw or b"{}") for w in plan.writes}
    assert set(written) == {"Encounter", "Patient", "Communication"}
    patient, stay = f"Patient/{written['Patient']['id']}", f"Encounter/{written['Encounter']['id']}"
    assert written["Communication"]["subject"]["reference"] == patient
    assert written["Communication"]["encounter"]["reference"] == stay
    assert written["Encounter"]["subject"]["reference"] == patient
    assert all(b"stand-in" not in (w.raw or b"") for w in plan.writes)


async def test_a_resource_changed_by_a_merge_is_validated_again(app: FastAPI, client: httpx.AsyncClient) -> None:
    engine = app.state.engine
    ACCESS.set(SYSTEM)  # the engine called directly, as the server's own work (this test's task only)
    assert (await run_transaction(engine, discharge_requests(engine, "IPP-78"), BASE, BundleLimits()))
    requests = discharge_requests(engine, "IPP-78")
    requests[0].merge = lambda stored, new: {**new, "status": "not-a-status"}  # valid alone, broken once merged
    try:
        await run_transaction(engine, requests, BASE, BundleLimits())
    except FhirError as refused:
        assert refused.status == 422
        assert [i.expression for i in refused.issues] == ["Bundle.entry[0].resource.status"], refused.issues
    else:
        raise AssertionError("the merged Encounter must be refused")
    stays = (await client.get("/fhir/Encounter", params={"identifier": f"{STAY_IDS}|V-IPP-78"})).json()["entry"]
    assert [s["resource"]["status"] for s in stays] == ["finished"]


async def test_an_entry_refused_early_names_its_real_references(client: httpx.AsyncClient) -> None:
    group = {"resourceType": "Group", "type": "person", "actual": True, "identifier": [{"system": IPP, "value": "G-1"}]}
    assert (await client.post("/fhir/Group", json=group)).status_code == 201
    note = orjson.loads(ENTRY_EXAMPLE.read_bytes()) | {"subject": {"reference": f"Group?identifier={IPP}|G-1"}}
    patient = notebook_patient(identifier=[{"system": IPP, "value": "IPP-79"}])
    refused = await client.post("/fhir", json=bundle(
        "transaction",
        entry("PUT", f"Patient?identifier={IPP}|IPP-79", patient),
        entry("POST", "Communication", note),
    ))
    assert refused.status_code == 422, refused.text
    issues = refused.json()["issue"]
    assert [i.get("expression") for i in issues] == [["Bundle.entry[1].resource.subject"]], issues
    assert "Group" in issues[0]["diagnostics"] and "stand-in" not in refused.text
    assert await count(client, "/fhir/Patient") == 0


async def test_racing_conditional_updates_in_bundles_make_one_resource(client: httpx.AsyncClient) -> None:
    """`PUT Type?criteria` that matches nothing creates; ten such transactions at once create one
    resource (the criteria's guard, as for ifNoneExist), the others update it."""
    criteria = "identifier=urn:oid:1.2.250.1.71.4.2.7|RACE-PUT"
    patient = {**notebook_patient(), "identifier": [{"system": "urn:oid:1.2.250.1.71.4.2.7", "value": "RACE-PUT"}]}
    bundle = {"resourceType": "Bundle", "type": "transaction",
              "entry": [{"resource": patient, "request": {"method": "PUT", "url": f"Patient?{criteria}"}}]}
    responses = await asyncio.gather(*(client.post("/fhir", json=bundle) for _ in range(10)))
    assert all(r.status_code == 200 for r in responses), [r.text[:200] for r in responses if r.status_code != 200]
    statuses = sorted(r.json()["entry"][0]["response"]["status"] for r in responses)
    assert statuses.count("201 Created") == 1, statuses
    found = (await client.get("/fhir/Patient", params={"identifier": "urn:oid:1.2.250.1.71.4.2.7|RACE-PUT"})).json()
    assert len(found.get("entry", [])) == 1
