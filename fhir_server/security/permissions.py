"""What a route asks of the token that calls it, declared next to the route (rest/routes.py).

A route with no Permission is refused, whatever the token: access is decided per route, never
by default. A Permission says which SMART letter the token needs on which resource types, how
the interaction is recorded in the audit trail, and whether the route is public (no token),
for `system/` scopes only, or checked entry by entry (transaction and batch Bundles).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from starlette.requests import Request

from fhir_server.security.scopes import CREATE, DELETE, READ, SEARCH, UPDATE

TypesOf = Callable[[Request], list[str]]


def path_type(request: Request) -> list[str]:
    """The resource type in the URL (`/fhir/{type}/...`)."""
    return [request.path_params.get("type", "")]


def listed_types(request: Request) -> list[str]:
    """The types a system-level search names in `_type` (none: refused for restricted tokens)."""
    return [t for value in request.query_params.getlist("_type") for t in value.split(",") if t]


def fixed(resource_type: str) -> TypesOf:
    return lambda request: [resource_type]


@dataclass(frozen=True)
class Permission:
    """What one route needs: a SMART letter on some types, and how it is audited."""

    letter: str | None  # None: public, or checked per entry
    subtype: str  # http://hl7.org/fhir/restful-interaction code, for AuditEvent.subtype
    action: str  # AuditEvent.action: C R U D E
    types: TypesOf = path_type
    public: bool = False  # no token needed (discovery); runs with no access to data
    system_only: bool = False  # `system/` scopes only (history across resources, the HL7 inbox)
    per_entry: bool = False  # transaction / batch: each entry is checked as it is read
    per_type: bool = False  # $export kick-off: each type the export asks is checked (bulk/jobs.py)
    own: bool = False  # the caller's own export jobs: the endpoint finds them by their owner, 404 for anyone else's


def notes(request: Request) -> list[str]:
    """The CdL base's notes: the type the client names and the type they are stored as."""
    return ["DocumentReference", "Communication"]


PUBLIC = Permission(None, "capabilities", "R", public=True)
READS = Permission(READ, "read", "R")
VREADS = Permission(READ, "vread", "R")
INSTANCE_HISTORY = Permission(READ, "history-instance", "R")
TYPE_HISTORY = Permission(READ, "history-type", "R", system_only=True)
SYSTEM_HISTORY = Permission(READ, "history-system", "R", types=fixed("*"), system_only=True)
SEARCHES = Permission(SEARCH, "search-type", "E")
SYSTEM_SEARCHES = Permission(SEARCH, "search-system", "E", types=listed_types)
EVERYTHING = Permission(SEARCH, "operation", "E", types=fixed("Patient"))
CREATES = Permission(CREATE, "create", "C")
UPDATES = Permission(UPDATE, "update", "U")
PATCHES = Permission(UPDATE, "patch", "U")
DELETES = Permission(DELETE, "delete", "D")
BUNDLES = Permission(None, "transaction", "E", per_entry=True)
VALIDATES = Permission(READ, "operation", "E")
EXPANDS = Permission(READ, "operation", "E", types=fixed("ValueSet"))
LOOKS_UP = Permission(READ, "operation", "E", types=fixed("CodeSystem"))
SUBSCRIPTION_STATUS = Permission(READ, "operation", "E", types=fixed("Subscription"))  # $status, $events
EXPORTS = Permission(None, "operation", "E", types=fixed("*"), per_type=True)
EXPORT_JOBS = Permission(None, "operation", "R", types=fixed("*"), own=True)  # poll, download
EXPORT_CANCELS = Permission(None, "operation", "D", types=fixed("*"), own=True)
HL7_INBOX = Permission(None, "create", "C", system_only=True)
NOTE_READS = Permission(READ, "read", "R", types=notes)
NOTE_SEARCHES = Permission(SEARCH, "search-type", "E", types=notes)
NOTE_UPDATES = Permission(UPDATE, "update", "U", types=notes)
NOTE_DELETES = Permission(DELETE, "delete", "D", types=notes)

__all__ = ["BUNDLES", "CREATES", "DELETES", "EVERYTHING", "EXPANDS", "EXPORTS", "EXPORT_CANCELS", "EXPORT_JOBS", "HL7_INBOX", "INSTANCE_HISTORY", "LOOKS_UP", "PATCHES", "SUBSCRIPTION_STATUS",
           "NOTE_DELETES", "NOTE_READS", "NOTE_SEARCHES", "NOTE_UPDATES", "PUBLIC", "Permission", "READS", "SEARCHES", "SYSTEM_HISTORY", "SYSTEM_SEARCHES", "TYPE_HISTORY", "UPDATES",
           "VALIDATES", "VREADS"]
