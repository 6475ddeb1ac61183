"""Optimistic locking holds in the database: concurrent writers, one or two server instances."""

from __future__ import annotations

import asyncio

import httpx

from fhir_server.app import create_app
from tests.conftest import fhir_client, notebook_patient, running


async def _history_versions(client: httpx.AsyncClient, url: str) -> list[int]:
    bundle = (await client.get(f"{url}/_history", params={"_count": "1000"})).json()
    return sorted(int(e["response"]["etag"][3:-1]) for e in bundle["entry"])


async def test_fifty_updates_with_the_same_if_match_one_wins(client: httpx.AsyncClient, settings) -> None:
    """Writers split across two app instances sharing one database (the scale-out shape)."""
    created = (await client.post("/fhir/Patient", json=notebook_patient())).json()
    url = f"/fhir/Patient/{created['id']}"
    async with running(create_app(settings)) as second_app, fhir_client(second_app) as second:
        clients = [client, second]
        responses = await asyncio.gather(
            *(
                clients[n % 2].put(url, json={**created, "birthDate": f"19{10 + n}"}, headers={"If-Match": 'W/"1"'})
                for n in range(50)
            )
        )
    statuses = sorted(r.status_code for r in responses)
    assert statuses == [200] + [412] * 49
    winner = next(r.json() for r in responses if r.status_code == 200)
    assert (await client.get(url)).json() == winner
    assert await _history_versions(client, url) == [1, 2]


async def test_concurrent_updates_without_if_match_all_land_without_gaps(client: httpx.AsyncClient) -> None:
    created = (await client.post("/fhir/Patient", json=notebook_patient())).json()
    url = f"/fhir/Patient/{created['id']}"
    responses = await asyncio.gather(
        *(client.put(url, json={**created, "birthDate": f"19{10 + n}"}) for n in range(20))
    )
    assert all(r.status_code == 200 for r in responses), [r.text for r in responses if r.status_code != 200]
    assert sorted(int(r.json()["meta"]["versionId"]) for r in responses) == list(range(2, 22))
    assert await _history_versions(client, url) == list(range(1, 22))


async def test_concurrent_create_on_update_of_a_new_id(client: httpx.AsyncClient) -> None:
    body = notebook_patient(id="same-new-id")
    responses = await asyncio.gather(*(client.put("/fhir/Patient/same-new-id", json=body) for _ in range(10)))
    assert sorted(r.status_code for r in responses) == [200] * 9 + [201]
    assert await _history_versions(client, "/fhir/Patient/same-new-id") == list(range(1, 11))


async def test_every_committed_write_has_one_pending_event(settings) -> None:
    """The outbox itself: with no dispatcher draining it, every committed write left one event."""
    from dataclasses import replace

    from fhir_server.app import create_app
    from tests.conftest import fhir_client, running

    async with running(create_app(replace(settings, subscriptions=False))) as app, fhir_client(app) as client:
        store = app.state.engine.store
        created = (await client.post("/fhir/Patient", json=notebook_patient())).json()
        url = f"/fhir/Patient/{created['id']}"
        await asyncio.gather(*(client.put(url, json=created, headers={"If-Match": 'W/"1"'}) for _ in range(5)))
        await client.delete(url)
        events = await store.pending_events()
        assert [(e.method, e.version, e.deleted) for e in events] == [("POST", 1, False), ("PUT", 2, False), ("DELETE", 3, True)]
        assert {e.id for e in events} == {created["id"]}
        await store.mark_dispatched(events[:2])
        assert [e.version for e in await store.pending_events()] == [3]


async def test_concurrent_writes_to_different_resources_never_fail(client: httpx.AsyncClient, settings) -> None:
    """The embedded database reports WriteConflict between unrelated transactions: never a 500 or a false 412."""
    creates = await asyncio.gather(*(client.post("/fhir/Patient", json=notebook_patient()) for _ in range(40)))
    assert [r.status_code for r in creates] == [201] * 40
    patients = [r.json() for r in creates]
    async with running(create_app(settings)) as second_app, fhir_client(second_app) as second:
        updates = await asyncio.gather(
            *(
                (client, second)[n % 2].put(f"/fhir/Patient/{p['id']}", json={**p, "gender": "other"}, headers={"If-Match": 'W/"1"'})
                for n, p in enumerate(patients)
            )
        )
    assert [r.status_code for r in updates] == [200] * 40
