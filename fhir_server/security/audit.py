"""The audit trail: one AuditEvent (IHE BALP style) per FHIR interaction and per HL7 message.

Recording must not slow the request path, and no record may be lost. So `record` only
appends the event to a journal file (one `write` of one line, with O_APPEND) and to an
in-memory queue; a background task commits the queue in batches, through the engine, as
AuditEvent resources. The journal is emptied whenever everything in it is committed. If the
process dies first, the next start commits what the journal still holds (ids are fixed at
record time, so nothing is written twice). The journal lives in the OS page cache: a process
crash keeps it, a power cut between two flushes may not (fsync per request would cost more
than the request).

AuditEvents are readable only with a system scope (see policy.py).
"""

from __future__ import annotations

import asyncio
import base64
import logging
import os
import uuid
from dataclasses import replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Protocol

import orjson

from fhir_server.security.policy import SYSTEM, acting_as

log = logging.getLogger("calipso.audit")

JOURNAL = "audit-journal-{role}.ndjson"  # one per process role: `serve` and `mllp` may share a data dir
BATCH = 500
INTERVAL = 0.2  # seconds between two commits while records keep coming

EVENT_TYPE = {"system": "http://terminology.hl7.org/CodeSystem/audit-event-type", "code": "rest", "display": "RESTful Operation"}
HL7_TYPE = {"system": "http://dicom.nema.org/resources/ontology/DCM", "code": "110107", "display": "Import"}
INTERACTIONS = "http://hl7.org/fhir/restful-interaction"
SOURCE_TYPE = {"system": "http://terminology.hl7.org/CodeSystem/security-source-type", "code": "4", "display": "Application Server"}
OBJECT_ROLE = "http://terminology.hl7.org/CodeSystem/object-role"
def outcome_code(status: int) -> str:
    """AuditEvent.outcome: 0 success, 4 minor failure (refused, not found), 8 serious failure."""
    return "0" if status < 400 else "4" if status < 500 else "8"


def audit_event(interaction: str, action: str, status: int, who: str, address: str | None, resource_type: str | None = None,
                resource_id: str | None = None, query: str | None = None, when: datetime | None = None,
                hl7: bool = False) -> dict[str, Any]:
    """One AuditEvent for one interaction (its restful-interaction code and action, as the
    route declares them). Its text fields hold no patient data; a search's query (which may
    name a patient) goes in `entity.query`, readable only by system scopes."""
    when = when or datetime.now(timezone.utc)
    agent: dict[str, Any] = {"requestor": True, "altId": who[:200]}
    if "/" in who and not who.startswith("system:"):
        agent["who"] = {"reference": who}
    else:
        agent["who"] = {"display": who[:200]}
    if address:
        agent["network"] = {"address": address[:100], "type": "2"}
    entity: list[dict[str, Any]] = []
    if resource_type and resource_id:
        entity.append({"what": {"reference": f"{resource_type}/{resource_id}"}})
    if query:
        entity.append({"type": {"system": "http://hl7.org/fhir/resource-types", "code": resource_type or "Resource"},
                       "role": {"system": OBJECT_ROLE, "code": "24", "display": "Query"},
                       "query": base64.b64encode(query.encode("utf-8")[:4096]).decode("ascii")})
    event: dict[str, Any] = {
        "resourceType": "AuditEvent",
        "id": str(uuid.uuid4()),
        "type": EVENT_TYPE,
        "subtype": [{"system": INTERACTIONS, "code": interaction}],
        "action": action,
        "recorded": when.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        "outcome": outcome_code(status),
        "outcomeDesc": f"HTTP {status}",
        "agent": [agent],
        "source": {"observer": {"display": "calipso FHIR server"}, "type": [SOURCE_TYPE]},
    }
    if hl7:
        event["type"] = HL7_TYPE
    if entity:
        event["entity"] = entity
    return event


def message_event(code: str, sender: str, key: str) -> dict[str, Any]:
    """The AuditEvent of one HL7 v2 message received over MLLP (its ACK code as the outcome)."""
    status = {"AA": 200, "CA": 200, "AE": 422, "CE": 422}.get(code, 400)
    event = audit_event("create", "C", status, f"hl7:{sender or 'unknown'}", sender or None, hl7=True)
    event["outcomeDesc"] = f"ACK {code}"
    if key:
        event["entity"] = [{"what": {"identifier": {"system": "urn:calipso:hl7v2-inbox", "value": key[:200]}}}]
    return event


EXPORT_TYPE = {"system": "http://dicom.nema.org/resources/ontology/DCM", "code": "110106", "display": "Export"}


def notification_event(subscription: str, destination: str, status: int, outcome: str, when: datetime | None = None) -> dict[str, Any]:
    """The AuditEvent of one notification sent (or not) to a subscription's endpoint: which
    subscription, where (the endpoint's origin), what came of it (`outcome`: no patient data)."""
    event = audit_event("create", "E", status, "system:calipso", destination or None, "Subscription", subscription.split("/", 1)[-1],
                        when=when)
    event["type"] = EXPORT_TYPE
    del event["subtype"]
    event["outcomeDesc"] = outcome[:200]
    return event


