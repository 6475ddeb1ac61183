"""What an outside EHR does with a patient's notebook, recorded body by body.

Every JSON body the server sends back is kept (with a label: method, path, status) so the
validators can check all of them, error answers included. A step that does not get the
status an EHR expects is a scenario failure, reported apart from the validators.
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import orjson

from fhir_server.subscriptions.receiver import Receiver
from fhir_server.subscriptions.vocabulary import BACKPORT, SIGNING_SECRET

FHIR_JSON = "application/fhir+json"
EXAMPLES = Path(__file__).resolve().parents[1] / "profiles" / "examples"
INS_SYSTEM = "urn:oid:1.2.250.1.213.1.4.10"
ADT_SAMPLES = Path(__file__).resolve().parents[1] / "tests" / "data" / "hl7v2" / "fr"
CDL_EXAMPLE = Path(__file__).resolve().parents[1] / "tests" / "data" / "cdl" / "cdl-bundle-creation-note.json"
NOTEBOOK_TOPIC = "https://fhir.hopitauxchampagnesud.fr/calipso/SubscriptionTopic/notebook-entry"
ADT_STORY = ["A01-admission-cardio.hl7", "A03-discharge-home.hl7", "A13-cancel-discharge.hl7", "A08-update-address.hl7",
             "A03-discharge-had-utf8.hl7", "A40-merge-duplicate.hl7"]


@dataclass
class Recorded:
    """The bodies received and the steps that went wrong."""

    bodies: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)


class Ehr:
    """A FHIR client that records what it receives."""

    def __init__(self, base_url: str):
        self.base = base_url.rstrip("/")
        self.http = httpx.Client(timeout=60, headers={"Accept": FHIR_JSON, "Content-Type": FHIR_JSON})
        self.recorded = Recorded()

    def call(self, method: str, path: str, expect: int, body: Any = None, base: str | None = None, **params: str) -> dict[str, Any]:
        content = None if body is None else orjson.dumps(body)
        base = base or self.base
        url = f"{base}/{path}" if path else base
        response = self.http.request(method, url, content=content, params=params or None)
        where = "" if base == self.base else base.rsplit("/", 1)[-1] + ": "
        label = f"{where}{method} {path}{'?' + str(response.request.url.query, 'ascii') if params else ''} -> {response.status_code}"
        found: dict[str, Any] = {}
        if response.content and response.headers.get("content-type", "").startswith(FHIR_JSON):
            found = orjson.loads(response.content)
            self.recorded.bodies.append((label, found))
        elif response.content:
            self.recorded.failures.append(f"{label}: not FHIR JSON ({response.headers.get('content-type')})")
        if response.status_code != expect:
            self.recorded.failures.append(f"{label}: expected {expect}")
        return found


def example(name: str) -> dict[str, Any]:
    return orjson.loads((EXAMPLES / name).read_bytes())


def run_scenario(base_url: str, mllp_port: int | None = None, receiver: Receiver | None = None) -> Recorded:
    """The notebook of one patient, created, read, searched and checked as an EHR would;
    with a `receiver` (an endpoint the server may notify), subscribed to it as well."""
    ehr = Ehr(base_url)
    subscription = _subscribe(ehr, receiver) if receiver is not None else None
    if mllp_port is not None:
        _hospital_feed(ehr, mllp_port)
    ehr.call("GET", "metadata", 200)
    ids = _create_notebook(ehr)
    if len(ids) < 6:
        ehr.recorded.failures.append("the notebook transaction failed: later steps need its resources")
        return ehr.recorded
    patient, entry_id = ids["Patient"], _write_entries(ehr, ids)
    _search(ehr, patient, entry_id)
    ehr.call("GET", f"Patient/{patient}/$everything", 200)
    ehr.call("GET", "_history", 200, _count="50")
    _conformance_resources(ehr)
    _cdl_view(ehr, patient, entry_id)
    _bulk_export(ehr)
    _errors(ehr)
    if subscription is not None and receiver is not None:
        _notifications(ehr, receiver, subscription)
    elif receiver is None:
        ehr.recorded.skipped.append("subscription notifications: no receiver")
    if mllp_port is None:
        ehr.recorded.skipped.append("ADT ingestion of the French samples: no MLLP port given")
    ehr.http.close()
    return ehr.recorded


def _subscribe(ehr: Ehr, receiver: Receiver) -> str | None:
    """A topic subscription to every notebook entry, full resources, to the harness's receiver."""
    subscription = {
        "resourceType": "Subscription", "status": "requested", "reason": "conformance harness", "criteria": NOTEBOOK_TOPIC,
        "channel": {"type": "rest-hook", "endpoint": receiver.url, "payload": "application/fhir+json",
                    "_payload": {"extension": [{"url": BACKPORT["payloadContent"], "valueCode": "full-resource"}]},
                    "extension": [{"url": SIGNING_SECRET, "valueString": receiver.secret}]},
    }
    created = ehr.call("POST", "Subscription", 201, subscription)
    deadline = time.monotonic() + 15
    while not receiver.bundles("handshake") and time.monotonic() < deadline:
        time.sleep(0.05)
    if not receiver.bundles("handshake"):
        ehr.recorded.failures.append("subscription: no handshake reached the receiver")
    return created.get("id")


