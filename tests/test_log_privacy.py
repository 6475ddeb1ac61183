"""No patient data in the logs: a real `calipso serve` process (debug logging, auth on) goes
through a notebook scenario over HTTP and MLLP, errors included; then its log is searched for
every name, birth date and INS the scenario used."""

from __future__ import annotations

import asyncio
import unicodedata
from pathlib import Path

import httpx

from conformance.server import Served
from hl7v2_bridge.client import MllpClient
from tests.bridge_fixtures import sample

SECRETS = ["Lefèvre", "Hélène", "1948-03-12", "19480312", "248037512345678",  # the FHIR patient
           "MARTIN", "Jeanne", "DUPONT", "19450312", "1945-03-12", "1450312123456", "PETIT", "Claire"]  # the HL7 one


def _variants(secret: str) -> set[str]:
    folded = unicodedata.normalize("NFKD", secret).encode("ascii", "ignore").decode()
    return {secret, secret.lower(), secret.upper(), folded, folded.lower(), folded.upper()}


def test_no_patient_data_reaches_the_log(tmp_path: Path) -> None:
    served = Served(tmp_path / "data", mllp=True, auth=True, log_level="debug")
    try:
        served.wait_ready()
        system = {"Authorization": f"Bearer {served.token('--sub', 'feed', '--scope', 'system/*.cruds')}"}
        asyncio.run(_scenario(served, system))
    finally:
        served.stop()
    log = served.log.read_text(errors="replace")
    assert "request method=" in log  # the log was written (debug level)
    found = sorted({variant for secret in SECRETS for variant in _variants(secret) if variant in log})
    assert found == [], f"patient data in the log: {found}"


async def _scenario(served: Served, system: dict[str, str]) -> None:
    patient = {
        "resourceType": "Patient", "name": [{"family": "Lefèvre", "given": ["Hélène"]}], "birthDate": "1948-03-12",
        "identifier": [{"system": "urn:oid:1.2.250.1.213.1.4.8", "value": "248037512345678"}],
    }
    headers = {**system, "Content-Type": "application/fhir+json"}
    async with httpx.AsyncClient(base_url=served.base, timeout=30) as client:
        created = await client.post("/Patient", json=patient, headers=headers)
        assert created.status_code == 201
        ident = created.json()["id"]
        await client.get("/Patient", params={"name": "Lefèvre", "birthdate": "1948-03-12"}, headers=system)
        await client.get("/Patient", params={"identifier": "urn:oid:1.2.250.1.213.1.4.8|248037512345678"}, headers=system)
        await client.post("/Patient", json={**patient, "birthDate": "Hélène Lefèvre"}, headers=headers)  # 422
        await client.post("/Patient", content='{"resourceType": "Patient", "name": [{"family": "Lefèvre"', headers=headers)  # 400
        await client.put(f"/Patient/{ident}", json={**patient, "id": ident, "gender": "Lefèvre"}, headers=headers)
        await client.get("/Patient", params={"name": "Lefèvre"}, headers={"Authorization": "Bearer Lefevre-Helene"})  # 401
        await client.get("/Patient", params={"name:unknown-modifier": "Lefèvre"}, headers={**system, "Prefer": "handling=strict"})
        await client.post(f"{served.base.removesuffix('/fhir')}/hl7v2", content=b"MSH|garbage Lef\xe8vre\r",
                          headers={**system, "Content-Type": "x-application/hl7-v2+er7"})
    good = sample("A03-discharge-home.hl7")
    no_discharge_date = good.replace(b"CHT20261120143000017", b"CHT-LOG-2").replace(b"|20261120140000|", b"||")
    async with MllpClient("127.0.0.1", served.mllp_port) as mllp:
        for message in (good, good, no_discharge_date, good.replace(b"CHT20261120143000017", b"CHT-LOG-3").replace(b"PID|", b"PXD|")):
            await mllp.send(message)