def export_event(job: str, owner: str, status: str, exported: int, when: datetime | None = None) -> dict[str, Any]:
    """The AuditEvent of a bulk export that ended: whose, which job, how many resources (the
    kick-off and every download are audited as interactions of their own)."""
    event = audit_event("operation", "E", 200 if status == "completed" else 500, owner, None, when=when)
    event["type"] = EXPORT_TYPE
    del event["subtype"]
    event["outcomeDesc"] = f"bulk export {job} {status}: {exported} resources"[:200]
    return event


def message_recorder(trail: "AuditTrail | None") -> Callable[[str, str, str], None] | None:
    """What the MLLP listener calls with each message's (ACK code, sender, inbox key)."""
    if trail is None:
        return None
    return lambda code, sender, key: trail.record(message_event(code, sender, key))


class Committer(Protocol):
    async def __call__(self, events: list[dict[str, Any]]) -> None: ...


class AuditTrail:
    """Journal + queue + background commits. `commit` writes a batch of events (idempotently)."""

    def __init__(self, commit: Committer, journal_dir: Path | None, role: str = "api"):
        self._commit = commit
        self._path = Path(journal_dir) / JOURNAL.format(role=role) if journal_dir else None
        self._fd: int | None = None
        self._queue: list[dict[str, Any]] = []
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self._flushing = asyncio.Lock()  # the background task and an explicit flush must not commit one batch twice

    async def start(self) -> None:
        if self._path is not None:
            self._path.parent.mkdir(parents=True, exist_ok=True)
            left = _read_journal(self._path)
            if left:
                log.warning("audit journal: committing %d events left by the previous run", len(left))
                await self._commit(left)
            self._fd = os.open(self._path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_TRUNC, 0o600)
        self._task = asyncio.create_task(self._run(), name="audit-trail")

    def record(self, event: dict[str, Any]) -> None:
        """Keep one event (never raises, never waits: the request path calls it)."""
        try:
            if self._fd is not None:
                os.write(self._fd, orjson.dumps(event) + b"\n")
        except OSError as error:
            log.error("audit journal write failed error=%s", type(error).__name__)
        self._queue.append(event)
        if len(self._queue) >= BATCH:
            self._wake.set()

    @property
    def pending(self) -> int:
        return len(self._queue)

    async def flush(self) -> None:
        """Commit everything recorded so far."""
        async with self._flushing:
            while self._queue:
                batch = self._queue[:BATCH]
                await self._commit(batch)
                del self._queue[: len(batch)]
            if self._fd is not None and not self._queue:
                os.ftruncate(self._fd, 0)  # all committed: nothing to replay (no await since the commit)

    async def stop(self) -> None:
        self._stopping = True
        self._wake.set()
        if self._task is not None:
            await self._task
        try:
            await self.flush()
        except Exception as error:  # noqa: BLE001 - the journal keeps them for the next start
            log.error("audit trail: %d events left in the journal error=%s", len(self._queue), type(error).__name__)
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    async def _run(self) -> None:
        while not self._stopping:
            try:
                await asyncio.wait_for(self._wake.wait(), INTERVAL)
            except asyncio.TimeoutError:
                pass
            self._wake.clear()
            try:
                await self.flush()
            except Exception as error:  # noqa: BLE001 - kept in the queue and the journal: retried
                log.error("audit commit failed, will retry pending=%d error=%s", len(self._queue), type(error).__name__)
                await asyncio.sleep(1.0)


def engine_committer(engine: Any) -> Committer:
    """Commit AuditEvents through the engine's write path (indexed, versioned), skipping the ones
    already stored (a journal replayed after a crash may hold some)."""

    async def commit(events: list[dict[str, Any]]) -> None:
        with acting_as(SYSTEM):
            stored = await engine.store.read_many([f"AuditEvent/{e['id']}" for e in events])
            when = engine.next_time()
            # the audit trail's own writes are no events: nobody is notified of them, and a
            # dispatcher would otherwise drain one per request audited
            writes = [replace(engine.prepare("AuditEvent", e["id"], e, "POST", None, when), event=False)
                      for e in events if f"AuditEvent/{e['id']}" not in stored]
            if writes:
                await engine.commit(*writes)

    return commit


def _read_journal(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    events = []
    for line in path.read_bytes().splitlines():
        try:
            events.append(orjson.loads(line))
        except orjson.JSONDecodeError:
            log.warning("audit journal: a torn line skipped")  # a crash in the middle of a write
    return events


__all__ = ["AuditTrail", "audit_event", "engine_committer", "export_event", "message_event", "message_recorder", "notification_event"]
