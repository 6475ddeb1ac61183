"""Profiles on the write path, and `$validate`: good, missing required, wrong slice, wrong
code in a required binding, broken invariant. Over HTTP, against the real database."""

from __future__ import annotations

import copy
import json
from dataclasses import replace
from typing import Any

import httpx
import pytest

from fhir_server.app import create_app
from fhir_server.ig import load_guide
from fhir_server.settings import Settings
from tests.conftest import fhir_client, project_root, running

EXAMPLES = project_root() / "profiles" / "examples"
CANONICAL = load_guide().canonical
ENTRY_PROFILE = f"{CANONICAL}/StructureDefinition/notebook-entry"


def example(name: str) -> dict[str, Any]:
    resource = json.loads((EXAMPLES / name).read_text(encoding="utf-8"))
    resource.pop("id")
    return resource


def entry() -> dict[str, Any]:
    return example("Communication-example-entry.json")


def patient() -> dict[str, Any]:
    return example("Patient-example-patient.json")


def _missing_sender(r: dict[str, Any]) -> None:
    del r["sender"]


def _wrong_ins_system(r: dict[str, Any]) -> None:
    r["identifier"][1]["system"] = "urn:oid:1.2.250.1.213.1.4.2"


def _stat_priority(r: dict[str, Any]) -> None:
    r["priority"] = "stat"  # a valid R4 code, outside our notebook-priority value set


def _two_kinds(r: dict[str, Any]) -> None:
    r["category"].append({"coding": [{"system": f"{CANONICAL}/CodeSystem/entry-kind", "code": "alert"}]})


BROKEN = [
    pytest.param("Communication", entry, _missing_sender, "Communication.sender", "required", id="missing-required"),
    pytest.param("Patient", patient, _wrong_ins_system, "Patient.identifier[1].system", "code-invalid", id="wrong-slice"),
    pytest.param("Communication", entry, _stat_priority, "Communication.priority", "code-invalid", id="wrong-code"),
    pytest.param("Communication", entry, _two_kinds, "Communication", "invariant", id="broken-invariant"),
]


async def _count(client: httpx.AsyncClient, resource_type: str) -> int:
    response = await client.get(f"/fhir/{resource_type}", params={"_summary": "count", "_total": "accurate"})
    return int(response.json()["total"])


async def test_a_resource_claiming_our_profile_is_validated_on_create(client: httpx.AsyncClient) -> None:
    created = await client.post("/fhir/Communication", json=entry())
    assert created.status_code == 201, created.text
    assert created.json()["meta"]["profile"] == [ENTRY_PROFILE]


@pytest.mark.parametrize(("resource_type", "make", "breaks", "expression", "code"), BROKEN)
async def test_writes_breaking_our_profile_are_refused_and_nothing_is_stored(
    client: httpx.AsyncClient, resource_type: str, make: Any, breaks: Any, expression: str, code: str
) -> None:
    resource = make()
    breaks(resource)
    created = await client.post(f"/fhir/{resource_type}", json=resource)
    assert created.status_code == 422, created.text
    issues = created.json()["issue"]
    assert [(i["code"], i["expression"]) for i in issues if i["severity"] == "error"] == [(code, [expression])]
    resource["id"] = "kept-out"
    updated = await client.put(f"/fhir/{resource_type}/kept-out", json=resource)
    assert updated.status_code == 422
    assert await _count(client, resource_type) == 0
    assert (await client.get(f"/fhir/{resource_type}/kept-out")).status_code == 404


async def test_a_transaction_with_one_entry_breaking_a_profile_writes_nothing(client: httpx.AsyncClient) -> None:
    bad = entry()
    _missing_sender(bad)
    bundle = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {"fullUrl": "urn:uuid:0d0a8f2e-1111-4d4e-9a53-8d7c2f1f0001", "resource": patient(), "request": {"method": "POST", "url": "Patient"}},
            {"resource": bad, "request": {"method": "POST", "url": "Communication"}},
        ],
    }
    response = await client.post("/fhir", json=bundle)
    assert response.status_code == 422, response.text
    assert response.json()["issue"][0]["expression"] == ["Bundle.entry[1].resource.sender"]
    assert await _count(client, "Patient") == 0


async def test_without_a_claim_only_base_r4_applies_unless_profiles_are_enforced(settings: Settings) -> None:
    plain = entry()
    del plain["meta"]
    _missing_sender(plain)
    async with running(create_app(settings)) as app, fhir_client(app) as client:
        assert (await client.post("/fhir/Communication", json=plain)).status_code == 201
    enforced = replace(settings, database=settings.database + "_enforced", enforce_profiles=True)
    async with running(create_app(enforced)) as app, fhir_client(app) as client:
        refused = await client.post("/fhir/Communication", json=plain)
        assert refused.status_code == 422
        assert refused.json()["issue"][0]["expression"] == ["Communication.meta.profile"]
        assert ENTRY_PROFILE in refused.json()["issue"][0]["diagnostics"]
        assert (await client.post("/fhir/Communication", json=entry())).status_code == 201
        other = {"resourceType": "Observation", "status": "final", "code": {"text": "poids"}}
        assert (await client.post("/fhir/Observation", json=other)).status_code == 201  # not a notebook type


async def test_validate_a_good_resource(client: httpx.AsyncClient) -> None:
    response = await client.post("/fhir/Communication/$validate", json=entry())
    assert response.status_code == 200
    outcome = response.json()
    assert [i["severity"] for i in outcome["issue"]] == ["information"]
    assert await _count(client, "Communication") == 0  # $validate writes nothing


