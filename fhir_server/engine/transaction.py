"""Transaction and batch Bundles: the write entries of a transaction are planned together and
committed in one database transaction (all or nothing); a batch runs each entry on its own.
(Reading the entries: bundle_entries.py; the references inside them: bundle_references.py.)

A plan, in the order R4 prescribes (DELETE, POST, PUT/PATCH; GET entries are left to the
REST layer, which runs them after the commit so they see its effects):

1. targets: each entry's "Type/id" (conditional URLs and `ifNoneExist` through the search
   engine; new ids for creates) and the map from `fullUrl` placeholders to them;
2. references: `urn:uuid:` / `urn:oid:` / `fullUrl` placeholders and conditional references
   (`Patient?identifier=sys|val`, matched against the database *and* the Bundle's own
   resources) rewritten everywhere a Reference appears, and in the narrative;
3. writes: validated, stamped with one shared `lastUpdated`, indexed, committed together.

While the database answers the lookups of step 1, the resources to write are validated with
each reference standing for its target by type alone (`Type/stand-in`): our validation looks at
a reference's target type only, so a resource that passes then passes once rewritten. Step 3
validates again what changed since (a merge) and whatever was not reached in time; a resource
that failed early is validated again as written, so its issues name the real references.

A version conflict or a conditional-create race found at commit time replans the whole
transaction from the start, unless the entry carried `ifMatch` (then it is the client's 412).

A write sent on its own (`POST Type`, `PUT Type/id`, `PATCH`, `DELETE`, and their conditional
forms) is a plan of one entry with no index (engine/writes.py): one implementation of the
conditions and of the retries. It rewrites no references: placeholders and conditional
references belong to Bundles.
"""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass, field
from typing import Any

import orjson

from fhir_server.engine.bundle_entries import ORDER, BundleLimits, BundleRequest, EntryIndex, EntryResult, blame, entry_error
from fhir_server.engine.bundle_references import (PLACEHOLDERS, STAND_IN, is_conditional, references_in, rewritten,
                                                  with_stand_ins)
from fhir_server.engine.criteria import guard_key, matching, parse_criteria
from fhir_server.engine.pacing import NO_PACING, Pacer
from fhir_server.engine.retry import PLAN_ATTEMPTS, LostRace, retrying
from fhir_server.engine.interactions import Engine, check_if_match, parse_etag
from fhir_server.engine.patch import JSON_PATCH, apply_patch, patch_from_binary, patch_kind
from fhir_server.outcome import FhirError, Issue
from fhir_server.search.index import build_index
from fhir_server.storage.matching import matches
from fhir_server.storage.store import Bookkeeping, GuardTaken, Version, VersionConflict, Write
from fhir_server.security.policy import ACCESS
from fhir_server.security.writes import check_absent

MAX_DELETE_MATCHES = 100
CONDITIONAL_LIMIT = 2  # a conditional target or reference needs to know: none, one, or several
# loop turns PyMongo takes to put the lookups' queries on the wire (server selection, connection
# checkout, send), measured: with fewer, the validation below holds some of them back
TURNS_TO_SEND = 4


# -- planning ---------------------------------------------------------------------------------


@dataclass
class _Target:
    keys: list[str]  # "Type/id" (several for a conditional delete)
    existing: bool = False  # a conditional create that found its match
    guard: str | None = None