def _notifications(ehr: Ehr, receiver: Receiver, subscription: str) -> None:
    """The notifications the receiver got (every one is checked by the validators), then the
    subscription's $status and $events."""
    deadline = time.monotonic() + 15
    while not receiver.bundles() and time.monotonic() < deadline:
        time.sleep(0.05)
    if not receiver.bundles():
        ehr.recorded.failures.append("subscription: no event notification reached the receiver")
    for kind in ("handshake", "event-notification"):
        for number, bundle in enumerate(receiver.bundles(kind)):
            ehr.recorded.bodies.append((f"notification {kind} #{number}", bundle))
    if receiver.refused_signatures:
        ehr.recorded.failures.append(f"subscription: {receiver.refused_signatures} notifications with a bad signature")
    ehr.call("GET", f"Subscription/{subscription}/$status", 200)
    ehr.call("GET", f"Subscription/{subscription}/$events", 200, eventsSinceNumber="1")


def _bulk_export(ehr: Ehr, timeout: float = 120) -> None:
    """A system `$export` polled to its manifest; every NDJSON line is recorded as a body (the
    validators check each exported resource)."""
    kick_off = ehr.http.get(f"{ehr.base}/$export", headers={"Prefer": "respond-async"})
    if kick_off.status_code != 202:
        ehr.recorded.failures.append(f"GET $export -> {kick_off.status_code}: expected 202")
        return
    status_url = kick_off.headers["content-location"]
    deadline = time.monotonic() + timeout
    while (poll := ehr.http.get(status_url)).status_code == 202 and time.monotonic() < deadline:
        time.sleep(0.2)
    if poll.status_code != 200:
        ehr.recorded.failures.append(f"GET $export-status -> {poll.status_code}: expected 200")
        return
    for item in poll.json()["output"]:
        lines = ehr.http.get(item["url"]).content.splitlines()
        if len(lines) != item["count"]:
            ehr.recorded.failures.append(f"$export {item['type']}: {len(lines)} lines, the manifest says {item['count']}")
        ehr.recorded.bodies += [(f"$export NDJSON {item['type']} line {n}", orjson.loads(line)) for n, line in enumerate(lines, 1)]
    ehr.http.delete(status_url)


