"""`$export` against real `calipso serve` processes: a kill -9 in the middle of an export, a Group
of 100 patients with 10,000 entries exported while the API serves reads, a public bulk client
(smart-fetch, from the SMART Health IT / Cumulus project) and `calipso export`."""

from __future__ import annotations

import gzip
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from conformance.server import CALIPSO, Served
from tests.conftest import notebook_entry, notebook_patient

ASYNC = {"Prefer": "respond-async", "Accept": "application/fhir+json"}
ENCOUNTER = {"resourceType": "Encounter", "status": "finished",
             "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "HH"}}


def load(base: str, resources: list[dict[str, Any]], headers: dict[str, str] | None = None, chunk: int = 500) -> None:
    """PUT the resources (ids given) in transaction Bundles."""
    for start in range(0, len(resources), chunk):
        entries = [{"resource": r, "request": {"method": "PUT", "url": f"{r['resourceType']}/{r['id']}"}}
                   for r in resources[start:start + chunk]]
        answer = httpx.post(base, json={"resourceType": "Bundle", "type": "transaction", "entry": entries}, headers=headers, timeout=300)
        assert answer.status_code == 200, answer.text[:500]


def notebook(patients: int, entries: int) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    for p in range(patients):
        found.append(notebook_patient(id=f"pat-{p:03}"))
        found += [{**notebook_entry(f"pat-{p:03}", f"Passage {n}"), "id": f"pat-{p:03}-{n:04}"} for n in range(entries)]
    return found


def group(name: str, members: list[str]) -> dict[str, Any]:
    return {"resourceType": "Group", "id": name, "type": "person", "actual": True,
            "member": [{"entity": {"reference": f"Patient/{m}"}} for m in members]}


def kick_off(base: str, path: str, headers: dict[str, str] | None = None) -> str:
    answer = httpx.get(f"{base}{path}", headers={**ASYNC, **(headers or {})})
    assert answer.status_code == 202, answer.text
    return answer.headers["content-location"]


def wait_manifest(status_url: str, headers: dict[str, str] | None = None, timeout: float = 300) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        answer = httpx.get(status_url, headers=headers)
        if answer.status_code == 200:
            return dict(answer.json())
        assert answer.status_code == 202, answer.text
        time.sleep(0.1)
    raise AssertionError("the export did not finish")


def download(body: dict[str, Any], headers: dict[str, str] | None = None) -> list[dict[str, Any]]:
    found = []
    for item in body["output"]:
        answer = httpx.get(item["url"], headers=headers, timeout=60)
        assert answer.status_code == 200
        lines = [orjson.loads(line) for line in answer.content.splitlines()]
        assert len(lines) == item["count"]
        found += lines
    return found


@pytest.mark.parametrize("path", ["/$export?_type=Communication", "/Group/four/$export?_type=Communication"], ids=["system", "group"])
def test_an_export_survives_a_kill_9_and_resumes_where_it_stood(database_uri: str, tmp_path: Path, path: str) -> None:
    env = {"CALIPSO_MONGODB_URI": database_uri, "CALIPSO_DATABASE": f"test_{uuid.uuid4().hex[:16]}", "CALIPSO_AUDIT": "off",
           "CALIPSO_EXPORT_MAX_PER_SECOND": "100", "CALIPSO_EXPORT_PAGE_SIZE": "25", "CALIPSO_EXPORT_LEASE_SECONDS": "3"}
    first = Served(tmp_path / "data", env=env)
    try:
        first.wait_ready()
        load(first.base, [*notebook(4, 300), group("four", [f"pat-{p:03}" for p in range(4)])])
        status_url = kick_off(first.base, path)
        while not (progress := httpx.get(status_url).headers.get("x-progress", "queued"))[0].isdigit() or int(progress.split()[0]) < 100:
            time.sleep(0.05)
        os.kill(first.process.pid, signal.SIGKILL)
        first.process.wait(10)
    finally:
        if first.process.poll() is None:
            first.stop()
    second = Served(tmp_path / "data", env=env)  # the same data folder, the same database
    try:
        second.wait_ready()
        body = wait_manifest(status_url.replace(first.base, second.base))
        entries = download(body)
        keys = [r["id"] for r in entries]
        assert len(keys) == 1200 and len(set(keys)) == 1200  # every entry once: resumed, not restarted nor doubled
        parts = [o for o in body["output"] if o["type"] == "Communication"]
        assert len(parts) >= 2 and parts[0]["count"] >= 100  # the part written before the kill, then the resumed one
    finally:
        second.stop()


def test_a_group_of_100_patients_and_10000_entries_exports_while_reads_go_on(database_uri: str, tmp_path: Path) -> None:
    env = {"CALIPSO_MONGODB_URI": database_uri, "CALIPSO_DATABASE": f"test_{uuid.uuid4().hex[:16]}", "CALIPSO_AUDIT": "off"}
    served = Served(tmp_path / "data", env=env)
    try:
        served.wait_ready()
        load(served.base, notebook(100, 100))
        outsider = [notebook_patient(id="outsider"), {**notebook_entry("outsider"), "id": "outsider-entry"}]
        load(served.base, [*outsider, group("cohort", [f"pat-{p:03}" for p in range(100)])])
        answers: list[int] = []
        stop = threading.Event()

        def reads() -> None:
            with httpx.Client(base_url=served.base) as client:
                while not stop.is_set():
                    answers.append(client.get("/Communication/pat-042-0042").status_code)

        reader = threading.Thread(target=reads)
        reader.start()
        try:
            body = wait_manifest(kick_off(served.base, "/Group/cohort/$export"))
        finally:
            stop.set()
            reader.join()
        counts = {o["type"]: o["count"] for o in body["output"]}
        assert counts == {"Patient": 100, "Communication": 10_000, "Group": 1}
        assert "outsider-entry" not in {r["id"] for r in download(body)}
        assert answers and set(answers) == {200}  # (their latency: bench/export.py)
    finally:
        served.stop()


def test_smart_fetch_downloads_an_export_unchanged(tmp_path: Path) -> None:
    """smart-fetch (PyPI, SMART Health IT's bulk client) with a bearer token: kick-off, polling,
    gzip downloads, then its DELETE of the finished job."""
    served = Served(tmp_path / "data", auth=True)
    try:
        served.wait_ready()
        token = served.token("--sub", "warehouse", "--scope", "system/*.rs system/*.cud")
        headers = {"Authorization": f"Bearer {token}"}
        resources = notebook(3, 2) + [{**ENCOUNTER, "id": f"stay-{p}", "subject": {"reference": f"Patient/pat-{p:03}"}} for p in range(3)]
        load(served.base, [*resources, group("pair", ["pat-000", "pat-001"])], headers)
        (tmp_path / "token").write_text(token)
        done = subprocess.run([str(Path(sys.executable).parent / "smart-fetch"), "bulk", "--fhir-url", served.base, "--bearer-token",
                               str(tmp_path / "token"), "--type", "Patient,Encounter", "--group", "pair", str(tmp_path / "out")],
                              capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stdout + done.stderr
        got = {path.name: [orjson.loads(line) for line in gzip.decompress(path.read_bytes()).splitlines()]
               for path in (tmp_path / "out").glob("*.ndjson.gz")}
        assert {r["id"] for r in got["Patient.001.ndjson.gz"]} == {"pat-000", "pat-001"}
        assert {r["id"] for r in got["Encounter.001.ndjson.gz"]} == {"stay-0", "stay-1"}
        for resource in got["Encounter.001.ndjson.gz"]:
            assert httpx.get(f"{served.base}/Encounter/{resource['id']}", headers=headers).json() == resource
        log = [orjson.loads(line) for line in (tmp_path / "out" / "log.ndjson").read_bytes().splitlines()]
        status_url = log[0]["exportId"]
        assert status_url.startswith(served.base + "/$export-status/")
        assert httpx.get(status_url, headers=headers).status_code == 404  # smart-fetch deleted the finished job
    finally:
        served.stop()


def test_calipso_export_downloads_a_group_and_frees_the_server(tmp_path: Path) -> None:
    served = Served(tmp_path / "data", auth=True)
    try:
        served.wait_ready()
        token = served.token("--sub", "operator", "--scope", "system/*.rs system/*.cud")
        load(served.base, [*notebook(2, 3), group("pair", ["pat-000", "pat-001"])], {"Authorization": f"Bearer {token}"})
        out = tmp_path / "out"
        done = subprocess.run([*CALIPSO, "export", "--server", served.base, "--group", "pair", "--type", "Patient,Communication",
                               "--out", str(out)], capture_output=True, text=True, timeout=300, env={**os.environ, "CALIPSO_TOKEN": token})
        assert done.returncode == 0, done.stderr
        assert "exported 6 Communication, 2 Patient into 2 file(s)" in done.stdout
        manifest = orjson.loads((out / "manifest.json").read_bytes())
        assert sorted(p.name for p in out.glob("*.ndjson")) == ["Communication-1.ndjson", "Patient-1.ndjson"]
        job = manifest["output"][0]["url"].split("/")[-2]
        gone = httpx.get(f"{served.base}/$export-status/{job}", headers={"Authorization": f"Bearer {token}"})
        assert gone.status_code == 404  # downloaded, then deleted on the server
        refused = subprocess.run([*CALIPSO, "export", "--server", served.base, "--type", "Nonsense", "--out", str(out)],
                                 capture_output=True, text=True, timeout=120, env={**os.environ, "CALIPSO_TOKEN": token})
        assert refused.returncode == 1 and "HTTP 400" in refused.stderr and "Nonsense" in refused.stderr
        unauthorized = subprocess.run([*CALIPSO, "export", "--server", served.base, "--out", str(out)],
                                      capture_output=True, text=True, timeout=120, env={k: v for k, v in os.environ.items() if k != "CALIPSO_TOKEN"})
        assert unauthorized.returncode == 1 and "HTTP 401" in unauthorized.stderr
    finally:
        served.stop()