@dataclass
class _Plan:
    """One attempt at committing a set of write entries."""

    engine: Engine
    requests: list[BundleRequest]
    base_url: str
    limits: BundleLimits
    targets: dict[EntryIndex, _Target] = field(default_factory=dict)
    placeholders: dict[str, str] = field(default_factory=dict)
    conditional: dict[str, str] = field(default_factory=dict)
    currents: dict[str, Version] = field(default_factory=dict)
    writes: list[Write] = field(default_factory=list)
    write_entries: list[EntryIndex] = field(default_factory=list)
    results: dict[EntryIndex, EntryResult] = field(default_factory=dict)
    index_documents: dict[EntryIndex, dict[str, Any]] = field(default_factory=dict)
    searches: dict[tuple[str, tuple[tuple[str, str], ...], int], list[str]] = field(default_factory=dict)
    prefetched: dict[str, Version] = field(default_factory=dict)  # current versions the lookups brought
    fresh: set[str] = field(default_factory=set)  # keys this plan made up (new ids): nothing stored there
    valid_early: set[EntryIndex] = field(default_factory=set)  # entries whose resource passed while the lookups ran
    # whether the entries come from a Bundle (a write sent on its own has no index): read per entry, decided once
    in_bundle: bool = field(init=False)

    def __post_init__(self) -> None:
        self.in_bundle = all(r.index is not None for r in self.requests)

    async def prepare(self, pacer: Pacer = NO_PACING) -> None:
        """Between entries (~1 ms of work each), `pacer` lets other requests go first."""
        ordered = sorted(self.requests, key=lambda r: ORDER[r.method])
        if self.in_bundle:
            looking_up = asyncio.ensure_future(self._look_up_conditionals(ordered))
            try:
                await self._validate_meanwhile(looking_up, ordered)
            finally:
                await looking_up
        for request in ordered:
            await pacer.turn()
            with blame(request.index):
                await self._target(request)
        self._refuse_duplicates()
        keys = sorted({k for t in self.targets.values() for k in t.keys})
        unread = [k for k in keys if k not in self.prefetched and k not in self.fresh]
        self.currents = {k: self.prefetched[k] for k in keys if k in self.prefetched}
        if unread:
            self.currents.update(await self.engine.store.read_many(unread))
        replaced = {k for t in self.targets.values() if not t.existing for k in t.keys}
        for key, current in self.currents.items():  # a write may only replace what the token may write
            if key in replaced and not current.deleted:
                await self.engine.check_replaceable(current.type, current.id)
        for request in ordered if self.in_bundle else ():
            if request.method in ("POST", "PUT") and not self.targets[request.index].existing:
                await pacer.turn()
                with blame(request.index):
                    await self._resolve_conditional_references(request)
        updated = self.engine.next_time(*self.currents.values())
        for request in ordered:
            await pacer.turn()
            with blame(request.index):
                self._prepare_write(request, updated)

    # 1. targets

    async def _target(self, request: BundleRequest) -> None:
        engine, resource_type = self.engine, str(request.resource_type)
        if request.method == "POST":
            target = await self._create_target(request)
        elif request.resource_id is not None:
            target = _Target([f"{resource_type}/{request.resource_id}"])
        else:
            limit = MAX_DELETE_MATCHES if request.method == "DELETE" and self.limits.delete_multiple else 1
            params = parse_criteria(request.criteria or "")
            found = await self._search(resource_type, params, limit + 1)
            if len(found) > limit:
                raise FhirError.of(412, "multiple-matches", "the criteria match more than one resource", _url(request))
            if not found and request.method == "PATCH":
                raise FhirError.of(404, "not-found", "the criteria match no resource to patch", _url(request))
            guard = None
            if not found and request.method == "PUT":
                body_id = request.resource.get("id") if isinstance(request.resource, dict) else None
                found = [f"{resource_type}/{body_id}" if body_id else self._fresh_key(resource_type)]
                if body_id:
                    engine.check_id(body_id)
                # a create by criteria: racing writers with the same criteria make one resource, as ifNoneExist does
                guard = guard_key(resource_type, params)
                if any(t.guard == guard for t in self.targets.values()):
                    raise FhirError.of(400, "invalid", "two entries create with the same criteria", _url(request))
            target = _Target(found, guard=guard)
        self.targets[request.index] = target
        if request.full_url and len(target.keys) == 1:
            self._map_placeholder(request, target.keys[0])

    async def _create_target(self, request: BundleRequest) -> _Target:
        resource_type = str(request.resource_type)
        if request.if_none_exist is None:
            return _Target([self._fresh_key(resource_type)])
        params = parse_criteria(request.if_none_exist)
        found = await self._search(resource_type, params, CONDITIONAL_LIMIT)
        if len(found) > 1:
            raise FhirError.of(412, "multiple-matches", "ifNoneExist matches more than one resource",
                               "request.ifNoneExist" if self.in_bundle else None)
        if found:
            return _Target(found, existing=True)
        guard = guard_key(resource_type, params)
        if any(t.guard == guard for t in self.targets.values()):
            raise FhirError.of(400, "invalid", "two entries create with the same ifNoneExist criteria", "request.ifNoneExist")
        return _Target([self._fresh_key(resource_type)], guard=guard)

    async def _validate_meanwhile(self, looking_up: asyncio.Future[None], ordered: list[BundleRequest]) -> None:
        """Validate resources with stand-in references until the lookups are answered: CPU work
        done while the database works. The entries most likely to be written go first."""
        for _ in range(TURNS_TO_SEND):
            await asyncio.sleep(0)
            if looking_up.done():
                return  # nothing was looked up (or it came back at once): nothing to overlap
        stand_ins = self._stand_ins(ordered)
        in_narrative = {k: v for k, v in stand_ins.items() if v is not None}
        for request in sorted((r for r in ordered if r.method in ("POST", "PUT") and isinstance(r.resource, dict)), key=_likely_written):
            await asyncio.sleep(0)  # the lookups' queries leave, their answers are read
            if looking_up.done():
                return
            resource = with_stand_ins(request.resource, stand_ins, in_narrative)
            if resource is None:
                continue
            try:
                self.engine.validate(str(request.resource_type), resource)
            except FhirError:
                continue  # validated again once rewritten: the issues then name the real references
            self.valid_early.add(request.index)

    @staticmethod
    def _stand_ins(ordered: list[BundleRequest]) -> dict[str, str | None]:
        """Each fullUrl an entry may be referenced by, as `Type/stand-in` (None when the target's
        type is not known before the lookups: a DELETE's)."""
        stand_ins: dict[str, str | None] = {}
        for request in ordered:
            if not request.full_url:
                continue
            if request.method == "DELETE":
                stand_ins[request.full_url] = None
                continue
            stand_in = f"{request.resource_type}/{STAND_IN}"
            stand_ins.setdefault(request.full_url, stand_in)
            tail = _client_side_id(request)
            if tail is not None:
                stand_ins.setdefault(tail, stand_in)
        return stand_ins

    def _fresh_key(self, resource_type: str) -> str:
        key = f"{resource_type}/{uuid.uuid4()}"
        self.fresh.add(key)
        return key

    async def _look_up_conditionals(self, ordered: list[BundleRequest]) -> None:
        """Every conditional the plan will need (target criteria, ifNoneExist, conditional
        references) looked up together: a few database queries instead of one per criteria."""
        lookups: dict[tuple[str, tuple[tuple[str, str], ...]], None] = {}

        def want(resource_type: str, criteria: str) -> None:
            try:
                lookups[(resource_type, tuple(parse_criteria(criteria)))] = None
            except FhirError:
                pass  # the entry's own lookup reports it, naming the entry

        for request in ordered:
            criteria = request.if_none_exist if request.method == "POST" else request.criteria
            if criteria is not None and request.method != "DELETE":
                want(str(request.resource_type), criteria)
            if request.method in ("POST", "PUT"):
                for reference in references_in(request.resource):
                    resource_type, _, query = reference.partition("?")
                    if is_conditional(reference) and self.engine.spec.is_resource_type(resource_type):
                        want(resource_type, query)
        if len(lookups) < 2:
            return
        wanted = list(lookups)
        matched: dict[str, dict[str, Any]] = {}
        answers = await self.engine.searcher.matching_keys([(t, list(p)) for t, p in wanted], self.base_url, CONDITIONAL_LIMIT, matched)
        self.prefetched = {key: Version.from_document(doc) for key, doc in matched.items()}
        for (resource_type, params), answer in zip(wanted, answers):
            if answer is not None:
                self.searches[(resource_type, params, CONDITIONAL_LIMIT)] = answer

    async def _search(self, resource_type: str, params: list[tuple[str, str]], limit: int) -> list[str]:
        """The keys of the stored resources matching `params` (one database query per distinct
        search in a plan: a conditional target is often a conditional reference as well)."""
        key = (resource_type, tuple(params), limit)
        if key not in self.searches:
            self.searches[key] = await matching(self.engine, resource_type, params, self.base_url, limit)
        return list(self.searches[key])

    def _map_placeholder(self, request: BundleRequest, target: str) -> None:
        full_url = str(request.full_url)
        if full_url != target:
            self.placeholders[full_url] = target
        tail = _client_side_id(request)
        if tail is not None:
            self.placeholders.setdefault(tail, target)

    def _refuse_duplicates(self) -> None:
        seen: dict[str, int] = {}
        for index, target in sorted((i, t) for i, t in self.targets.items() if i is not None):
            for key in target.keys:
                if key in seen:
                    raise FhirError.of(
                        400, "invalid",
                        f"Bundle.entry[{seen[key]}] and Bundle.entry[{index}] both act on {key}: one entry per resource",
                        f"Bundle.entry[{index}]",
                    )
                seen[key] = index

    # 2. references

    async def _resolve_conditional_references(self, request: BundleRequest) -> None:
        for reference in references_in(request.resource):
            if is_conditional(reference) and reference not in self.conditional:
                self.conditional[reference] = await self._resolve(reference)

    async def _resolve(self, reference: str) -> str:
        resource_type, _, query = reference.partition("?")
        self.engine.check_type(resource_type)
        params = parse_criteria(query)
        found = set(await self._search(resource_type, params, CONDITIONAL_LIMIT))
        criteria: dict[str, Any] | None = None
        for request in self.requests:  # resources this Bundle creates or updates count as well
            if request.method not in ("POST", "PUT") or request.resource_type != resource_type:
                continue
            target = self.targets[request.index]
            if target.existing:
                continue
            if _same_criteria(request, params):  # the entry writes the very resource these criteria name
                found.add(target.keys[0])
                continue
            if criteria is None:
                criteria = (await self.engine.searcher.criteria(resource_type, params, self.base_url)).filter()
            if matches(self._index_document(request, target.keys[0]), criteria):
                found.add(target.keys[0])
        if len(found) != 1:
            what = "no resource" if not found else "more than one resource"
            raise FhirError.of(412, "not-found" if not found else "multiple-matches",
                               f"the conditional reference {reference[:100]} matches {what}", "resource")
        return found.pop()

    def _index_document(self, request: BundleRequest, key: str) -> dict[str, Any]:
        """A Bundle resource as search would see it stored (built once per entry)."""
        if request.index not in self.index_documents:
            resource_type, resource_id = key.split("/", 1)
            ix, so = build_index(request.resource, self.engine.parameters.for_type(resource_type))
            self.index_documents[request.index] = {
                "_id": key, "type": resource_type, "id": resource_id, "ix": ix, "so": so, "deleted": False,
            }
        return self.index_documents[request.index]

    def _rewritten(self, request: BundleRequest) -> dict[str, Any]:
        if not self.in_bundle:
            return dict(request.resource)

        def rewrite(reference: str) -> str:
            if reference in self.placeholders:
                return self.placeholders[reference]
            if reference in self.conditional:
                return self.conditional[reference]
            if reference.startswith(PLACEHOLDERS):
                raise FhirError.of(400, "invalid", f"the reference {reference[:80]} is not the fullUrl of any entry", "resource")
            return reference

        return rewritten(request.resource, rewrite, self.placeholders)

    # 3. writes

    def _prepare_write(self, request: BundleRequest, updated: Any) -> None:
        engine, target = self.engine, self.targets[request.index]
        resource_type = str(request.resource_type)
        if request.method == "DELETE":
            self._prepare_deletes(request, target, updated)
            return
        key = target.keys[0]
        current = self.currents.get(key)
        if target.existing:
            self.results[request.index] = EntryResult(200, current)
            return
        resource_id = key.split("/", 1)[1]
        if request.method == "POST":
            resource = self._validated(request, self._rewritten(request))
            self._add(request, engine.prepare(resource_type, resource_id, resource, "POST", None, updated, target.guard))
            return
        check_if_match(current, request.if_match)
        if request.method == "PATCH":
            if current is None:
                raise FhirError.of(404, "not-found", f"{key} is not known", _url(request))
            if current.deleted:
                raise FhirError(410, Issue("deleted", f"{key} was deleted (version {current.version})", expression=_url(request)),
                                headers={"ETag": f'W/"{current.version}"'})
            resource = engine.validate(resource_type, _patched(engine, current, request))
        else:
            self._check_if_none_match(request, current)
            if (current is None or current.deleted) and key not in self.fresh:
                check_absent(ACCESS.get(), resource_type, resource_id)
            rewritten = merged = self._rewritten(request)
            if request.merge is not None and current is not None and current.raw is not None:
                merged = request.merge(orjson.loads(current.raw), rewritten)
            if self.limits.skip_unchanged and _unchanged(current, merged, resource_id):
                self.results[request.index] = EntryResult(200, current)
                return
            resource = self._validated(request, merged, as_submitted=merged is rewritten)
            if request.criteria is not None and "id" not in resource:
                resource["id"] = resource_id
            if resource.get("id") != resource_id:
                raise FhirError.of(400, "invalid", f"The resource's id must be present and be {resource_id}, as in the url",
                                   f"{resource_type}.id")
        guard = target.guard if current is None else None  # the criteria's guard, for a create by PUT criteria
        self._add(request, engine.prepare(resource_type, resource_id, resource, request.method, current, updated, guard))

    def _validated(self, request: BundleRequest, resource: dict[str, Any], as_submitted: bool = True) -> dict[str, Any]:
        """The resource to write, validated now unless it passed while the lookups ran (and is,
        references aside, what was validated then)."""
        if as_submitted and request.index in self.valid_early:
            return resource
        return self.engine.validate(str(request.resource_type), resource)

    def _prepare_deletes(self, request: BundleRequest, target: _Target, updated: Any) -> None:
        if len(target.keys) == 1:
            current = self.currents.get(target.keys[0])
            if request.resource_id is not None and (current is None or current.deleted):
                check_absent(ACCESS.get(), str(request.resource_type), request.resource_id)
            check_if_match(current, request.if_match)
        self.results[request.index] = EntryResult(204)
        for key in target.keys:
            current = self.currents.get(key)
            if current is not None and not current.deleted:
                resource_type, resource_id = key.split("/", 1)
                self._add(request, self.engine.prepare_delete(resource_type, resource_id, current, updated))

    def _check_if_none_match(self, request: BundleRequest, current: Version | None) -> None:
        tag = request.if_none_match
        if tag is None or current is None or current.deleted:
            return
        if tag.strip() == "*" or parse_etag(tag) == current.version:
            raise FhirError.of(412, "conflict", f"ifNoneMatch {tag[:30]}: the resource exists at version {current.version}",
                               "request.ifNoneMatch" if self.in_bundle else None)

    def _add(self, request: BundleRequest, write: Write) -> None:
        self.writes.append(write)
        self.write_entries.append(request.index)

    def settle(self, versions: list[Version]) -> dict[EntryIndex, EntryResult]:
        """The entry results once the writes are committed (versions in write order)."""
        for index, version in zip(self.write_entries, versions):
            if version.deleted:
                deleted = (*self.results[index].deleted, version)
                self.results[index] = EntryResult(204, version if len(self.targets[index].keys) == 1 else None, deleted=deleted)
            else:
                previous = self.currents.get(f"{version.type}/{version.id}")
                created = previous is None or previous.deleted
                self.results[index] = EntryResult(201 if created else 200, version)
        return self.results

    def entry_of(self, key: str) -> BundleRequest | None:
        for index, write in zip(self.write_entries, self.writes):
            if f"{write.type}/{write.id}" == key:
                return next(r for r in self.requests if r.index == index)
        return None

    async def release_stale_guard(self, guard: str) -> None:
        """A guard whose resource no longer matches its criteria is dropped, so creation can go on."""
        for request in self.requests:
            target = self.targets.get(request.index)
            criteria = request.if_none_exist if request.method == "POST" else request.criteria
            if target is not None and target.guard == guard and criteria:
                params = parse_criteria(criteria)
                if not await self._search(str(request.resource_type), params, 1):
                    await self.engine.store.release_guard(guard)


