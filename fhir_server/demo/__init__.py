"""`calipso demo`: a realistic French notebook in a minute, through the public doors only.

1. The hospital discharges Mme LEFEBVRE: an ADT^A03 (discharge-a03.hl7) goes over MLLP, and the
   bridge makes her record, her stay, the discharge entry, the home care plan and the care
   circle (GP, home nurse, physiotherapist, pharmacist, her daughter).
2. A week of the notebook (week.json) is written over the FHIR API, each entry with a token of
   its author (the dev issuer's), so the care-team policy checks every write as it would a
   real user's; some entries are read ("Lu") by others, one is hidden from the patient.

Running it again adds nothing: the A03's discharge entry is found by its movement id, and each
entry and receipt is created with If-None-Exist on its demo identifier. Dates are relative to
today (the discharge was six days ago).
"""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass
from functools import cache
from datetime import datetime, time, timedelta, timezone
from importlib.resources import files
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import orjson

from fhir_server.security.dev_issuer import DevIssuer
from hl7v2_bridge.client import MllpClient

PARIS = ZoneInfo("Europe/Paris")
DEMO_SYSTEM = "urn:calipso:demo"
DAYS_AGO = 6
SYSTEM_SCOPE = "system/*.cruds"
USER_SCOPE = "user/*.cruds"


class DemoError(Exception):
    """The demo could not be loaded (the message says which step and why)."""


@dataclass(frozen=True)
class Summary:
    patient: str
    entries: int
    receipts: int
    people: dict[str, str]  # demo key -> "Practitioner/x"


def _data(name: str) -> bytes:
    return files("fhir_server.demo").joinpath(name).read_bytes()


def discharge_message(discharged: datetime, now: datetime) -> bytes:
    """The A03 with today's dates and a fresh control id."""
    stamp = lambda moment: moment.astimezone(PARIS).strftime("%Y%m%d%H%M%S")  # noqa: E731
    text = _data("discharge-a03.hl7").decode("utf-8")
    values = {"sent": stamp(now), "discharged": stamp(discharged), "admitted": stamp(discharged - timedelta(days=5)),
              "control_id": f"DEMO{uuid.uuid4().hex[:16].upper()}"}
    for name, value in values.items():
        text = text.replace("{" + name + "}", value)
    return text.encode("utf-8")