def _hospital_feed(ehr: Ehr, port: int) -> None:
    """The French ADT story over MLLP, then the notebook it built, read back as an EHR would."""
    import asyncio

    from hl7v2_bridge.client import MllpClient, ack_code

    async def send() -> list[str]:
        async with MllpClient("127.0.0.1", port) as client:
            return [ack_code(await client.send((ADT_SAMPLES / name).read_bytes())) for name in ADT_STORY]

    for name, code in zip(ADT_STORY, asyncio.run(send())):
        if code != "AA":
            ehr.recorded.failures.append(f"MLLP {name}: {code}, expected AA")
    patient = ehr.call("GET", "Patient", 200, identifier="000123456")
    patient_id = next((e["resource"]["id"] for e in patient.get("entry", [])), "missing")
    ehr.call("GET", "Communication", 200, subject=f"Patient/{patient_id}", _include="Communication:sender")
    ehr.call("GET", "CareTeam", 200, patient=patient_id, _include="CareTeam:participant")
    ehr.call("GET", "CarePlan", 200, subject=f"Patient/{patient_id}", _include="CarePlan:care-team")
    ehr.call("GET", f"Patient/{patient_id}/$everything", 200)
    ehr.call("GET", "Patient", 200, identifier="000765432", _revinclude="Communication:subject")


def _create_notebook(ehr: Ehr) -> dict[str, str]:
    """One transaction: the patient, GP, caregiver, stay, care team and plan, linked by urn:uuid."""
    order = [
        ("Practitioner-example-gp.json", "Practitioner"),
        ("Patient-example-patient.json", "Patient"),
        ("RelatedPerson-example-caregiver.json", "RelatedPerson"),
        ("Encounter-example-stay.json", "Encounter"),
        ("CareTeam-example-care-team.json", "CareTeam"),
        ("CarePlan-example-care-plan.json", "CarePlan"),
    ]
    placeholders = {}
    entries = []
    for index, (name, resource_type) in enumerate(order):
        resource = example(name)
        placeholders[f"{resource_type}/{resource.pop('id')}"] = f"urn:uuid:6a1f0c5e-0000-4000-8000-{index:012d}"
    for index, (name, resource_type) in enumerate(order):
        resource = example(name)
        resource.pop("id")
        resource = _relink(resource, placeholders)
        request = {"method": "POST", "url": resource_type}
        if resource_type == "Patient":
            request["ifNoneExist"] = f"identifier={INS_SYSTEM}|{resource['identifier'][1]['value']}"
        entries.append({"fullUrl": f"urn:uuid:6a1f0c5e-0000-4000-8000-{index:012d}", "resource": resource, "request": request})
    answer = ehr.call("POST", "", 200, {"resourceType": "Bundle", "type": "transaction", "entry": entries})
    ids: dict[str, str] = {}
    for (_, resource_type), response in zip(order, answer.get("entry", [])):
        location = response.get("response", {}).get("location", "")
        ids[resource_type] = location.split(f"{resource_type}/", 1)[-1].split("/", 1)[0]
    return ids


def _relink(resource: dict[str, Any], placeholders: dict[str, str]) -> dict[str, Any]:
    text = orjson.dumps(resource).decode()
    for old, new in placeholders.items():
        text = text.replace(f'"reference":"{old}"', f'"reference":"{new}"')
    return dict(orjson.loads(text))


def _write_entries(ehr: Ehr, ids: dict[str, str]) -> str:
    """A notebook entry, its correction (a new version) and a read receipt."""
    entry = example("Communication-example-entry.json")
    entry.pop("id")
    entry = _relink(entry, {f"{t}/{old}": f"{t}/{ids[t]}" for t, old in (
        ("Patient", "example-patient"), ("CarePlan", "example-care-plan"), ("Encounter", "example-stay"),
        ("CareTeam", "example-care-team"), ("Practitioner", "example-gp"))})
    created = ehr.call("POST", "Communication", 201, entry)
    entry_id = created.get("id", "missing")
    corrected = copy.deepcopy(created)
    corrected.pop("meta", None)
    corrected["meta"] = {"profile": entry["meta"]["profile"]}
    corrected["payload"][0]["contentString"] += " Patiente informée."
    ehr.call("PUT", f"Communication/{entry_id}", 200, corrected)
    ehr.call("GET", f"Communication/{entry_id}/_history", 200)
    ack = example("Communication-example-ack.json")
    ack.pop("id")
    ack = _relink(ack, {"Communication/example-entry": f"Communication/{entry_id}", "Patient/example-patient": f"Patient/{ids['Patient']}",
                        "RelatedPerson/example-caregiver": f"RelatedPerson/{ids['RelatedPerson']}"})
    ehr.call("POST", "Communication", 201, ack)
    return entry_id


