"""Masking by the ANS visibility labels (TRE_A07, in meta.security): a labelled entry is absent
for the tokens its label hides it from (read 404, not searched, not counted, not included,
not in $everything or history) and stays visible to its author (security/visibility-labels.json).

The circle is tests/test_security_writes.py's: Hélène's GP and nurse (health professionals),
Hélène herself, her daughter (a RelatedPerson: a third party), plus here her guardian (a
RelatedPerson whose relationship is GUARD: a legal representative)."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from fhir_server.security.policy import VISIBILITY
from tests.conftest import notebook_entry
from tests.test_security_writes import circle  # noqa: F401 - the fixture

GUARDIAN = {"resourceType": "RelatedPerson", "id": "guardian", "patient": {"reference": "Patient/helene"},
            "relationship": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-RoleCode", "code": "GUARD"}]}]}
# label -> the token kinds it hides an entry written by the GP from
HIDDEN_FROM = {
    "INVISIBLE_PATIENT": {"patient"},
    "INVISIBLE_REPRESENTANTS_LEGAUX": {"guardian"},
    "MASQUE_PS": {"nurse"},  # the GP wrote it: an author keeps seeing it
    "MASQUE_PSOCIAL": set(),  # no social-domain professional in the circle
    "MASQUE_PT": {"caregiver", "guardian"},
}
READERS = ("gp", "nurse", "patient", "caregiver", "guardian", "system")


def labelled(code: str) -> dict[str, Any]:
    entry = {**notebook_entry("helene", f"Note {code}"), "id": f"masked-{code.lower().replace('_', '-')}",
             "sender": {"reference": "Practitioner/gp"}}
    entry["meta"] = {"security": [{"system": VISIBILITY.system, "code": code}]}
    return entry


@pytest.fixture
async def masked(circle: Any) -> tuple[httpx.AsyncClient, dict[str, dict[str, str]]]:  # noqa: F811
    app, client, tokens = circle
    assert (await client.put("/fhir/RelatedPerson/guardian", json=GUARDIAN, headers=tokens["system"])).status_code == 201
    for code in HIDDEN_FROM:
        assert (await client.put(f"/fhir/Communication/{labelled(code)['id']}", json=labelled(code), headers=tokens["system"])).status_code == 201
    issuer = app.state.dev_issuer
    tokens = {**tokens, "guardian": {"Authorization": f"Bearer {issuer.token('guardian', 'user/*.cruds', 'calipso', fhir_user='RelatedPerson/guardian')}"}}
    return client, tokens


CDL_READERS = ("gp", "nurse", "patient", "system")  # caregivers are held to notebook types: no DocumentReference, no /cdl


async def seen(client: httpx.AsyncClient, headers: dict[str, str], entry_id: str, cdl: bool = True) -> dict[str, bool]:
    """Whether each way of reaching the entry reaches it (`cdl`: the Cahier de liaison base's ways too)."""
    entries = lambda bundle: {e["resource"]["id"] for e in bundle.get("entry", [])}  # noqa: E731
    searched = (await client.get("/fhir/Communication", params={"subject": "Patient/helene", "_count": "100"}, headers=headers)).json()
    everything = await client.get("/fhir/Patient/helene/$everything", params={"_count": "100"}, headers=headers)
    included = await client.get("/fhir/Patient", params={"_id": "helene", "_revinclude": "Communication:subject"}, headers=headers)
    counted = (await client.get("/fhir/Communication", params={"subject": "Patient/helene", "_id": entry_id, "_total": "accurate"},
                                headers=headers)).json()
    ways = {
        "read": (await client.get(f"/fhir/Communication/{entry_id}", headers=headers)).status_code == 200,
        "vread": (await client.get(f"/fhir/Communication/{entry_id}/_history/1", headers=headers)).status_code == 200,
        "history": (await client.get(f"/fhir/Communication/{entry_id}/_history", headers=headers)).status_code == 200,
        "search": entry_id in entries(searched),
        "total": counted.get("total", 0) == 1,
        "$everything": everything.status_code == 200 and entry_id in entries(everything.json()),
        "_revinclude": included.status_code == 200 and entry_id in entries(included.json()),
    }
    if cdl:
        notes = (await client.get("/cdl/DocumentReference", params={"patient": "Patient/helene", "_count": "100", "_total": "accurate"},
                                  headers=headers)).json()
        one = (await client.get("/cdl/DocumentReference", params={"patient": "Patient/helene", "_id": entry_id, "_total": "accurate"},
                                headers=headers)).json()
        ways["cdl read"] = (await client.get(f"/cdl/DocumentReference/{entry_id}", headers=headers)).status_code == 200
        ways["cdl search"] = entry_id in entries(notes)
        ways["cdl total"] = one.get("total", 0) == 1
    return ways


async def test_the_deny_matrix_of_labels_and_token_kinds(masked: Any) -> None:
    client, tokens = masked
    leaks, losses = [], []
    for code, hidden_from in HIDDEN_FROM.items():
        entry_id = labelled(code)["id"]
        for reader in READERS:
            ways = await seen(client, tokens[reader], entry_id, cdl=reader in CDL_READERS)
            if reader in hidden_from:
                leaks += [f"{code} reached by {reader} through {way}" for way, hit in ways.items() if hit]
            else:
                losses += [f"{code} not reached by {reader} through {way}" for way, hit in ways.items() if not hit]
    assert leaks == []
    assert losses == [], "\n".join(losses)


async def test_the_author_keeps_seeing_what_it_masked(masked: Any) -> None:
    client, tokens = masked
    by_nurse = {**labelled("MASQUE_PS"), "id": "masked-by-nurse", "sender": {"reference": "Practitioner/nurse"}}
    assert (await client.put("/fhir/Communication/masked-by-nurse", json=by_nurse, headers=tokens["system"])).status_code == 201
    assert (await client.get("/fhir/Communication/masked-by-nurse", headers=tokens["nurse"])).status_code == 200
    assert (await client.get("/fhir/Communication/masked-by-nurse", headers=tokens["gp"])).status_code == 404


async def test_a_masked_entry_cannot_be_overwritten_by_whom_it_is_hidden_from(masked: Any) -> None:
    """Hidden and absent answer alike, for writes too: no PUT, PATCH or DELETE over it."""
    client, tokens = masked
    entry = labelled("MASQUE_PS")
    replaced = await client.put(f"/fhir/Communication/{entry['id']}", json={**entry, "status": "entered-in-error"}, headers=tokens["nurse"])
    assert replaced.status_code == 404
    assert (await client.delete(f"/fhir/Communication/{entry['id']}", headers=tokens["nurse"])).status_code == 404
    assert (await client.get(f"/fhir/Communication/{entry['id']}", headers=tokens["gp"])).json()["status"] == "completed"
