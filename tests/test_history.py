"""History at instance, type and system level, _since, _count and cursor paging."""

from __future__ import annotations

import asyncio

import httpx

from tests.conftest import notebook_entry, notebook_patient


async def _versions(client: httpx.AsyncClient, count: int) -> dict:
    created = (await client.post("/fhir/Patient", json=notebook_patient())).json()
    current = created
    for n in range(2, count + 1):
        current = (await client.put(f"/fhir/Patient/{created['id']}", json={**created, "birthDate": f"19{40 + n}"})).json()
    return current


async def _walk(client: httpx.AsyncClient, url: str, params: dict | None = None) -> list[dict]:
    """Follow `next` links to the end; return every entry seen."""
    entries: list[dict] = []
    response = await client.get(url, params=params)
    while True:
        assert response.status_code == 200, response.text
        bundle = response.json()
        assert bundle["type"] == "history"
        entries.extend(bundle.get("entry", []))
        following = [link["url"] for link in bundle["link"] if link["relation"] == "next"]
        if not following:
            return entries
        response = await client.get(following[0])


async def test_instance_history_of_three_versions(client: httpx.AsyncClient) -> None:
    current = await _versions(client, 3)
    bundle = (await client.get(f"/fhir/Patient/{current['id']}/_history")).json()
    assert bundle["total"] == 3
    assert [e["resource"]["meta"]["versionId"] for e in bundle["entry"]] == ["3", "2", "1"]
    assert [e["request"]["method"] for e in bundle["entry"]] == ["PUT", "PUT", "POST"]
    assert [e["response"]["etag"] for e in bundle["entry"]] == ['W/"3"', 'W/"2"', 'W/"1"']
    assert bundle["entry"][0]["fullUrl"] == f"http://calipso.test/fhir/Patient/{current['id']}"
    assert bundle["entry"][2]["resource"]["birthDate"] == "1948-03-12"


async def test_history_pages_with_cursor(client: httpx.AsyncClient) -> None:
    current = await _versions(client, 7)
    entries = await _walk(client, f"/fhir/Patient/{current['id']}/_history", {"_count": "3"})
    assert [e["resource"]["meta"]["versionId"] for e in entries] == ["7", "6", "5", "4", "3", "2", "1"]


async def test_type_and_system_history(client: httpx.AsyncClient) -> None:
    patient = (await client.post("/fhir/Patient", json=notebook_patient())).json()
    entry = (await client.post("/fhir/Communication", json=notebook_entry(patient["id"]))).json()
    await client.delete(f"/fhir/Communication/{entry['id']}")
    type_level = await _walk(client, "/fhir/Communication/_history")
    assert [(e["request"]["method"], e.get("resource", {}).get("id")) for e in type_level] == [
        ("DELETE", None),
        ("POST", entry["id"]),
    ]
    system = await _walk(client, "/fhir/_history", {"_count": "1"})
    assert [e["request"]["method"] for e in system] == ["DELETE", "POST", "POST"]
    assert system[2]["resource"]["resourceType"] == "Patient"


async def test_since_keeps_only_later_versions(client: httpx.AsyncClient) -> None:
    current = await _versions(client, 2)
    since = current["meta"]["lastUpdated"]
    await client.put(f"/fhir/Patient/{current['id']}", json={**current, "gender": "male"})
    bundle = (await client.get(f"/fhir/Patient/{current['id']}/_history", params={"_since": since})).json()
    assert [e["resource"]["meta"]["versionId"] for e in bundle["entry"]] == ["3", "2"]
    bad = await client.get("/fhir/_history", params={"_since": "last tuesday"})
    assert bad.status_code == 400


async def test_paging_while_writing_never_repeats_or_skips(client: httpx.AsyncClient) -> None:
    """Versions written during the walk come after its start: the walk sees exactly the old ones."""
    patient = (await client.post("/fhir/Patient", json=notebook_patient())).json()
    before = [
        (await client.post("/fhir/Communication", json=notebook_entry(patient["id"], f"visite {n}"))).json()["id"]
        for n in range(25)
    ]
    seen: list[str] = []
    response = await client.get("/fhir/Communication/_history", params={"_count": "4"})
    while True:
        bundle = response.json()
        seen.extend(e["resource"]["id"] for e in bundle.get("entry", []))
        await client.post("/fhir/Communication", json=notebook_entry(patient["id"], "écrite pendant le parcours"))
        following = [link["url"] for link in bundle["link"] if link["relation"] == "next"]
        if not following:
            break
        response = await client.get(following[0])
    assert sorted(seen) == sorted(before)
    assert len(seen) == len(set(seen))


async def test_count_bounds_and_bad_cursor(client: httpx.AsyncClient) -> None:
    await _versions(client, 2)
    empty = (await client.get("/fhir/_history", params={"_count": "0"})).json()
    assert "entry" not in empty
    assert (await client.get("/fhir/_history", params={"_count": "-1"})).status_code == 400
    assert (await client.get("/fhir/_history", params={"_count": "abc"})).status_code == 400
    assert (await client.get("/fhir/_history", params={"_cursor": "not-a-cursor!"})).status_code == 400
    assert (await client.get("/fhir/_history", params={"_cursor": "W10"})).status_code == 400  # "[]"
    assert (await client.get("/fhir/_history", params={"_at": "2026"})).status_code == 400


async def test_history_of_unknown_type_or_resource(client: httpx.AsyncClient) -> None:
    assert (await client.get("/fhir/Nothing/_history")).status_code == 404
    assert (await client.get("/fhir/Patient/nobody/_history")).status_code == 404


async def test_concurrent_creates_all_appear_in_history(client: httpx.AsyncClient) -> None:
    await asyncio.gather(*(client.post("/fhir/Patient", json=notebook_patient()) for _ in range(10)))
    entries = await _walk(client, "/fhir/Patient/_history", {"_count": "3"})
    assert len(entries) == 10 and len({e["resource"]["id"] for e in entries}) == 10
