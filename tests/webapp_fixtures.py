"""One real `calipso serve` (tokens on, the dev issuer trusted, MLLP open) with the demo loaded
by `calipso demo`, shared by the web app's tests, and helpers to read it with a token."""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from typing import Any, Iterator

import httpx
import pytest

from conformance.server import CALIPSO, Served

PATIENT_IPP = "urn:oid:1.2.250.1.71.4.2.2.100000999|000777001"
RPPS = "https://rpps.esante.gouv.fr"
PEOPLE = {"gp": "10000000101", "nurse": "10000000102", "physio": "10000000103", "pharmacist": "10000000104"}


@dataclass
class DemoServer:
    served: Served
    output: str

    def system_token(self) -> str:
        return self.served.token("--sub", "test-system", "--scope", "system/*.cruds")

    def search(self, query: str, token: str | None = None) -> dict[str, Any]:
        headers = {"Authorization": f"Bearer {token or self.system_token()}"}
        response = httpx.get(f"{self.served.base}/{query}", headers=headers, timeout=30)
        assert response.status_code == 200, response.text
        return dict(response.json())

    def matches(self, query: str, token: str | None = None) -> list[dict[str, Any]]:
        bundle = self.search(query, token)
        return [e["resource"] for e in bundle.get("entry", []) if e.get("search", {}).get("mode") == "match"]

    def reference(self, who: str) -> str:
        """"Practitioner/x" for a demo professional, the patient, or the daughter."""
        if who == "patient":
            return f"Patient/{self.matches(f'Patient?identifier={PATIENT_IPP}')[0]['id']}"
        if who == "daughter":
            patient = self.reference("patient")
            return f"RelatedPerson/{self.matches(f'RelatedPerson?patient={patient}')[0]['id']}"
        return f"Practitioner/{self.matches(f'Practitioner?identifier={RPPS}|{PEOPLE[who]}')[0]['id']}"

    def run_demo(self) -> str:
        done = subprocess.run(CALIPSO + ["demo", "--server", self.served.base, "--mllp-port", str(self.served.mllp_port),
                                         "--data-dir", str(self.served.data_dir)], capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
        return done.stdout


@pytest.fixture(scope="session")
def demo_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DemoServer]:
    served = Served(tmp_path_factory.mktemp("demo") / "data", mllp=True, auth=True, log_level="warning")
    try:
        served.wait_ready()
        server = DemoServer(served, "")
        server.output = server.run_demo()
        yield server
    finally:
        served.stop()
