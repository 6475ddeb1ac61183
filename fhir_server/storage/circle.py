"""The care-circle lookups the access policy makes before it decides a token's reach (security/
gate.py, policy.py, objection.py), as queries on the current versions. The policy reasons
about FHIR resources; how they are found, and how their index entries are spelled, stays here.
"""

from __future__ import annotations

from typing import Any

import orjson

from fhir_server.values import SEPARATOR, key

MAX_TEAMS = 10_000
MAX_CONSENTS = 10_000
MAX_ROLES = 100


class CircleStore:
    """Reads of the current versions for the policy (never a write, never a history row)."""

    def __init__(self, current_versions: Any):
        self._current = current_versions

    async def care_teams_with(self, members: list[str]) -> list[dict[str, Any]]:
        """The CareTeams (any status) in which one of `members` ("Type/id") is a participant."""
        query = {"type": "CareTeam", "deleted": False, "ix.rf": {"$in": [key("participant", m) for m in members]}}
        return [orjson.loads(doc["raw"]) async for doc in self._current.find(query, {"raw": 1}).limit(MAX_TEAMS)]

    async def consents_of(self, patients: frozenset[str]) -> list[dict[str, Any]]:
        """The Consents (any status) whose patient is one of `patients` (ids)."""
        query = {"type": "Consent", "deleted": False, "ix.rf": {"$in": [key("patient", f"Patient/{p}") for p in sorted(patients)]}}
        return [orjson.loads(doc["raw"]) async for doc in self._current.find(query, {"raw": 1}).limit(MAX_CONSENTS)]

    async def roles_of_practitioner(self, practitioner_id: str) -> list[str]:
        """"PractitionerRole/x" of every role whose practitioner is this one."""
        query = {"type": "PractitionerRole", "deleted": False, "ix.rf": key("practitioner", f"Practitioner/{practitioner_id}")}
        return [doc["_id"] async for doc in self._current.find(query, {"_id": 1}).limit(MAX_ROLES)]

    async def practitioners_of_role(self, role_id: str) -> list[str]:
        """The references of a PractitionerRole's practitioner ([] when the role is unknown)."""
        role = await self._current.find_one({"_id": f"PractitionerRole/{role_id}", "deleted": False}, {"ix.rf": 1})
        return _referenced(role, "practitioner")

    async def related_person(self, person_id: str) -> tuple[list[str], list[tuple[str, str]]]:
        """A RelatedPerson's `patient` references and its relationship codings (system, code)."""
        person = await self._current.find_one({"_id": f"RelatedPerson/{person_id}", "deleted": False}, {"ix.rf": 1, "ix.tk": 1})
        codings = [entry.split(SEPARATOR)[1:3] for entry in (person or {}).get("ix", {}).get("tk", [])
                   if entry.startswith("relationship" + SEPARATOR) and entry.count(SEPARATOR) == 2]
        return _referenced(person, "patient"), [(system, code) for system, code in codings]


def _referenced(doc: dict[str, Any] | None, parameter: str) -> list[str]:
    """What a stored resource's reference parameter points at, read from its index entries."""
    prefix = parameter + SEPARATOR
    return [entry[len(prefix):] for entry in (doc or {}).get("ix", {}).get("rf", []) if entry.startswith(prefix)]


__all__ = ["CircleStore"]