def _search(ehr: Ehr, patient: str, entry_id: str) -> None:
    """The searches a notebook client makes (docs/domain.md)."""
    ehr.call("GET", "Communication", 200, subject=f"Patient/{patient}", _sort="-sent", _count="20", _include="Communication:sender")
    ehr.call("GET", "Communication", 200, subject=f"Patient/{patient}", priority="routine", sent="ge2026-01-01")
    ehr.call("GET", "Communication", 200, **{"in-response-to": f"Communication/{entry_id}"})
    ehr.call("GET", "CareTeam", 200, patient=patient, status="active")
    ehr.call("GET", "CarePlan", 200, subject=f"Patient/{patient}", status="active", _include="CarePlan:care-team")
    ehr.call("GET", "Patient", 200, identifier=f"{INS_SYSTEM}|241031075123456")
    ehr.call("GET", "Communication", 200, _lastUpdated="gt2026-01-01T00:00:00Z", _count="5")


def _cdl_view(ehr: Ehr, patient: str, entry_id: str) -> None:
    """The ANS Cahier de liaison base, as a national CdL client uses it (conformance/validators.py
    checks what it serves against the CdL definitions)."""
    cdl = ehr.base.rsplit("/fhir", 1)[0] + "/cdl"
    ehr.call("GET", "metadata", 200, base=cdl)
    ehr.call("GET", "DocumentReference", 200, base=cdl, patient=f"Patient/{patient}", _include="DocumentReference:author")
    ehr.call("GET", f"DocumentReference/{entry_id}", 200, base=cdl)
    example = orjson.loads((CDL_EXAMPLE).read_bytes())
    created = ehr.call("POST", "", 200, example, base=cdl)
    note = next((e["response"]["location"] for e in created.get("entry", []) if e["response"]["location"].startswith("DocumentReference/")), None)
    if note:
        ehr.call("GET", note.split("/_history")[0], 200, base=cdl)


def _conformance_resources(ehr: Ehr) -> None:
    """Reading our profiles and terminology, and validating with them."""
    ehr.call("GET", "StructureDefinition", 200, type="Communication")
    ehr.call("GET", "StructureDefinition", 200, derivation="constraint", _count="50")
    ehr.call("GET", "ImplementationGuide", 200)
    ehr.call("GET", "ValueSet/entry-kind/$expand", 200)
    ehr.call("GET", "CodeSystem", 200, name="CareTeamRole")
    canonical = ehr.call("GET", "ImplementationGuide/calipso", 200).get("url", "").split("/ImplementationGuide/")[0]
    ehr.call("GET", "CodeSystem/$lookup", 200, system=f"{canonical}/CodeSystem/entry-kind", code="alert")
    entry = example("Communication-example-entry.json")
    ehr.call("POST", "Communication/$validate", 200, entry)
    del entry["sender"]
    ehr.call("POST", "Communication/$validate", 200, entry)


def _errors(ehr: Ehr) -> None:
    """Error answers are FHIR bodies too."""
    ehr.call("GET", "Patient/does-not-exist", 404)
    invalid = example("Communication-example-entry.json")
    invalid.pop("id")
    invalid["priority"] = "stat"
    ehr.call("POST", "Communication", 422, invalid)
    ehr.call("GET", "Nothing", 404)


def profiles_served(recorded: Recorded) -> list[dict[str, Any]]:
    """The StructureDefinitions the server gave us (what the outside validators load)."""
    found: dict[str, dict[str, Any]] = {}
    for _, body in recorded.bodies:
        for resource in [body] + [e.get("resource", {}) for e in body.get("entry", [])]:
            if resource.get("resourceType") == "StructureDefinition" and resource.get("derivation") == "constraint":
                found[resource["url"]] = resource
    return list(found.values())


__all__ = ["Recorded", "profiles_served", "run_scenario"]