def _url(request: BundleRequest) -> str | None:
    """Where an error about an entry's target points: its request url (nowhere for a write sent
    on its own: the URL is the request's)."""
    return "request.url" if request.index is not None else None


def _client_side_id(request: BundleRequest) -> str | None:
    """`Type/old` of a POST whose fullUrl is a URL ending in it: references may use it too."""
    full_url = request.full_url or ""
    if "://" not in full_url or request.method != "POST":
        return None
    tail = "/".join(full_url.rstrip("/").split("/")[-2:])
    return tail if tail.split("/")[0] == request.resource_type else None

def _likely_written(request: BundleRequest) -> int:
    """Updates write unless nothing changed; creates that name criteria often find their match."""
    return 0 if request.method == "PUT" else 1 if request.if_none_exist is None else 2

def _same_criteria(request: BundleRequest, params: list[tuple[str, str]]) -> bool:
    """Whether an entry's conditional url (PUT) or ifNoneExist (POST) holds these criteria."""
    own = request.criteria if request.method == "PUT" else request.if_none_exist
    if not own:
        return False
    try:
        return sorted(parse_criteria(own)) == sorted(params)
    except FhirError:
        return False

def _unchanged(current: Version | None, resource: dict[str, Any], resource_id: str) -> bool:
    """Whether `resource` says what the current version says (its versionId and lastUpdated aside)."""
    if current is None or current.deleted or current.raw is None or resource.get("id", resource_id) != resource_id:
        return False
    return _content(orjson.loads(current.raw)) == _content({**resource, "id": resource_id})

