"""One message in, one ACK out: decode, check, keep in the inbox, map, apply, acknowledge.

- Unreadable bytes, an unknown version, an unsupported event: AR, the raw bytes kept.
- A message that cannot be mapped or whose resources do not validate: AE with ERR, kept,
  nothing written.
- Otherwise the notebook writes and the inbox's `applied` commit in one database
  transaction, and only then is AA sent. A resend of a settled message gets the stored ACK
  and writes nothing; the same key with other bytes gets AE 205.
- Messages for one patient are applied one at a time, in arrival order (per process).
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Any, Awaitable, Callable

from hl7apy import SUPPORTED_LIBRARIES

from fhir_server.engine import Engine
from fhir_server.engine.criteria import matching, parse_criteria
from fhir_server.engine.bundle_entries import BundleLimits, read_request
from fhir_server.engine.transaction import run_transaction
from fhir_server.outcome import FhirError
from fhir_server.security.policy import SYSTEM, acting_as
from fhir_server.storage.store import ConditionFailed
from hl7v2_bridge.ack import SENT_WHEN, Problem, ack_code, acknowledge
from hl7v2_bridge.er7 import Er7Error, Message, decode
from fhir_server.storage.inbox import APPLIED, FAILED, FINAL, REJECTED, Inbox, digest
from hl7v2_bridge.mapping import MERGE, OPTIONAL, Mappings, MappingError, load_mappings, to_bundle
from hl7v2_bridge.ordering import PatientTurns

log = logging.getLogger("calipso.bridge")
INTERNAL_BASE = "http://calipso.bridge/fhir"
HANDLED_TYPES = ("ADT",)


@dataclass(frozen=True)
class Outcome:
    """What happened to one message: the ACK code and bytes, and its inbox key.

    In enhanced mode `ack` is None when MSH-16 asks for no application acknowledgement."""

    code: str
    ack: bytes | None
    key: str


Accept = Callable[[bytes], Awaitable[None]]


class Bridge:
    """The HL7 v2 side of calipso: turns ADT messages into notebook writes through the engine."""

    def __init__(self, engine: Engine, default_charset: str = "UNICODE UTF-8", mappings: Mappings | None = None):
        self._engine = engine
        self._inbox = Inbox(engine.store)
        self._mappings = mappings or load_mappings()
        self._default_charset = default_charset
        self._turns = PatientTurns()

    @property
    def inbox(self) -> Inbox:
        return self._inbox

    @property
    def patients_in_progress(self) -> int:
        """Patients with a message being applied or waiting for its turn."""
        return self._turns.patients_in_progress

    async def handle(self, raw: bytes, sender: str = "", accept: Accept | None = None) -> Outcome:
        """The ACK for one message's bytes (never raises).

        With `accept` (MLLP), a message asking for enhanced mode (MSH-15/MSH-16 filled) gets
        its accept acknowledgement (CA, or CE/CR) through it once the inbox holds the message,
        before it is applied; the application acknowledgement follows as MSH-16 asks."""
        try:
            with acting_as(SYSTEM), self._engine.workload.working():  # the hospital's feed: a system integration
                outcome = await self._handle(raw, sender, accept)
        except Exception as error:  # noqa: BLE001 - the sender must get an answer, and we keep serving
            log.exception("bridge internal error type=%s", type(error).__name__)
            ack = acknowledge(None, "AR", [Problem("207", "Internal error while processing the message; it is kept for replay")])
            return Outcome("AR", ack, "")
        return outcome

    async def _handle(self, raw: bytes, sender: str, accept: Accept | None) -> Outcome:
        try:
            message = decode(raw, self._default_charset)
        except Er7Error as error:
            return await self._unreadable(raw, sender, error)
        enhanced = accept is not None and bool(message.value("MSH-15") or message.value("MSH-16"))
        refusal = _refusal(message, self._mappings)
        key = _key(message)
        if refusal is not None:
            ack = acknowledge(message, "CR" if enhanced else "AR", [refusal])
            kept = await self._inbox.keep_rejected(key or f"unreadable:{digest(raw)}", raw, sender, ack, _error(refusal))
            if kept is not None and kept.sha256 != digest(raw):
                return await self._clash(message, key, raw, sender, enhanced)
            if kept is not None and kept.ack is not None:
                ack = kept.ack  # a resend of a refused message: the ACK it got
            log.info("message refused control_id=%s code=%s", message.value("MSH-10")[:40], refusal.code)
            return self._answer(message, enhanced, Outcome(ack_code(ack), ack, key), accept_level=True)
        event = message.value("MSH-9.2")
        receiving = asyncio.ensure_future(self._inbox.receive(key, raw, sender, event))
        await asyncio.sleep(0)  # the insert leaves now: the mapping below runs while the database stores it
        mapped = self._map(message)
        stored = await receiving
        if stored is not None and stored.sha256 != digest(raw):
            return await self._clash(message, key, raw, sender, enhanced)
        if enhanced and "ok" in SENT_WHEN.get(message.value("MSH-15"), ()):
            assert accept is not None
            await accept(acknowledge(message, "CA"))  # the inbox holds it: accepted
        if stored is not None and stored.status in FINAL and stored.ack is not None:
            log.info("resend answered from the inbox control_id=%s status=%s", message.value("MSH-10")[:40], stored.status)
            return self._answer(message, enhanced, Outcome(ack_code(stored.ack), stored.ack, key))
        async with self._turns.of(_patient_key(message)):
            return self._answer(message, enhanced, await self._apply(message, key, mapped))

    async def _clash(self, message: Message, key: str, raw: bytes, sender: str, enhanced: bool) -> Outcome:
        """Another message holds this key (MSH-3/4/10) with other bytes: AE 205, kept apart under
        a key of its own; the record already there is left as it is."""
        problem = Problem("205", f"Message control id {message.value('MSH-10')[:40]} was already used for a different message")
        ack = acknowledge(message, "CE" if enhanced else "AE", [problem])
        await self._inbox.keep_rejected(f"{key}|{digest(raw)}", raw, sender, ack, _error(problem))
        log.info("message control id clash control_id=%s", message.value("MSH-10")[:40])
        return self._answer(message, enhanced, Outcome("CE" if enhanced else "AE", ack, key), accept_level=True)

    @staticmethod
    def _answer(message: Message, enhanced: bool, outcome: Outcome, accept_level: bool = False) -> Outcome:
        """In enhanced mode, keep only the acknowledgement MSH-15 (accept level) or MSH-16 asks for."""
        if not enhanced:
            return outcome
        wanted = SENT_WHEN.get(message.value("MSH-15" if accept_level else "MSH-16"), ("ok", "error"))
        kind = "ok" if outcome.code in ("AA", "CA") else "error"
        return outcome if kind in wanted else Outcome(outcome.code, None, outcome.key)

    def _map(self, message: Message) -> dict[str, Any] | MappingError:
        """The message's transaction Bundle, or why it cannot be mapped."""
        mapping = self._mappings.for_event(message.value("MSH-9.2"))
        assert mapping is not None  # _refusal checked it against the same mappings
        try:
            return to_bundle(message, mapping, self._mappings.tables)
        except MappingError as error:
            return error

    async def _apply(self, message: Message, key: str, bundle: dict[str, Any] | MappingError) -> Outcome:
        if isinstance(bundle, MappingError):
            return await self._reject(message, key, "AE", Problem(bundle.code, bundle.text, bundle.location))
        ack = acknowledge(message, "AA")
        try:
            entries = await self._without_absent_targets(bundle["entry"])
            merges = self._merges(entries)
            requests = [read_request(i, entry, self._engine, INTERNAL_BASE) for i, entry in enumerate(entries)]
            for position, merge in merges.items():
                requests[position].merge = merge
            await run_transaction(self._engine, requests, INTERNAL_BASE, BundleLimits(skip_unchanged=True), (self._inbox.applied(key, ack, len(requests)),))
        except FhirError as error:
            text = "; ".join(i.diagnostics for i in error.issues)[:500]
            code = "207" if error.status >= 500 or error.status == 409 else "102"
            return await self._reject(message, key, "AE" if code == "102" else "AR", Problem(code, text), failed=code == "207")
        except ConditionFailed:  # another process applied it first: answer what it answered
            found = await self._inbox.get(key)
            if found and found.get("status") == APPLIED and found.get("ack"):
                return Outcome("AA", bytes(found["ack"]), key)
            raise
        log.info("message applied control_id=%s event=%s entries=%d", message.value("MSH-10")[:40], message.value("MSH-9.2"), len(requests))
        return Outcome("AA", ack, key)

    @staticmethod
    def _merges(entries: list[dict[str, Any]]) -> dict[int, Callable[[dict[str, Any], dict[str, Any]], dict[str, Any]]]:
        """For a `merge` list (the care team's participants), the stored members this message
        does not name again are kept: a discharge adds the home nurse without dropping the
        trusted person an admission brought. Applied by the transaction to the stored version
        it reads anyway (no extra query).

        Members are told apart by identifier: each new member's conditional reference
        (`Practitioner?identifier=sys|val`) is also written as `member.identifier`, so the
        stored team carries it for the next message."""
        merges = {}
        for position, entry in enumerate(entries):
            name = entry.pop(MERGE, None)
            if name is None:
                continue
            named = set()
            for item in entry["resource"].get(name, []):
                identity = _identity(item.get("member", {}))
                if identity is not None:
                    item["member"]["identifier"] = {"system": identity[1], "value": identity[2]}
                    named.add(identity)
            merges[position] = _keeping_stored(name, frozenset(named))
        return merges

    async def _without_absent_targets(self, entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Drop optional entries whose conditional target does not exist (merging an unknown
        patient, cancelling a discharge the notebook never received)."""
        kept = []
        for entry in entries:
            if entry.pop(OPTIONAL, False):
                resource_type, _, criteria = entry["request"]["url"].partition("?")
                if not await matching(self._engine, resource_type, parse_criteria(criteria), INTERNAL_BASE, 1):
                    continue
            kept.append(entry)
        return kept

    async def _reject(self, message: Message, key: str, code: str, problem: Problem, failed: bool = False) -> Outcome:
        ack = acknowledge(message, code, [problem])
        await self._inbox.settle(key, FAILED if failed else REJECTED, ack, _error(problem))
        log.info("message %s control_id=%s code=%s", "failed" if failed else "rejected", message.value("MSH-10")[:40], problem.code)
        return Outcome(code, ack, key)

    async def _unreadable(self, raw: bytes, sender: str, error: Er7Error) -> Outcome:
        problem = Problem(error.code, error.text, error.location)
        ack = acknowledge(None, "AR", [problem])
        await self._inbox.keep_rejected(f"unreadable:{digest(raw)}", raw, sender, ack, _error(problem))
        log.info("unreadable message kept sha256=%s code=%s", digest(raw)[:16], error.code)
        return Outcome("AR", ack, "")


def _refusal(message: Message, mappings: Mappings) -> Problem | None:
    """Why a readable message is refused outright (AR), if it is."""
    message_type, event = message.value("MSH-9.1"), message.value("MSH-9.2")
    version = message.value("MSH-12")
    if version not in SUPPORTED_LIBRARIES or version in ("2.1", "2.2"):
        return Problem("203", f"Unsupported HL7 version '{version[:20]}' (2.3 to 2.8.2, and 2.5^FRA^2.x)", "MSH-12")
    if not message.value("MSH-10"):
        return Problem("101", "MSH-10 (message control id) is empty", "MSH-10")
    if message_type not in HANDLED_TYPES:
        return Problem("200", f"Unsupported message type '{message_type[:10]}'", "MSH-9")
    if mappings.for_event(event) is None:
        return Problem("201", f"Unsupported event '{event[:10]}'", "MSH-9")
    return None


def _key(message: Message) -> str:
    msh = message.first("MSH")
    assert msh is not None
    return "|".join((msh.raw(3), msh.raw(4), msh.raw(10)))


def _identity(member: dict[str, Any]) -> tuple[str, str, str] | None:
    """(type, system, value) of a member: from its identifier, or its `Type?identifier=sys|val`."""
    reference = member.get("reference", "")
    resource_type = reference.split("?", 1)[0].split("/", 1)[0]
    identifier = member.get("identifier")
    if isinstance(identifier, dict) and identifier.get("system") and identifier.get("value"):
        return resource_type, identifier["system"], identifier["value"]
    head, question, criteria = reference.partition("?identifier=")
    if question and "|" in criteria and "&" not in criteria:
        system, value = criteria.split("|", 1)
        return head, system, value
    return None


def _keeping_stored(name: str, named: frozenset[tuple[str, str, str]]) -> Callable[[dict[str, Any], dict[str, Any]], dict[str, Any]]:
    """Merge for a list of members: the stored ones not named again, then the new ones."""

    def merge(stored: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
        kept = [item for item in stored.get(name, []) if _identity(item.get("member", {})) not in named]
        joined = {_identity(item.get("member", {})): item["period"]["start"] for item in stored.get(name, [])
                  if isinstance(item.get("period"), dict) and item["period"].get("start")}
        renewed = [_since(item, joined.get(_identity(item.get("member", {})))) for item in new.get(name, [])]
        return {**new, name: kept + renewed}

    return merge


def _since(item: dict[str, Any], start: str | None) -> dict[str, Any]:
    """A member named again keeps the date it joined (participant.period.start)."""
    if start is None or not isinstance(item.get("period"), dict):
        return item
    return {**item, "period": {**item["period"], "start": start}}


def _patient_key(message: Message) -> str:
    pid = message.first("PID")
    return pid.raw(3) if pid is not None else ""


def _error(problem: Problem) -> dict[str, str]:
    return {"code": problem.code, "text": problem.text, "location": problem.location}


__all__ = ["Bridge", "Outcome"]
