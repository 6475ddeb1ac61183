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

Fail-closed: where nothing set `ACCESS`, it is `NOBODY`, which reaches nothing and may do
nothing. Work that is not a client's request (the HL7 bridge, the audit trail, installing the
guide, operator commands) says so: `with acting_as(SYSTEM): ...`.
"""

from __future__ import annotations

import contextvars
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from importlib.resources import files
from typing import Any, Iterator

import orjson

from fhir_server.security.scopes import Grant
from fhir_server.security.tokens import Claims
from fhir_server.storage.circle import CircleStore
from fhir_server.storage.reach import NOTHING, reach_filter
from fhir_server.values import date_range, key

NOTEBOOK_TYPES = frozenset({"Patient", "Communication", "CarePlan", "CareTeam"})
SYSTEM_TYPES = frozenset({"AuditEvent"})
# types whose resources belong to the token that wrote them (a subscription names patients and
# an endpoint): a token limited to some patients reaches only its own, tagged with its owner
OWNED_TYPES = frozenset({"Subscription"})
OWNER_SYSTEM = "https://fhir.hopitauxchampagnesud.fr/calipso/CodeSystem/resource-owner"
CIRCLE_TYPES = frozenset({"CareTeam", "PractitionerRole", "RelatedPerson", "Consent"})  # writes to these change who reaches whom  # the audit trail: system/ scopes only
HIDDEN = "\x00hidden"  # the cache entry of the labels hidden from an Access


@dataclass(frozen=True)
class Visibility:
    """security/visibility-labels.json: the labels, who they hide from, and authors' parameters."""

    system: str
    hides: dict[str, frozenset[str]]
    audiences: dict[str, frozenset[str]]
    legal_representatives: frozenset[tuple[str, str]]
    authors: dict[str, str]

    def audiences_of(self, kind: str, relationships: frozenset[tuple[str, str]] = frozenset()) -> frozenset[str]:
        """The audiences of a user of this kind ("Practitioner", "Patient", "RelatedPerson")."""
        found = set(self.audiences.get(kind, ()))
        if kind == "RelatedPerson" and relationships & self.legal_representatives:
            found.add("legal-representative")
        return frozenset(found)


def _visibility() -> Visibility:
    table = orjson.loads(files("fhir_server.security").joinpath("visibility-labels.json").read_bytes())
    legal = table["legal_representatives"]
    return Visibility(table["system"], {code: frozenset(a) for code, a in table["hides"].items()},
                      {kind: frozenset(a) for kind, a in table["audiences"].items()},
                      frozenset((legal["system"], code) for code in legal["codes"]), dict(table["authors"]))


VISIBILITY = _visibility()


class Keys(list):  # type: ignore[type-arg]
    """A sorted list of index keys (sent to the database as an array) whose membership test,
    used when candidates are matched in memory, is a set lookup: a practitioner may reach
    hundreds of patients, and every candidate row is checked against all their keys."""

    def __init__(self, keys: Any):
        super().__init__(sorted(keys))
        self._members = frozenset(self)

    def __contains__(self, item: object) -> bool:
        return item in self._members


@dataclass(frozen=True)
class Access:
    """What one request may reach. `patients` None: no compartment limit."""

    grant: Grant | None = None  # None: auth off
    context: str = "system"
    patients: frozenset[str] | None = None
    types: frozenset[str] | None = None  # None: any type the scopes grant
    who: str = "anonymous"  # for the audit trail: "Practitioner/x", "system:client", ...
    coordinates: frozenset[str] = frozenset()  # patients whose care circle this user may change (see writes.py)
    audiences: frozenset[str] = frozenset()  # who the user is for the visibility labels: "patient", "health-professional", ...
    authors: frozenset[str] = frozenset()  # the user's references: what it wrote stays visible to it
    claims: Claims | None = None  # the token's, when a token decided this Access (a subscription keeps them)
    _clauses: dict[str, Keys] = field(default_factory=dict, compare=False, repr=False)

    @property
    def unrestricted(self) -> bool:
        return self.patients is None and self.types is None

    def may(self, resource_type: str, letter: str) -> bool:
        """Whether the scopes grant this interaction on this type (in the request's context)."""
        if self.grant is None:
            return True
        if self.types is not None and resource_type not in self.types:
            return False
        if resource_type in SYSTEM_TYPES and self.context != "system":
            return False
        return self.grant.allows(self.context, resource_type, letter)

    def clause(self, resource_type: str, compartments: dict[str, list[str]]) -> dict[str, Any] | None:
        """The filter a query on `resource_type` must add (None: nothing to add)."""
        if self.types is not None and resource_type not in self.types:
            return NOTHING
        if resource_type in SYSTEM_TYPES and self.grant is not None and self.context != "system":
            return NOTHING
        if self.patients is None:
            return None
        if resource_type in OWNED_TYPES:
            return reach_filter(tokens=[self.owner_entry])
        if resource_type == "Patient":
            return reach_filter(ids=self._keys("Patient", ()), **self._mask(resource_type))
        codes = compartments.get(resource_type)
        if codes is None:
            return None  # not patient data: readable under the scopes
        return reach_filter(references=self._keys(resource_type, tuple(codes)), **self._mask(resource_type))

    @property
    def owner_entry(self) -> str:
        """The index entry of the owner tag this user's resources of an owned type carry."""
        return key("_tag", OWNER_SYSTEM, self.who)

    def _mask(self, resource_type: str) -> dict[str, Keys]:
        """What the visibility labels hide from this user, and the user's author entries for
        this type (what it wrote stays visible to it)."""
        hidden = self._hidden()
        if not hidden:
            return {}
        author = VISIBILITY.authors.get(resource_type)
        if author is None or not self.authors:
            return {"hidden": hidden}
        return {"hidden": hidden, "authored": Keys(key(author, ref) for ref in self.authors)}

    def masked(self, resource_type: str, entries: list[str]) -> bool:
        """Whether a stored resource with these access entries (its reference and security label
        index entries) is hidden from this user by a visibility label it did not write."""
        hidden = self._hidden()
        if not hidden or not any(entry in hidden for entry in entries):
            return False
        author = VISIBILITY.authors.get(resource_type)
        return not (author and any(key(author, ref) in entries for ref in self.authors))

    def _hidden(self) -> Keys:
        cache = self._clauses
        if HIDDEN not in cache:
            cache[HIDDEN] = Keys(key("_security", VISIBILITY.system, code)
                                 for code, audiences in VISIBILITY.hides.items() if audiences & self.audiences)
        return cache[HIDDEN]

    def _keys(self, resource_type: str, codes: tuple[str, ...]) -> Keys:
        """The compartment keys of the reachable patients for one type (built once per Access)."""
        cache = self._clauses
        if resource_type not in cache:
            patients = self.patients or frozenset()
            cache[resource_type] = Keys(f"Patient/{p}" for p in patients) if not codes else Keys(
                key(code, f"Patient/{p}") for code in codes for p in patients)
        return cache[resource_type]


