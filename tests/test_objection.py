"""The patient's right to object (security/objection.py): a Consent denying an actor or a role
takes the actor's access away from the next request on, everywhere; only the patient may lift
it. The circle is tests/test_security_writes.py's: Hélène's GP Martin (coordinating) and nurse
Dubois, her daughter (a RelatedPerson), and an outsider."""

from __future__ import annotations

from typing import Any

import httpx

from tests.test_security_writes import ROLES, circle  # noqa: F401 - the fixture

READS = ("/fhir/Patient/helene", "/fhir/Communication/entry-helene", "/fhir/CarePlan/plan-helene", "/cdl/DocumentReference/entry-helene")


def objection(*actors: dict[str, Any], status: str = "active") -> dict[str, Any]:
    return {"resourceType": "Consent", "status": status, "patient": {"reference": "Patient/helene"},
            "scope": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/consentscope", "code": "patient-privacy"}]},
            "category": [{"coding": [{"system": "http://loinc.org", "code": "59284-0"}]}],
            "policyRule": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "OPTOUT"}]},
            "provision": {"type": "deny", "actor": list(actors)}}


def actor(reference: str) -> dict[str, Any]:
    return {"role": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ParticipationType", "code": "PRCP"}]},
            "reference": {"reference": reference}}


async def reached(client: httpx.AsyncClient, headers: dict[str, str]) -> dict[str, int]:
    """What a token gets: the status of each read, and what searches and $everything count."""
    found = {path: (await client.get(path, headers=headers)).status_code for path in READS}
    entries = (await client.get("/fhir/Communication", params={"subject": "Patient/helene"}, headers=headers)).json()
    found["searched entries"] = len(entries.get("entry", []))
    everything = await client.get("/fhir/Patient/helene/$everything", headers=headers)
    found["$everything"] = len(everything.json().get("entry", [])) if everything.status_code == 200 else everything.status_code
    counted = (await client.get("/fhir/Communication", params={"_total": "accurate", "_count": "0"}, headers=headers)).json()
    found["total"] = counted.get("total", -1)
    included = (await client.get("/fhir/Communication", params={"_include": "Communication:subject"}, headers=headers)).json()
    found["included patients"] = sum(1 for e in included.get("entry", []) if e["resource"]["resourceType"] == "Patient")
    found["entry history"] = (await client.get("/fhir/Communication/entry-helene/_history", headers=headers)).status_code
    notes = (await client.get("/cdl/DocumentReference", params={"patient": "Patient/helene"}, headers=headers)).json()
    found["cdl notes"] = len(notes.get("entry", []))
    return found


async def test_an_objection_to_a_practitioner_removes_its_access_everywhere_and_lifting_it_restores_it(circle) -> None:  # noqa: F811
    _, client, tokens = circle
    before = await reached(client, tokens["nurse"])
    assert before["/fhir/Patient/helene"] == 200 and before["searched entries"] == 1
    recorded = await client.post("/fhir/Consent", json=objection(actor("Practitioner/nurse")), headers=tokens["patient"])
    assert recorded.status_code == 201, recorded.text
    after = await reached(client, tokens["nurse"])
    assert after == {**{path: 404 for path in READS}, "searched entries": 0, "$everything": 404, "total": 0,
                     "included patients": 0, "entry history": 404, "cdl notes": 0}
    gp = await reached(client, tokens["gp"])  # the others keep theirs (the Consent is one more in $everything)
    assert {k: v for k, v in gp.items() if k != "$everything"} == {k: v for k, v in before.items() if k != "$everything"}
    lifted = {**recorded.json(), "status": "inactive"}
    assert (await client.put(f"/fhir/Consent/{lifted['id']}", json=lifted, headers=tokens["patient"])).status_code == 200
    restored = await reached(client, tokens["nurse"])
    assert restored == before | {"$everything": before["$everything"] + 1}  # + the (lifted) Consent itself


async def test_an_objection_to_a_role_removes_every_member_holding_it(circle) -> None:  # noqa: F811
    _, client, tokens = circle
    nurses = {"role": {"coding": [{"system": ROLES, "code": "home-nurse"}]}, "reference": {"display": "les infirmiers"}}
    consent = objection(nurses)
    assert (await client.post("/fhir/Consent", json=consent, headers=tokens["patient"])).status_code == 201
    assert (await client.get("/fhir/Patient/helene", headers=tokens["nurse"])).status_code == 404
    assert (await client.get("/fhir/Patient/helene", headers=tokens["gp"])).status_code == 200


async def test_an_objection_to_the_caregiver_closes_the_notebook_to_her(circle) -> None:  # noqa: F811
    _, client, tokens = circle
    assert (await client.get("/fhir/Communication/entry-helene", headers=tokens["caregiver"])).status_code == 200
    assert (await client.post("/fhir/Consent", json=objection(actor("RelatedPerson/daughter")), headers=tokens["patient"])).status_code == 201
    assert (await client.get("/fhir/Communication/entry-helene", headers=tokens["caregiver"])).status_code == 404
    assert (await client.get("/fhir/Communication", headers=tokens["caregiver"])).json().get("entry", []) == []


async def test_only_the_patient_may_lift_or_withdraw_an_objection(circle) -> None:  # noqa: F811
    """A practitioner who reaches the patient may record an objection (it only takes access
    away), but not change or delete one: that could give the access back."""
    _, client, tokens = circle
    recorded = (await client.post("/fhir/Consent", json=objection(actor("Practitioner/nurse")), headers=tokens["gp"])).json()
    assert (await client.get("/fhir/Patient/helene", headers=tokens["nurse"])).status_code == 404
    lifted = {**recorded, "status": "inactive"}
    assert (await client.put(f"/fhir/Consent/{recorded['id']}", json=lifted, headers=tokens["gp"])).status_code == 403
    assert (await client.delete(f"/fhir/Consent/{recorded['id']}", headers=tokens["gp"])).status_code == 403
    patch = [{"op": "replace", "path": "/status", "value": "inactive"}]
    patched = await client.patch(f"/fhir/Consent/{recorded['id']}", json=patch,
                                 headers={**tokens["gp"], "Content-Type": "application/json-patch+json"})
    assert patched.status_code == 403
    transaction = {"resourceType": "Bundle", "type": "transaction",
                   "entry": [{"request": {"method": "DELETE", "url": f"Consent/{recorded['id']}"}}]}
    assert (await client.post("/fhir", json=transaction, headers=tokens["gp"])).status_code == 403
    assert (await client.get("/fhir/Patient/helene", headers=tokens["nurse"])).status_code == 404  # still objected to
    assert (await client.delete(f"/fhir/Consent/{recorded['id']}", headers=tokens["patient"])).status_code in (200, 204)
    assert (await client.get("/fhir/Patient/helene", headers=tokens["nurse"])).status_code == 200
