"""Hostile and broken requests: the right status, an OperationOutcome, and nothing stored."""

from __future__ import annotations

import httpx
import pytest

from tests.conftest import notebook_patient


async def _stored_count(store) -> int:
    return await store.db["history"].count_documents({}) + await store.db["resources"].count_documents({})


BAD_CREATES = [
    pytest.param(b'{"resourceType": "Patient", "name": [', 400, "structure", id="malformed-json"),
    pytest.param(b"", 400, "required", id="empty-body"),
    pytest.param(b'["Patient"]', 400, "structure", id="json-array"),
    pytest.param(b'{"resourceType": "Observation", "status": "final", "code": {"text": "x"}}', 400, "invalid", id="body-for-another-type"),
    pytest.param(b'{"name": [{"family": "X"}]}', 400, "invalid", id="no-resourceType"),
    pytest.param(b'{"resourceType": "Patient", "nickname": "Lulu"}', 422, "structure", id="unknown-element"),
    pytest.param(b'{"resourceType": "Patient", "active": "yes"}', 422, "value", id="boolean-as-string"),
    pytest.param(b'{"resourceType": "Patient", "birthDate": "12/03/1948"}', 422, "value", id="bad-date"),
    pytest.param(b'{"resourceType": "Patient", "name": {"family": "X"}}', 422, "structure", id="object-for-array"),
    pytest.param(b'{"resourceType": "Patient", "name": [{"family": ""}]}', 422, "value", id="empty-string"),
    pytest.param(b'{"resourceType": "Patient", "name": []}', 422, "structure", id="empty-array"),
    pytest.param(b'{"resourceType": "Patient", "gender": null}', 422, "structure", id="null"),
    pytest.param(b'{"resourceType": "Patient", "multipleBirthInteger": 1.5}', 422, "value", id="decimal-for-integer"),
    pytest.param(b'{"resourceType": "Communication"}', 400, "invalid", id="communication-to-patient-url"),
]


@pytest.mark.parametrize(("body", "status", "code"), BAD_CREATES)
async def test_bad_create_is_refused_and_nothing_stored(client: httpx.AsyncClient, store, body: bytes, status: int, code: str) -> None:
    response = await client.post("/fhir/Patient", content=body)
    assert response.status_code == status, response.text
    outcome = response.json()
    assert outcome["resourceType"] == "OperationOutcome"
    assert outcome["issue"][0]["code"] == code
    assert await _stored_count(store) == 0


async def test_issues_carry_fhirpath_expressions(client: httpx.AsyncClient) -> None:
    body = {"resourceType": "Communication", "status": "completed", "payload": [{"contentString": "ok"}, {}]}
    response = await client.post("/fhir/Communication", json=body)
    assert response.status_code == 422
    expressions = [i["expression"][0] for i in response.json()["issue"]]
    assert "Communication.payload[1]" in expressions


async def test_required_choice_element(client: httpx.AsyncClient) -> None:
    body = {"resourceType": "Communication", "status": "completed", "payload": [{"id": "p"}]}
    response = await client.post("/fhir/Communication", json=body)
    assert response.status_code == 422
    assert response.json()["issue"][0]["expression"] == ["Communication.payload[0].content"]
    assert response.json()["issue"][0]["code"] == "required"


@pytest.mark.parametrize("bad_id", ["a" * 65, "with space", "accentué", "semi;colon", "$where", "a_b"])
async def test_invalid_ids_are_refused(client: httpx.AsyncClient, store, bad_id: str) -> None:
    response = await client.put(f"/fhir/Patient/{bad_id}", json=notebook_patient(id=bad_id))
    assert response.status_code == 400
    assert response.json()["issue"][0]["code"] == "value"
    assert (await client.get(f"/fhir/Patient/{bad_id}")).status_code == 400
    assert await _stored_count(store) == 0


