"""Run a search: criteria, sort, keyset page, includes, total. (Its result parameters:
request.py; the paging positions: paging.py.)

Paging is keyset on the sort keys plus `_id` (a total order), with an opaque cursor: a client
walking `next` links never sees a row twice nor misses one whose sort keys did not change,
whatever is written meanwhile, and memory stays flat however deep it walks.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import datetime, timezone
from functools import cmp_to_key
from typing import Any, overload


from fhir_server.outcome import FhirError
from fhir_server.storage import filters
from fhir_server.storage.matching import matches
from fhir_server.search.paging import compare_positions, decode_cursor, encode_cursor, field_value
from fhir_server.search.request import MAX_INCLUDED, MAX_ITERATE, SearchRequest, SearchResult, read_request
from fhir_server.search.parameters import Parameters
from fhir_server.search.query import MAX_CHAIN_MATCHES, Criteria, QueryCompiler, ValueSetMembers, bad, no_value_sets
from fhir_server.values import key
from fhir_server.storage.windows import MAX_KEYS as MAX_WINDOW_KEYS
from fhir_server.storage.windows import WINDOWS_PER_PAGE
from fhir_server.storage.windows import WindowEstimates
from fhir_server.security.policy import ACCESS
from fhir_server.storage.reach import NOTHING
from fhir_server.spec import Spec
from fhir_server.storage.search_store import SearchStore
from fhir_server.storage.store import ACCESS_FIELDS

BASE_FIELDS = {"_id": 1, "type": 1, "id": 1, "raw": 1, "version": 1, "updated": 1}
SYSTEM_LEVEL = "Resource"  # parameters of Resource / DomainResource: the ones valid across types
MAX_CANDIDATES = 5000  # above this, phase 2 in Python costs more than letting the database filter


def _without_parents(fields: set[str]) -> set[str]:
    """Drop a field whose parent is also projected (MongoDB refuses path collisions)."""
    return {f for f in fields if not any(f.startswith(other + ".") for other in fields if other != f)}


def _still_needed(restriction: dict[str, Any], clauses: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The part of the access restriction the search's own clauses do not already imply: its
    compartment part is implied by `subject=` a patient the token reaches (then the search keeps
    its one-query plan); its masking part (security labels) never is."""
    compartment = {k: v for k, v in restriction.items() if k in ("_id", "ix.rf")}
    rest = {k: v for k, v in restriction.items() if k not in compartment}
    if len(compartment) == 1 and _implied(compartment, clauses):
        return rest or None
    return restriction


def _implied(restriction: dict[str, Any], clauses: list[dict[str, Any]]) -> bool:
    """Whether another clause already keeps every row inside a one-field restriction."""
    (name, condition), = restriction.items()
    allowed = filters.equality_values(condition) or []
    for clause in clauses:
        if list(clause) != [name]:
            continue
        values = filters.equality_values(clause[name])
        if values and all(v in allowed for v in values):
            return True
    return False


def _driver_values(driver: dict[str, Any]) -> list[str]:
    return filters.equality_values(next(iter(driver.values()))) or []


def _residual(resource_type: str, criteria: Criteria, driver: dict[str, Any]) -> list[dict[str, Any]]:
    """The clauses left once the driving clause has found the candidates."""
    return [c for c in criteria.clauses if c is not driver and c != {"type": resource_type}]


@dataclass(frozen=True, slots=True)
class _NewestFirst:
    """A search a window of a sort index can serve: its shape, the window's anchor (now, or the
    cursor's position, then also given whole), the driving field and its values."""

    shape: tuple[Any, ...]
    anchor: datetime
    position: list[Any] | None
    field: str
    values: list[str]


def _driving_query(resource_type: str, driver: dict[str, Any]) -> dict[str, Any]:
    """Phase 1 as the planner can answer it: all fields in one index (ids already carry the type)."""
    return driver if "_id" in driver else {"type": resource_type, **driver}


