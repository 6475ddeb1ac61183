"""The patient's right to object: an active Consent of the patient whose provision denies an
actor (a reference) or a role takes that actor's access to the patient away, from the next
request on, on every path (reads, searches, includes, totals, `$everything`, history), since
the patient is removed from the reachable set the policy builds its clauses from.

Read from a Consent (R4): `status` active, `patient` the patient, a `provision` (or a nested
one) of `type` deny, in force now (`provision.period`), naming `actor.reference`
(Practitioner/x, PractitionerRole/y, RelatedPerson/z) or `actor.role` (a care team role code:
every member holding that role in the patient's care team). Permit provisions grant nothing:
the care team decides who reaches a patient, a Consent can only take access away. Lifting the
objection (status inactive, or the Consent deleted) restores access, which is why only the
patient (or a `system/` scope) may change or withdraw a Consent (security/writes.py).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Iterator

from fhir_server.security.policy import within
from fhir_server.storage.circle import CircleStore


async def objecting(circles: CircleStore, patients: frozenset[str], members: list[str],
                    roles: dict[str, frozenset[tuple[str, str]]], now: datetime) -> frozenset[str]:
    """Those of `patients` who object to one of `members` (a user's references), or to a role
    `roles[patient]` says the user holds in that patient's care team."""
    if not patients:
        return frozenset()
    found: set[str] = set()
    for consent in await circles.consents_of(patients):
        patient = ((consent.get("patient") or {}).get("reference") or "").removeprefix("Patient/")
        if patient not in patients or consent.get("status") != "active":
            continue
        held = roles.get(patient, frozenset())
        for provision in _denials(consent.get("provision"), now):
            if _names(provision, members, held):
                found.add(patient)
    return frozenset(found)


def _denials(provision: Any, now: datetime) -> Iterator[dict[str, Any]]:
    """The deny provisions in force now, nested ones included."""
    if not isinstance(provision, dict) or not within(provision.get("period"), now):
        return
    if provision.get("type") == "deny":
        yield provision
    for inner in provision.get("provision") or []:
        yield from _denials(inner, now)


def _names(provision: dict[str, Any], members: list[str], held: frozenset[tuple[str, str]]) -> bool:
    for actor in provision.get("actor") or []:
        if not isinstance(actor, dict):
            continue
        if (actor.get("reference") or {}).get("reference") in members:
            return True
        codings = (actor.get("role") or {}).get("coding") or []
        if any((c.get("system"), c.get("code")) in held for c in codings if isinstance(c, dict)):
            return True
    return False


__all__ = ["objecting"]
