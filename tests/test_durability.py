"""An acknowledged write survives a crash: SIGKILL the database right after a 201 or an AA,
restart it on the same files, and every acknowledged write is there."""

from __future__ import annotations

import asyncio
import os
import signal
import uuid
from dataclasses import replace
from pathlib import Path

from fhir_server.app import create_app
from fhir_server.settings import Settings
from fhir_server.storage.embedded import EmbeddedDatabase
from hl7v2_bridge.client import MllpClient, ack_code
from tests.bridge_fixtures import sample
from tests.conftest import fhir_client, notebook_patient, running

CREATES = 20
DISCHARGES = 4


def _settings(uri: str, database: str) -> Settings:
    """After the kill, the app's shutdown gives up on the dead database in 2 s, not the driver's 30."""
    return Settings(mongodb_uri=f"{uri}&serverSelectionTimeoutMS=2000", database=database, serve_guide=False, auth=False, audit=False, mllp_port=None)


def _discharge(n: int) -> bytes:
    """The French A03 with its own control id and patient (IPP) per n."""
    raw = sample("A03-discharge-home.hl7")
    for old, new in ((b"CHT20261120143000017", f"DUR-{n:04d}"), (b"000123456", f"7{n:08d}"),
                     (b"V2026-000123", f"V-DUR-{n:04d}"), (b"MVT-1002", f"MVT-D{n:04d}")):
        raw = raw.replace(old, new.encode())
    return raw


def _kill(database: EmbeddedDatabase) -> None:
    """SIGKILL, as a crash or a power cut would stop it: no clean WiredTiger shutdown."""
    os.kill(database.pid, signal.SIGKILL)
    os.waitpid(database.pid, 0)
    database._process = None  # noqa: SLF001 - it is dead; a new EmbeddedDatabase opens the same files


def test_every_201_survives_a_sigkill_of_the_database(tmp_path: Path) -> None:
    name = f"dur_{uuid.uuid4().hex[:12]}"
    first = EmbeddedDatabase(tmp_path)
    settings = _settings(first.start(), name)

    async def create_then_crash() -> list[str]:
        async with running(create_app(settings)) as app, fhir_client(app) as client:
            created = []
            for n in range(CREATES):
                response = await client.post("/fhir/Patient", json=notebook_patient(birthDate=f"19{40 + n}-01-01"))
                assert response.status_code == 201
                created.append(response.headers["Location"].split("/fhir/", 1)[1].split("/_history")[0])
            _kill(first)  # at once after the last 201: nothing had time to flush on its own
            return created

    created = asyncio.run(create_then_crash())
    second = EmbeddedDatabase(tmp_path)
    try:
        restarted = replace(settings, mongodb_uri=second.start())

        async def read_back() -> list[int]:
            async with running(create_app(restarted)) as app, fhir_client(app) as client:
                return [(await client.get(f"/fhir/{reference}")).status_code for reference in created]

        assert asyncio.run(read_back()) == [200] * CREATES
    finally:
        second.stop()


def test_every_aa_survives_a_sigkill_of_the_database(tmp_path: Path) -> None:
    name = f"dur_{uuid.uuid4().hex[:12]}"
    first = EmbeddedDatabase(tmp_path)
    settings = replace(_settings(first.start(), name), mllp_port=0)

    async def discharge_then_crash() -> None:
        async with running(create_app(settings)) as app:
            async with MllpClient("127.0.0.1", app.state.mllp_port) as sender:
                for n in range(DISCHARGES):
                    assert ack_code(await sender.send(_discharge(n))) == "AA"
                _kill(first)

    asyncio.run(discharge_then_crash())
    second = EmbeddedDatabase(tmp_path)
    try:
        restarted = replace(settings, mongodb_uri=second.start(), mllp_port=None)

        async def read_back() -> tuple[int, list[str]]:
            async with running(create_app(restarted)) as app, fhir_client(app) as client:
                entries = (await client.get("/fhir/Communication", params={"_summary": "count", "_total": "accurate"})).json()
                statuses = [doc["status"] async for doc in app.state.engine.store.db["inbox"].find({}, {"status": 1})]
                return entries["total"], statuses

        total, statuses = asyncio.run(read_back())
        assert total == DISCHARGES  # one discharge entry per acknowledged A03
        assert sorted(statuses) == ["applied"] * DISCHARGES
    finally:
        second.stop()
