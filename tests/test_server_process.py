"""`calipso serve` as a real process: embedded database, restart on the same data, lock, outage."""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest
from pymongo import AsyncMongoClient
from pymongo.event_loggers import ConnectionPoolLogger

from fhir_server.app import create_app
from fhir_server.settings import Settings
from fhir_server.storage.embedded import CLIENT_CONNECTIONS, DATABASE_PROCESS, EmbeddedDatabase
from conformance.server import Served
from tests.conftest import fhir_client, notebook_patient, running

CALIPSO = [sys.executable, "-m", "fhir_server.cli"]


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


def test_serve_freezes_its_start_up_heap(tmp_path: Path) -> None:
    """`calipso serve` freezes what start-up left before the first request (fhir_server/heap.py)."""
    served = Served(tmp_path / "data")
    try:
        served.wait_ready()
        assert httpx.get(f"{served.base}/metadata").status_code == 200
    finally:
        assert served.stop() == 0
    found = re.search(r"start-up heap frozen: (\d+) objects", served.log.read_text())
    assert found and int(found.group(1)) > 50_000  # the digest and models: ~100,000


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
        settings = Settings(mongodb_uri=uri.replace("?", "?serverSelectionTimeoutMS=1500&"), database="outage", auth=False, audit=False, mllp_port=None)
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