async def test_oversized_body_is_refused_before_parsing(client: httpx.AsyncClient, store, settings) -> None:
    huge = notebook_patient(text={"status": "generated", "div": "<div xmlns=\"http://www.w3.org/1999/xhtml\">" + "x" * settings.max_body_bytes + "</div>"})
    response = await client.post("/fhir/Patient", json=huge)
    assert response.status_code == 413
    assert response.json()["issue"][0]["code"] == "too-costly"

    async def chunks():  # no Content-Length: the limit is enforced while streaming
        for _ in range(settings.max_body_bytes // 1024 + 2):
            yield b" " * 1024

    streamed = await client.post("/fhir/Patient", content=chunks())
    assert streamed.status_code == 413
    assert await _stored_count(store) == 0


async def test_failed_update_keeps_the_stored_version(client: httpx.AsyncClient) -> None:
    created = (await client.post("/fhir/Patient", json=notebook_patient())).json()
    url = f"/fhir/Patient/{created['id']}"
    broken = await client.put(url, json={**created, "birthDate": "yesterday"})
    assert broken.status_code == 422
    current = await client.get(url)
    assert current.json() == created
    history = (await client.get(f"{url}/_history")).json()
    assert history["total"] == 1


async def test_unknown_type_method_and_route(client: httpx.AsyncClient) -> None:
    unknown_type = await client.post("/fhir/Notebook", json={"resourceType": "Notebook"})
    assert unknown_type.status_code == 404
    assert unknown_type.json()["issue"][0]["code"] == "not-supported"
    abstract = await client.get("/fhir/DomainResource/x")
    assert abstract.status_code == 404
    wrong_method = await client.post("/fhir/Patient/x", json=notebook_patient())
    assert wrong_method.status_code == 405
    assert wrong_method.json()["issue"][0]["code"] == "not-supported"
    nowhere = await client.get("/nowhere")
    assert nowhere.status_code == 404 and nowhere.json()["resourceType"] == "OperationOutcome"


async def test_operator_shaped_ids_and_values_are_plain_data(client: httpx.AsyncClient) -> None:
    """MongoDB operators in a body are just strings; an id like `$gt` never reaches a query."""
    body = notebook_patient(name=[{"family": "$where", "given": ["{\"$gt\": \"\"}"]}])
    created = await client.post("/fhir/Patient", json=body)
    assert created.status_code == 201
    assert (await client.get(f"/fhir/Patient/{created.json()['id']}")).json()["name"][0]["family"] == "$where"
    assert (await client.get("/fhir/Patient/$gt")).status_code == 400


async def test_hostile_nesting_is_refused_not_crashed(client: httpx.AsyncClient, store) -> None:
    extension: dict = {"url": "http://example.org/e", "valueString": "a"}
    for _ in range(400):  # valid shape (extensions may nest), hostile depth
        extension = {"url": "http://example.org/e", "extension": [extension]}
    response = await client.post("/fhir/Patient", json=notebook_patient(extension=[extension]))
    assert response.status_code == 422
    assert response.json()["issue"][0]["code"] == "too-costly"
    too_deep_for_json = b'{"resourceType":"Patient","extension":' + b"[" * 5000 + b"]" * 5000 + b"}"
    assert (await client.post("/fhir/Patient", content=too_deep_for_json)).status_code == 400
    assert await _stored_count(store) == 0


async def test_large_values_and_bundle_shapes_are_refused_clearly(settings, tmp_path) -> None:
    """Found by an attacker's tries (trust issue, 8): each was a 500 and is now the client's error."""
    from dataclasses import replace

    from fhir_server.app import create_app
    from tests.conftest import fhir_client, running

    async with running(create_app(replace(settings, max_body_bytes=64 * 1024 * 1024))) as app, fhir_client(app) as client:
        store = app.state.engine.store
        shapeless = {"resourceType": "Bundle", "type": "transaction",
                     "entry": [{"request": {"method": {}, "url": "Patient"}, "resource": {"resourceType": "Patient"}}]}
        answer = await client.post("/fhir", json=shapeless)
        assert answer.status_code == 400 and "request.method" in answer.text
        long_name = await client.post("/fhir/Patient", json=notebook_patient(name=[{"family": "x" * 1_800_000}]))
        assert long_name.status_code == 422 and long_name.json()["issue"][0]["code"] == "too-long"
        div = '<div xmlns="http://www.w3.org/1999/xhtml">' + "y" * 17_000_000 + "</div>"
        huge = await client.post("/fhir/Patient", json=notebook_patient(text={"status": "generated", "div": div}))
        assert huge.status_code == 413 and huge.json()["issue"][0]["code"] == "too-costly"
        assert await _stored_count(store) == 0
        assert (await client.post("/fhir/Patient", json=notebook_patient())).status_code == 201  # and it keeps serving


async def test_a_transaction_over_the_default_entry_limit_is_413(database_uri) -> None:
    """One transaction's writes cost the embedded database more than linearly (bench/RESULTS.md,
    large_body): the default limit refuses what would hold it for minutes, before any work."""
    import uuid

    from fhir_server.app import create_app
    from fhir_server.settings import Settings
    from tests.conftest import fhir_client, running

    settings = Settings(mongodb_uri=database_uri, database=f"test_{uuid.uuid4().hex[:16]}", serve_guide=False, auth=False,
                        audit=False, mllp_port=None)
    entry = {"resource": notebook_patient(), "request": {"method": "POST", "url": "Patient"}}
    async with running(create_app(settings)) as app, fhir_client(app) as client:
        answer = await client.post("/fhir", json={"resourceType": "Bundle", "type": "transaction", "entry": [entry] * 1001})
        assert answer.status_code == 413 and "limit is 1000" in answer.text
        assert await _stored_count(app.state.engine.store) == 0
