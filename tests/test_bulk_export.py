"""Bulk Data `$export` (IG 2.0) on a real database: kick-off, polling, manifest, files, cancel,
one export per client, the parameters honoured or refused, and the care-team policy."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from pathlib import Path
from typing import Any, AsyncIterator

import httpx
import orjson
import pytest
from fastapi import FastAPI

from fhir_server.app import create_app
from fhir_server.bulk.client import bar
from fhir_server.security.policy import VISIBILITY
from fhir_server.settings import Settings
from tests.conftest import fhir_client, notebook_entry, notebook_patient, running
from tests.export_fixtures import ASYNC, exported, ids, kick_off, manifest
from tests.test_security_policy import _audit_events, _notebook, audited, bearer, secured  # noqa: F401 - the fixtures, with their notebook

PATIENTS = ("p1", "p2", "p3")


async def _seed(client: httpx.AsyncClient, entries: int = 4) -> None:
    """Three patients with `entries` notebook entries each, a care plan for p1, a Group of p1 and p2."""
    for patient in PATIENTS:
        assert (await client.put(f"/fhir/Patient/{patient}", json=notebook_patient(id=patient))).status_code == 201
        for n in range(entries):
            entry = {**notebook_entry(patient, f"Passage {n}"), "id": f"{patient}-entry-{n}"}
            assert (await client.put(f"/fhir/Communication/{entry['id']}", json=entry)).status_code == 201
    plan = {"resourceType": "CarePlan", "id": "plan-p1", "status": "active", "intent": "plan", "subject": {"reference": "Patient/p1"}}
    assert (await client.put("/fhir/CarePlan/plan-p1", json=plan)).status_code == 201
    for group, members in (("pair", ["p1", "p2"]), ("empty", [])):
        body = {"resourceType": "Group", "id": group, "type": "person", "actual": True,
                **({"member": [{"entity": {"reference": f"Patient/{m}"}} for m in members]} if members else {})}
        assert (await client.put(f"/fhir/Group/{group}", json=body)).status_code == 201


async def test_a_system_export_writes_every_resource_as_a_read_serves_it(client: httpx.AsyncClient) -> None:
    await _seed(client)
    status_url = await kick_off(client, "/fhir/$export")
    body = await manifest(client, status_url)
    assert body["request"] == "http://calipso.test/fhir/$export" and body["requiresAccessToken"] is False
    assert body["transactionTime"].endswith("Z") and body["error"] == [] and "deleted" not in body
    found = await exported(client, body)
    assert {t: len(r) for t, r in found.items()} == {"Patient": 3, "Communication": 12, "CarePlan": 1, "Group": 2}
    for resource in found["Communication"][:3]:  # the stored bytes, as a read serves them
        read = await client.get(f"/fhir/Communication/{resource['id']}")
        assert read.json() == resource
    # the manifest's first entry is the Patient file, each file's URL is absolute
    assert body["output"][0]["type"] == "Patient" and all(o["url"].startswith("http://calipso.test/fhir/$export-file/") for o in body["output"])


@pytest.mark.parametrize("embedded", [True, False], ids=["key-by-key", "one-query"])
async def test_a_group_export_covers_its_members_and_an_empty_group_exports_nothing(app: FastAPI, client: httpx.AsyncClient,
                                                                                     embedded: bool) -> None:
    app.state.engine.searcher.embedded_strategy = embedded  # the embedded database's plan, and MongoDB's (one $in query)
    await _seed(client)
    both = {**notebook_entry("p1"), "id": "p1-and-p2", "recipient": [{"reference": "Patient/p2"}]}
    assert (await client.put("/fhir/Communication/p1-and-p2", json=both)).status_code == 201  # in two compartments: once
    found = await exported(client, await manifest(client, await kick_off(client, "/fhir/Group/pair/$export")))
    assert ids(found) == {"Patient/p1", "Patient/p2", "CarePlan/plan-p1", "Group/pair", "Communication/p1-and-p2",
                          *(f"Communication/{p}-entry-{n}" for p in ("p1", "p2") for n in range(4))}
    assert len(found["Communication"]) == 9  # no entry twice
    empty = await manifest(client, await kick_off(client, "/fhir/Group/empty/$export"))
    assert empty["output"] == []  # never "every patient" (Microsoft fhir-server #1634)
    # patient narrows a Group export (POST Parameters); a patient outside the Group is said in error[]
    body = await manifest(client, await kick_off(client, "/fhir/Group/pair/$export", parameters=[
        {"name": "patient", "valueReference": {"reference": "Patient/p2"}},
        {"name": "patient", "valueReference": {"reference": "Patient/p3"}},
        {"name": "_type", "valueString": "Patient,Communication"}]))
    narrowed = await exported(client, body)
    assert ids(narrowed) == {"Patient/p2", "Communication/p1-and-p2", *(f"Communication/p2-entry-{n}" for n in range(4))}
    notes = await exported(client, body, part="error")
    assert "not members of the Group" in notes["OperationOutcome"][0]["issue"][0]["diagnostics"]
    missing = await client.get("/fhir/Group/nobody/$export", headers=ASYNC)
    assert missing.status_code == 404


async def test_a_patient_level_export_keeps_to_the_patient_compartment(client: httpx.AsyncClient) -> None:
    await _seed(client, entries=1)
    loose = {**notebook_entry("p1"), "id": "no-subject"}
    del loose["subject"]
    assert (await client.put("/fhir/Communication/no-subject", json=loose)).status_code == 201
    found = await exported(client, await manifest(client, await kick_off(client, "/fhir/Patient/$export")))
    assert "Communication/no-subject" not in ids(found) and len(found["Communication"]) == 3
    assert "Group" in found  # a Group naming patients is in their compartment (member)
    refused = await client.get("/fhir/Patient/$export?_type=Practitioner", headers=ASYNC)
    assert refused.status_code == 400 and "Patient compartment" in refused.text


async def test_type_filter_is_applied_or_refused_never_ignored(client: httpx.AsyncClient) -> None:
    await _seed(client, entries=2)
    urgent = {**notebook_entry("p3"), "id": "urgent", "priority": "urgent"}
    assert (await client.put("/fhir/Communication/urgent", json=urgent)).status_code == 201
    status_url = await kick_off(client, "/fhir/$export?_type=Communication,Patient&_typeFilter=Communication%3Fpriority%3Durgent"
                                        ",Patient%3F_id%3Dp2")
    body = await manifest(client, status_url)
    found = await exported(client, body)
    assert ids(found) == {"Communication/urgent", "Patient/p2"}
    # a reference given with this server's base is read at run time as at kick-off
    absolute = await manifest(client, await kick_off(
        client, "/fhir/$export?_typeFilter=Communication%3Fsubject%3Dhttp%3A%2F%2Fcalipso.test%2Ffhir%2FPatient%2Fp3"))
    assert ids(await exported(client, absolute)) == {"Communication/urgent", "Communication/p3-entry-0", "Communication/p3-entry-1",
                                                    "Patient/p1", "Patient/p2", "Patient/p3", "CarePlan/plan-p1", "Group/pair",
                                                    "Group/empty"}
    refusals = {
        "_typeFilter=Communication%3F_sort%3Dsent": "_sort",
        "_typeFilter=Communication%3Fnot-a-parameter%3Dx": "not-a-parameter",
        "_type=Patient&_typeFilter=Communication%3Fpriority%3Durgent": "does not ask for",
        "_typeFilter=NotAType%3Fx%3Dy": "Type?search-parameters",
    }
    for query, reason in refusals.items():
        response = await client.get(f"/fhir/$export?{query}", headers=ASYNC)
        assert response.status_code == 400 and reason in response.text, (query, response.text)


async def test_since_exports_what_changed_and_lists_what_was_deleted(client: httpx.AsyncClient) -> None:
    await _seed(client, entries=2)
    await asyncio.sleep(0.01)
    since = (await client.get("/fhir/Group/empty")).json()["meta"]["lastUpdated"]  # the last resource _seed writes
    await asyncio.sleep(0.01)
    changed = {**notebook_entry("p1", "Nouvelle visite"), "id": "p1-entry-0"}
    assert (await client.put("/fhir/Communication/p1-entry-0", json=changed)).status_code == 200
    assert (await client.delete("/fhir/Communication/p2-entry-1")).status_code == 200
    body = await manifest(client, await kick_off(client, f"/fhir/$export?_since={since}&_type=Communication,Patient"))
    assert ids(await exported(client, body)) == {"Communication/p1-entry-0"}
    deletions = await exported(client, body, part="deleted")
    assert [b["entry"][0]["request"] for b in deletions["Bundle"]] == [{"method": "DELETE", "url": "Communication/p2-entry-1"}]
    # at Group level, a deletion is listed when the version before it was in a member's compartment
    assert (await client.delete("/fhir/Communication/p3-entry-0")).status_code == 200  # p3 is not in the Group
    grouped = await manifest(client, await kick_off(client, f"/fhir/Group/pair/$export?_since={since}&_type=Communication"))
    assert [b["entry"][0]["request"]["url"] for b in (await exported(client, grouped, part="deleted"))["Bundle"]] == [
        "Communication/p2-entry-1"]
    until = await manifest(client, await kick_off(client, f"/fhir/$export?_until={since}&_type=Communication"))
    # the 6 entries, minus the one changed since and the two deleted (their current versions are newer)
    assert len((await exported(client, until))["Communication"]) == 3


async def test_elements_subset_the_resources_and_say_so(client: httpx.AsyncClient) -> None:
    await _seed(client, entries=1)
    body = await manifest(client, await kick_off(client, "/fhir/$export?_type=Patient,Communication&_elements=Patient.gender,status"))
    found = await exported(client, body)
    patient, entry = found["Patient"][0], found["Communication"][0]
    assert set(patient) == {"resourceType", "id", "meta", "gender"} and set(entry) == {"resourceType", "id", "meta", "status"}
    assert {"system": "http://terminology.hl7.org/CodeSystem/v3-ObservationValue", "code": "SUBSETTED"} in entry["meta"]["tag"]


@pytest.mark.parametrize("headers,query,answer", [
    ({"Accept": "application/fhir+json"}, "", "Prefer: respond-async"),
    (ASYNC, "?_outputFormat=text/csv", "_outputFormat"),
    (ASYNC, "?_since=yesterday", "_since must be an instant"),
    (ASYNC, "?includeAssociatedData=LatestProvenanceResources", "does not support the parameter includeAssociatedData"),
    (ASYNC, "?_type=Communication,Nonsense", "Nonsense"),
    (ASYNC, "?patient=Patient/p1", "not a parameter of system-level"),
    (ASYNC, "?_elements=Patient.nonsense", "Patient.nonsense"),
])
async def test_kick_off_refuses_what_it_would_not_honour(client: httpx.AsyncClient, headers: dict[str, str], query: str, answer: str) -> None:
    response = await client.get(f"/fhir/$export{query}", headers=headers)
    assert response.status_code == 400 and answer in response.text, response.text


async def test_lenient_handling_reports_what_it_dropped_in_error(client: httpx.AsyncClient) -> None:
    await _seed(client, entries=1)
    status_url = await kick_off(client, "/fhir/$export?_type=Patient,Nonsense&organizeOutputBy=Patient",
                                headers={"Prefer": "respond-async, handling=lenient"})
    body = await manifest(client, status_url)
    assert ids(await exported(client, body)) == {f"Patient/{p}" for p in PATIENTS}
    notes = [o["issue"][0]["diagnostics"] for o in (await exported(client, body, part="error"))["OperationOutcome"]]
    assert any("organizeOutputBy" in n for n in notes) and any("Nonsense" in n for n in notes)
    post = await client.post("/fhir/$export?_type=Patient", headers=ASYNC, json={"resourceType": "Parameters"})
    assert post.status_code == 400 and "in the body" in post.text


@pytest.fixture
async def slow(settings: Settings) -> AsyncIterator[tuple[FastAPI, httpx.AsyncClient]]:
    """A server whose exports crawl (5 resources a second), to catch them running."""
    async with running(create_app(replace(settings, export_max_per_second=5, export_page_size=5))) as app, fhir_client(app) as client:
        yield app, client


async def test_cancel_answers_404_at_once_removes_the_files_and_frees_the_client(slow: tuple[FastAPI, httpx.AsyncClient]) -> None:
    app, client = slow
    await _seed(client, entries=10)
    status_url = await kick_off(client, "/fhir/$export?_type=Communication")
    job = status_url.rsplit("/", 1)[1]
    folder: Path = app.state.settings.data_dir / "exports" / job
    while not (folder / "Communication-1.ndjson").exists():
        await asyncio.sleep(0.05)  # queued, then running: some resources written
    assert "Communication" in (await client.get(status_url)).headers["x-progress"]
    second = await client.get("/fhir/$export", headers=ASYNC)  # one running export per client
    assert second.status_code == 429 and int(second.headers["retry-after"]) > 0
    cancelled = await client.delete(status_url)
    assert cancelled.status_code == 202
    assert (await client.get(status_url)).status_code == 404  # at once (HAPI #4511's poll still said 202)
    assert not folder.exists()
    await asyncio.sleep(0.5)  # the worker's next page finds the job gone: nothing comes back
    assert not folder.exists()
    assert (await client.delete(status_url)).status_code == 404
    await manifest(client, await kick_off(client, "/fhir/$export?_type=Patient"))  # the client may export again


async def test_files_are_served_gzipped_on_request_and_expire(settings: Settings) -> None:
    async with running(create_app(replace(settings, export_retention_seconds=1))) as app, fhir_client(app) as client:
        await _seed(client, entries=3)
        body = await manifest(client, await kick_off(client, "/fhir/$export?_type=Communication"))
        url = body["output"][0]["url"]
        plain = await client.get(url, headers={"Accept-Encoding": "identity"})
        assert plain.headers.get("content-encoding") is None and int(plain.headers["content-length"]) == len(plain.content)
        packed = await client.get(url, headers={"Accept-Encoding": "gzip"})  # httpx unpacks it
        assert packed.headers["content-encoding"] == "gzip" and packed.content == plain.content
        assert (await client.get(url.replace("Communication-1", "Patient-1"))).status_code == 404
        await asyncio.sleep(1.1)
        status_url = f"http://calipso.test/fhir/$export-status/{url.split('/')[-2]}"
        assert (await client.get(status_url)).status_code == 404
        assert (await client.get(url)).status_code == 404
        assert not (app.state.settings.data_dir / "exports" / url.split("/")[-2]).exists()


@pytest.mark.parametrize("embedded", [True, False], ids=["key-by-key", "one-query"])
async def test_a_practitioner_exports_its_circle_only_and_jobs_are_their_owners(secured: Any, embedded: bool) -> None:  # noqa: F811
    app, client, issuer = secured
    app.state.engine.searcher.embedded_strategy = embedded
    aud = app.state.settings.auth_audience
    feed = bearer(issuer.token("feed", "system/*.cruds", aud))
    await _notebook(client, feed)
    hidden = {**notebook_entry("helene"), "id": "hidden-from-professionals",
              "meta": {"security": [{"system": VISIBILITY.system, "code": "MASQUE_PS"}]}}
    assert (await client.put("/fhir/Communication/hidden-from-professionals", json=hidden, headers=feed)).status_code == 201
    group = {"resourceType": "Group", "id": "both", "type": "person", "actual": True,
             "member": [{"entity": {"reference": "Patient/helene"}}, {"entity": {"reference": "Patient/jean"}}]}
    assert (await client.put("/fhir/Group/both", json=group, headers=feed)).status_code == 201
    gp = bearer(issuer.token("gp", "user/*.rs", aud, fhir_user="Practitioner/gp"))
    status_url = await kick_off(client, "/fhir/Patient/$export", headers=gp)
    body = await manifest(client, status_url, gp)
    assert body["requiresAccessToken"] is True
    found = await exported(client, body, gp)
    patients = {r["subject"]["reference"] for r in found.get("Communication", [])} | {f"Patient/{r['id']}" for r in found["Patient"]}
    assert patients == {"Patient/helene"} and len(found["Communication"]) == 3  # not the entry labelled MASQUE_PS
    assert ids(found) >= {"CareTeam/team-helene", "CarePlan/plan-helene"} and "CarePlan/plan-jean" not in ids(found)
    # deletions: the GP's incremental export lists Hélène's, not Jean's
    since = (await client.get("/fhir/Patient/jean", headers=feed)).json()["meta"]["lastUpdated"]
    await asyncio.sleep(0.01)
    for entry in ("entry-helene-2", "entry-jean-2"):
        assert (await client.delete(f"/fhir/Communication/{entry}", headers=feed)).status_code == 200
    await client.delete(status_url, headers=gp)
    status_url = await kick_off(client, f"/fhir/Patient/$export?_since={since}&_type=Communication", headers=gp)
    deletions = await exported(client, await manifest(client, status_url, gp), gp, part="deleted")
    assert [b["entry"][0]["request"]["url"] for b in deletions["Bundle"]] == ["Communication/entry-helene-2"]
    # a Group naming both patients exports, for the GP, only the patient it reaches
    await client.delete(status_url, headers=gp)
    status_url = await kick_off(client, "/fhir/Group/both/$export", headers=gp)
    body = await manifest(client, status_url, gp)
    in_group = await exported(client, body, gp)
    assert {r["id"] for r in in_group["Patient"]} == {"helene"} and len(in_group["Communication"]) == 2
    # a system export reaches both patients and the labelled entry; the GP's job is the GP's alone
    system = bearer(issuer.token("feed", "system/*.rs", aud))
    everyone = await exported(client, await manifest(client, await kick_off(client, "/fhir/Patient/$export", headers=system), system), system)
    assert len(everyone["Communication"]) == 5
    nurse = bearer(issuer.token("moreau", "user/*.rs", aud, fhir_user="Practitioner/nurse-moreau"))
    assert (await client.get(status_url, headers=nurse)).status_code == 404  # the GP's live job
    assert (await client.get(body["output"][0]["url"], headers=nurse)).status_code == 404
    assert (await client.get(body["output"][0]["url"])).status_code == 401
    assert (await client.delete(status_url, headers=nurse)).status_code == 404
    assert (await client.get(body["output"][0]["url"], headers=gp)).status_code == 200  # still there for its owner
    # types the token does not read are refused, not left out quietly
    reader = bearer(issuer.token("gp", "user/Patient.rs", aud, fhir_user="Practitioner/gp"))
    refused = await client.get("/fhir/$export?_type=Communication", headers={**ASYNC, **reader})
    assert refused.status_code == 403


async def test_the_capability_statement_declares_the_export_operations(client: httpx.AsyncClient) -> None:
    statement = (await client.get("/fhir/metadata")).json()
    assert "http://hl7.org/fhir/uv/bulkdata/CapabilityStatement/bulk-data" in statement["instantiates"]
    assert {"name": "export", "definition": "http://hl7.org/fhir/uv/bulkdata/OperationDefinition/export"} in statement["rest"][0]["operation"]
    group = next(r for r in statement["rest"][0]["resource"] if r["type"] == "Group")
    assert any(o["name"] == "export" for o in group["operation"])


async def test_export_files_hold_valid_ndjson_lines(client: httpx.AsyncClient) -> None:
    await _seed(client, entries=2)
    body = await manifest(client, await kick_off(client, "/fhir/$export?_type=Communication"))
    raw = (await client.get(body["output"][0]["url"])).content
    assert raw.endswith(b"\n") and all(orjson.loads(line)["resourceType"] == "Communication" for line in raw.splitlines())


@pytest.mark.parametrize("body,answer", [
    (b"{not json", "JSON"),
    (b'{"resourceType": "Patient"}', "takes a Parameters resource"),
    (b'{"resourceType": "Parameters", "parameter": [{"valueString": "Patient"}]}', "needs a name"),
    (b'{"resourceType": "Parameters", "parameter": [{"name": "_type"}]}', "has no value"),
    (b'{"resourceType": "Parameters", "parameter": [{"name": "patient", "valueReference": {"reference": "Group/x"}}]}', "not a parameter of system-level"),
])
async def test_a_post_kick_off_refuses_bad_parameters(client: httpx.AsyncClient, body: bytes, answer: str) -> None:
    response = await client.post("/fhir/$export", content=body, headers=ASYNC)
    assert response.status_code == 400 and answer in response.text, response.text
    wrong = await client.post("/fhir/Patient/$export", headers=ASYNC, json={"resourceType": "Parameters", "parameter": [
        {"name": "patient", "valueReference": {"reference": "Patient/../secrets"}}]})
    assert wrong.status_code == 400 and "Patient/id" in wrong.text
    huge = await client.post("/fhir/$export", headers=ASYNC, content=b'{"resourceType": "Parameters", "x": "' + b"a" * 70_000 + b'"}')
    assert huge.status_code == 413
    assert (await client.get("/fhir/$export-status/not-a-job")).status_code == 404
    assert (await client.get("/fhir/$export-file/0123456789abcdef0123456789abcdef/..")).status_code == 404


async def test_an_export_is_audited_without_patient_data(audited: Any) -> None:  # noqa: F811
    app, client, issuer = audited
    aud = app.state.settings.auth_audience
    system = bearer(issuer.token("warehouse", "system/*.rs system/*.cud", aud))
    await _notebook(client, system)
    body = await manifest(client, await kick_off(client, "/fhir/$export?_type=Patient", headers=system), system)
    assert len((await exported(client, body, system))["Patient"]) == 2
    await app.state.audit.flush()
    ended = await _audit_events(client, system, type="http://dicom.nema.org/resources/ontology/DCM|110106")
    assert len(ended) == 1 and ended[0]["outcomeDesc"].endswith("completed: 2 resources")
    assert ended[0]["agent"][0]["altId"] == "system:warehouse"
    assert "helene" not in orjson.dumps(ended).decode() and "jean" not in orjson.dumps(ended).decode()
    operations = await _audit_events(client, system, altid="system:warehouse", subtype="operation")
    assert len(operations) >= 3  # the kick-off, the polls, the download


async def test_a_file_missing_from_this_node_is_a_clear_503(app: FastAPI, client: httpx.AsyncClient) -> None:
    await _seed(client, entries=1)
    body = await manifest(client, await kick_off(client, "/fhir/$export?_type=Patient"))
    job = body["output"][0]["url"].split("/")[-2]
    (app.state.settings.data_dir / "exports" / job / "Patient-1.ndjson").unlink()  # as if another node had written it
    missing = await client.get(body["output"][0]["url"])
    assert missing.status_code == 503 and "shared" in missing.text


def test_calipso_export_draws_the_steps_done_from_x_progress() -> None:
    assert bar("10 resources exported, output Communication (3 of 5 steps)").startswith("[" + "#" * 8 + "." * 12 + "] 10 resources")
    assert bar("queued").startswith("[" + "." * 20 + "] queued")