class Demo:
    """One load of the demo into a running calipso (FHIR base URL, MLLP address, dev issuer)."""

    def __init__(self, base_url: str, mllp_host: str, mllp_port: int, issuer: DevIssuer, audience: str,
                 now: datetime | None = None):
        self.base = base_url.rstrip("/")
        self.mllp = (mllp_host, mllp_port)
        self.issuer, self.audience = issuer, audience
        self.now = now or datetime.now(timezone.utc)
        self.week = orjson.loads(_data("week.json"))
        day = (self.now.astimezone(PARIS) - timedelta(days=DAYS_AGO)).date()
        self.discharged = datetime.combine(day, time(14, 0), PARIS)

    async def run(self) -> Summary:
        await self._discharge()
        async with httpx.AsyncClient(timeout=30) as http:
            self.http = http
            patient = await self._one("Patient", f"identifier={self.week['patient_identifier']}", SYSTEM_SCOPE)
            people = {key: await self._person(key, spec, patient) for key, spec in self.week["people"].items()}
            entries = receipts = 0
            written: list[dict[str, Any]] = []
            count = len(self.week["entries"])
            for index, item in enumerate(self.week["entries"]):
                sent = self._sent(item, count - index)
                entry = await self._entry(index, item, patient, people, written, sent)
                written.append(entry)
                entries += 1
                for offset, reader in enumerate(item.get("read_by", []), start=1):
                    read_at = min(sent + timedelta(minutes=45 * offset), self.now - timedelta(seconds=count - index))
                    await self._receipt(entry, people[reader], read_at)
                    receipts += 1
        return Summary(patient, entries, receipts, people)

    async def _discharge(self) -> None:
        message = discharge_message(self.discharged, self.now)
        try:
            async with MllpClient(*self.mllp, timeout=30) as client:
                ack = await client.send(message)
        except OSError as error:
            raise DemoError(f"the MLLP listener at {self.mllp[0]}:{self.mllp[1]} is not reachable ({error})") from None
        if b"MSA|AA" not in ack:
            raise DemoError(f"the discharge message was not accepted: {ack.decode('utf-8', 'replace')[:300]}")

    def _token(self, scope: str, fhir_user: str | None = None, patient: str | None = None) -> dict[str, str]:
        subject = fhir_user or "calipso-demo"
        token = self.issuer.token(subject, scope, self.audience, patient=patient, fhir_user=fhir_user, lifetime=600,
                                  client_id="calipso-demo")
        return {"Authorization": f"Bearer {token}"}

    async def _one(self, resource_type: str, query: str, scope: str) -> str:
        response = await self.http.get(f"{self.base}/{resource_type}?{query}", headers=self._token(scope))
        if response.status_code != 200:
            raise DemoError(f"searching {resource_type} failed: HTTP {response.status_code}")
        entries = [e for e in response.json().get("entry", []) if e.get("search", {}).get("mode") == "match"]
        if len(entries) != 1:
            raise DemoError(f"expected one {resource_type} for {query}, found {len(entries)}")
        return f"{resource_type}/{entries[0]['resource']['id']}"

    async def _person(self, key: str, spec: dict[str, Any], patient: str) -> str:
        if "practitioner" in spec:
            return await self._one("Practitioner", f"identifier={self.week['practitioner_system']}|{spec['practitioner']}", SYSTEM_SCOPE)
        if "caregiver" in spec:
            return await self._one("RelatedPerson", f"patient={patient}&name={spec['caregiver']}", SYSTEM_SCOPE)
        return patient

    def _sent(self, item: dict[str, Any], still_to_come: int) -> datetime:
        hours, minutes = (int(part) for part in item["time"].split(":"))
        day = self.discharged.date() + timedelta(days=item["day"])
        moment = datetime.combine(day, time(hours, minutes), PARIS).astimezone(timezone.utc)
        return min(moment, self.now - timedelta(minutes=5 * still_to_come))  # never in the future

    def _headers_of(self, author: str) -> dict[str, str]:
        if author.startswith("Patient/"):
            return self._token("patient/*.cruds", author, author.split("/", 1)[1])
        return self._token(USER_SCOPE, author)

    async def _create(self, resource: dict[str, Any], criteria: str, author: str) -> dict[str, Any]:
        headers = {**self._headers_of(author), "Content-Type": "application/fhir+json", "If-None-Exist": criteria,
                   "Prefer": "return=representation"}
        response = await self.http.post(f"{self.base}/Communication", content=orjson.dumps(resource), headers=headers)
        if response.status_code not in (200, 201):
            raise DemoError(f"writing a notebook entry as {author} failed: HTTP {response.status_code} {response.text[:300]}")
        return dict(response.json())

    async def _entry(self, index: int, item: dict[str, Any], patient: str, people: dict[str, str],
                     written: list[dict[str, Any]], sent: datetime) -> dict[str, Any]:
        guide = _guide()
        kind = guide["kinds"][item["kind"]]
        author = people[item["author"]]
        coding = [{"system": kind["system"], "code": kind["code"], "display": kind["display"]}]
        if "noteType" in kind:
            coding.append(dict(kind["noteType"]))
        identifier = f"entry-{index + 1}"
        entry: dict[str, Any] = {
            "resourceType": "Communication",
            "meta": {"profile": [guide["profiles"]["entry"]]},
            "identifier": [{"system": DEMO_SYSTEM, "value": identifier}],
            "status": "completed",
            "category": [{"coding": coding}],
            "priority": "urgent" if item.get("urgent") else "routine",
            "subject": {"reference": patient},
            "sent": sent.isoformat(timespec="seconds").replace("+00:00", "Z"),
            "sender": {"reference": author},
            "payload": [{"contentString": item["text"]}],
        }
        if "reply_to" in item:
            entry["inResponseTo"] = [{"reference": f"Communication/{written[item['reply_to']]['id']}"}]
        if "label" in item:
            entry["meta"]["security"] = [{"system": guide["visibility_system"], "code": item["label"]}]
        return await self._create(entry, f"identifier={DEMO_SYSTEM}|{identifier}", author)

    async def _receipt(self, entry: dict[str, Any], reader: str, read_at: datetime) -> None:
        guide = _guide()
        receipt = guide["receipt"]
        resource = {
            "resourceType": "Communication",
            "meta": {"profile": [guide["profiles"]["receipt"]]},
            "status": "completed",
            "category": [{"coding": [{"system": receipt["system"], "code": receipt["code"], "display": receipt["display"]}]}],
            "subject": entry["subject"],
            "sent": read_at.isoformat(timespec="seconds").replace("+00:00", "Z"),
            "sender": {"reference": reader},
            "inResponseTo": [{"reference": f"Communication/{entry['id']}"}],
        }
        criteria = f"in-response-to=Communication/{entry['id']}&sender={reader}&category={receipt['system']}|{receipt['code']}"
        await self._create(resource, criteria, reader)


@cache
def _guide() -> dict[str, Any]:
    """The entry kinds and profiles the app uses too (webapp/serving.py reads the guide)."""
    from fhir_server.security.policy import VISIBILITY
    from fhir_server.webapp.serving import guide_summary

    summary = guide_summary()
    kinds = {k["code"]: k for k in summary["kinds"]}
    return {**summary, "kinds": kinds, "receipt": next(k for k in kinds.values() if k["receipt"]),
            "visibility_system": VISIBILITY.system}


def load_demo(base_url: str, mllp_host: str, mllp_port: int, data_dir: Path, audience: str) -> Summary:
    return asyncio.run(Demo(base_url, mllp_host, mllp_port, DevIssuer(data_dir), audience).run())


__all__ = ["Demo", "DemoError", "Summary", "discharge_message", "load_demo"]
