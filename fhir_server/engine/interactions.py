"""The engine: the checks every interaction shares, the making and committing of writes, and
the reads.

Every write is planned by transaction.py (a write sent on its own is a one-entry plan,
writes.py); nothing else writes to the database. A write is: check the type and id,
validate, stamp id/versionId/lastUpdated, serialise once, commit current + history + event in
one transaction, then run the on-commit hooks.
"""

from __future__ import annotations

import logging
import re
import traceback
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any, Callable, Protocol

import orjson

from fhir_server.outcome import FhirError, Issue
from fhir_server.search.executor import Searcher
from fhir_server.search.index import build_index
from fhir_server.storage.matching import matches
from fhir_server.search.parameters import parameters_for
from fhir_server.spec import Spec
from fhir_server.storage.windows import sort_indexes
from fhir_server.storage.store import (INDEXES, RESOURCES, Bookkeeping, Current, ResourceStore, StorageBusy, TooLargeToStore, Version,
                                       Write)
from fhir_server.national import national_search_parameters
from fhir_server.engine.pacing import Workload
from fhir_server.ig import ImplementationGuide, load_guide
from fhir_server.security.policy import ACCESS, CIRCLE_TYPES
from fhir_server.security.writes import check_replaceable, check_written
from fhir_server.validation import Validator

log = logging.getLogger("calipso.engine")

ID_PATTERN = re.compile(r"[A-Za-z0-9\-.]{1,64}")
ETAG = re.compile(r'^\s*(?:W/)?"?(?P<version>[0-9]{1,11})"?\s*$')
CONTENDED = "Too many concurrent writes to this resource; retry"
ONE_MS = timedelta(milliseconds=1)


def utc_now() -> datetime:
    """Now, to the millisecond (what MongoDB stores), in UTC."""
    now = datetime.now(timezone.utc)
    return now.replace(microsecond=now.microsecond // 1000 * 1000)


def fhir_instant(moment: datetime) -> str:
    """An R4 `instant` with milliseconds: 2026-11-22T10:55:14.762Z."""
    moment = moment.astimezone(timezone.utc)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


@dataclass(frozen=True, slots=True)
class Outcome:
    """The result of a write: the version now current and whether it created the resource."""

    version: Version
    created: bool


class TypeRule(Protocol):
    """What one resource type asks of writes beyond its profiles (subscriptions/rules.py)."""

    def admit(self, resource: dict[str, Any]) -> None:
        """Raise a FhirError (422) when the validated resource may not be written."""

    def withhold(self, resource: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any] | None]:
        """The resource to store and serve, and what to keep of it privately (None: nothing new)."""


