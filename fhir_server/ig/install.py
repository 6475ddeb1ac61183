"""Serve our conformance resources: install the guide's artifacts into the store at start.

They go in as ordinary resources (read, search by url/type/name, history) through the
engine's one write path, in one transaction. Only artifacts whose content changed get a new
version, so restarts write nothing; two processes starting together retry on the conflict.
"""

from __future__ import annotations

import logging
from typing import Any

import orjson

from fhir_server.engine import Engine
from fhir_server.engine.retry import LostRace, retrying
from fhir_server.security.policy import SYSTEM, acting_as
from fhir_server.storage.store import VersionConflict

log = logging.getLogger("calipso.ig")
SERVER_STAMPED = ("meta",)


async def install_guide(engine: Engine) -> int:
    """Write the artifacts that are missing or changed; the number written."""
    with acting_as(SYSTEM):  # the server's own start-up work
        return await _install(engine)


async def _install(engine: Engine) -> int:
    artifacts = engine.guide.artifacts
    keys = [f"{a['resourceType']}/{a['id']}" for a in artifacts]

    async def attempt() -> int:
        stored = await engine.store.read_many(keys)
        writes = []
        updated = engine.next_time(*stored.values())
        for key, artifact in zip(keys, artifacts):
            current = stored.get(key)
            if current is not None and not current.deleted and _same(current.raw, artifact):
                continue
            method = "POST" if current is None else "PUT"
            writes.append(engine.prepare(artifact["resourceType"], artifact["id"], artifact, method, current, updated))
        if not writes:
            return 0
        try:
            await engine.commit(*writes)
        except VersionConflict:
            raise LostRace() from None
        log.info("implementation guide installed artifacts=%d", len(writes))
        return len(writes)

    return await retrying(attempt, "could not install the implementation guide: conflicting writers")


def _same(raw: bytes | None, artifact: dict[str, Any]) -> bool:
    if raw is None:
        return False
    stored = orjson.loads(raw)
    return {k: v for k, v in stored.items() if k not in SERVER_STAMPED} == {
        k: v for k, v in artifact.items() if k not in SERVER_STAMPED
    }


__all__ = ["install_guide"]