class Searcher:
    """Searches the current versions in the store."""

    def __init__(
        self, collection: Any, spec: Spec, parameters: Parameters, value_sets: ValueSetMembers = no_value_sets,
        sort_indexes: dict[str, str] | None = None,
    ):
        self._store = SearchStore(collection)
        self._spec = spec
        self._parameters = parameters
        self._value_sets = value_sets
        self._sort_indexes = sort_indexes or {}  # {driving field: the sort field its index orders by}
        self.windows = WindowEstimates()
        # The embedded database's workarounds (newest-first windows, candidates found through one
        # indexed clause and matched here: storage/windows.py, matching.py). Off on MongoDB,
        # whose planner runs the whole filter with sort + limit on the compound indexes itself
        # (services.py decides, from the server's buildInfo).
        self.embedded_strategy = True

    def _restriction(self, resource_type: str) -> dict[str, Any] | None:
        """The clause the request's access policy adds to a query on this type."""
        return ACCESS.get().clause(resource_type, self._spec.compartments["Patient"])

    def _visible(self, docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """The documents the request's access policy lets through (`_id`, `type`, `ix.rf` read)."""
        if ACCESS.get().unrestricted:
            return docs
        return [d for d in docs if (clause := self._restriction(d["type"])) is None or matches(d, clause)]

    async def _plan(
        self, resource_type: str, params: list[tuple[str, str]], strict: bool, base_url: str, extra: dict[str, Any] | None
    ) -> tuple[SearchRequest, Criteria, dict[str, Any], list[tuple[str, int]]]:
        """Result parameters, criteria, the filter and the full sort of one search."""
        request = read_request(params, resource_type, self._parameters)
        compiler = QueryCompiler(self._parameters, self._inner, base_url, self._value_sets)
        criteria = await compiler.compile(resource_type, params, strict)
        restriction = self._restriction(resource_type)
        if restriction is not None:
            restriction = _still_needed(restriction, criteria.clauses)
            if restriction is not None and not ({"_id", "ix.rf"} & set(restriction)):
                criteria.mask = restriction  # masking alone (see _page)
        criteria.clauses += [c for c in (extra, restriction) if c]
        sort = [*request.sort, ("_id", request.sort[-1][1] if request.sort else 1)]
        return request, criteria, criteria.filter(), sort

    async def criteria(self, resource_type: str, params: list[tuple[str, str]], base_url: str) -> Criteria:
        """The compiled filter of search criteria, strictly read (for matching outside the database)."""
        return await QueryCompiler(self._parameters, self._inner, base_url, self._value_sets).compile(resource_type, params, True)

    async def search(
        self,
        resource_type: str,
        params: list[tuple[str, str]],
        strict: bool,
        base_url: str,
        extra: dict[str, Any] | None = None,
    ) -> SearchResult:
        request, criteria, query, sort = await self._plan(resource_type, params, strict, base_url, extra)
        if not self.embedded_strategy:
            return await self._page_from_database(criteria, filters.all_of([query, filters.equal("deleted", False)]), request, sort)
        driver = criteria.driver()
        newest = self._newest_first(resource_type, criteria, driver, request, sort) if driver is not None else None
        result = await self._page_from_window(resource_type, criteria, driver or {}, request, sort, newest) if newest else None
        if result is None:
            result = await self._page(resource_type, criteria, query, request, sort)
        if newest is not None:
            values = [field_value(row, sort[0][0]) for row in result.matches]
            self.windows.learn(newest.shape, newest.anchor, values, result.next_cursor is not None)
        return result

    async def _page(
        self, resource_type: str, criteria: Criteria, query: dict[str, Any], request: SearchRequest, sort: list[tuple[str, int]]
    ) -> SearchResult:
        driver = criteria.driver()
        if driver is not None:
            residual = _residual(resource_type, criteria, driver)
            masked = bool(residual) and all(c is criteria.mask for c in residual)
            single = (not residual or masked) and "_id" not in driver  # tombstones have ids, never index entries
            if single and not request.cursor and request.total == "none" and request.summary != "count":
                # the whole search is one indexed clause: the first page is one plain query. With the
                # access mask as the only other clause, the page is read the same way and checked
                # here: a masked row on it (rare) sends the search down the two-phase plan below.
                # (In the query itself, the mask makes the embedded database leave the index.)
                direct = _driving_query(resource_type, driver)
                page = await self._page_from_database(criteria, direct, request, sort, criteria.mask if masked else None)
                if page is not None:
                    return page
            fields = filters.fields_read(residual) | {name for name, _ in sort} | ({"ix.rf"} if request.include else set())
            candidates = await self._candidates(resource_type, driver, fields)
            if candidates is not None:
                return await self._page_of_candidates(candidates, criteria, filters.all_of(residual), request, sort)
        return await self._page_from_database(criteria, filters.all_of([query, filters.equal("deleted", False)]), request, sort)

    def _newest_first(
        self, resource_type: str, criteria: Criteria, driver: dict[str, Any], request: SearchRequest, sort: list[tuple[str, int]]
    ) -> _NewestFirst | None:
        """The search, when a window of a sort index can serve its page (see storage/windows.py)."""
        (name, _), = driver.items()
        if not request.sort or request.sort[0] != (self._sort_indexes.get(name), -1):
            return None
        if request.total != "none" or request.summary == "count" or request.count == 0:
            return None
        values = _driver_values(driver)
        if len(values) > MAX_WINDOW_KEYS:
            return None
        position = None
        if request.cursor:
            position, before = decode_cursor(request.cursor, sort)
            if before or not isinstance(position[0], datetime):
                return None
        # pages of the same shape reach about as far back: same type, parameters, sort, first page or not
        shape = (resource_type, tuple(sorted({n for n, _ in criteria.used})), tuple(sort), position is None)
        anchor = position[0] if position is not None else datetime.now(timezone.utc)
        return _NewestFirst(shape, anchor, position, name, values)

    async def _page_from_window(
        self, resource_type: str, criteria: Criteria, driver: dict[str, Any], request: SearchRequest,
        sort: list[tuple[str, int]], newest: _NewestFirst,
    ) -> SearchResult | None:
        """The page read from windows of the sort index; None when they hold too few rows."""
        position = newest.position
        window = self.windows.window(newest.shape, newest.anchor, request.count + 1, position is not None)
        if window is None:
            return None
        residual = _residual(resource_type, criteria, driver)
        wanted = filters.all_of(residual)
        rows: list[tuple[list[Any], dict[str, Any]]] = []
        for attempt in range(WINDOWS_PER_PAGE):
            found: dict[str, dict[str, Any]] = {}
            for value in newest.values:  # one range read per value: the index pins one value of `name`
                query = {"type": resource_type, newest.field: value, sort[0][0]: window.condition()}
                for doc in await self._store.find(query):  # whole: SecantusDB projects slower than it sends
                    found[doc["_id"]] = doc
            keyed = (([field_value(doc, f) for f, _ in sort], doc) for doc in found.values() if not wanted or matches(doc, wanted))
            rows += [row for row in keyed if position is None or compare_positions(row[0], position, sort) > 0]
            if len(rows) > request.count:
                break
            window = window.below()
        else:
            self.windows.missed += 1
            return None
        self.windows.served += 1
        if attempt:
            self.windows.widened += 1
        def by_sort_keys(a: tuple[list[Any], dict[str, Any]], b: tuple[list[Any], dict[str, Any]]) -> int:
            return compare_positions(a[0], b[0], sort)
        rows.sort(key=cmp_to_key(by_sort_keys))
        page = [doc for _, doc in rows[: request.count]]
        previous_cursor = encode_cursor(page[0], sort, before=True) if position is not None else None
        included = await self._includes(page, request)
        return SearchResult(page, included, encode_cursor(page[-1], sort), None, criteria, request, previous_cursor)

    async def matching_keys(
        self, lookups: list[tuple[str, list[tuple[str, str]]]], base_url: str, limit: int,
        matched: dict[str, dict[str, Any]] | None = None,
    ) -> list[list[str] | None]:
        """The "Type/id" keys (first `limit`, by id) each lookup's criteria match, for many
        conditional criteria at once: one indexed query per resource type and driving field,
        then each criteria matched here. None for a lookup this cannot answer (no driving clause, or
        too many candidates, criteria in error): search that one on its own, which reports
        the error. `matched`, when given, receives the stored documents that matched (with
        `raw`, `version`, `updated`): a transaction need not read them again.

        The queries leave together and the database answers them back to back, while the
        caller works (a transaction validates its resources meanwhile)."""
        compiled: list[Criteria | None] = []
        for resource_type, params in lookups:
            try:
                criteria = await self.criteria(resource_type, params, base_url)
            except FhirError:
                compiled.append(None)
                continue
            criteria.clauses += [c for c in (self._restriction(resource_type),) if c]
            compiled.append(criteria)
        groups: dict[tuple[str, str], list[tuple[int, Criteria]]] = {}  # (type, driving field): the planner needs both
        for position, compiled_criteria in enumerate(compiled):
            driver = compiled_criteria.driver() if compiled_criteria is not None else None
            if compiled_criteria is not None and driver is not None and "_id" not in driver:
                groups.setdefault((lookups[position][0], next(iter(driver))), []).append((position, compiled_criteria))
        answers: list[list[str] | None] = [None] * len(lookups)

        async def answer(resource_type: str, name: str, group: list[tuple[int, Criteria]]) -> None:
            # one query per group: an or, or a one-of on type, scans
            values = sorted({v for _, criteria in group for v in _driver_values(criteria.driver() or {})})
            fields = {f for _, criteria in group for f in filters.fields_read(criteria.clauses)}
            projection = {"_id": 1, "type": 1, "id": 1, "deleted": 1, **{f: 1 for f in _without_parents(fields)}}
            if matched is not None:
                projection.update(raw=1, version=1, updated=1)
            query = {"type": resource_type, **(filters.equal(name, values[0]) if len(values) == 1 else filters.one_of(name, values))}
            found = await self._store.find(query, projection, limit=MAX_CANDIDATES + 1)
            if len(found) > MAX_CANDIDATES:
                return
            live = sorted((doc for doc in found if not doc.get("deleted")), key=lambda doc: doc["_id"])
            for position, criteria in group:
                wanted = criteria.filter()
                hits = [doc for doc in live if matches(doc, wanted)][:limit]
                answers[position] = [doc["_id"] for doc in hits]
                if matched is not None:
                    matched.update((doc["_id"], doc) for doc in hits)

        await asyncio.gather(*(answer(resource_type, name, group) for (resource_type, name), group in groups.items()))
        return answers

    async def _candidates(self, resource_type: str, driver: dict[str, Any], fields: set[str]) -> list[dict[str, Any]] | None:
        """Phase 1: the live documents the driving clause finds through its index (None: too many)."""
        projection = {"_id": 1, "type": 1, "id": 1, "deleted": 1, **{f: 1 for f in _without_parents(fields)}}
        found = await self._store.find(_driving_query(resource_type, driver), projection, limit=MAX_CANDIDATES + 1)
        if len(found) > MAX_CANDIDATES:
            return None
        return [doc for doc in found if not doc.get("deleted")]

    async def _page_of_candidates(
        self, candidates: list[dict[str, Any]], criteria: Criteria, query: dict[str, Any],
        request: SearchRequest, sort: list[tuple[str, int]],
    ) -> SearchResult:
        """Phase 2: the rest of the criteria, the sort and the keyset cut, on the bounded set."""
        rows = [doc for doc in candidates if matches(doc, query)]
        rows.sort(key=cmp_to_key(lambda a, b: compare_positions([field_value(a, f) for f, _ in sort], [field_value(b, f) for f, _ in sort], sort)))
        total = len(rows) if request.total != "none" or request.summary == "count" else None
        if request.summary == "count":
            return SearchResult([], [], None, total, criteria, request)
        start, end = 0, len(rows)
        if request.cursor:
            position, before = decode_cursor(request.cursor, sort)
            cut = 0
            while cut < len(rows) and compare_positions([field_value(rows[cut], f) for f, _ in sort], position, sort) < (0 if before else 1):
                cut += 1
            start, end = (max(0, cut - request.count), cut) if before else (cut, len(rows))
        page = rows[start : min(end, start + request.count)]
        stored = {doc["_id"]: doc for doc in await self._store.find(filters.one_of("_id", [r["_id"] for r in page]), {"raw": 1})}
        matches_ = [{**row, "raw": stored[row["_id"]]["raw"]} for row in page if row["_id"] in stored]
        next_cursor = encode_cursor(page[-1], sort) if page and start + len(page) < len(rows) else None
        previous_cursor = encode_cursor(page[0], sort, before=True) if page and start > 0 else None
        included = await self._includes(matches_, request)
        return SearchResult(matches_, included, next_cursor, total, criteria, request, previous_cursor)

    @overload
    async def _page_from_database(
        self, criteria: Criteria, query: dict[str, Any], request: SearchRequest, sort: list[tuple[str, int]], mask: None = None
    ) -> SearchResult: ...

    @overload
    async def _page_from_database(
        self, criteria: Criteria, query: dict[str, Any], request: SearchRequest, sort: list[tuple[str, int]], mask: dict[str, Any] | None
    ) -> SearchResult | None: ...

    async def _page_from_database(
        self, criteria: Criteria, query: dict[str, Any], request: SearchRequest, sort: list[tuple[str, int]],
        mask: dict[str, Any] | None = None,
    ) -> SearchResult | None:
        """The database filters, sorts and cuts the page. With `mask`: None when a row of the
        page does not pass it (the caller then searches another way)."""
        total = None
        if request.total != "none" or request.summary == "count":
            total = await self._store.count(query)
        if request.summary == "count":
            return SearchResult([], [], None, total, criteria, request)
        page_query, order, before = query, sort, False
        if request.cursor:
            position, before = decode_cursor(request.cursor, sort)
            order = [(name, -direction) for name, direction in sort] if before else sort
            page_query = filters.all_of([query, filters.after_position(order, position)])
        projection = {**BASE_FIELDS, **{name: 1 for name, _ in sort}}
        if request.include:
            projection["ix.rf"] = 1
        if mask is not None:
            projection.update(ACCESS_FIELDS)
        rows = await self._store.find(page_query, projection, order, request.count + 1)
        if mask is not None and not all(matches(row, mask) for row in rows):
            return None
        more = len(rows) > request.count  # more in the direction read
        rows = rows[: request.count]
        if before:
            rows.reverse()
        has_next, has_previous = (True, more) if before else (more, bool(request.cursor))
        next_cursor = encode_cursor(rows[-1], sort) if has_next and rows else None
        previous_cursor = encode_cursor(rows[0], sort, before=True) if has_previous and rows else None
        included = await self._includes(rows, request)
        return SearchResult(rows, included, next_cursor, total, criteria, request, previous_cursor)

    async def search_system(
        self, types: list[str] | None, params: list[tuple[str, str]], strict: bool, base_url: str
    ) -> SearchResult:
        """`/fhir?_type=A,B&...`: common parameters (Resource level) across several types."""
        request = read_request(params, None, self._parameters)
        compiler = QueryCompiler(self._parameters, self._inner, base_url, self._value_sets)
        criteria = await compiler.compile(SYSTEM_LEVEL, [(k, v) for k, v in params if k != "_type"], strict)
        criteria.clauses[0] = filters.one_of("type", types) if types else filters.equal("deleted", False)
        if not ACCESS.get().unrestricted:
            if not types:
                raise FhirError.of(403, "forbidden", "With this token a system-level search needs _type")
            criteria.clauses.append(filters.any_of([{"type": t, **(self._restriction(t) or {})} for t in types]))
        for clause in criteria.clauses:
            if "_id" in clause:  # ids were prefixed with the pseudo type: match them in every type
                ids = [i.split("/", 1)[1] for i in filters.equality_values(clause.pop("_id")) or []]
                clause.update(filters.one_of("id", ids))
        sort = [*request.sort, ("_id", request.sort[-1][1] if request.sort else 1)]
        return await self._page_from_database(criteria, filters.all_of([*criteria.clauses, filters.equal("deleted", False)]), request, sort)

    async def everything(
        self, patient_id: str, types: list[str] | None, since: datetime | None, count: int, cursor: str | None
    ) -> SearchResult:
        """`Patient/{id}/$everything`: the patient and every resource in its compartment, by _id."""
        compartment = self._spec.compartments["Patient"]
        wanted = [t for t in sorted(compartment) if (types is None or t in types) and self._restriction(t) != NOTHING]
        owner = f"Patient/{patient_id}"
        if not self._visible([{"_id": owner, "type": "Patient", "id": patient_id}]):
            raise FhirError.of(404, "not-found", f"{owner} is not known")
        rows: list[dict[str, Any]] = []
        fields = {"_id": 1, "type": 1, "id": 1, "updated": 1, "deleted": 1, **ACCESS_FIELDS}
        if types is None or "Patient" in types:
            rows += await self._store.find(filters.equal("_id", owner), fields)
        for resource_type in wanted:  # one indexed query per type: the planner needs `type` first
            keys = [key(code, owner) for code in compartment[resource_type]]
            rows += await self._store.find({"type": resource_type, **filters.one_of("ix.rf", keys)}, fields, limit=MAX_CANDIDATES + 1)
            if len(rows) > MAX_CANDIDATES:
                raise FhirError.of(400, "too-costly", f"$everything found more than {MAX_CANDIDATES} resources: use _type or _since")
        rows = self._visible(rows)  # only what a read would return (a Patient linked to this one, say)
        rows = sorted({r["_id"]: r for r in rows if not r.get("deleted") and (since is None or r["updated"] >= since)}.values(),
                      key=lambda r: r["_id"])
        sort = [("_id", 1)]
        start = 0
        if cursor:
            after = decode_cursor(cursor, sort)[0][0]
            while start < len(rows) and rows[start]["_id"] <= after:
                start += 1
        page = rows[start : start + count + 1]
        more = len(page) > count
        page = page[:count]
        stored = {d["_id"]: d for d in await self._store.find(filters.one_of("_id", [r["_id"] for r in page]), {"raw": 1})}
        matched = [{**row, "raw": stored[row["_id"]]["raw"]} for row in page if row["_id"] in stored]
        request = SearchRequest(count=count)
        return SearchResult(matched, [], encode_cursor(page[-1], sort) if more and page else None, len(rows), Criteria(), request)

    async def explain(self, resource_type: str, params: list[tuple[str, str]], base_url: str = "") -> dict[str, Any]:
        """The database's plan for what a search sends it first (the driving clause, or everything)."""
        request, criteria, query, sort = await self._plan(resource_type, params, True, base_url, None)
        driver = criteria.driver()
        if driver is not None:
            return await self._store.explain(_driving_query(resource_type, driver), {"_id": 1}, limit=MAX_CANDIDATES + 1)
        return await self._store.explain(query, None, sort, request.count + 1)

    async def _inner(self, resource_type: str, params: list[tuple[str, str]], projection: dict[str, Any]) -> list[dict[str, Any]]:
        """A bounded inner search for chains and _has; too many matches is an error, not a scan."""
        if not self._spec.is_resource_type(resource_type):
            raise bad(f"Unknown resource type '{resource_type[:40]}' in a chain")
        compiler = QueryCompiler(self._parameters, self._inner, "", self._value_sets)
        criteria = await compiler.compile(resource_type, params, strict=True, depth=1)
        criteria.clauses += [c for c in ({"deleted": False}, self._restriction(resource_type)) if c]
        driver = criteria.driver()
        fields = filters.fields_read(criteria.clauses) | set(projection)
        candidates = await self._candidates(resource_type, driver, fields) if driver is not None else None
        if candidates is not None:
            docs = [doc for doc in candidates if matches(doc, criteria.filter())][: MAX_CHAIN_MATCHES + 1]
        else:
            docs = await self._store.find(criteria.filter(), projection, limit=MAX_CHAIN_MATCHES + 1)
        if len(docs) > MAX_CHAIN_MATCHES:
            raise FhirError.of(400, "too-costly", f"A chained search matched more than {MAX_CHAIN_MATCHES} {resource_type}: narrow it")
        return docs

    async def _includes(self, rows: list[dict[str, Any]], request: SearchRequest) -> list[dict[str, Any]]:
        if not rows or not (request.include or request.revinclude):
            return []
        seen = {doc["_id"] for doc in rows}
        included: list[dict[str, Any]] = []
        frontier = rows
        for round_number in range(MAX_ITERATE):
            found: list[dict[str, Any]] = []
            for source, code, target, iterate in request.include:
                if round_number and not iterate:
                    continue
                found += await self._forward(frontier, source, code, target, seen)
            for source, code, target, iterate in request.revinclude:
                if round_number and not iterate:
                    continue
                found += await self._reverse(frontier, source, code, seen)
            if not found:
                break
            included += found
            if len(included) > MAX_INCLUDED:
                raise FhirError.of(400, "too-costly", f"_include/_revinclude would add more than {MAX_INCLUDED} resources")
            frontier = found
        return included

    async def _forward(self, docs: list[dict[str, Any]], source: str, code: str, target: str | None, seen: set[str]) -> list[dict[str, Any]]:
        references: list[str] = []
        for doc in docs:
            if source not in ("*", doc["type"]):
                continue
            for entry in field_value(doc, "ix.rf") or []:
                name, _, reference = entry.partition("\x1f")
                if (code in ("*", name)) and reference.count("/") == 1 and "://" not in reference:
                    if target is None or reference.startswith(f"{target}/"):
                        if reference not in seen:
                            references.append(reference)
        if not references:
            return []
        query = filters.one_of("_id", sorted(set(references)))
        found = await self._store.find(query, {**BASE_FIELDS, **ACCESS_FIELDS, "deleted": 1}, limit=MAX_INCLUDED + 1)
        found = [d for d in self._visible(found) if not d.get("deleted")]
        found = [d for d in found if d["_id"] not in seen]
        seen.update(d["_id"] for d in found)
        return found

    async def _reverse(self, docs: list[dict[str, Any]], source: str, code: str, seen: set[str]) -> list[dict[str, Any]]:
        if source == "*" or not self._spec.is_resource_type(source):
            raise bad("_revinclude needs Type:parameter")
        keys = [key(code, doc["_id"]) for doc in docs]
        query = {"type": source, **filters.one_of("ix.rf", keys)}  # tombstones have no index entries
        found = await self._store.find(query, {**BASE_FIELDS, **ACCESS_FIELDS}, limit=MAX_INCLUDED + 1)
        found = [d for d in self._visible(found) if d["_id"] not in seen]
        seen.update(d["_id"] for d in found)
        return found


__all__ = ["Searcher"]
