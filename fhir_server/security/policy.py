"""Who may see what: the care-team access policy, as database clauses.

An `Access` is decided once per request from the token and the care circle:
- unrestricted: `system/` scopes (back-end integrations, the HL7 feed) and auth off;
- a practitioner (`fhirUser` Practitioner/x or PractitionerRole/x) reaches the compartments
  of the patients of whose *active* CareTeam x is a participant (a participant whose period
  has ended no longer counts);
- a patient (`fhirUser` Patient/x, or the `patient` launch context) reaches its own compartment;
- a caregiver (`fhirUser` RelatedPerson/x) reaches the compartment of the patient x is linked
  to, notebook resources only.
Resources outside every patient compartment (Practitioner, Organization, ValueSet, ...) are
readable by any scope that grants their type; caregivers are held to notebook types.

The limits are clauses added to every database query a request makes (search, chains, `_has`,
includes, totals, conditional matching, `$everything`), so a denied resource is never counted,
included nor matched. `ACCESS` carries the request's Access to those queries.
"""

from __future__ import annotations

import contextvars
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

import orjson

from fhir_server.search.values import date_range, key
from fhir_server.security.scopes import Grant

NOTEBOOK_TYPES = frozenset({"Patient", "Communication", "CarePlan", "CareTeam"})
NOTHING: dict[str, Any] = {"_id": {"$in": []}}


@dataclass(frozen=True)
class Access:
    """What one request may reach. `patients` None: no compartment limit."""

    grant: Grant | None = None  # None: auth off
    context: str = "system"
    patients: frozenset[str] | None = None
    types: frozenset[str] | None = None  # None: any type the scopes grant
    who: str = "anonymous"  # for the audit trail: "Practitioner/x", "system:client", ...

    @property
    def unrestricted(self) -> bool:
        return self.patients is None and self.types is None

    def may(self, resource_type: str, letter: str) -> bool:
        """Whether the scopes grant this interaction on this type (in the request's context)."""
        if self.grant is None:
            return True
        if self.types is not None and resource_type not in self.types:
            return False
        return self.grant.allows(self.context, resource_type, letter)

    def clause(self, resource_type: str, compartments: dict[str, list[str]]) -> dict[str, Any] | None:
        """The filter a query on `resource_type` must add (None: nothing to add)."""
        if self.types is not None and resource_type not in self.types:
            return NOTHING
        if self.patients is None:
            return None
        if resource_type == "Patient":
            return {"_id": {"$in": sorted(f"Patient/{p}" for p in self.patients)}}
        codes = compartments.get(resource_type)
        if codes is None:
            return None  # not patient data: readable under the scopes
        return {"ix.rf": {"$in": sorted(key(code, f"Patient/{p}") for code in codes for p in self.patients)}}


UNRESTRICTED = Access()
ACCESS: contextvars.ContextVar[Access] = contextvars.ContextVar("calipso_access", default=UNRESTRICTED)


def current_clause(resource_type: str, compartments: dict[str, list[str]]) -> dict[str, Any] | None:
    return ACCESS.get().clause(resource_type, compartments)


async def care_team_patients(collection: Any, members: list[str], now: datetime | None = None) -> frozenset[str]:
    """The patients of the active CareTeams where one of `members` ("Type/id") takes part now."""
    now = now or datetime.now(timezone.utc)
    keys = [key("participant", member) for member in members]
    found: set[str] = set()
    query = {"type": "CareTeam", "ix.rf": {"$in": keys}, "deleted": False}
    async for doc in collection.find(query, {"raw": 1}).limit(10_000):
        team = orjson.loads(doc["raw"])
        if team.get("status") != "active" or not _within(team.get("period"), now):
            continue
        subject = (team.get("subject") or {}).get("reference", "")
        if not subject.startswith("Patient/"):
            continue
        for participant in team.get("participant", []):
            member = (participant.get("member") or {}).get("reference")
            if member in members and _within(participant.get("period"), now):
                found.add(subject.split("/", 1)[1])
                break
    return frozenset(found)


def _within(period: Any, now: datetime) -> bool:
    """Whether a Period (absent: always) covers `now`; a date-only end covers its whole day."""
    if not isinstance(period, dict):
        return True
    start, end = _instant(period.get("start"), False), _instant(period.get("end"), True)
    return (start is None or start <= now) and (end is None or now <= end)


def _instant(text: Any, upper: bool) -> datetime | None:
    if not isinstance(text, str):
        return None
    bounds = date_range(text)
    return None if bounds is None else bounds[1 if upper else 0]


__all__ = ["ACCESS", "Access", "NOTEBOOK_TYPES", "UNRESTRICTED", "care_team_patients", "current_clause"]
