"""A small liaison notebook to search: two patients, their care teams, plans and entries."""

from __future__ import annotations

from dataclasses import dataclass, field

import httpx

ENTRY_KIND = "https://calipso.example.org/fhir/CodeSystem/entry-kind"
IPP = "urn:oid:1.2.250.1.71.4.2.7"
INS_NIR = "urn:oid:1.2.250.1.213.1.4.8"
RPPS = "https://rpps.esante.gouv.fr"


@dataclass
class Notebook:
    """Ids of what `load_notebook` created."""

    patients: dict[str, str] = field(default_factory=dict)
    practitioners: dict[str, str] = field(default_factory=dict)
    entries: dict[str, str] = field(default_factory=dict)
    care_teams: dict[str, str] = field(default_factory=dict)
    care_plans: dict[str, str] = field(default_factory=dict)
    encounters: dict[str, str] = field(default_factory=dict)


async def put(client: httpx.AsyncClient, resource: dict) -> str:
    response = await client.put(f"/fhir/{resource['resourceType']}/{resource['id']}", json=resource)
    assert response.status_code in (200, 201), response.text
    return resource["id"]


def entry(entry_id: str, patient: str, kind: str, sent: str, text: str, sender: str, priority: str = "routine", **extra: object) -> dict:
    body = {
        "resourceType": "Communication",
        "id": entry_id,
        "status": "completed",
        "category": [{"coding": [{"system": ENTRY_KIND, "code": kind}]}],
        "priority": priority,
        "subject": {"reference": f"Patient/{patient}"},
        "sender": {"reference": sender},
        "sent": sent,
        "payload": [{"contentString": text}],
    }
    body.update(extra)
    return body


async def load_notebook(client: httpx.AsyncClient) -> Notebook:
    book = Notebook()
    book.practitioners["gp"] = await put(client, {
        "resourceType": "Practitioner", "id": "gp-martin",
        "identifier": [{"system": RPPS, "value": "10001234567"}], "name": [{"family": "Martin", "given": ["Claire"]}],
    })
    book.practitioners["nurse"] = await put(client, {
        "resourceType": "Practitioner", "id": "nurse-dubois",
        "identifier": [{"system": RPPS, "value": "10009876543"}], "name": [{"family": "Dubois", "given": ["Éric"]}],
    })
    book.patients["helene"] = await put(client, {
        "resourceType": "Patient", "id": "helene",
        "identifier": [{"system": IPP, "value": "IPP0001"}, {"system": INS_NIR, "value": "248037512345678"}],
        "name": [{"family": "Lefèvre", "given": ["Hélène"]}], "gender": "female", "birthDate": "1948-03-12",
        "generalPractitioner": [{"reference": "Practitioner/gp-martin"}],
        "address": [{"city": "Troyes", "postalCode": "10000"}],
    })
    book.patients["jean"] = await put(client, {
        "resourceType": "Patient", "id": "jean",
        "identifier": [{"system": IPP, "value": "IPP0002"}],
        "name": [{"family": "Lefebvre", "given": ["Jean"]}], "gender": "male", "birthDate": "1939-11-02",
        "address": [{"city": "Sainte-Savine", "postalCode": "10300"}],
    })
    book.encounters["stay"] = await put(client, {
        "resourceType": "Encounter", "id": "stay-1", "status": "finished",
        "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "IMP"},
        "identifier": [{"system": "urn:oid:1.2.250.1.71.4.2.7.3", "value": "V123"}],
        "subject": {"reference": "Patient/helene"}, "period": {"start": "2026-11-10T08:00:00+01:00", "end": "2026-11-18T11:00:00+01:00"},
    })
    book.care_teams["helene"] = await put(client, {
        "resourceType": "CareTeam", "id": "team-helene", "status": "active", "name": "Cercle de soins de Hélène",
        "subject": {"reference": "Patient/helene"}, "period": {"start": "2026-11-18"},
        "participant": [{"member": {"reference": "Practitioner/gp-martin"}}, {"member": {"reference": "Practitioner/nurse-dubois"}}],
    })
    book.care_teams["jean"] = await put(client, {
        "resourceType": "CareTeam", "id": "team-jean", "status": "inactive",
        "subject": {"reference": "Patient/jean"}, "participant": [{"member": {"reference": "Practitioner/nurse-dubois"}}],
    })
    book.care_plans["helene"] = await put(client, {
        "resourceType": "CarePlan", "id": "plan-helene", "status": "active", "intent": "plan",
        "subject": {"reference": "Patient/helene"}, "careTeam": [{"reference": "CareTeam/team-helene"}],
        "period": {"start": "2026-11-18"},
    })
    entries = [
        entry("e1", "helene", "discharge-info", "2026-11-18T11:00:00+01:00", "Sortie d'hospitalisation", "Practitioner/gp-martin",
              basedOn=[{"reference": "CarePlan/plan-helene"}], encounter={"reference": "Encounter/stay-1"}),
        entry("e2", "helene", "transmission", "2026-11-19T09:30:00+01:00", "Pansement refait", "Practitioner/nurse-dubois",
              recipient=[{"reference": "CareTeam/team-helene"}]),
        entry("e3", "helene", "alert", "2026-11-20T18:45:00+01:00", "Douleur thoracique : appeler le médecin", "Practitioner/nurse-dubois", "urgent"),
        entry("e4", "helene", "observation", "2026-11-20T18:45:00+01:00", "Poids +2 kg", "Practitioner/nurse-dubois"),
        entry("e5", "jean", "transmission", "2026-11-21T08:00:00+01:00", "Toilette faite", "Practitioner/nurse-dubois"),
    ]
    for body in entries:
        book.entries[body["id"]] = await put(client, body)
    return book