@pytest.mark.parametrize(("resource_type", "make", "breaks", "expression", "code"), BROKEN)
async def test_validate_reports_what_breaks_our_profile(
    client: httpx.AsyncClient, resource_type: str, make: Any, breaks: Any, expression: str, code: str
) -> None:
    resource = make()
    breaks(resource)
    parameters = {"resourceType": "Parameters", "parameter": [{"name": "resource", "resource": resource}]}
    response = await client.post(f"/fhir/{resource_type}/$validate", json=parameters)
    assert response.status_code == 200
    errors = [i for i in response.json()["issue"] if i["severity"] == "error"]
    assert [(i["code"], i["expression"]) for i in errors] == [(code, [expression])]
    assert errors[0]["diagnostics"]


async def test_validate_with_a_profile_parameter(client: httpx.AsyncClient) -> None:
    plain = entry()
    del plain["meta"]
    _missing_sender(plain)
    assert [i["severity"] for i in (await client.post("/fhir/Communication/$validate", json=plain)).json()["issue"]] == ["information"]
    checked = await client.post("/fhir/Communication/$validate", params={"profile": ENTRY_PROFILE}, json=plain)
    assert [i["expression"] for i in checked.json()["issue"]] == [["Communication.sender"]]
    in_body = {"resourceType": "Parameters", "parameter": [{"name": "resource", "resource": plain}, {"name": "profile", "valueUri": ENTRY_PROFILE}]}
    assert (await client.post("/fhir/Communication/$validate", json=in_body)).json()["issue"][0]["expression"] == ["Communication.sender"]
    unknown = await client.post("/fhir/Communication/$validate", params={"profile": "http://example.org/nope"}, json=plain)
    assert unknown.status_code == 400 and unknown.json()["issue"][0]["code"] == "not-found"
    wrong_type = await client.post("/fhir/Patient/$validate", params={"profile": ENTRY_PROFILE}, json=patient())
    assert wrong_type.json()["issue"][0]["code"] == "invalid"


async def test_validate_reports_core_invariants_and_warnings(client: httpx.AsyncClient) -> None:
    resource = entry()
    resource["contained"] = [{"resourceType": "Practitioner", "id": "nurse", "meta": {"versionId": "3"}}]
    resource["sender"] = {"reference": "#nurse"}
    resource["extension"] = [{"url": "http://example.org/x", "valueString": "a", "extension": [{"url": "y", "valueString": "b"}]}]
    issues = (await client.post("/fhir/Communication/$validate", json=resource)).json()["issue"]
    found = {(i["severity"], i["diagnostics"].split(" ")[1], i["expression"][0]) for i in issues}
    assert ("error", "dom-4", "Communication") in found
    assert ("error", "ext-1", "Communication.extension[0]") in found
    assert ("warning", "dom-6", "Communication.contained[0]") in found  # no narrative: a warning, not an error
    created = await client.post("/fhir/Communication", json=resource)
    assert created.status_code == 422
    assert {i["diagnostics"].split(" ")[1] for i in created.json()["issue"]} == {"dom-4", "ext-1"}  # errors only


async def test_validate_instance_modes(client: httpx.AsyncClient) -> None:
    created = (await client.post("/fhir/Communication", json=entry())).json()
    url = f"/fhir/Communication/{created['id']}/$validate"
    stored = await client.get(url)
    assert stored.status_code == 200 and stored.json()["issue"][0]["severity"] == "information"
    changed = copy.deepcopy(created)
    changed["id"] = "another"
    update = await client.post(url, params={"mode": "update"}, json=changed)
    assert update.json()["issue"][0]["expression"] == ["Communication.id"]
    delete = await client.post(url, params={"mode": "delete"}, json={"resourceType": "Parameters"})
    assert delete.status_code == 200
    assert (await client.get(f"/fhir/Communication/{created['id']}")).status_code == 200  # still there
    assert (await client.post(url, params={"mode": "sideways"}, json=created)).status_code == 400
    assert (await client.get("/fhir/Communication/nobody/$validate")).status_code == 404
    assert (await client.post("/fhir/Nothing/$validate", json=created)).status_code == 404


async def test_validate_refuses_bad_input_clearly(client: httpx.AsyncClient) -> None:
    assert (await client.post("/fhir/Communication/$validate", content=b"{oops")).status_code == 400
    assert (await client.post("/fhir/Communication/$validate", json={"resourceType": "Parameters"})).status_code == 400
    assert (await client.post("/fhir/Communication/$validate", json=[1, 2])).status_code == 400
    not_structural = await client.post("/fhir/Communication/$validate", json={"resourceType": "Communication", "status": 3})
    assert not_structural.status_code == 200
    assert not_structural.json()["issue"][0]["severity"] == "error"
    mismatch = await client.post("/fhir/Communication/$validate", json=patient())
    assert mismatch.json()["issue"][0]["severity"] == "error"


async def test_a_parameters_resource_is_validated_as_itself(client: httpx.AsyncClient) -> None:
    """`Parameters/$validate` with a Parameters that has no 'resource' input: the body is the
    resource to validate (validator test cases params-empty-r4, parameters-reference)."""
    empty = (await client.post("/fhir/Parameters/$validate", json={"resourceType": "Parameters"})).json()
    assert [i["severity"] for i in empty["issue"]] == ["information"]
    member = {"resourceType": "Parameters", "parameter": [{"name": "MemberPatient", "resource": {"resourceType": "Patient", "gender": "x"}}]}
    broken = (await client.post("/fhir/Parameters/$validate", json=member)).json()
    assert [i["expression"] for i in broken["issue"] if i["severity"] == "error"] == [["Parameters.parameter[0].resource.gender"]]
    wrapped = {"resourceType": "Parameters", "parameter": [{"name": "resource", "resource": {"resourceType": "Parameters"}}]}
    assert [i["severity"] for i in (await client.post("/fhir/Parameters/$validate", json=wrapped)).json()["issue"]] == ["information"]