class Engine:
    """Create, read, update, delete and history for every R4 resource type."""

    def __init__(
        self,
        store: ResourceStore,
        spec: Spec,
        clock: Callable[[], datetime] = utc_now,
        guide: ImplementationGuide | None = None,
        enforce_profiles: bool = False,
        workload: Workload | None = None,
    ):
        self.store = store
        self.workload = workload or Workload()  # who is at work: long tasks give way (pacing.py)
        self.spec = spec
        self.guide = guide or load_guide()
        self.validator = Validator(spec, self.guide, enforce_profiles)
        self.parameters = parameters_for(spec, (*self.guide.search_parameters(), *national_search_parameters()))
        self.searcher = Searcher(store.current_versions, spec, self.parameters, self.guide.terminology.members,
                                 sort_indexes(INDEXES[RESOURCES]))
        self._clock = clock
        self.care_circle_changes = 0  # bumped by every commit touching a care team: cached access decisions expire
        # Called after every commit (single writes, transactions, the bridge) with its versions,
        # in commit order: what must follow a durable write hangs here (the subscriptions'
        # dispatcher will). A hook does not block nor undo the write: it schedules its work.
        self.on_commit: list[Callable[[list[Version]], None]] = [self._note_circle_changes]
        self.type_rules: dict[str, TypeRule] = {}  # per resource type, added by the composition root

    # -- checks shared by every interaction -------------------------------------------------

    def check_type(self, resource_type: str) -> None:
        if not self.spec.is_resource_type(resource_type):
            raise FhirError.of(404, "not-supported", f"Unknown resource type '{_clip(resource_type)}'")

    def check_id(self, resource_id: str) -> None:
        if ID_PATTERN.fullmatch(resource_id) is None:
            raise FhirError.of(
                400, "value", f"Invalid id '{_clip(resource_id)}': 1 to 64 of A-Z a-z 0-9 - ."
            )

    def check_allowed(self, resource_type: str, letter: str) -> None:
        """403 unless the request's token grants this interaction (a SMART letter) on the type."""
        if not ACCESS.get().may(resource_type, letter):
            raise FhirError.of(403, "forbidden", f"The token's scopes do not allow this interaction on {_clip(resource_type)}")

    async def check_visible(self, resource_type: str, resource_id: str) -> None:
        """404, as for a resource that does not exist, when it lies outside the compartments
        the request's token reaches (a 403 would tell that it exists)."""
        clause = ACCESS.get().clause(resource_type, self.spec.compartments["Patient"])
        if clause is None:
            return
        references = await self.store.references(resource_type, resource_id)
        if references is None or not _inside(clause, resource_type, resource_id, references):
            raise FhirError.of(404, "not-found", f"{resource_type}/{_clip(resource_id)} is not known")

    async def check_replaceable(self, resource_type: str, resource_id: str) -> None:
        """404, as for a resource that does not exist, unless the request's token may replace or
        delete the stored version (security/writes.py)."""
        access = ACCESS.get()
        if access.patients is None:
            return
        references = await self.store.references(resource_type, resource_id)
        check_replaceable(access, resource_type, resource_id, references, self.spec.compartments["Patient"])

    def validate(self, resource_type: str, body: Any) -> dict[str, Any]:
        """The body as a resource of `resource_type`; 400 when it is not one, 422 when invalid."""
        check_object(body)
        declared = body.get("resourceType")
        if declared != resource_type:
            raise FhirError.of(
                400,
                "invalid",
                f"The body's resourceType is {_clip(str(declared))!r} but the URL is for {resource_type}",
                expression="resourceType",
            )
        issues = self.validator.validate_write(body, resource_type)
        if issues:
            raise FhirError(422, issues)
        rule = self.type_rules.get(resource_type)
        if rule is not None:
            rule.admit(body)
        return body

    # -- writes (engine/writes.py and transaction.py plan them; these make and commit them) ------

    def prepare(
        self,
        resource_type: str,
        resource_id: str,
        resource: dict[str, Any],
        method: str,
        current: Current | Version | None,
        updated: datetime,
        guard: str | None = None,
    ) -> Write:
        """The next version of a validated resource: stamped, serialised once, indexed."""
        version = current.version + 1 if current else 1
        rule, private = self.type_rules.get(resource_type), None
        if rule is not None:
            resource, private = rule.withhold(resource)
        stamped = _stamp(resource, resource_type, resource_id, version, updated)
        ix, so = build_index(stamped, self.parameters.for_type(resource_type))
        check_written(ACCESS.get(), resource_type, resource_id, ix.get("rf", []), self.spec.compartments["Patient"])
        return Write(
            type=resource_type,
            id=resource_id,
            version=version,
            updated=updated,
            method=method,
            raw=orjson.dumps(stamped),
            replaces=current.version if current else None,
            index={"ix": ix, "so": so},
            guard=guard,
            private=private,
        )

    @staticmethod
    def prepare_delete(resource_type: str, resource_id: str, current: Current | Version, updated: datetime) -> Write:
        """The tombstone that follows the current version."""
        return Write(
            type=resource_type,
            id=resource_id,
            version=current.version + 1,
            updated=updated,
            method="DELETE",
            raw=None,
            replaces=current.version,
        )

    async def commit(self, *writes: Write, also: tuple[Bookkeeping, ...] = ()) -> list[Version]:
        """Commit writes prepared together, atomically (a transaction Bundle); their versions.

        `also`: bookkeeping that must commit with them (the bridge's inbox status)."""
        await self._commit(*writes, also=also)
        return [_version_of(w) for w in writes]

    async def _commit(self, *writes: Write, also: tuple[Bookkeeping, ...] = ()) -> None:
        try:
            await self.store.commit(*writes, also=also)
        except TooLargeToStore:
            raise FhirError.of(413, "too-costly", "The resource, once indexed, is larger than the database stores in one document (16 MB)") from None
        except StorageBusy:
            raise FhirError(
                503, Issue("transient", "The database is busy with conflicting writes; retry shortly"),
                headers={"Retry-After": "1"},
            ) from None
        versions = [_version_of(w) for w in writes]
        for hook in self.on_commit:
            try:
                hook(versions)
            except Exception as error:  # noqa: BLE001 - the write is committed: a hook's failure must not turn it into an error
                frames = "".join(traceback.format_tb(error.__traceback__, limit=-4))  # no message: it may quote data
                log.error("on-commit hook %s failed type=%s\n%s", getattr(hook, "__name__", "?"), type(error).__name__, frames)

    def _note_circle_changes(self, versions: list[Version]) -> None:
        if any(v.type in CIRCLE_TYPES for v in versions):
            self.care_circle_changes += 1

    def next_time(self, *currents: Current | Version | None) -> datetime:
        """Now, but never before a version being replaced (history stays in order)."""
        now = self._clock()
        latest = max((c.updated for c in currents if c is not None), default=None)
        if latest is not None and now <= latest:
            return latest + ONE_MS
        return now

    # -- reads -------------------------------------------------------------------------------

    async def read(self, resource_type: str, resource_id: str, to_replace: bool = False) -> Version:
        """The current version; `to_replace`: also 404 unless the token may replace it (PATCH)."""
        self.check_type(resource_type)
        self.check_id(resource_id)
        access = ACCESS.get()
        compartments = self.spec.compartments["Patient"]
        clause = access.clause(resource_type, compartments)
        if clause is None and not (to_replace and access.patients is not None):
            version = await self.store.read(resource_type, resource_id)
        else:  # one query: the version and what tells whether the token reaches (and may replace) it
            version, references = await self.store.read_with_references(resource_type, resource_id)
            if version is not None and (version.deleted or (clause is not None and not _inside(clause, resource_type, resource_id, references))):
                version = None  # 404, as if it did not exist
            if version is not None and to_replace:
                check_replaceable(access, resource_type, resource_id, references, compartments)
        if version is None:
            raise FhirError.of(404, "not-found", f"{resource_type}/{resource_id} is not known")
        if version.deleted:
            raise _gone(version)
        return version

    async def vread(self, resource_type: str, resource_id: str, version_id: str) -> Version:
        self.check_type(resource_type)
        self.check_id(resource_id)
        await self.check_visible(resource_type, resource_id)
        number = parse_version(version_id)
        if number is None:
            raise FhirError.of(404, "not-found", f"No version '{_clip(version_id)}' of {resource_type}/{resource_id}")
        version = await self.store.read_version(resource_type, resource_id, number)
        if version is None:
            raise FhirError.of(404, "not-found", f"{resource_type}/{resource_id} has no version {number}")
        if version.deleted:
            raise _gone(version)
        return version

    async def indexed_version(self, resource_type: str, resource_id: str, number: int, raw: bytes | None = None) -> dict[str, Any] | None:
        """A version as search sees it stored (its index entries: what access clauses and search
        criteria are matched against), from `raw` or from the history; None when that version
        holds no resource (a deletion) or does not exist. Only current versions are indexed in
        the database: a deleted resource's compartment is decided from the version before."""
        if raw is None:
            found = await self.store.read_version(resource_type, resource_id, number)
            raw = found.raw if found is not None else None
        if raw is None:
            return None
        ix, so = build_index(orjson.loads(raw), self.parameters.for_type(resource_type))
        return {"_id": f"{resource_type}/{resource_id}", "type": resource_type, "id": resource_id, "ix": ix, "so": so, "deleted": False}


