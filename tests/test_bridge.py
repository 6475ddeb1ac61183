"""The HL7 v2 bridge over a real MLLP socket, against the real database."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
from fastapi import FastAPI

from fhir_server.ig import load_guide
from fhir_server.spec import load_spec
from fhir_server.validation import Validator
from hl7v2_bridge.client import MllpClient, ack_code
from fhir_server.storage.inbox import APPLIED, REJECTED, digest
from hl7v2_bridge.ordering import PatientTurns
from tests.bridge_fixtures import STORY, counts, sample, search

C = load_guide().canonical
RPPS = "https://rpps.esante.gouv.fr"
validator = Validator(load_spec(), load_guide())


def _rpps(resource: dict[str, Any]) -> str:
    return next(i["value"] for i in resource["identifier"] if i["system"] == RPPS)


def _err(ack: bytes) -> list[str]:
    return [s.decode("latin-1") for s in ack.split(b"\r") if s.startswith(b"ERR")]


async def _send(port: int, *messages: bytes) -> list[bytes]:
    async with MllpClient("127.0.0.1", port) as client:
        return [await client.send(m) for m in messages]


async def test_the_french_story_builds_the_notebook(bridged: tuple[FastAPI, httpx.AsyncClient, int]) -> None:
    app, client, port = bridged
    admission, discharge = await _send(port, sample(STORY[0]), sample(STORY[1]))
    assert ack_code(admission) == "AA" and ack_code(discharge) == "AA", _err(admission) + _err(discharge)
    assert b"MSA|AA|CHT20261120143000017" in discharge

    patients = await search(client, "Patient")
    assert len(patients) == 1
    patient = patients[0]
    assert patient["name"][0]["family"] == "MARTIN" and patient["gender"] == "female" and patient["birthDate"] == "1945-03-12"
    assert {i["value"] for i in patient["identifier"]} == {"000123456", "1450312123456"}

    stays = await search(client, "Encounter")
    assert len(stays) == 1 and stays[0]["status"] == "finished"
    assert stays[0]["period"]["end"] == "2026-11-20T14:00:00+01:00"
    assert stays[0]["hospitalization"]["dischargeDisposition"]["coding"][0]["code"] == "home"

    entries = await search(client, "Communication", subject=f"Patient/{patient['id']}")
    assert len(entries) == 1
    entry = entries[0]
    assert entry["category"][0]["coding"][0]["code"] == "discharge-info"
    text = entry["payload"][0]["contentString"]
    for expected in ("Sortie le 20/11/2026 à 14h00", "retour à domicile", "Insuffisance cardiaque congestive (I50.0)",
                     "Régime sans sel", "Claire PETIT", "Antoine ROUX"):
        assert expected in text
    assert entry["sender"]["reference"].startswith("Practitioner/")

    plans = await search(client, "CarePlan", subject=f"Patient/{patient['id']}", status="active")
    assert len(plans) == 1 and plans[0]["careTeam"][0]["reference"].startswith("CareTeam/")
    assert entry["basedOn"][0]["reference"] == f"CarePlan/{plans[0]['id']}"

    teams = await search(client, "CareTeam", patient=patient["id"])
    assert len(teams) == 1
    practitioners = {p["id"]: p for p in await search(client, "Practitioner")}
    members = [m["member"]["reference"] for m in teams[0]["participant"]]
    rpps = {_rpps(practitioners[r.split("/")[1]]) for r in members if r.startswith("Practitioner/")}
    assert rpps == {"10009988776", "10001122334", "10005566778", "10007788990"}  # attending, GP, nurse, physio
    assert any(r.startswith("RelatedPerson/") for r in members)  # the daughter (NK1 of the admission)
    joined = {_rpps(practitioners[p["member"]["reference"].split("/")[1]]): p["period"]["start"]
              for p in teams[0]["participant"] if p["member"]["reference"].startswith("Practitioner/")}
    admitted, discharged = "2026-11-15T09:00:00+01:00", "2026-11-20T14:00:00+01:00"
    assert joined == {"10009988776": admitted, "10001122334": admitted,  # named again at discharge: they keep their date
                      "10005566778": discharged, "10007788990": discharged}  # the home nurse and physio join at discharge

    for resource in [patient, *stays, entry, *plans, *teams, *practitioners.values(), *(await search(client, "RelatedPerson"))]:
        errors = [i for i in validator.validate_all(resource, resource["resourceType"]) if i.severity == "error"]
        assert errors == [], (resource["resourceType"], errors)
        assert validator.claimed_profiles(resource), "every produced resource claims our profile"


async def test_cancel_update_merge_and_accents(bridged: tuple[FastAPI, httpx.AsyncClient, int]) -> None:
    app, client, port = bridged
    acks = await _send(port, *(sample(name) for name in STORY))
    assert [ack_code(a) for a in acks] == ["AA"] * len(STORY), [_err(a) for a in acks]
    jeanne = (await search(client, "Patient", identifier="000123456"))[0]
    stay = (await search(client, "Encounter", subject=f"Patient/{jeanne['id']}"))[0]
    assert stay["status"] == "in-progress" and "end" not in stay["period"]  # A13
    entry = (await search(client, "Communication", subject=f"Patient/{jeanne['id']}"))[0]
    assert entry["status"] == "entered-in-error"  # never deleted
    plan = (await search(client, "CarePlan", subject=f"Patient/{jeanne['id']}"))[0]
    assert plan["status"] == "revoked"
    assert jeanne["address"][0]["city"] == "Sainte-Savine"  # A08
    rene = (await search(client, "Patient", identifier="000765432"))[0]
    assert rene["name"][0]["family"] == "LEFÈVRE" and rene["name"][0]["given"] == ["René"]  # UTF-8
    caregiver = (await search(client, "RelatedPerson", patient=rene["id"]))[0]
    assert caregiver["name"][0]["family"] == "LEFÈVRE" and caregiver["relationship"][0]["coding"][0]["code"] == "caregiver"
    had_entry = (await search(client, "Communication", subject=f"Patient/{rene['id']}"))[0]
    assert "hospitalisation à domicile" in had_entry["payload"][0]["contentString"]
    assert "HAD de l'Aube" in had_entry["payload"][0]["contentString"]
    practitioners = await search(client, "Practitioner", identifier=f"{RPPS}|10002233445")
    assert practitioners[0]["name"][0]["given"] == ["Hélène"]  # Latin-1 feed of the other messages, UTF-8 here


async def test_a_resend_writes_nothing_and_gets_the_same_ack(bridged: tuple[FastAPI, httpx.AsyncClient, int]) -> None:
    app, client, port = bridged
    first = (await _send(port, sample(STORY[1])))[0]
    before = await counts(client)
    again = (await _send(port, sample(STORY[1])))[0]
    assert again == first
    assert await counts(client) == before
    stored = await app.state.bridge.inbox.get("CRISTALNET|CHTROYES^1.2.250.1.71.4.2.2.100000999^ISO|CHT20261120143000017")
    assert stored["status"] == APPLIED and bytes(stored["ack"]) == first
    # kept by the transaction that applied it: the raw bytes, their hash, when and from whom
    assert bytes(stored["raw"]) == sample(STORY[1]) and stored["sha256"] == digest(sample(STORY[1]))
    assert stored["event"] == "A03" and stored["sender"].startswith("127.0.0.1") and stored["received"] <= stored["settled"]


async def test_same_control_id_other_bytes_is_refused_and_kept(bridged: tuple[FastAPI, httpx.AsyncClient, int]) -> None:
    app, client, port = bridged
    await _send(port, sample(STORY[1]))
    before = await counts(client)
    changed = sample(STORY[1]).replace(b"PV1|1|I|", b"PV1|1|O|")
    ack = (await _send(port, changed))[0]
    assert ack_code(ack) == "AE" and "205^" in _err(ack)[0]
    assert await counts(client) == before
    kept = await app.state.bridge.inbox.listing(REJECTED)
    assert len(kept) == 1 and kept[0]["error"]["code"] == "205"


async def test_concurrent_connections_each_get_their_acks(bridged: tuple[FastAPI, httpx.AsyncClient, int]) -> None:
    app, client, port = bridged
    base = sample(STORY[1])
    messages = [base.replace(b"CHT20261120143000017", f"CHT-PAR-{n:03d}".encode()).replace(b"MVT-1002", f"MVT-P{n:03d}".encode())
                .replace(b"V2026-000123", f"V2026-P{n:03d}".encode()) for n in range(12)]
    results = await asyncio.gather(*(_send(port, *messages[i::4]) for i in range(4)))
    assert all(ack_code(a) == "AA" for acks in results for a in acks)
    assert len(await search(client, "Patient")) == 1  # one patient, applied one message at a time
    assert len(await search(client, "Communication")) == 12
    assert len(await search(client, "Encounter")) == 12
    assert app.state.bridge.patients_in_progress == 0, "nothing kept for a patient once its messages are applied"


async def test_one_patient_at_a_time_in_arrival_order_others_meanwhile() -> None:
    turns, applied = PatientTurns(), []

    async def message(patient: str, n: int, work: float) -> None:
        async with turns.of(patient):
            applied.append(f"{patient}{n} start")
            await asyncio.sleep(work)
            applied.append(f"{patient}{n} end")

    tasks = [asyncio.create_task(message("A", 1, 0.2))]
    await asyncio.sleep(0)  # A1 holds A's turn
    tasks += [asyncio.create_task(message("A", 2, 0.2)), asyncio.create_task(message("A", 3, 0.0)),
              asyncio.create_task(message("B", 1, 0.0))]
    await asyncio.sleep(0.05)
    assert turns.patients_in_progress == 1, "B is done and forgotten; A1 runs, A2 and A3 wait"
    await asyncio.sleep(0.25)  # A1 done, A2 holds the turn: a new message for A still waits
    tasks.append(asyncio.create_task(message("A", 4, 0.0)))
    await asyncio.gather(*tasks)
    assert applied == ["A1 start", "B1 start", "B1 end", "A1 end", "A2 start", "A2 end", "A3 start", "A3 end", "A4 start", "A4 end"]
    assert turns.patients_in_progress == 0


async def test_an_unchanged_patient_gets_no_new_version(bridged: tuple[FastAPI, httpx.AsyncClient, int]) -> None:
    """Every message repeats the patient's demographics: the history grows only when they change."""
    app, client, port = bridged
    base = sample(STORY[1])
    stays = [base.replace(b"CHT20261120143000017", f"CHT-SAME-{n}".encode()).replace(b"V2026-000123", f"V2026-S{n}".encode())
             .replace(b"MVT-1002", f"MVT-S{n}".encode()) for n in range(3)]
    acks = await _send(port, *stays)
    assert [ack_code(a) for a in acks] == ["AA"] * 3, [_err(a) for a in acks]
    assert len(await search(client, "Encounter")) == 3 and len(await search(client, "Communication")) == 3
    patient = (await search(client, "Patient"))[0]
    assert patient["meta"]["versionId"] == "1"
    moved = stays[0].replace(b"CHT-SAME-0", b"CHT-MOVED").replace(b"12 rue de la Paix", "3 place du Marché".encode("latin-1"))  # the message is 8859/1
    assert ack_code((await _send(port, moved))[0]) == "AA"
    patient = (await search(client, "Patient"))[0]
    assert patient["meta"]["versionId"] == "2" and patient["address"][0]["line"] == ["3 place du Marché"]


