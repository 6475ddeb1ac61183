"""`calipso serve` as a real process: embedded database, restart on the same data, lock, outage."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from fhir_server.app import create_app
from fhir_server.settings import Settings
from fhir_server.storage.embedded import EmbeddedDatabase
from tests.conftest import fhir_client, notebook_patient, running

CALIPSO = [sys.executable, "-m", "fhir_server.cli"]


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class Served:
    """One `calipso serve` child process and its base URL."""

    def __init__(self, data_dir: Path):
        self.port = _free_port()
        env = {k: v for k, v in os.environ.items() if k != "CALIPSO_MONGODB_URI"}
        self.log = data_dir.parent / f"serve-{self.port}.log"
        with open(self.log, "wb") as out:
            self.process = subprocess.Popen(
                CALIPSO + ["serve", "--port", str(self.port), "--data-dir", str(data_dir)],
                stdout=out, stderr=subprocess.STDOUT, env=env,
            )
        self.base = f"http://127.0.0.1:{self.port}/fhir"

    def wait_ready(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.process.poll() is None, self.log.read_text()
            try:
                if httpx.get(f"{self.base}/metadata", timeout=2).status_code == 200:
                    return
            except httpx.TransportError:
                time.sleep(0.2)
        raise AssertionError(f"calipso did not start:\n{self.log.read_text()}")

    def stop(self) -> int:
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(60)


def test_data_survives_a_restart_on_the_same_data_dir(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    first = Served(data_dir)
    try:
        first.wait_ready()
        created = httpx.post(f"{first.base}/Patient", json=notebook_patient(), headers={"Content-Type": "application/fhir+json"})
        assert created.status_code == 201
        patient = created.json()
        updated = httpx.put(f"{first.base}/Patient/{patient['id']}", json={**patient, "gender": "other"},
                            headers={"Content-Type": "application/fhir+json"})
        assert updated.status_code == 200
    finally:
        assert first.stop() == 0
    assert "embedded database stopped" in first.log.read_text()

    second = Served(data_dir)
    try:
        second.wait_ready()
        again = httpx.get(f"{second.base}/Patient/{patient['id']}")
        assert again.status_code == 200 and again.json() == updated.json()
        assert httpx.get(f"{second.base}/Patient/{patient['id']}/_history/1").json()["gender"] == "female"
    finally:
        second.stop()


def test_a_locked_data_dir_gives_a_clear_message(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    first = Served(data_dir)
    try:
        first.wait_ready()
        second = Served(data_dir)
        assert second.process.wait(60) == 1
        output = second.log.read_text()
        assert "is locked" in output and "--data-dir" in output
        assert "Traceback" not in output
    finally:
        first.stop()


async def test_database_outage_gives_500_without_trace_or_data(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Stop the real database under a running app: clean 500s, nothing leaked, then it recovers."""
    database = EmbeddedDatabase(tmp_path / "outage")
    uri = database.start()
    try:
        settings = Settings(mongodb_uri=uri.replace("?", "?serverSelectionTimeoutMS=1500&"), database="outage")
        async with running(create_app(settings)) as app, fhir_client(app) as client:
            created = (await client.post("/fhir/Patient", json=notebook_patient())).json()
            database.stop()
            response = await client.get(f"/fhir/Patient/{created['id']}")
            assert response.status_code == 500
            issue = response.json()["issue"][0]
            assert issue["code"] == "exception" and "incident" in issue["diagnostics"]
            assert "Traceback" not in response.text and "mongodb" not in response.text.lower()
            failed_write = await client.post("/fhir/Patient", json=notebook_patient(name=[{"family": "Dupont-Outage"}]))
            assert failed_write.status_code == 500
            assert "Dupont-Outage" not in caplog.text and "Lefèvre" not in caplog.text
            assert "internal error incident=" in caplog.text
    finally:
        database.stop()
