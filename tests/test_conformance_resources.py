"""The guide served: conformance resources readable and searchable, terminology operations,
our search parameters, and the CapabilityStatement naming our profiles."""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Any, AsyncIterator

import httpx
import pytest

from fhir_server.app import create_app
from fhir_server.ig import load_guide
from fhir_server.settings import Settings
from tests.conftest import fhir_client, project_root, running

guide = load_guide()
C = guide.canonical
EXAMPLES = project_root() / "profiles" / "examples"


@pytest.fixture
async def served(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    async with running(create_app(replace(settings, serve_guide=True))) as app, fhir_client(app) as client:
        yield client


def _ids(bundle: dict[str, Any]) -> list[str]:
    return sorted(e["resource"]["id"] for e in bundle.get("entry", []))


async def test_artifacts_are_readable_with_full_snapshots(served: httpx.AsyncClient) -> None:
    response = await served.get("/fhir/StructureDefinition/notebook-entry")
    assert response.status_code == 200
    profile = response.json()
    assert profile["url"] == f"{C}/StructureDefinition/notebook-entry"
    assert len(profile["snapshot"]["element"]) > len(profile["differential"]["element"])
    assert profile["meta"]["versionId"] == "1"
    for artifact in guide.artifacts:
        assert (await served.get(f"/fhir/{artifact['resourceType']}/{artifact['id']}")).status_code == 200


async def test_artifacts_are_searchable_by_url_type_and_name(served: httpx.AsyncClient) -> None:
    by_url = (await served.get("/fhir/StructureDefinition", params={"url": f"{C}/StructureDefinition/notebook-patient"})).json()
    assert _ids(by_url) == ["notebook-patient"]
    by_type = (await served.get("/fhir/StructureDefinition", params={"type": "Communication"})).json()
    assert _ids(by_type) == ["notebook-acknowledgement", "notebook-entry"]
    by_name = (await served.get("/fhir/StructureDefinition", params={"name": "HospitalStay"})).json()
    assert _ids(by_name) == ["hospital-stay"]
    assert _ids((await served.get("/fhir/ValueSet", params={"url": f"{C}/ValueSet/entry-kind"})).json()) == ["entry-kind"]
    assert _ids((await served.get("/fhir/CodeSystem", params={"name": "CareTeamRole"})).json()) == ["care-team-role"]
    assert _ids((await served.get("/fhir/SearchParameter", params={"base": "Communication"})).json()) == [
        "communication-in-response-to", "communication-priority"]
    assert _ids((await served.get("/fhir/ImplementationGuide", params={"url": guide.guide["url"]})).json()) == ["calipso"]


async def test_a_restart_writes_nothing_new(settings: Settings) -> None:
    served = replace(settings, serve_guide=True)
    for _ in range(2):
        async with running(create_app(served)) as app, fhir_client(app) as client:
            profile = (await client.get("/fhir/StructureDefinition/notebook-entry")).json()
            history = (await client.get("/fhir/StructureDefinition/notebook-entry/_history")).json()
    assert profile["meta"]["versionId"] == "1"
    assert len(history["entry"]) == 1


async def test_expand_by_url_and_by_id(served: httpx.AsyncClient) -> None:
    expanded = (await served.get("/fhir/ValueSet/$expand", params={"url": f"{C}/ValueSet/entry-kind"})).json()
    assert expanded["resourceType"] == "ValueSet"
    assert expanded["expansion"]["total"] == 10
    codes = {c["code"]: c["display"] for c in expanded["expansion"]["contains"]}
    assert codes["medication-change"] == "Modification de traitement"
    by_id = (await served.get("/fhir/ValueSet/note-type/$expand")).json()
    assert {c["code"] for c in by_id["expansion"]["contains"]} == {"DEM-AVIS", "GEN", "INST", "INTERV", "OBS"}
    filtered = (await served.get("/fhir/ValueSet/$expand", params={"url": f"{C}/ValueSet/care-team-role", "filter": "médecin"})).json()
    assert {c["code"] for c in filtered["expansion"]["contains"]} == {"attending-physician", "general-practitioner"}
    paged = (await served.get("/fhir/ValueSet/$expand", params={"url": f"{C}/ValueSet/entry-kind", "offset": "8", "count": "5"})).json()
    assert len(paged["expansion"]["contains"]) == 2 and paged["expansion"]["offset"] == 8
    posted = await served.post("/fhir/ValueSet/$expand", json={"resourceType": "Parameters", "parameter": [{"name": "url", "valueUri": f"{C}/ValueSet/caregiver-role"}]})
    assert posted.json()["expansion"]["total"] == 2


async def test_expand_refuses_what_it_cannot_do(served: httpx.AsyncClient) -> None:
    assert (await served.get("/fhir/ValueSet/$expand", params={"url": "http://example.org/unknown"})).status_code == 404
    assert (await served.get("/fhir/ValueSet/$expand")).status_code == 400
    assert (await served.get("/fhir/ValueSet/nothing/$expand")).status_code == 404
    assert (await served.get("/fhir/ValueSet/$expand", params={"url": f"{C}/ValueSet/entry-kind", "count": "-1"})).status_code == 400
    assert (await served.get("/fhir/ValueSet/$expand", params={"url": f"{C}/ValueSet/entry-kind", "offset": "x"})).status_code == 400


def _parameter(result: dict[str, Any], name: str) -> Any:
    for parameter in result["parameter"]:
        if parameter["name"] == name:
            return next(v for k, v in parameter.items() if k.startswith("value"))
    return None


async def test_validate_code(served: httpx.AsyncClient) -> None:
    url, system = f"{C}/ValueSet/entry-kind", f"{C}/CodeSystem/entry-kind"
    good = (await served.get("/fhir/ValueSet/$validate-code", params={"url": url, "system": system, "code": "alert"})).json()
    assert _parameter(good, "result") is True and _parameter(good, "display") == "Alerte"
    bad = (await served.get("/fhir/ValueSet/$validate-code", params={"url": url, "system": system, "code": "gossip"})).json()
    assert _parameter(bad, "result") is False and "gossip" in _parameter(bad, "message")
    wrong_display = (await served.get("/fhir/ValueSet/$validate-code", params={"url": url, "code": "alert", "display": "Alarm"})).json()
    assert _parameter(wrong_display, "result") is False and "Alerte" in _parameter(wrong_display, "message")
    concept = {"coding": [{"system": "http://other", "code": "x"}, {"system": system, "code": "observation"}]}
    posted = await served.post("/fhir/ValueSet/$validate-code",
                               json={"resourceType": "Parameters", "parameter": [{"name": "url", "valueUri": url}, {"name": "codeableConcept", "valueCodeableConcept": concept}]})
    assert _parameter(posted.json(), "result") is True
    by_id = (await served.get("/fhir/ValueSet/notebook-priority/$validate-code", params={"code": "stat"})).json()
    assert _parameter(by_id, "result") is False
    assert (await served.get("/fhir/ValueSet/$validate-code", params={"url": url})).status_code == 400


async def test_lookup(served: httpx.AsyncClient) -> None:
    system = f"{C}/CodeSystem/care-team-role"
    found = (await served.get("/fhir/CodeSystem/$lookup", params={"system": system, "code": "home-nurse"})).json()
    assert _parameter(found, "display") == "Infirmier libéral"
    assert _parameter(found, "name") == "CareTeamRole"
    designations = [p for p in found["parameter"] if p["name"] == "designation"]
    assert designations[0]["part"][1]["valueString"] == "Home nurse"
    posted = await served.post("/fhir/CodeSystem/$lookup", json={"resourceType": "Parameters", "parameter": [{"name": "coding", "valueCoding": {"system": system, "code": "caregiver"}}]})
    assert _parameter(posted.json(), "display") == "Aidant"
    assert (await served.get("/fhir/CodeSystem/$lookup", params={"system": system, "code": "astronaut"})).status_code == 404
    assert (await served.get("/fhir/CodeSystem/$lookup", params={"system": "http://loinc.org", "code": "1-8"})).status_code == 404
    assert (await served.get("/fhir/CodeSystem/$lookup", params={"code": "caregiver"})).status_code == 400


async def test_our_search_parameters_work(client: httpx.AsyncClient) -> None:
    first = json.loads((EXAMPLES / "Communication-example-entry.json").read_text(encoding="utf-8"))
    first.pop("id")
    created = (await client.post("/fhir/Communication", json=first)).json()
    urgent = dict(first, priority="urgent")
    urgent_id = (await client.post("/fhir/Communication", json=urgent)).json()["id"]
    ack = json.loads((EXAMPLES / "Communication-example-ack.json").read_text(encoding="utf-8"))
    ack.pop("id")
    ack["inResponseTo"] = [{"reference": f"Communication/{created['id']}"}]
    ack_id = (await client.post("/fhir/Communication", json=ack)).json()["id"]
    assert _ids((await client.get("/fhir/Communication", params={"priority": "urgent"})).json()) == [urgent_id]
    replies = (await client.get("/fhir/Communication", params={"in-response-to": f"Communication/{created['id']}"})).json()
    assert _ids(replies) == [ack_id]
    revinclude = (await client.get("/fhir/Communication", params={"_id": created["id"], "_revinclude": "Communication:in-response-to"})).json()
    assert sorted(e["resource"]["id"] for e in revinclude["entry"]) == sorted([created["id"], ack_id])


async def test_capability_statement_names_our_profiles_and_operations(client: httpx.AsyncClient) -> None:
    statement = (await client.get("/fhir/metadata")).json()
    assert statement["implementationGuide"] == [guide.guide["url"]]
    resources = {r["type"]: r for r in statement["rest"][0]["resource"]}
    assert sorted(resources["Communication"]["supportedProfile"]) == [
        f"{C}/StructureDefinition/notebook-acknowledgement", f"{C}/StructureDefinition/notebook-entry"]
    assert resources["Patient"]["supportedProfile"] == [f"{C}/StructureDefinition/notebook-patient"]
    assert "supportedProfile" not in resources["Observation"]
    assert {o["name"] for o in resources["ValueSet"]["operation"]} == {"validate", "expand", "validate-code"}
    assert {o["name"] for o in resources["CodeSystem"]["operation"]} == {"validate", "lookup"}
    assert {p["name"] for p in resources["Communication"]["searchParam"]} >= {"priority", "in-response-to"}


async def test_token_in_and_not_in_our_value_sets(client: httpx.AsyncClient) -> None:
    entry = json.loads((EXAMPLES / "Communication-example-entry.json").read_text(encoding="utf-8"))
    entry.pop("id")
    entry_id = (await client.post("/fhir/Communication", json=entry)).json()["id"]
    ack = json.loads((EXAMPLES / "Communication-example-ack.json").read_text(encoding="utf-8"))
    ack.pop("id")
    ack_id = (await client.post("/fhir/Communication", json=ack)).json()["id"]
    entries_only = f"{C}/ValueSet/notebook-entry-kind"
    assert _ids((await client.get("/fhir/Communication", params={"category:in": entries_only})).json()) == [entry_id]
    assert _ids((await client.get("/fhir/Communication", params={"category:not-in": entries_only})).json()) == [ack_id]
    both = f"{C}/ValueSet/entry-kind"
    assert _ids((await client.get("/fhir/Communication", params={"category:in": both})).json()) == sorted([entry_id, ack_id])
    assert _ids((await client.get("/fhir/Communication", params={"priority:in": f"{C}/ValueSet/notebook-priority"})).json()) == [entry_id]
    unknown = await client.get("/fhir/Communication", params={"category:in": "http://example.org/ValueSet/nope"})
    assert unknown.status_code == 400 and unknown.json()["issue"][0]["code"] == "not-supported"