async def test_http_ingest_uses_the_same_inbox(bridged: tuple[FastAPI, httpx.AsyncClient, int]) -> None:
    app, client, port = bridged
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://calipso.test") as plain:
        answer = await plain.post("/hl7v2", content=sample(STORY[1]), headers={"Content-Type": "x-application/hl7-v2+er7"})
        assert answer.status_code == 200 and ack_code(answer.content) == "AA"
        resent = (await _send(port, sample(STORY[1])))[0]
        assert resent == answer.content  # the MLLP resend finds the HTTP one in the inbox
        refused = await plain.post("/hl7v2", content=b"{}", headers={"Content-Type": "application/json"})
        assert refused.status_code == 415


def _enhanced(raw: bytes, accept: str, application: str, control_id: str) -> bytes:
    """The A03 asking for enhanced-mode acknowledgements (MSH-15 accept, MSH-16 application)."""
    fields = raw.split(b"\r", 1)[0].split(b"|")
    fields[9] = control_id.encode()
    fields[14], fields[15] = accept.encode(), application.encode()
    return b"|".join(fields) + b"\r" + raw.split(b"\r", 1)[1]


async def test_enhanced_mode_accepts_then_acknowledges(bridged: tuple[FastAPI, httpx.AsyncClient, int]) -> None:
    app, client, port = bridged
    async with MllpClient("127.0.0.1", port) as mllp:
        accepted = await mllp.send(_enhanced(sample(STORY[1]), "AL", "AL", "ENH-1"))
        assert ack_code(accepted) == "CA" and b"MSA|CA|ENH-1" in accepted
        assert ack_code(await mllp.receive()) == "AA"  # then the application acknowledgement
        only_accept = await mllp.send(_enhanced(sample(STORY[0]), "AL", "ER", "ENH-2"))  # AA is not an error: not sent
        assert ack_code(only_accept) == "CA"
        broken = _enhanced(sample(STORY[1]), "AL", "ER", "ENH-3").replace(b"|20261120140000\r", b"|\r")  # no PV1-45
        assert ack_code(await mllp.send(broken)) == "CA"
        assert ack_code(await mllp.receive()) == "AE"  # an error: sent
        refused = await mllp.send(_enhanced(sample(STORY[1]).replace(b"ADT^A03^ADT_A03", b"ADT^A99^ADT_A01"), "AL", "AL", "ENH-4"))
        assert ack_code(refused) == "CR"  # refused before the inbox takes it: commit reject, nothing after
        assert ack_code(await mllp.send(sample(STORY[3]))) == "AA"  # original mode still answers once
    assert len(await search(client, "Communication")) == 1


