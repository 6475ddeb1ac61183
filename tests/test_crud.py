"""Create, read, vread, update, delete over HTTP against the real database."""

from __future__ import annotations

from email.utils import parsedate_to_datetime

import httpx

from tests.conftest import notebook_entry, notebook_patient


async def create(client: httpx.AsyncClient, resource: dict) -> httpx.Response:
    response = await client.post(f"/fhir/{resource['resourceType']}", json=resource)
    assert response.status_code == 201, response.text
    return response


async def test_create_assigns_id_version_and_returns_location(client: httpx.AsyncClient) -> None:
    response = await create(client, notebook_patient(id="client-chosen"))
    body = response.json()
    assert body["id"] != "client-chosen"  # R4: the server ignores an id on create
    assert body["meta"]["versionId"] == "1"
    assert body["name"][0]["family"] == "Lefèvre"
    assert response.headers["etag"] == 'W/"1"'
    assert response.headers["location"] == f"http://calipso.test/fhir/Patient/{body['id']}/_history/1"
    assert response.headers["content-type"] == "application/fhir+json; charset=utf-8"
    assert parsedate_to_datetime(response.headers["last-modified"]).year >= 2026


async def test_read_returns_what_was_created(client: httpx.AsyncClient) -> None:
    created = (await create(client, notebook_patient())).json()
    response = await client.get(f"/fhir/Patient/{created['id']}")
    assert response.status_code == 200
    assert response.json() == created
    assert response.headers["etag"] == 'W/"1"'


async def test_update_creates_new_version_and_vread_keeps_old(client: httpx.AsyncClient) -> None:
    created = (await create(client, notebook_patient())).json()
    changed = {**created, "gender": "other"}
    response = await client.put(f"/fhir/Patient/{created['id']}", json=changed)
    assert response.status_code == 200
    assert response.json()["meta"]["versionId"] == "2"
    assert response.headers["etag"] == 'W/"2"'
    assert response.headers["location"].endswith(f"/Patient/{created['id']}/_history/2")
    old = await client.get(f"/fhir/Patient/{created['id']}/_history/1")
    assert old.status_code == 200 and old.json()["gender"] == "female"
    assert old.headers["etag"] == 'W/"1"'
    assert (await client.get(f"/fhir/Patient/{created['id']}")).json()["gender"] == "other"


async def test_update_with_client_id_creates(client: httpx.AsyncClient) -> None:
    entry = {**notebook_entry("p1"), "id": "entry-42"}
    response = await client.put("/fhir/Communication/entry-42", json=entry)
    assert response.status_code == 201
    assert response.json()["id"] == "entry-42"
    assert response.headers["location"].endswith("/Communication/entry-42/_history/1")


async def test_update_body_id_must_match_url(client: httpx.AsyncClient) -> None:
    response = await client.put("/fhir/Patient/a", json=notebook_patient(id="b"))
    assert response.status_code == 400
    assert response.json()["issue"][0]["expression"] == ["Patient.id"]
    missing = await client.put("/fhir/Patient/a", json=notebook_patient())
    assert missing.status_code == 400


async def test_delete_then_read_is_gone_and_history_keeps_tombstone(client: httpx.AsyncClient) -> None:
    created = (await create(client, notebook_patient())).json()
    url = f"/fhir/Patient/{created['id']}"
    deleted = await client.delete(url)
    assert deleted.status_code == 200
    assert deleted.json()["resourceType"] == "OperationOutcome"
    assert deleted.headers["etag"] == 'W/"2"'
    gone = await client.get(url)
    assert gone.status_code == 410
    assert gone.json()["issue"][0]["code"] == "deleted"
    assert (await client.get(f"{url}/_history/2")).status_code == 410
    assert (await client.get(f"{url}/_history/1")).status_code == 200
    again = await client.delete(url)  # idempotent: nothing more to delete, no new version
    assert again.status_code == 200
    history = (await client.get(f"{url}/_history")).json()
    assert history["total"] == 2
    assert [e["request"]["method"] for e in history["entry"]] == ["DELETE", "POST"]


async def test_update_after_delete_revives_with_next_version(client: httpx.AsyncClient) -> None:
    created = (await create(client, notebook_patient())).json()
    url = f"/fhir/Patient/{created['id']}"
    await client.delete(url)
    revived = await client.put(url, json=created)
    assert revived.status_code == 201
    assert revived.json()["meta"]["versionId"] == "3"


async def test_read_unknown_and_vread_unknown_version(client: httpx.AsyncClient) -> None:
    assert (await client.get("/fhir/Patient/nobody")).status_code == 404
    created = (await create(client, notebook_patient())).json()
    for version in ("9", "x", "-1"):
        response = await client.get(f"/fhir/Patient/{created['id']}/_history/{version}")
        assert response.status_code == 404
        assert response.json()["resourceType"] == "OperationOutcome"


async def test_delete_unknown_is_harmless(client: httpx.AsyncClient) -> None:
    response = await client.delete("/fhir/Patient/never-existed")
    assert response.status_code == 200
    assert (await client.get("/fhir/Patient/never-existed/_history")).status_code == 404


async def test_data_lives_in_the_database_not_the_process(client: httpx.AsyncClient, app, settings) -> None:
    """A second app instance on the same database reads what the first wrote."""
    from tests.conftest import fhir_client, running
    from fhir_server.app import create_app

    created = (await create(client, notebook_patient())).json()
    async with running(create_app(settings)) as other_app, fhir_client(other_app) as other:
        response = await other.get(f"/fhir/Patient/{created['id']}")
        assert response.json() == created
