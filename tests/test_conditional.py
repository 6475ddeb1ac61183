"""Conditional create, update and delete; racing conditional creates make exactly one resource."""

from __future__ import annotations

import asyncio

import httpx

from fhir_server.app import create_app
from tests.conftest import fhir_client, notebook_patient, running
from tests.search_fixtures import IPP

CRITERIA = f"identifier={IPP}|IPP0001"


async def _count(client: httpx.AsyncClient, query: dict) -> int:
    return (await client.get("/fhir/Patient", params={**query, "_summary": "count"})).json()["total"]


async def test_conditional_create_creates_once_then_finds(client: httpx.AsyncClient) -> None:
    first = await client.post("/fhir/Patient", json=notebook_patient(), headers={"If-None-Exist": CRITERIA})
    assert first.status_code == 201
    again = await client.post("/fhir/Patient", json=notebook_patient(gender="male"), headers={"If-None-Exist": CRITERIA})
    assert again.status_code == 200
    assert again.json()["id"] == first.json()["id"] and again.json()["gender"] == "female"
    assert await _count(client, {"identifier": f"{IPP}|IPP0001"}) == 1


async def test_conditional_create_with_several_matches_is_412(client: httpx.AsyncClient) -> None:
    await client.post("/fhir/Patient", json=notebook_patient())
    await client.post("/fhir/Patient", json=notebook_patient())
    response = await client.post("/fhir/Patient", json=notebook_patient(), headers={"If-None-Exist": CRITERIA})
    assert response.status_code == 412
    assert response.json()["issue"][0]["code"] == "multiple-matches"


async def test_twenty_parallel_conditional_creates_make_one_resource(client: httpx.AsyncClient, settings) -> None:
    async with running(create_app(settings)) as other_app, fhir_client(other_app) as other:
        responses = await asyncio.gather(*(
            (client, other)[n % 2].post("/fhir/Patient", json=notebook_patient(), headers={"If-None-Exist": CRITERIA})
            for n in range(20)
        ))
    statuses = sorted(r.status_code for r in responses)
    assert statuses == [200] * 19 + [201], statuses
    assert len({r.json()["id"] for r in responses}) == 1
    assert await _count(client, {"identifier": f"{IPP}|IPP0001"}) == 1


async def test_conditional_create_after_the_match_was_deleted(client: httpx.AsyncClient) -> None:
    first = (await client.post("/fhir/Patient", json=notebook_patient(), headers={"If-None-Exist": CRITERIA})).json()
    await client.delete(f"/fhir/Patient/{first['id']}")
    second = await client.post("/fhir/Patient", json=notebook_patient(), headers={"If-None-Exist": CRITERIA})
    assert second.status_code == 201 and second.json()["id"] != first["id"]


async def test_conditional_update(client: httpx.AsyncClient) -> None:
    created = await client.put(f"/fhir/Patient?{CRITERIA}", json=notebook_patient())
    assert created.status_code == 201
    patient_id = created.json()["id"]
    updated = await client.put(f"/fhir/Patient?{CRITERIA}", json=notebook_patient(gender="other"))
    assert updated.status_code == 200
    assert updated.json()["id"] == patient_id and updated.json()["meta"]["versionId"] == "2"
    stale = await client.put(f"/fhir/Patient?{CRITERIA}", json=notebook_patient(), headers={"If-Match": 'W/"1"'})
    assert stale.status_code == 412
    wrong_id = await client.put(f"/fhir/Patient?{CRITERIA}", json=notebook_patient(id="someone-else"))
    assert wrong_id.status_code == 400
    with_client_id = await client.put("/fhir/Patient?identifier=urn:x|new", json=notebook_patient(id="chosen-id"))
    assert with_client_id.status_code == 201 and with_client_id.json()["id"] == "chosen-id"


async def test_parallel_conditional_updates_create_one_resource(client: httpx.AsyncClient) -> None:
    responses = await asyncio.gather(*(client.put(f"/fhir/Patient?{CRITERIA}", json=notebook_patient()) for _ in range(10)))
    assert sorted(r.status_code for r in responses).count(201) == 1
    assert all(r.status_code in (200, 201) for r in responses)
    assert await _count(client, {"identifier": f"{IPP}|IPP0001"}) == 1


async def test_conditional_delete(client: httpx.AsyncClient) -> None:
    nothing = await client.delete(f"/fhir/Patient?{CRITERIA}")
    assert nothing.status_code == 200
    patient = (await client.post("/fhir/Patient", json=notebook_patient())).json()
    deleted = await client.delete(f"/fhir/Patient?{CRITERIA}")
    assert deleted.status_code == 200 and deleted.headers["etag"] == 'W/"2"'
    assert (await client.get(f"/fhir/Patient/{patient['id']}")).status_code == 410
    await client.post("/fhir/Patient", json=notebook_patient())
    await client.post("/fhir/Patient", json=notebook_patient())
    several = await client.delete(f"/fhir/Patient?{CRITERIA}")
    assert several.status_code == 412
    assert await _count(client, {"identifier": f"{IPP}|IPP0001"}) == 2


async def test_conditional_criteria_are_checked(client: httpx.AsyncClient) -> None:
    assert (await client.delete("/fhir/Patient")).status_code == 400
    assert (await client.post("/fhir/Patient", json=notebook_patient(), headers={"If-None-Exist": ""})).status_code == 400
    unknown = await client.post("/fhir/Patient", json=notebook_patient(), headers={"If-None-Exist": "colour=blue"})
    assert unknown.status_code == 400  # criteria are always strict: a typo must not create duplicates


async def test_racing_creates_with_the_same_criteria_written_differently_make_one_resource(client: httpx.AsyncClient) -> None:
    """The guard keys on the criteria's meaning as parsed: parameter order and percent-encoding
    do not count. (`identifier=V` and `identifier=sys|V` are different searches, so different
    guards: docs/architecture.md says what is guaranteed.)"""
    spellings = [f"identifier={IPP}|IPP0001&gender=female", f"gender=female&identifier={IPP}%7CIPP0001",
                 f"gender=female&identifier={IPP.replace(':', '%3A')}|IPP0001"]
    responses = await asyncio.gather(*(
        client.post("/fhir/Patient", json=notebook_patient(), headers={"If-None-Exist": spellings[n % 3]}) for n in range(12)
    ))
    assert sorted(r.status_code for r in responses) == [200] * 11 + [201]
    assert len({r.json()["id"] for r in responses}) == 1
    assert await _count(client, {"identifier": f"{IPP}|IPP0001"}) == 1
