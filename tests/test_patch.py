"""PATCH: JSON Patch and FHIRPath Patch, validated and versioned like any update."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest

from tests.conftest import notebook_patient

JSON_PATCH = {"Content-Type": "application/json-patch+json"}
IPP = "urn:oid:1.2.250.1.71.4.2.7"


def operation(kind: str, path: str, **parts: Any) -> dict[str, Any]:
    found: list[dict[str, Any]] = [{"name": "type", "valueCode": kind}, {"name": "path", "valueString": path}]
    for name, value in parts.items():
        if name == "value":
            found.append(value)
        elif isinstance(value, int):
            found.append({"name": name, "valueInteger": value})
        else:
            found.append({"name": name, "valueString": value})
    return {"name": "operation", "part": found}


def fhirpath_patch(*operations: dict[str, Any]) -> dict[str, Any]:
    return {"resourceType": "Parameters", "parameter": list(operations)}


@pytest.fixture
async def patient(client: httpx.AsyncClient) -> dict[str, Any]:
    response = await client.put("/fhir/Patient/p", json=notebook_patient(id="p"))
    assert response.status_code == 201
    return response.json()


async def history_versions(client: httpx.AsyncClient) -> list[str]:
    body = (await client.get("/fhir/Patient/p/_history")).json()
    return [e["resource"]["meta"]["versionId"] for e in body.get("entry", []) if "resource" in e]


async def test_json_patch(client: httpx.AsyncClient, patient: dict[str, Any]) -> None:
    patch = [
        {"op": "test", "path": "/gender", "value": "female"},
        {"op": "replace", "path": "/gender", "value": "other"},
        {"op": "add", "path": "/name/0/given/-", "value": "Marie"},
        {"op": "remove", "path": "/birthDate"},
    ]
    response = await client.patch("/fhir/Patient/p", json=patch, headers=JSON_PATCH | {"If-Match": 'W/"1"'})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["gender"] == "other" and body["name"][0]["given"] == ["Hélène", "Marie"] and "birthDate" not in body
    assert body["meta"]["versionId"] == "2" and response.headers["ETag"] == 'W/"2"'
    history = (await client.get("/fhir/Patient/p/_history")).json()
    assert history["entry"][0]["request"]["method"] == "PATCH"
    # the patched resource is searchable under its new values
    found = (await client.get("/fhir/Patient", params={"given": "marie"})).json()
    assert [e["resource"]["id"] for e in found["entry"]] == ["p"]


@pytest.mark.parametrize(
    ("patch", "status"),
    [
        ({"op": "replace"}, 400),  # not a list
        ([{"op": "frobnicate", "path": "/gender"}], 400),
        ([{"op": "replace", "path": "/nowhere/0", "value": 1}], 422),
        ([{"op": "test", "path": "/gender", "value": "male"}], 422),
        ([{"op": "replace", "path": "/gender", "value": "sometimes-not-a-code!"}], 422),  # invalid result
        ([{"op": "replace", "path": "/birthDate", "value": 1948}], 422),
        ([{"op": "replace", "path": "/id", "value": "other"}], 422),
        ([{"op": "remove", "path": ""}], 422),
    ],
)
async def test_invalid_json_patches_write_nothing(client: httpx.AsyncClient, patient: dict[str, Any], patch: Any, status: int) -> None:
    response = await client.patch("/fhir/Patient/p", json=patch, headers=JSON_PATCH)
    assert response.status_code == status, response.text
    assert response.json()["resourceType"] == "OperationOutcome"
    assert await history_versions(client) == ["1"]
    assert (await client.get("/fhir/Patient/p")).json() == patient


async def test_stale_if_match_is_412(client: httpx.AsyncClient, patient: dict[str, Any]) -> None:
    await client.put("/fhir/Patient/p", json=notebook_patient(id="p", gender="male"))
    patch = [{"op": "replace", "path": "/gender", "value": "other"}]
    response = await client.patch("/fhir/Patient/p", json=patch, headers=JSON_PATCH | {"If-Match": 'W/"1"'})
    assert response.status_code == 412
    fhirpath = fhirpath_patch(operation("replace", "Patient.gender", value={"name": "value", "valueCode": "other"}))
    response = await client.patch("/fhir/Patient/p", json=fhirpath, headers={"If-Match": 'W/"1"'})
    assert response.status_code == 412
    assert await history_versions(client) == ["2", "1"]


async def test_patch_of_missing_or_deleted_resource(client: httpx.AsyncClient) -> None:
    patch = [{"op": "replace", "path": "/gender", "value": "other"}]
    assert (await client.patch("/fhir/Patient/nobody", json=patch, headers=JSON_PATCH)).status_code == 404
    await client.put("/fhir/Patient/gone", json=notebook_patient(id="gone"))
    await client.delete("/fhir/Patient/gone")
    assert (await client.patch("/fhir/Patient/gone", json=patch, headers=JSON_PATCH)).status_code == 410


async def test_fhirpath_patch(client: httpx.AsyncClient, patient: dict[str, Any]) -> None:
    identifier = {"name": "value", "part": [
        {"name": "system", "valueUri": "urn:oid:1.2.250.1.213.1.4.8"},
        {"name": "value", "valueString": "248039912345678"},
        {"name": "type", "part": [{"name": "coding", "part": [
            {"name": "system", "valueUri": "http://interopsante.org/CodeSystem/v2-0203"}, {"name": "code", "valueCode": "INS-NIR"}]}]},
    ]}
    patch = fhirpath_patch(
        operation("add", "Patient", name="identifier", value=identifier),
        operation("insert", "Patient.name[0].given", index=0, value={"name": "value", "valueString": "Marie"}),
        operation("move", "Patient.name[0].given", source=0, destination=1),
        operation("replace", "Patient.identifier.where(system='urn:oid:1.2.250.1.71.4.2.7').value", value={"name": "value", "valueString": "IPP0002"}),
        operation("add", "Patient", name="deceased", value={"name": "value", "valueBoolean": False}),
        operation("delete", "Patient.birthDate"),
        operation("delete", "Patient.telecom"),  # nothing there: not an error
    )
    response = await client.patch("/fhir/Patient/p", json=patch)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["identifier"][0]["value"] == "IPP0002"
    assert body["identifier"][1]["type"]["coding"][0]["code"] == "INS-NIR"  # coding became a list, as R4 says
    assert body["name"][0]["given"] == ["Hélène", "Marie"]
    assert body["deceasedBoolean"] is False and "birthDate" not in body
    found = (await client.get("/fhir/Patient", params={"identifier": "urn:oid:1.2.250.1.213.1.4.8|248039912345678"})).json()
    assert [e["resource"]["id"] for e in found["entry"]] == ["p"]


@pytest.mark.parametrize(
    ("patch", "status", "expression"),
    [
        ({"resourceType": "Patient"}, 400, None),
        (fhirpath_patch(), 400, None),
        (fhirpath_patch(operation("explode", "Patient.gender")), 400, None),
        (fhirpath_patch(operation("replace", "Patient.gender")), 400, None),  # no value
        (fhirpath_patch(operation("replace", "Patient.nonsense", value={"name": "value", "valueString": "x"})), 422, "Parameters.parameter[0]"),
        (fhirpath_patch(operation("replace", "Patient.telecom", value={"name": "value", "valueString": "x"})), 422, "Parameters.parameter[0]"),
        (fhirpath_patch(operation("add", "Patient", name="gender", value={"name": "value", "valueCode": "male"})), 422, None),
        (fhirpath_patch(operation("insert", "Patient.name", index=5, value={"name": "value", "valueHumanName": {"family": "X"}})), 422, None),
        (fhirpath_patch(operation("insert", "Patient.gender", index=0, value={"name": "value", "valueCode": "male"})), 422, None),
        (fhirpath_patch(operation("replace", "Patient.birthDate", value={"name": "value", "valueString": "tomorrow"})), 422, None),
        (fhirpath_patch(operation("replace", "Patient.name.where(family ~ 'x')", value={"name": "value", "valueString": "x"})), 400, None),
        (fhirpath_patch(operation("replace", "Observation.status", value={"name": "value", "valueCode": "final"})), 400, None),
    ],
)
async def test_invalid_fhirpath_patches_write_nothing(
    client: httpx.AsyncClient, patient: dict[str, Any], patch: Any, status: int, expression: str | None
) -> None:
    response = await client.patch("/fhir/Patient/p", json=patch)
    assert response.status_code == status, response.text
    if expression:
        assert response.json()["issue"][0]["expression"] == [expression]
    assert await history_versions(client) == ["1"]


async def test_conditional_patch(client: httpx.AsyncClient, patient: dict[str, Any]) -> None:
    patch = [{"op": "replace", "path": "/gender", "value": "other"}]
    response = await client.patch(f"/fhir/Patient?identifier={IPP}|IPP0001", json=patch, headers=JSON_PATCH)
    assert response.status_code == 200 and response.json()["id"] == "p"
    assert (await client.patch(f"/fhir/Patient?identifier={IPP}|none", json=patch, headers=JSON_PATCH)).status_code == 404
    await client.post("/fhir/Patient", json=notebook_patient())
    assert (await client.patch(f"/fhir/Patient?identifier={IPP}|IPP0001", json=patch, headers=JSON_PATCH)).status_code == 412


async def test_patch_body_type(client: httpx.AsyncClient, patient: dict[str, Any]) -> None:
    response = await client.patch("/fhir/Patient/p", content=b"gender=other", headers={"Content-Type": "text/plain"})
    assert response.status_code == 415
    response = await client.patch("/fhir/Patient/p", content=b"[{", headers=JSON_PATCH)
    assert response.status_code == 400
    response = await client.patch("/fhir/Patient/p", content=b"<Parameters/>", headers={"Content-Type": "application/fhir+xml"})
    assert response.status_code == 400  # no FHIR namespace
    fhirpath_xml = (b'<Parameters xmlns="http://hl7.org/fhir"><parameter><name value="operation"/>'
                    b'<part><name value="type"/><valueCode value="replace"/></part>'
                    b'<part><name value="path"/><valueString value="Patient.gender"/></part>'
                    b'<part><name value="value"/><valueCode value="other"/></part></parameter></Parameters>')
    response = await client.patch("/fhir/Patient/p", content=fhirpath_xml, headers={"Content-Type": "application/fhir+xml"})
    assert response.status_code == 200, response.text
    assert response.json()["gender"] == "other"


async def test_concurrent_patches_are_all_applied(client: httpx.AsyncClient, patient: dict[str, Any]) -> None:
    names = [f"Prénom{n}" for n in range(8)]
    patches = [[{"op": "add", "path": "/name/0/given/-", "value": name}] for name in names]
    responses = await asyncio.gather(*(client.patch("/fhir/Patient/p", json=p, headers=JSON_PATCH) for p in patches))
    assert [r.status_code for r in responses] == [200] * len(names)
    stored = (await client.get("/fhir/Patient/p")).json()
    assert sorted(stored["name"][0]["given"]) == sorted(["Hélène", *names])  # none lost to a race
    assert stored["meta"]["versionId"] == str(1 + len(names))