async def test_a_message_that_changes_nothing_is_still_marked_applied(bridged: tuple[FastAPI, httpx.AsyncClient, int]) -> None:
    """The same discharge sent again under a new control id writes nothing (every write is
    conditional or unchanged), and the inbox still records it as applied with its ACK."""
    app, client, port = bridged
    discharge = sample(STORY[1])
    again = discharge.replace(b"CHT20261120143000017", b"CHT20261120143000017-AGAIN")
    first = (await _send(port, discharge))[0]
    before = await counts(client)
    second = (await _send(port, again))[0]
    assert ack_code(first) == "AA" and ack_code(second) == "AA", _err(second)
    assert await counts(client) == before  # no new version anywhere
    stored = await app.state.bridge.inbox.get("CRISTALNET|CHTROYES^1.2.250.1.71.4.2.2.100000999^ISO|CHT20261120143000017-AGAIN")
    assert stored is not None and stored["status"] == APPLIED and bytes(stored["ack"]) == second


async def test_a_settled_message_keeps_its_record_and_its_ack(bridged: tuple[FastAPI, httpx.AsyncClient, int]) -> None:
    """The trust issue's sequence: an A03 applied (AA); another message under the same
    MSH-3/4/10 with other bytes, one that would be refused outright (unsupported event); then
    the A03 resent. The second gets AE 205 and a record of its own; the A03's record stays
    applied with its own ACK, and its resend gets that ACK back."""
    app, client, port = bridged
    discharge = sample(STORY[1])
    impostor = discharge.replace(b"ADT^A03", b"ADT^A99", 1)
    assert impostor != discharge
    first, clash, resend = await _send(port, discharge, impostor, discharge)
    assert ack_code(first) == "AA"
    assert ack_code(clash) == "AE" and "205" in _err(clash)[0]
    assert resend == first
    key = "CRISTALNET|CHTROYES^1.2.250.1.71.4.2.2.100000999^ISO|CHT20261120143000017"
    stored = await app.state.bridge.inbox.get(key)
    assert stored["status"] == APPLIED and stored["sha256"] == digest(discharge) and bytes(stored["ack"]) == first
    apart = await app.state.bridge.inbox.get(f"{key}|{digest(impostor)}")
    assert apart is not None and apart["status"] == REJECTED and bytes(apart["raw"]) == impostor
    assert len(await search(client, "Communication")) == 1