def _content(resource: dict[str, Any]) -> dict[str, Any]:
    meta = {k: v for k, v in (resource.get("meta") or {}).items() if k not in ("versionId", "lastUpdated")}
    content = {k: v for k, v in resource.items() if k != "meta"}
    if meta:
        content["meta"] = meta
    return content

def _patched(engine: Engine, current: Version, request: BundleRequest) -> dict[str, Any]:
    document = request.resource
    if request.patch_kind is not None:  # sent on its own: the body is the patch
        return apply_patch(engine.spec, orjson.loads(current.raw or b"{}"), document, request.patch_kind)
    kind = patch_kind(document)
    operations = patch_from_binary(document) if kind == JSON_PATCH else document
    return apply_patch(engine.spec, orjson.loads(current.raw or b"{}"), operations, kind)

# -- running ----------------------------------------------------------------------------------


GAVE_UP = "The transaction kept meeting concurrent writes to the same resources; retry"


async def run_transaction(
    engine: Engine, requests: list[BundleRequest], base_url: str, limits: BundleLimits, also: tuple[Bookkeeping, ...] = (),
    pacer: Pacer = NO_PACING, attempts: int = PLAN_ATTEMPTS, gave_up: str = GAVE_UP,
) -> dict[EntryIndex, EntryResult]:
    """Commit every write entry in one database transaction, or none (the error names the entry).

    `also`: bookkeeping committed in the same database transaction (the bridge's inbox);
    `pacer`: how this work gives way to other requests (pacing.py); `attempts`: how many lost
    races before `gave_up` is the client's 409 (retry.py)."""
    writes = [r for r in requests if r.writes]

    async def attempt() -> dict[EntryIndex, EntryResult]:
        plan = _Plan(engine, writes, base_url, limits)
        await plan.prepare(pacer)
        try:
            versions = await engine.commit(*plan.writes, also=also)
        except VersionConflict as conflict:
            request = plan.entry_of(str(conflict.args[0]))
            if request is not None and request.if_match is not None:
                raise entry_error(request.index, FhirError.of(412, "conflict", f"Version {request.if_match} is no longer current")) from None
            raise LostRace() from None
        except GuardTaken as taken:
            await plan.release_stale_guard(str(taken.args[0]))
            raise LostRace() from None
        return plan.settle(versions)

    return await retrying(attempt, gave_up, attempts)


async def run_batch(
    engine: Engine, requests: list[BundleRequest], base_url: str, limits: BundleLimits, pacer: Pacer = NO_PACING
) -> dict[EntryIndex, EntryResult]:
    """Each write entry on its own: one failing does not stop the others."""
    results: dict[EntryIndex, EntryResult] = {}
    for request in sorted((r for r in requests if r.writes), key=lambda r: ORDER[r.method]):
        await pacer.turn()
        try:
            results.update(await run_transaction(engine, [request], base_url, limits, pacer=pacer))
        except FhirError as error:
            results[request.index] = EntryResult(error.status, error=error)
    return results


__all__ = ["run_batch", "run_transaction"]
