"""One export job run: its steps (one per exported type, then the deleted resources), page by
page from the database into NDJSON parts, with a checkpoint every few seconds.

Memory stays flat whatever the export's size: a page of documents at a time, written as the
stored bytes (`raw`, the JSON reads serve) unless `_elements` asks for a subset. Pages come from
one database cursor per type, in `_id` order; a resumed run opens its cursor after the last
`_id` its checkpoint recorded (keyset), so it continues where it stood. The run acts under the
owner's access, decided again when it starts: the same clauses (care-team compartments, visibility labels) as its reads.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncGenerator
from contextlib import aclosing
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any, Callable
from urllib.parse import parse_qsl

import orjson

from fhir_server.bulk.files import ExportFiles
from fhir_server.bulk.request import elements_for
from fhir_server.engine import Engine
from fhir_server.engine.pacing import Pacer
from fhir_server.search.executor import Searcher
from fhir_server.search.subset import subset
from fhir_server.security.policy import ACCESS
from fhir_server.spec import Spec
from fhir_server.storage import filters
from fhir_server.storage.exports import ExportStore
from fhir_server.storage.matching import matches
from fhir_server.storage.reach import NOTHING
from fhir_server.storage.search_store import SearchStore
from fhir_server.values import ONE_MS, key

PATIENTS_PER_QUERY = 500  # a Group's members are exported this many at a time (the query's key list; on MongoDB)
RESOURCES_PER_PART = 100_000  # an output file holds at most this many resources
CHECKPOINT_SECONDS = 5.0  # progress is recorded (files synced, lease renewed) this often: each write holds the embedded database's readers
NEXT_TYPE = chr(ord("/") + 1)  # "Type/..." ids end before "Type0"


class JobLost(Exception):
    """The job was cancelled, or another worker holds it now: this run stops."""


@dataclass(frozen=True)
class RunSettings:
    page_size: int = 500
    lease_seconds: float = 30.0
    max_per_second: float = 0.0  # 0: as fast as the API lets it (the pacer gives way to requests)
    share_while_serving: float = 0.5  # while the node serves requests, the share of time the export may take (pacing.py)


class ExportRun:
    def __init__(self, job: dict[str, Any], worker: str, exports: ExportStore, engine: Engine, files: ExportFiles, pacer: Pacer,
                 settings: RunSettings, clock: Callable[[], datetime] = lambda: datetime.now(timezone.utc)):
        self._job, self._id, self._worker = job, job["_id"], worker
        self._exports, self._files, self._pacer, self._settings, self._clock = exports, files, pacer, settings, clock
        self._engine = engine
        self._search = SearchStore(engine.store.current_versions)  # reads: the current versions, as searches read them
        self._searcher: Searcher = engine.searcher  # compiles `_typeFilter`; says which plan suits the database
        self._spec: Spec = engine.spec
        self._parts: list[dict[str, Any]] = [dict(part) for part in job.get("files", [])]
        self._exported: int = job.get("exported", 0)
        self._open: dict[tuple[str, str], dict[str, Any]] = {}  # this run's part per (kind, type): a resumed run starts new ones
        self._started = time.monotonic()
        self._written_here = 0
        self._position: dict[str, Any] = {}
        self._unsynced: set[str] = set()  # parts appended to since the last checkpoint
        self._checkpointed = time.monotonic()
        self._members: dict[str, frozenset[str]] = {}  # per type: the compartment entries of the export's patients

    async def run(self) -> dict[str, Any]:
        """Every step from the checkpoint on; the job's final record (its parts, durable on disk,
        and their count) for the worker to finish it with. JobLost when the job is no longer this
        worker's."""
        await self._files.prepare(self._id)
        job = self._job
        notes = job.get("notes") or []
        if notes and not any(part["kind"] == "errors" for part in self._parts):
            await self._write("errors", "OperationOutcome", [_outcome(note) for note in notes], {})
            await self._checkpoint()
        position: dict[str, Any] = job.get("position") or {"step": 0, "batch": 0, "after": ""}
        for index in range(position["step"], len(job["steps"])):
            step = job["steps"][index]
            resumed: dict[str, Any] = position if index == position["step"] else {"step": index, "batch": 0, "after": ""}
            if step["kind"] == "deleted":
                await self._deleted(index, step["type"], resumed["after"])
            else:
                await self._output(index, step["type"], resumed["batch"], resumed["after"])
        await self._sync()
        return {"files": self._parts, "exported": self._exported}

    # -- the resources -----------------------------------------------------------------------------

    async def _output(self, index: int, resource_type: str, first_scope: int, after: str) -> None:
        job = self._job
        reach = ACCESS.get().clause(resource_type, self._spec.compartments["Patient"])
        if reach == NOTHING:
            return
        chosen = await self._type_filter(resource_type)
        common = filters.all_of([filters.equal("deleted", False), self._updated(), reach or {}, chosen or {}])
        population: list[str] | None = job.get("population")
        codes = self._spec.compartments["Patient"].get(resource_type, [])
        scopes = self._scopes(resource_type, population, codes)
        in_compartment = job["level"] != "system" and resource_type != "Patient" and population is None
        elements = elements_for(tuple(job.get("elements") or ()), resource_type)
        covered: set[str] = set().union(*(scope.covers for scope in scopes[:first_scope]))  # exported by earlier scopes
        keep = _kept(in_compartment, population is not None and resource_type != "Patient", codes, covered)
        for number in range(first_scope, len(scopes)):
            scope = scopes[number]
            await self._pages(index, number, resource_type, scope, common, after if number == first_scope else "", keep, elements)
            covered |= scope.covers

    def _scopes(self, resource_type: str, population: list[str] | None, codes: list[str]) -> list[_Scope]:
        """The queries that together cover the export's patients (one, without a population)."""
        if population is None:
            return [_Scope({}, frozenset())]
        batches = [population[i:i + PATIENTS_PER_QUERY] for i in range(0, len(population), PATIENTS_PER_QUERY)]
        if resource_type == "Patient":
            return [_Scope(filters.one_of("_id", [f"Patient/{p}" for p in batch]), frozenset()) for batch in batches]
        if self._searcher.embedded_strategy:
            # one indexed equality per query: SecantusDB decodes the whole collection for `$in` over
            # many keys (docs/architecture.md), and one long query holds all its other clients
            return [_Scope(filters.equal("ix.rf", entry), frozenset({entry})) for p in population for entry in
                    (key(code, f"Patient/{p}") for code in codes)]
        keyed = [[key(code, f"Patient/{p}") for p in batch for code in codes] for batch in batches]
        return [_Scope(filters.one_of("ix.rf", keys), frozenset(keys)) for keys in keyed]

    async def _pages(self, index: int, number: int, resource_type: str, scope: _Scope, common: dict[str, Any], after: str,
                     keep: Callable[[dict[str, Any]], bool] | None, elements: list[str] | None) -> None:
        fields = {"_id": 1, "raw": 1, **({"ix.rf": 1} if keep is not None else {})}
        residual: dict[str, Any] | None = None
        if self._searcher.embedded_strategy and scope.query:
            # the scope's one indexed clause alone goes to the database (SecantusDB decodes the
            # whole collection for `$and`); the rest is matched here
            query = scope.query if "_id" in scope.query else {"type": resource_type, **scope.query}
            residual = common
            fields.update({name: 1 for name in filters.fields_read([common])} | {"ix.rf": 1})
            rows_of = self._search.batches(query, fields, [("_id", 1)], self._settings.page_size)
        else:
            rows_of = self._rows(resource_type, filters.all_of([common, scope.query]), after, fields)
        async with aclosing(rows_of) as pages:
            async for rows in pages:
                kept = [row for row in rows if row["_id"] > after and (keep is None or keep(row))
                        and (residual is None or matches(row, residual))]
                lines = [subset(bytes(row["raw"]), self._spec, None, elements) for row in kept]
                await self._write("output", resource_type, lines, {"step": index, "batch": number, "after": rows[-1]["_id"]})
        await self._pace(0)  # a query that found nothing is a piece of work too

    def _rows(self, resource_type: str, query: dict[str, Any], after: str, fields: dict[str, Any]) -> AsyncGenerator[list[dict[str, Any]], None]:
        """A type's rows matching `query` after the keyset position `after`, by `_id`, a page at a time."""
        bounds = {"_id": filters.within([("gt", after or f"{resource_type}/"), ("lt", resource_type + NEXT_TYPE)])}
        return self._search.batches(filters.all_of([query, bounds]), fields, [("_id", 1)], self._settings.page_size)

    async def _type_filter(self, resource_type: str) -> dict[str, Any] | None:
        """The `_typeFilter` criteria of a type, any of them (None: no filter)."""
        queries = (self._job.get("type_filters") or {}).get(resource_type)
        if not queries:
            return None
        base = self._job.get("base", "")
        compiled = [await self._searcher.criteria(resource_type, parse_qsl(q, keep_blank_values=True), base) for q in queries]
        return filters.any_of([criteria.filter() for criteria in compiled])

    def _updated(self) -> dict[str, Any]:
        """`_since` < lastUpdated <= min(`_until`, transactionTime)."""
        job = self._job
        bounds = [("lt", job["until"] + ONE_MS)]
        if job.get("since") is not None:
            bounds.append(("gt", job["since"]))
        return {"updated": filters.within(bounds)}

    # -- the deleted resources -----------------------------------------------------------------------

    async def _deleted(self, index: int, resource_type: str, after: str) -> None:
        """The resources deleted within the window, as DELETE entries; when the export is limited
        (a population, or a restricted token) each is judged by its version before the deletion."""
        query = filters.all_of([filters.equal("deleted", True), self._updated()])
        limited = self._job["level"] != "system" or not ACCESS.get().unrestricted
        async with aclosing(self._rows(resource_type, query, after, {"_id": 1, "id": 1, "version": 1})) as pages:
            async for rows in pages:
                kept = [row for row in rows if not limited or await self._was_in_export(resource_type, row)]
                lines = [orjson.dumps(_deletion(row["_id"])) for row in kept]
                await self._write("deleted", "Bundle", lines, {"step": index, "batch": 0, "after": rows[-1]["_id"]}, resource_type)

    async def _was_in_export(self, resource_type: str, tombstone: dict[str, Any]) -> bool:
        """Whether the version before a deletion was one this export covers: reached by the
        owner's access (compartments, labels), in the export's patients' compartments."""
        before = await self._engine.indexed_version(resource_type, tombstone["id"], tombstone["version"] - 1)
        if before is None:
            return False
        reach = ACCESS.get().clause(resource_type, self._spec.compartments["Patient"])
        if reach == NOTHING or (reach is not None and not matches(before, reach)):
            return False
        if self._job["level"] == "system":
            return True
        population: list[str] | None = self._job.get("population")
        if resource_type == "Patient":
            return population is None or tombstone["id"] in population
        codes = self._spec.compartments["Patient"].get(resource_type, [])
        entries = before["ix"].get("rf", [])
        if population is None:
            return any(entry.startswith(_patient_prefixes(codes)) for entry in entries)
        members = self._members.get(resource_type)
        if members is None:
            members = self._members[resource_type] = frozenset(key(code, f"Patient/{p}") for code in codes for p in population)
        return any(entry in members for entry in entries)

    # -- writing and checkpoints ----------------------------------------------------------------------

    async def _write(self, kind: str, file_type: str, lines: list[bytes], position: dict[str, Any], name_type: str | None = None) -> None:
        """Append lines to this run's part; checkpoint when the last one is a while ago."""
        if lines:
            part = self._part(kind, file_type, name_type or file_type)
            data = b"\n".join(lines) + b"\n"
            try:
                await self._files.append(self._id, part["name"], data)
            except FileNotFoundError:
                raise JobLost("the export's folder is gone (cancelled)") from None
            self._unsynced.add(part["name"])
            part["count"] += len(lines)
            part["bytes"] += len(data)
            if kind == "output":
                self._exported += len(lines)
        self._position = position or self._position
        if time.monotonic() - self._checkpointed >= CHECKPOINT_SECONDS:
            await self._checkpoint()
        await self._pace(len(lines))

    async def _sync(self) -> None:
        try:
            await self._files.sync(self._id, sorted(self._unsynced))
        except FileNotFoundError:
            raise JobLost("the export's folder is gone (cancelled)") from None
        self._unsynced.clear()

    async def _checkpoint(self) -> None:
        """Make the parts durable, then record their lengths, the position and the lease."""
        await self._sync()
        fields = {"files": self._parts, "exported": self._exported,
                  "lease_until": self._clock() + timedelta(seconds=self._settings.lease_seconds)}
        if self._position:
            fields["position"] = self._position
        if not await self._exports.checkpoint(self._id, self._worker, fields):
            raise JobLost("the job was cancelled or taken over")
        self._checkpointed = time.monotonic()

    def _part(self, kind: str, file_type: str, name_type: str) -> dict[str, Any]:
        part = self._open.get((kind, name_type))
        if part is None or part["count"] >= RESOURCES_PER_PART:
            prefix = name_type if kind == "output" else f"{kind}-{name_type}"
            number = 1 + sum(1 for p in self._parts if p["name"].rsplit("-", 1)[0] == prefix)
            part = {"kind": kind, "type": file_type, "name": f"{prefix}-{number}.ndjson", "count": 0, "bytes": 0}
            self._parts.append(part)
            self._open[(kind, name_type)] = part
        return part

    async def _pace(self, written: int) -> None:
        """Give way to the API's requests; keep under the configured rate."""
        await self._pacer.breathe(self._settings.share_while_serving)
        await self._pacer.turn()
        rate = self._settings.max_per_second
        if rate > 0 and written:
            self._written_here += written
            ahead = self._written_here / rate - (time.monotonic() - self._started)
            if ahead > 0:
                await asyncio.sleep(ahead)


