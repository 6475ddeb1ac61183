"""The built wheel is the product: installed alone (no source tree beside it), it serves the
guide and applies HL7 v2 discharges, so profiles/ and mappings/ travel inside it."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import httpx

from conformance.server import free_port
from tests.bridge_fixtures import sample
from tests.conftest import project_root


def test_a_wheel_installed_alone_serves_the_guide_the_app_and_maps_discharges(tmp_path: Path) -> None:
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", str(project_root()), "--no-deps", "-q", "-w", str(tmp_path / "dist")],
                           capture_output=True, text=True, timeout=600)
    assert built.returncode == 0, built.stderr[-2000:]
    wheel = next((tmp_path / "dist").glob("calipso-*.whl"))
    target = tmp_path / "site"
    installed = subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(target), str(wheel)],
                               capture_output=True, text=True, timeout=600)
    assert installed.returncode == 0, installed.stderr[-2000:]
    # The wheel's packages come first on the path; the run happens away from the source tree.
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("CALIPSO_")}, "PYTHONPATH": str(target)}
    where = subprocess.run([sys.executable, "-c", "import fhir_server.ig as g, hl7v2_bridge.mapping as m; print(g.PROFILES_DIR); print(m.MAPPINGS_DIR)"],
                           capture_output=True, text=True, cwd=tmp_path, env=env, timeout=120)
    assert where.returncode == 0, where.stderr
    assert all(line.startswith(str(target)) for line in where.stdout.split()), where.stdout
    port, mllp_port = free_port(), free_port()
    with open(tmp_path / "serve.log", "wb") as log:
        server = subprocess.Popen([sys.executable, "-m", "fhir_server.cli", "serve", "--auth", "off", "--port", str(port),
                                   "--mllp-port", str(mllp_port), "--data-dir", str(tmp_path / "data")],
                                  cwd=tmp_path, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        base = f"http://127.0.0.1:{port}/fhir"
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            assert server.poll() is None, (tmp_path / "serve.log").read_text()
            try:
                if httpx.get(f"{base}/metadata", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.3)
        entry_profile = "https://fhir.hopitauxchampagnesud.fr/calipso/StructureDefinition/notebook-entry"
        found = httpx.get(f"{base}/StructureDefinition", params={"url": entry_profile}).json()
        assert [e["resource"]["url"] for e in found.get("entry", [])] == [entry_profile]  # the guide was installed
        import asyncio

        from hl7v2_bridge.client import MllpClient, ack_code

        async def discharge() -> bytes:
            async with MllpClient("127.0.0.1", mllp_port) as client:
                return await client.send(sample("A03-discharge-home.hl7"))
        assert ack_code(asyncio.run(discharge())) == "AA"
        origin = base.rsplit("/fhir", 1)[0]  # the web app and its vendored libraries ship in the wheel
        for path in ("/app/", "/app/js/main.js", "/app/vendor/preact.module.js", "/app/guide.json", "/cdl/metadata"):
            assert httpx.get(f"{origin}{path}", timeout=10).status_code == 200, path
        demo = subprocess.run([sys.executable, "-m", "fhir_server.cli", "demo", "--server", base, "--mllp-port", str(mllp_port),
                               "--data-dir", str(tmp_path / "data")], capture_output=True, text=True, cwd=tmp_path, env=env, timeout=120)
        assert demo.returncode == 0 and "11 entries" in demo.stdout, demo.stderr  # the demo's data ship too
    finally:
        server.terminate()
        server.wait(60)
