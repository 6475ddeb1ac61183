"""The care-team policy, as a deny/allow matrix: tokens x interactions x two patients.

Hélène's active care team holds the GP; the nurse Dubois left it yesterday (her participant
period ended); the nurse Moreau was never in a team; Hélène's daughter is her caregiver.
Jean is the other patient: nobody but the system token may see anything of his.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, AsyncIterator

import httpx
import pytest
from fastapi import FastAPI

from fhir_server.app import create_app
from fhir_server.security.dev_issuer import DevIssuer
from fhir_server.settings import Settings
from tests.conftest import fhir_client, notebook_entry, running

YESTERDAY = (datetime.now(timezone.utc) - timedelta(days=1)).date().isoformat()
PATIENTS = ("helene", "jean")


@pytest.fixture
async def secured(settings: Settings, tmp_path: Path) -> AsyncIterator[tuple[FastAPI, httpx.AsyncClient, DevIssuer]]:
    settings = replace(settings, auth=True, dev_issuer=True, data_dir=tmp_path)
    async with running(create_app(settings)) as app, fhir_client(app) as client:
        yield app, client, app.state.dev_issuer


def plain_client(app: FastAPI) -> httpx.AsyncClient:
    """For answers that are not FHIR JSON (discovery documents, HL7 ACKs)."""
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://calipso.test")


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def _notebook(client: httpx.AsyncClient, system: dict[str, str]) -> None:
    """Two patients and their notebooks, written with the system token."""
    resources: list[dict[str, Any]] = [
        {"resourceType": "Practitioner", "id": "gp", "name": [{"family": "Martin"}]},
        {"resourceType": "Practitioner", "id": "nurse-dubois", "name": [{"family": "Dubois"}]},
        {"resourceType": "Practitioner", "id": "nurse-moreau", "name": [{"family": "Moreau"}]},
        {"resourceType": "Patient", "id": "helene", "name": [{"family": "Lefèvre", "given": ["Hélène"]}]},
        {"resourceType": "Patient", "id": "jean", "name": [{"family": "Lefebvre", "given": ["Jean"]}]},
        {"resourceType": "RelatedPerson", "id": "daughter", "patient": {"reference": "Patient/helene"}, "name": [{"family": "Lefèvre"}]},
        {"resourceType": "CareTeam", "id": "team-helene", "status": "active", "subject": {"reference": "Patient/helene"},
         "participant": [{"member": {"reference": "Practitioner/gp"}},
                         {"member": {"reference": "Practitioner/nurse-dubois"}, "period": {"start": "2026-01-01", "end": YESTERDAY}}]},
        {"resourceType": "CareTeam", "id": "team-jean-old", "status": "inactive", "subject": {"reference": "Patient/jean"},
         "participant": [{"member": {"reference": "Practitioner/gp"}}]},
        {"resourceType": "CarePlan", "id": "plan-helene", "status": "active", "intent": "plan", "subject": {"reference": "Patient/helene"}},
        {"resourceType": "CarePlan", "id": "plan-jean", "status": "active", "intent": "plan", "subject": {"reference": "Patient/jean"}},
    ]
    for patient in PATIENTS:
        for n in range(3):
            resources.append({**notebook_entry(patient), "id": f"entry-{patient}-{n}"})
    for resource in resources:
        response = await client.put(f"/fhir/{resource['resourceType']}/{resource['id']}", json=resource, headers=system)
        assert response.status_code in (200, 201), response.text


def _ids(bundle: dict[str, Any], mode: str | None = None) -> set[str]:
    return {f"{e['resource']['resourceType']}/{e['resource']['id']}" for e in bundle.get("entry", [])
            if mode is None or e.get("search", {}).get("mode") == mode}


async def _reads(client: httpx.AsyncClient, headers: dict[str, str], patient: str) -> dict[str, Any]:
    """Every read interaction of the matrix on one patient: what it answered."""
    found: dict[str, Any] = {}
    found["read"] = (await client.get(f"/fhir/Communication/entry-{patient}-0", headers=headers)).status_code
    found["read-patient"] = (await client.get(f"/fhir/Patient/{patient}", headers=headers)).status_code
    search = await client.get("/fhir/Communication", params={"subject": f"Patient/{patient}", "_total": "accurate"}, headers=headers)
    found["search"] = (search.status_code, search.json().get("total") if search.status_code == 200 else None)
    include = await client.get("/fhir/Communication", params={"_include": "Communication:subject", "_count": "100"}, headers=headers)
    found["include"] = _ids(include.json(), "include") if include.status_code == 200 else include.status_code
    revinclude = await client.get("/fhir/Patient", params={"_revinclude": "Communication:subject", "_count": "100"}, headers=headers)
    found["revinclude"] = _ids(revinclude.json()) if revinclude.status_code == 200 else revinclude.status_code
    history = await client.get(f"/fhir/Communication/entry-{patient}-0/_history", headers=headers)
    found["history"] = history.status_code
    everything = await client.get(f"/fhir/Patient/{patient}/$everything", headers=headers)
    found["everything"] = len(_ids(everything.json())) if everything.status_code == 200 else everything.status_code
    return found


async def _writes(client: httpx.AsyncClient, headers: dict[str, str], patient: str) -> dict[str, Any]:
    """Every write interaction of the matrix on one patient: its status."""
    bundle = {"resourceType": "Bundle", "type": "transaction", "entry": [
        {"fullUrl": "urn:uuid:5f0c3b1e-1111-4a4a-9c9c-000000000001", "resource": notebook_entry(patient, "Visite faite"),
         "request": {"method": "POST", "url": "Communication"}}]}
    transaction = await client.post("/fhir", json=bundle, headers=headers)
    marker = {"system": "urn:x", "value": f"{patient}-{headers.get('Authorization', '')[-12:]}"}
    conditional = await client.post("/fhir/Communication", json={**notebook_entry(patient), "identifier": [marker]},
                                    headers={**headers, "If-None-Exist": f"identifier={marker['system']}|{marker['value']}"})
    return {"transaction": transaction.status_code, "conditional-create": conditional.status_code}


def _expected_reads(patient: str, reach: set[str], caregiver: bool) -> dict[str, Any]:
    """What a token reaching `reach` must see of `patient`: all of it, or nothing at all."""
    entries = {f"Communication/entry-{p}-{n}" for p in reach for n in range(3)}
    seen = {
        "include": {f"Patient/{p}" for p in reach},
        "revinclude": {f"Patient/{p}" for p in reach} | entries,
    }
    if patient not in reach:
        return {"read": 404, "read-patient": 404, "search": (200, 0), "history": 404, "everything": 404, **seen}
    compartment = {"helene": 7, "jean": 6}[patient] - (1 if caregiver else 0)  # caregivers: notebook types (no RelatedPerson)
    return {"read": 200, "read-patient": 200, "search": (200, 3), "history": 200, "everything": compartment, **seen}


def _expected_writes(patient: str, reach: set[str], may_write: bool) -> dict[str, Any]:
    if may_write and patient in reach:
        return {"transaction": 200, "conditional-create": 201}
    return {"transaction": 403, "conditional-create": 403}


async def test_deny_allow_matrix(audited: tuple[FastAPI, httpx.AsyncClient, DevIssuer]) -> None:
    app, client, issuer = audited
    aud = app.state.settings.auth_audience
    await _notebook(client, bearer(issuer.token("feed", "system/*.cruds", aud)))
    # name: (token, patients it reaches, scopes allow creating entries, caregiver)
    cases = {
        "gp": (issuer.token("gp", "user/*.cruds", aud, fhir_user="Practitioner/gp"), {"helene"}, True, False),
        "nurse-removed": (issuer.token("dubois", "user/*.cruds", aud, fhir_user="Practitioner/nurse-dubois"), set(), True, False),
        "nurse-outside": (issuer.token("moreau", "user/*.cruds", aud, fhir_user="Practitioner/nurse-moreau"), set(), True, False),
        "patient": (issuer.token("helene", "patient/*.read", aud, patient="helene"), {"helene"}, False, False),
        "caregiver": (issuer.token("daughter", "user/*.rs user/Communication.c", aud, fhir_user="RelatedPerson/daughter"),
                      {"helene"}, True, True),
    }
    leaks = []
    for name, (token, reach, may_write, caregiver) in cases.items():  # reads first: the writes below add entries
        for patient in PATIENTS:
            got = await _reads(client, bearer(token), patient)
            for interaction, answer in _expected_reads(patient, reach, caregiver).items():
                if got[interaction] != answer:
                    leaks.append((name, patient, interaction, got[interaction], answer))
    for name, (token, reach, may_write, caregiver) in cases.items():
        for patient in PATIENTS:
            got = await _writes(client, bearer(token), patient)
            for interaction, answer in _expected_writes(patient, reach, may_write).items():
                if got[interaction] != answer:
                    leaks.append((name, patient, interaction, got[interaction], answer))
    assert leaks == []

    # every access of the matrix left its AuditEvent, with its outcome; practitioners cannot read them
    await app.state.audit.flush()
    system = bearer(issuer.token("auditor", "system/*.rs", aud))
    events = await _audit_events(client, system, altid="Practitioner/gp")
    assert len(events) == 2 * (7 + 2)  # two patients x (7 reads + 2 writes)
    assert [e["outcome"] for e in events].count("0") == 7 + 2 + 3  # all of helene's; for jean the searches (empty of him)
    for who in ("Practitioner/nurse-dubois", "Practitioner/nurse-moreau", "Patient/helene", "RelatedPerson/daughter"):
        assert len(await _audit_events(client, system, altid=who)) == 2 * (7 + 2), who
    gp = bearer(cases["gp"][0])
    assert (await client.get("/fhir/AuditEvent", headers=gp)).status_code == 403
    assert (await client.get(f"/fhir/AuditEvent/{events[0]['id']}", headers=gp)).status_code == 403


async def test_system_token_sees_both_patients(secured: tuple[FastAPI, httpx.AsyncClient, DevIssuer]) -> None:
    app, client, issuer = secured
    system = bearer(issuer.token("feed", "system/*.cruds", app.state.settings.auth_audience))
    await _notebook(client, system)
    for patient in PATIENTS:
        got = await _reads(client, system, patient)
        assert got["read"] == 200 and got["search"] == (200, 3) and got["everything"] == (7 if patient == "helene" else 6)
        assert got["include"] == {"Patient/helene", "Patient/jean"}
        assert await _writes(client, system, patient) == {"transaction": 200, "conditional-create": 201}


@pytest.mark.parametrize("case", ["expired", "wrong-audience", "bad-signature", "no-token", "not-a-jwt", "hs256"])
async def test_invalid_tokens_get_401_everywhere(secured: tuple[FastAPI, httpx.AsyncClient, DevIssuer], tmp_path: Path, case: str) -> None:
    app, client, issuer = secured
    aud = app.state.settings.auth_audience
    await _notebook(client, bearer(issuer.token("feed", "system/*.cruds", aud)))
    import jwt

    headers = {
        "expired": bearer(issuer.token("gp", "user/*.cruds", aud, fhir_user="Practitioner/gp", now=datetime.now().timestamp() - 7200)),
        "wrong-audience": bearer(issuer.token("gp", "user/*.cruds", "https://other.example/fhir", fhir_user="Practitioner/gp")),
        "bad-signature": bearer(DevIssuer(tmp_path / "other").token("gp", "system/*.cruds", aud)),
        "no-token": {},
        "not-a-jwt": bearer("not.a.token"),
        "hs256": bearer(jwt.encode({"iss": "urn:calipso:dev-issuer", "sub": "x", "aud": aud, "exp": 9999999999,
                                    "scope": "system/*.cruds"}, "secret-secret-secret-secret-32by", algorithm="HS256")),
    }[case]
    for patient in PATIENTS:
        got = {**await _reads(client, headers, patient), **await _writes(client, headers, patient)}
        assert set(got.values()) <= {401, (401, None)}, got
    response = await client.get("/fhir/Patient/helene", headers=headers)
    assert response.status_code == 401 and response.headers["www-authenticate"].startswith("Bearer")
    assert "Lefèvre" not in response.text


async def test_public_discovery_needs_no_token(secured: tuple[FastAPI, httpx.AsyncClient, DevIssuer]) -> None:
    app, client, issuer = secured
    statement = (await client.get("/fhir/metadata")).json()
    service = statement["rest"][0]["security"]["service"][0]["coding"][0]
    assert service["code"] == "SMART-on-FHIR"
    async with plain_client(app) as plain:
        smart = (await plain.get("/fhir/.well-known/smart-configuration")).json()
        keys = (await plain.get("/fhir/.well-known/jwks.json")).json()["keys"]
    assert "permission-v2" in smart["capabilities"] and smart["jwks_uri"].endswith("/.well-known/jwks.json")
    assert [k["kid"] for k in keys] == [issuer.kid] and "d" not in keys[0]  # the public half only


async def test_hl7_inbox_takes_system_scopes_only(secured: tuple[FastAPI, httpx.AsyncClient, DevIssuer]) -> None:
    app, client, issuer = secured
    aud = app.state.settings.auth_audience
    message = b"MSH|^~\\&|A|B|C|D|20261120143000||ADT^A08^ADT_A01|X1|P|2.5\rEVN|A08|20261120143000\r"
    gp = bearer(issuer.token("gp", "user/*.cruds", aud, fhir_user="Practitioner/gp"))
    response = await client.post("/hl7v2", content=message, headers={**gp, "Content-Type": "x-application/hl7-v2+er7"})
    assert response.status_code == 403
    system = bearer(issuer.token("feed", "system/*.cruds", aud))
    async with plain_client(app) as plain:
        response = await plain.post("/hl7v2", content=message, headers={**system, "Content-Type": "x-application/hl7-v2+er7"})
    assert response.status_code == 200 and b"MSA|AE|X1" in response.content  # admitted: the bridge answered (no PID)


async def test_type_and_system_history_need_a_system_scope(secured: tuple[FastAPI, httpx.AsyncClient, DevIssuer]) -> None:
    app, client, issuer = secured
    aud = app.state.settings.auth_audience
    await _notebook(client, bearer(issuer.token("feed", "system/*.cruds", aud)))
    gp = bearer(issuer.token("gp", "user/*.cruds", aud, fhir_user="Practitioner/gp"))
    assert (await client.get("/fhir/Communication/_history", headers=gp)).status_code == 403
    assert (await client.get("/fhir/_history", headers=gp)).status_code == 403
    assert (await client.get("/fhir", params={"_type": "Communication"}, headers=gp)).status_code == 200
    assert (await client.get("/fhir", headers=gp)).status_code == 403  # without _type: refused, not scanned


@pytest.fixture
async def audited(settings: Settings, tmp_path: Path) -> AsyncIterator[tuple[FastAPI, httpx.AsyncClient, DevIssuer]]:
    settings = replace(settings, auth=True, dev_issuer=True, data_dir=tmp_path, audit=True)
    async with running(create_app(settings)) as app, fhir_client(app) as client:
        yield app, client, app.state.dev_issuer


async def _audit_events(client: httpx.AsyncClient, system: dict[str, str], **params: str) -> list[dict[str, Any]]:
    bundle = (await client.get("/fhir/AuditEvent", params={"_count": "1000", **params}, headers=system)).json()
    return [e["resource"] for e in bundle.get("entry", [])]


async def test_every_access_is_audited_and_only_system_reads_the_trail(audited: tuple[FastAPI, httpx.AsyncClient, DevIssuer]) -> None:
    app, client, issuer = audited
    aud = app.state.settings.auth_audience
    system = bearer(issuer.token("feed", "system/*.cruds", aud))
    gp = bearer(issuer.token("gp", "user/*.cruds", aud, fhir_user="Practitioner/gp"))
    await _notebook(client, system)
    await app.state.audit.flush()
    before = {e["id"] for e in await _audit_events(client, system)}
    reads = await _reads(client, gp, "jean")  # 7 requests, every one denied
    writes = await _writes(client, gp, "helene")  # 2 requests, allowed
    await client.get("/fhir/Patient/helene", headers={"Authorization": "Bearer forged"})
    await app.state.audit.flush()

    new = [e for e in await _audit_events(client, system) if e["id"] not in before]
    searches_of_the_trail = [e for e in new if e["agent"][0]["altId"] == "system:feed"]
    assert len(searches_of_the_trail) == 1  # the search above that counted `before`
    assert len(new) == 1 + len(reads) + len(writes) + 1
    by_gp = [e for e in new if e["agent"][0].get("who", {}).get("reference") == "Practitioner/gp"]
    assert len(by_gp) == len(reads) + len(writes)
    denied_read = next(e for e in by_gp if e["subtype"][0]["code"] == "read" and e.get("entity", [{}])[0].get("what", {}).get("reference") == "Communication/entry-jean-0")
    assert denied_read["outcome"] == "4" and denied_read["action"] == "R"
    created = [e for e in by_gp if e["action"] == "C"]
    assert [e["outcome"] for e in created] == ["0"]
    assert any(e["agent"][0]["altId"] == "anonymous" and e["outcome"] == "4" for e in new)  # the forged token
    validator = app.state.engine.validator
    for event in new:
        assert [i for i in validator.validate_all(event, "AuditEvent") if i.severity == "error"] == [], event

    assert (await client.get("/fhir/AuditEvent", headers=gp)).status_code == 403
    assert (await client.get(f"/fhir/AuditEvent/{denied_read['id']}", headers=gp)).status_code == 403
    everything = await client.get("/fhir/Patient/helene/$everything", headers=gp)
    assert all(e["resource"]["resourceType"] != "AuditEvent" for e in everything.json().get("entry", []))


async def test_the_journal_keeps_what_a_crash_did_not_commit(audited: tuple[FastAPI, httpx.AsyncClient, DevIssuer], tmp_path: Path) -> None:
    """Records not yet committed when the process dies are committed at the next start."""
    from fhir_server.security.audit import JOURNAL, AuditTrail, audit_event, engine_committer

    app, client, issuer = audited
    engine = app.state.engine
    failing = AuditTrail(_refusing_commit, tmp_path / "crashed")
    await failing.start()
    recorded = [audit_event("read", "R", 200, "Practitioner/gp", "10.0.0.1", "Patient", "helene") for _ in range(3)]
    for event in recorded:
        failing.record(event)
    assert (tmp_path / "crashed" / JOURNAL.format(role="api")).read_bytes().count(b"\n") == 3  # on disk before any commit
    # the process "dies": no stop(), nothing committed
    revived = AuditTrail(engine_committer(engine), tmp_path / "crashed")
    await revived.start()
    await revived.stop()
    stored = await engine.store.read_many([f"AuditEvent/{e['id']}" for e in recorded])
    assert len(stored) == 3
    again = AuditTrail(engine_committer(engine), tmp_path / "crashed")  # nothing left, nothing written twice
    await again.start()
    await again.stop()
    assert (tmp_path / "crashed" / JOURNAL.format(role="api")).read_bytes() == b""


async def _refusing_commit(events: list[dict[str, Any]]) -> None:
    raise ConnectionError("database unreachable")


async def test_leaving_the_care_team_takes_effect_at_once(secured: tuple[FastAPI, httpx.AsyncClient, DevIssuer]) -> None:
    app, client, issuer = secured
    aud = app.state.settings.auth_audience
    system = bearer(issuer.token("feed", "system/*.cruds", aud))
    await _notebook(client, system)
    gp = bearer(issuer.token("gp", "user/*.cruds", aud, fhir_user="Practitioner/gp"))
    assert (await client.get("/fhir/Communication/entry-helene-0", headers=gp)).status_code == 200
    team = (await client.get("/fhir/CareTeam/team-helene", headers=system)).json()
    team["participant"] = [p for p in team["participant"] if p["member"]["reference"] != "Practitioner/gp"]
    assert (await client.put("/fhir/CareTeam/team-helene", json=team, headers=system)).status_code == 200
    assert (await client.get("/fhir/Communication/entry-helene-0", headers=gp)).status_code == 404  # same token, no delay
    search = (await client.get("/fhir/Communication", params={"_total": "accurate"}, headers=gp)).json()
    assert search["total"] == 0


async def test_chains_and_has_see_only_what_the_token_reaches(secured: tuple[FastAPI, httpx.AsyncClient, DevIssuer]) -> None:
    app, client, issuer = secured
    aud = app.state.settings.auth_audience
    await _notebook(client, bearer(issuer.token("feed", "system/*.cruds", aud)))
    gp = bearer(issuer.token("gp", "user/*.cruds", aud, fhir_user="Practitioner/gp"))
    chained = await client.get("/fhir/Communication", params={"subject:Patient.name": "Lefebvre", "_total": "accurate"}, headers=gp)
    assert chained.json()["total"] == 0  # Jean's entries exist, the GP does not reach them
    reverse = await client.get("/fhir/Patient", params={"_has:Communication:subject:status": "completed", "_total": "accurate"}, headers=gp)
    assert _ids(reverse.json()) == {"Patient/helene"} and reverse.json()["total"] == 1
    paged = await client.get("/fhir/Communication", params={"_count": "2", "_total": "accurate"}, headers=gp)
    walked = _ids(paged.json())
    while (after := next((link["url"] for link in paged.json().get("link", []) if link["relation"] == "next"), None)):
        paged = await client.get(after.split("calipso.test", 1)[-1], headers=gp)
        walked |= _ids(paged.json())
    assert walked == {f"Communication/entry-helene-{n}" for n in range(3)}


async def test_hl7_messages_over_mllp_are_audited(settings: Settings, tmp_path: Path) -> None:
    from hl7v2_bridge.client import MllpClient
    from tests.bridge_fixtures import sample

    audited_bridge = replace(settings, auth=True, dev_issuer=True, data_dir=tmp_path, audit=True, mllp_port=0)
    async with running(create_app(audited_bridge)) as app, fhir_client(app) as client:
        async with MllpClient("127.0.0.1", app.state.mllp_port) as mllp:
            await mllp.send(sample("A03-discharge-home.hl7"))
        await app.state.audit.flush()
        system = bearer(app.state.dev_issuer.token("auditor", "system/*.rs", app.state.settings.auth_audience))
        events = await _audit_events(client, system, type="http://dicom.nema.org/resources/ontology/DCM|110107")
        assert len(events) == 1 and events[0]["outcome"] == "0" and events[0]["outcomeDesc"] == "ACK AA"
        assert events[0]["entity"][0]["what"]["identifier"]["value"].endswith("|CHT20261120143000017")