UNRESTRICTED = Access()  # a request while authentication is off (loopback quick start)
SYSTEM = Access(who="system:calipso")  # the server's own work: bridge, audit trail, guide, operator commands
NOBODY = Access(Grant(), "none", frozenset(), frozenset(), who="anonymous")  # what nothing decided: nothing
ACCESS: contextvars.ContextVar[Access] = contextvars.ContextVar("calipso_access", default=NOBODY)


@contextmanager
def acting_as(access: Access) -> Iterator[Access]:
    """Run a block (and the tasks it starts) under an access decided by its caller."""
    token = ACCESS.set(access)
    try:
        yield access
    finally:
        ACCESS.reset(token)


def current_clause(resource_type: str, compartments: dict[str, list[str]]) -> dict[str, Any] | None:
    return ACCESS.get().clause(resource_type, compartments)


@dataclass(frozen=True)
class Circle:
    """Where a practitioner stands: the patients it reaches, those whose circle it coordinates,
    and the roles it holds in each patient's care team."""

    patients: frozenset[str]
    coordinates: frozenset[str]
    roles: dict[str, frozenset[tuple[str, str]]] = field(default_factory=dict)


def _coordinating_roles() -> frozenset[tuple[str, str]]:
    table = orjson.loads(files("fhir_server.security").joinpath("coordinating-roles.json").read_bytes())
    return frozenset((table["system"], code) for code in table["codes"])


COORDINATING_ROLES = _coordinating_roles()


async def care_circle(circles: CircleStore, members: list[str], now: datetime | None = None) -> Circle:
    """The patients of the active CareTeams where one of `members` ("Type/id") takes part now,
    and among them those where it takes part in a coordinating role."""
    now = now or datetime.now(timezone.utc)
    found: set[str] = set()
    coordinated: set[str] = set()
    roles: dict[str, set[tuple[str, str]]] = {}
    for team in await circles.care_teams_with(members):
        if team.get("status") != "active" or not within(team.get("period"), now):
            continue
        subject = (team.get("subject") or {}).get("reference", "")
        if not subject.startswith("Patient/"):
            continue
        patient = subject.split("/", 1)[1]
        for participant in team.get("participant", []):
            member = (participant.get("member") or {}).get("reference")
            if member in members and within(participant.get("period"), now):
                found.add(patient)
                roles.setdefault(patient, set()).update(_roles(participant))
                if _coordinates(participant):
                    coordinated.add(patient)
    return Circle(frozenset(found), frozenset(coordinated), {p: frozenset(r) for p, r in roles.items()})


def _roles(participant: dict[str, Any]) -> Iterator[tuple[str, str]]:
    for role in participant.get("role") or []:
        codings = role.get("coding") if isinstance(role, dict) else None
        for coding in codings or []:
            if isinstance(coding, dict) and isinstance(coding.get("system"), str) and isinstance(coding.get("code"), str):
                yield coding["system"], coding["code"]


def _coordinates(participant: dict[str, Any]) -> bool:
    codings = (c for role in participant.get("role") or [] for c in (role.get("coding") or []))
    return any((c.get("system"), c.get("code")) in COORDINATING_ROLES for c in codings)


def within(period: Any, now: datetime) -> bool:
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


__all__ = ["ACCESS", "Access", "CIRCLE_TYPES", "NOBODY", "NOTEBOOK_TYPES", "SYSTEM", "UNRESTRICTED", "Circle", "acting_as",
           "VISIBILITY", "care_circle", "current_clause", "within"]