@dataclass(frozen=True)
class _Scope:
    """One query of a type's export: its clause, and the compartment entries it covers (a row
    carrying one of them was exported by this query: later ones skip it)."""

    query: dict[str, Any]
    covers: frozenset[str]


def _kept(in_compartment: bool, several: bool, codes: list[str], covered: set[str]) -> Callable[[dict[str, Any]], bool] | None:
    """What a page's rows must also pass: belonging to some patient's compartment (a patient-level
    export of every patient), and no entry an earlier query covered (exported already). `covered`
    grows as the scopes are read; `several`: the type is read by several scopes)."""
    if not in_compartment and not several:
        return None
    prefixes = _patient_prefixes(codes)

    def keep(row: dict[str, Any]) -> bool:
        entries = (row.get("ix") or {}).get("rf") or []
        if in_compartment and not any(entry.startswith(prefixes) for entry in entries):
            return False
        return not (covered and any(entry in covered for entry in entries))

    return keep


def _patient_prefixes(codes: list[str]) -> tuple[str, ...]:
    """The beginnings of a type's index entries that put it in some patient's compartment."""
    return tuple(key(code, "Patient/") for code in codes)


def _deletion(key_: str) -> dict[str, Any]:
    """A deleted resource as the IG lists it: a transaction Bundle with its DELETE."""
    return {"resourceType": "Bundle", "type": "transaction", "entry": [{"request": {"method": "DELETE", "url": key_}}]}


def _outcome(text: str) -> bytes:
    return orjson.dumps({"resourceType": "OperationOutcome", "issue": [{"severity": "warning", "code": "not-supported",
                                                                         "diagnostics": text}]})


__all__ = ["ExportRun", "JobLost", "RunSettings"]