def parse_etag(text: str) -> int | None:
    """The version an ETag (`W/"3"`, `"3"`, `3`) names, or None when it names none of ours."""
    match = ETAG.match(text)
    return int(match["version"]) if match else None


def parse_version(text: str) -> int | None:
    """A version id as an int, or None when it is not one of ours."""
    return int(text) if text.isdigit() and len(text) < 12 else None


def check_object(body: Any) -> None:
    """400 unless a body to write is a JSON object."""
    if not isinstance(body, dict):
        raise FhirError.of(400, "structure", "The body must be a JSON object (a FHIR resource)")


def check_if_match(current: Current | Version | None, if_match: int | None) -> None:
    """412 unless the current version is the one `If-Match` names (None: no condition)."""
    if if_match is None:
        return
    if current is None or current.deleted:
        raise FhirError.of(412, "conflict", f"If-Match names version {if_match}, but the resource does not exist")
    if current.version != if_match:
        raise FhirError.of(412, "conflict", f"If-Match names version {if_match}, the current version is {current.version}")


def _inside(clause: dict[str, Any], resource_type: str, resource_id: str, references: list[str]) -> bool:
    """Whether a stored resource with these access entries (references and security labels,
    store.access_entries) satisfies an access clause."""
    return matches({"_id": f"{resource_type}/{resource_id}", "type": resource_type, "ix": {"rf": references, "tk": references}}, clause)


def _stamp(resource: dict[str, Any], resource_type: str, resource_id: str, version: int, updated: datetime) -> dict[str, Any]:
    """The validated JSON with the server's id and meta (serialised once, by the caller)."""
    meta = dict(resource.get("meta") or {})
    meta["versionId"] = str(version)
    meta["lastUpdated"] = fhir_instant(updated)
    stamped = {"resourceType": resource_type, "id": resource_id, "meta": meta}
    stamped.update((k, v) for k, v in resource.items() if k not in stamped)
    return stamped


def _version_of(write: Write) -> Version:
    return Version(
        type=write.type,
        id=write.id,
        version=write.version,
        updated=write.updated,
        deleted=write.deleted,
        raw=write.raw,
        method=write.method,
    )


def _gone(version: Version) -> FhirError:
    return FhirError(
        410,
        Issue("deleted", f"{version.type}/{version.id} was deleted (version {version.version})"),
        headers={"ETag": f'W/"{version.version}"'},
    )


def _clip(text: str, limit: int = 64) -> str:
    return text if len(text) <= limit else text[:limit] + "…"


__all__ = ["CONTENDED", "Engine", "TypeRule", "Outcome", "check_if_match", "check_object", "fhir_instant", "parse_etag", "parse_version", "utc_now"]