def test_the_standalone_mllp_listener_applies_and_audits(tmp_path: Path) -> None:
    """`calipso mllp`: the listener alone, on its own embedded database; the message is applied
    and audited, and a clean stop leaves nothing in its audit journal."""
    import signal

    from conformance.server import free_port
    from hl7v2_bridge.client import MllpClient, ack_code
    from tests.bridge_fixtures import sample

    data_dir, port = tmp_path / "data", free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("CALIPSO_")}
    process = subprocess.Popen([*CALIPSO, "mllp", "--mllp-port", str(port), "--data-dir", str(data_dir)],
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    try:
        assert process.stdout is not None
        for line in process.stdout:
            if "MLLP listener on" in line:
                break
        else:
            raise AssertionError("the listener did not start")

        async def send() -> bytes:
            async with MllpClient("127.0.0.1", port) as client:
                return await client.send(sample("A03-discharge-home.hl7"))

        assert ack_code(asyncio.run(send())) == "AA"
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(60) == 0
    assert (data_dir / "audit" / "audit-journal-mllp.ndjson").read_bytes() == b""  # committed at stop


def test_the_database_runs_its_launcher_with_survivors_frozen(tmp_path: Path) -> None:
    """database_process.py runs the launcher by path, with its arguments, and freezes what
    survives a collection of the older generations (the embedded database's long pauses,
    docs/architecture.md)."""
    launcher = tmp_path / "launcher"
    launcher.write_text(
        "import gc, sys\n"
        "kept = [[i] for i in range(20_000)]\n"
        "gc.collect()\n"
        "print(sys.argv[1:], gc.get_freeze_count())\n"
    )
    done = subprocess.run([sys.executable, str(DATABASE_PROCESS), str(launcher), "--standalone", "--port", "0"],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    arguments, frozen = done.stdout.rsplit(" ", 1)
    assert arguments == "['--standalone', '--port', '0']"
    assert int(frozen) >= 20_000  # the kept lists, out of the next collections' walk


class ConnectionsOpened(ConnectionPoolLogger):
    """Counts the connections a client's pool opens (the driver's monitors are not in it); the
    driver's logger handles the other pool events."""

    count = 0

    def connection_created(self, event: Any) -> None:
        self.count += 1


@pytest.mark.skipif(bool(os.environ.get("CALIPSO_TEST_MONGODB_URI")), reason="an operator's URI is used as it is")
async def test_a_client_of_the_embedded_database_queues_beyond_its_connection_cap(database_uri: str) -> None:
    """40 finds at once through the embedded database's URI open at most CLIENT_CONNECTIONS
    connections: the rest wait in the driver's queue."""
    opened = ConnectionsOpened()
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(database_uri, event_listeners=[opened])
    try:
        collection = client["connection_cap"]["rows"]
        await collection.insert_many([{"row": n} for n in range(200)])
        found = await asyncio.gather(*(collection.find({}).to_list() for _ in range(40)))
        assert all(len(rows) == 200 for rows in found)
        assert 1 <= opened.count <= CLIENT_CONNECTIONS
    finally:
        await client.close()


def test_the_embedded_database_starts_under_that_policy(tmp_path: Path) -> None:
    database = EmbeddedDatabase(tmp_path / "data")
    database.start()
    try:
        command = Path(f"/proc/{database.pid}/cmdline").read_bytes().split(b"\0")
        assert command[1].endswith(b"database_process.py") and command[2].endswith(b"secantusd-py")
    finally:
        database.stop()


def test_a_request_head_sent_too_slowly_is_cut_off(tmp_path: Path) -> None:
    """Slow-loris: a connection that trickles its headers, or sends nothing, is closed after the
    head deadline; a client sending a whole request at once on its own connection is served."""
    import socket
    import time

    served = Served(tmp_path / "data", env={"CALIPSO_HTTP_HEAD_TIMEOUT_SECONDS": "2"})
    try:
        served.wait_ready()
        silent = socket.create_connection(("127.0.0.1", served.port))
        trickler = socket.create_connection(("127.0.0.1", served.port))
        trickler.sendall(b"GET /fhir/metadata HTTP/1.1\r\nHost: x\r\n")
        started = time.monotonic()
        cut_at: float | None = None
        for line in range(40):  # one header line every 0.25 s: 10 s if never cut
            try:
                trickler.sendall(f"X-Slow-{line}: y\r\n".encode())
            except OSError:
                cut_at = time.monotonic() - started
                break
            trickler.settimeout(0.25)
            try:
                if trickler.recv(1024) == b"":
                    cut_at = time.monotonic() - started
                    break
            except TimeoutError:
                pass
        assert cut_at is not None, "a trickled head was never cut off"
        assert 1.0 < cut_at < 8.0
        silent.settimeout(5)
        assert silent.recv(1024) == b""  # closed, with nothing sent back
        assert httpx.get(f"{served.base}/metadata", timeout=10).status_code == 200
        with httpx.Client(timeout=10) as keep_alive:  # one connection: slow requests between heads are fine
            assert keep_alive.get(f"{served.base}/metadata").status_code == 200
            time.sleep(1.5)
            assert keep_alive.get(f"{served.base}/metadata").status_code == 200
    finally:
        assert served.stop() == 0


def test_inbox_reads_the_database_of_a_running_serve(tmp_path: Path) -> None:
    """`calipso inbox` beside a running `calipso serve` on the same data dir: it finds that
    server's database (data_dir/database.uri) instead of failing on the data dir's lock."""
    import asyncio

    from hl7v2_bridge.client import MllpClient, ack_code
    from tests.bridge_fixtures import sample

    served = Served(tmp_path / "data", mllp=True)
    try:
        served.wait_ready()

        async def discharge() -> bytes:
            async with MllpClient("127.0.0.1", served.mllp_port) as client:
                return await client.send(sample("A03-discharge-home.hl7"))
        assert ack_code(asyncio.run(discharge())) == "AA"
        assert (tmp_path / "data" / "database.uri").exists()
        env = {k: v for k, v in os.environ.items() if not k.startswith("CALIPSO_")}
        listed = subprocess.run([*CALIPSO, "inbox", "--data-dir", str(tmp_path / "data"), "list"],
                                capture_output=True, text=True, env=env, timeout=120)
        assert listed.returncode == 0, listed.stderr
        assert "applied" in listed.stdout and "CHT20261120143000017" in listed.stdout
        assert "Traceback" not in listed.stderr
    finally:
        assert served.stop() == 0
    assert not (tmp_path / "data" / "database.uri").exists()  # a clean stop removes it


def test_inbox_replay_is_audited_like_the_listener(tmp_path: Path) -> None:
    """`calipso inbox replay` runs on the same services as `calipso serve` (services.py): a
    replayed message gets its AuditEvent, as one received over MLLP does."""
    import asyncio

    from hl7v2_bridge.client import MllpClient, ack_code
    from tests.bridge_fixtures import SAMPLES

    served = Served(tmp_path / "data", mllp=True)
    try:
        served.wait_ready()

        async def send() -> bytes:
            async with MllpClient("127.0.0.1", served.mllp_port) as client:
                return await client.send((SAMPLES / "bad" / "a03-without-pv1.hl7").read_bytes())
        assert ack_code(asyncio.run(send())) in ("AE", "AR")
        env = {k: v for k, v in os.environ.items() if not k.startswith("CALIPSO_")}
        replayed = subprocess.run([*CALIPSO, "inbox", "--data-dir", str(tmp_path / "data"), "replay", "--status", "rejected"],
                                  capture_output=True, text=True, env=env, timeout=120)
        assert "replayed 1 messages" in replayed.stdout, replayed.stdout + replayed.stderr
        events = httpx.get(f"{served.base}/AuditEvent", params={"_count": "100"}).json().get("entry", [])
        assert any("hl7:replay" in str(e["resource"]) for e in events), [e["resource"].get("agent") for e in events]
    finally:
        assert served.stop() == 0