async def test_the_cercle_de_soins_search_parameters_find_the_bridged_team(bridged: tuple[FastAPI, httpx.AsyncClient, int]) -> None:
    """The ANS Cercle de soins parameters (fhir_server/national/cds): start, end, participant-start,
    participant-end, managingOrganization, beside R4's participant and status."""
    app, client, port = bridged
    acks = await _send(port, sample(STORY[0]), sample(STORY[1]))
    assert [ack_code(a) for a in acks] == ["AA", "AA"]
    assert len(await search(client, "CareTeam", start="ge2026-11-20", status="active")) == 1  # the home circle, from discharge
    assert await search(client, "CareTeam", start="gt2026-11-21") == []
    assert len(await search(client, "CareTeam", **{"participant-start": "ge2026-11-20"})) == 1  # the home nurse joined then
    assert await search(client, "CareTeam", **{"participant-start": "gt2026-11-21"}) == []
    assert len(await search(client, "CareTeam", **{"end:missing": "true", "participant-end:missing": "true"})) == 1
    statement = (await client.get("/fhir/metadata")).json()
    team = next(r for r in statement["rest"][0]["resource"] if r["type"] == "CareTeam")
    assert {"start", "end", "participant-start", "participant-end", "managingOrganization"} <= {p["name"] for p in team["searchParam"]}
