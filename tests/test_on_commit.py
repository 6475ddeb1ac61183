"""The engine's on-commit hooks: every committed write reaches them once, with its versions, in
commit order, whatever door it came in by (single writes, transactions, PATCH, the HL7 bridge);
a failing hook changes nothing for the client (the write is durable already)."""

from __future__ import annotations

import logging
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from fhir_server.storage.store import Version
from tests.bridge_fixtures import sample
from tests.conftest import notebook_entry, notebook_patient


def record(app: FastAPI) -> list[list[tuple[str, str, int]]]:
    seen: list[list[tuple[str, str, int]]] = []
    app.state.engine.on_commit.append(lambda versions: seen.append([(v.type, v.method, v.version) for v in versions]))
    return seen


async def test_every_door_reaches_the_hooks_once(app: FastAPI, client: httpx.AsyncClient) -> None:
    seen = record(app)
    patient = (await client.post("/fhir/Patient", json=notebook_patient())).json()
    assert seen == [[("Patient", "POST", 1)]]
    await client.put(f"/fhir/Patient/{patient['id']}", json={**patient, "active": True})
    await client.patch(f"/fhir/Patient/{patient['id']}", content=b'[{"op": "replace", "path": "/active", "value": false}]',
                       headers={"Content-Type": "application/json-patch+json"})
    bundle = {"resourceType": "Bundle", "type": "transaction", "entry": [
        {"resource": notebook_entry(patient["id"]), "request": {"method": "POST", "url": "Communication"}},
        {"resource": notebook_entry(patient["id"], "Vu."), "request": {"method": "POST", "url": "Communication"}}]}
    assert (await client.post("/fhir", json=bundle)).status_code == 200
    await client.delete(f"/fhir/Patient/{patient['id']}")
    refused = await client.post("/fhir/Patient", json={"resourceType": "Patient", "gender": "nope"})
    assert refused.status_code in (400, 422)
    assert seen[1:] == [[("Patient", "PUT", 2)], [("Patient", "PATCH", 3)],
                        [("Communication", "POST", 1), ("Communication", "POST", 1)], [("Patient", "DELETE", 4)]]


async def test_a_discharge_over_mllp_reaches_the_hooks_in_one_call(bridged: tuple[FastAPI, httpx.AsyncClient, int]) -> None:
    from hl7v2_bridge.client import MllpClient, ack_code

    app, _, port = bridged
    seen = record(app)
    async with MllpClient("127.0.0.1", port) as mllp:
        assert ack_code(await mllp.send(sample("A03-discharge-home.hl7"))) == "AA"
    assert len(seen) == 1  # one database transaction, one call
    assert {"Patient", "Encounter", "Communication", "CarePlan", "CareTeam"} <= {t for t, _, _ in seen[0]}


async def test_a_failing_hook_does_not_fail_the_write(app: FastAPI, client: httpx.AsyncClient, caplog: pytest.LogCaptureFixture) -> None:
    def broken(versions: list[Version]) -> None:
        raise RuntimeError(f"boom {versions[0].id}")  # a message that quotes data: never logged

    later: list[Any] = []
    app.state.engine.on_commit.extend([broken, later.append])
    with caplog.at_level(logging.ERROR, logger="calipso.engine"):
        created = await client.post("/fhir/Patient", json=notebook_patient())
    assert created.status_code == 201
    assert (await client.get(f"/fhir/Patient/{created.json()['id']}")).status_code == 200
    assert len(later) == 1  # the hooks after it still ran
    assert "type=RuntimeError" in caplog.text and created.json()["id"] not in caplog.text  # where it failed, not what it said
